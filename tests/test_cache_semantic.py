"""The cache stage's semantic hook, with a stand-in index (the real one lives in cache/semantic/):
the exact key first; on a miss, a search within the request's scope, then the entry the index names;
on a store, the entry and its index entry. Only a last user message of text is looked up."""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest

from llmrelay import Relay
from llmrelay.cache import stage
from llmrelay.pipeline import Call
from llmrelay.providers import openai_format
from llmrelay.types import ChatResponse

from .conftest import free_port, gateway_config, start_process, stop_process


class DictIndex:
    """Matches a query equal to a stored one up to case and punctuation, with similarity 0.97."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], str] = {}
        self.searches: list[tuple[str, str, float]] = []
        self.ttls: list[float] = []
        self.closed = False

    @staticmethod
    def _norm(query: str) -> str:
        return re.sub(r"[^a-z0-9 ]", "", query.lower()).strip()

    async def search(self, scope: str, query: str, threshold: float) -> tuple[str, float] | None:
        self.searches.append((scope, query, threshold))
        key = self.entries.get((scope, self._norm(query)))
        return (key, 0.97) if key is not None else None

    async def add(self, scope: str, query: str, entry_key: str, ttl_s: float) -> None:
        self.entries[(scope, self._norm(query))] = entry_key
        self.ttls.append(ttl_s)

    async def ready(self) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True


def config(simulator_url: str) -> dict:
    c = gateway_config(simulator_url)
    c["cache"] = {"ttl_s": 120}
    c["models"][0]["cache"] = {"semantic": {"enabled": True, "threshold": 0.93}}  # gpt-4o-mini only
    return c


@pytest.fixture
def index(monkeypatch) -> DictIndex:
    built = DictIndex()
    monkeypatch.setattr(stage, "build_semantic_index", lambda relay: built)
    return built


async def ask(relay: Relay, messages: list[dict], model: str = "gpt-4o-mini", **kw) -> tuple[Call, object]:
    body = {"model": model, "temperature": 0, "messages": messages, **kw}
    call = Call(openai_format.parse_request(body), principal="sk-a")
    return call, await relay.handle(call)


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}]


async def test_a_near_duplicate_question_is_served_from_the_entry_the_index_names(simulator, index):
    async with Relay(config(simulator.url)) as relay:
        call, first = await ask(relay, user("What is the capital of France?"))
        assert call.response_headers["x-llmrelay-cache"] == "miss" and index.ttls == [120]
        call, again = await ask(relay, user("what is the capital of france"))
        assert call.response_headers["x-llmrelay-cache"] == "semantic-hit" and call.status == "cache_hit"
        assert isinstance(again, ChatResponse) and again.id == first.id
        assert call.extra["cache"] == "semantic-hit" and call.extra["cache_similarity"] == 0.97
        assert "saved_usd" in call.extra and index.searches[-1][1:] == ("what is the capital of france", 0.93)

        call, streamed = await ask(relay, user("WHAT is the capital of France"), stream=True)
        chunks = [c async for c in streamed]
        assert call.response_headers["x-llmrelay-cache"] == "semantic-hit"
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            == first.choices[0].message.content
        )

        # The same last message after other turns is another question: another scope, no hit.
        earlier = [
            {"role": "user", "content": "Tell me about Germany."},
            {"role": "assistant", "content": "Germany is a country in Europe."},
            {"role": "user", "content": "what is the capital of france"},
        ]
        call, _ = await ask(relay, earlier)
        assert call.response_headers["x-llmrelay-cache"] == "miss"
        call, _ = await ask(relay, user("what is the capital of france"), max_tokens=7)  # parameters too
        assert call.response_headers["x-llmrelay-cache"] == "miss"
    assert index.closed


async def test_only_a_last_user_message_of_text_is_searched(simulator, index):
    async with Relay(config(simulator.url)) as relay:
        tool_turn = [
            {"role": "user", "content": "weather in Paris"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]
        await ask(relay, tool_turn)
        await ask(relay, user("a question"), model="claude-haiku")  # a route without the semantic cache
        assert index.searches == [] and index.ttls == []


# --- the real index, through the gateway, as examples/semantic-cache.yaml ships ----------------

EXAMPLE = Path(__file__).parent.parent / "examples" / "semantic-cache.yaml"


@pytest.fixture(scope="module")
def semantic_gateway(tmp_path_factory):
    pytest.importorskip("usearch", reason="the semantic extra: pip install 'llmrelay[semantic]'")
    tmp = tmp_path_factory.mktemp("semantic")
    # A cold start, as on a new machine: the ONNX graph is built at start (a few seconds). Served
    # before it was ready, the first requests missed and were never indexed.
    env = {"LLMRELAY_CACHE_DIR": str(tmp / "model-cache")}
    server = start_process(
        ["serve", "--config", str(EXAMPLE)], free_port(), tmp, ready_path="/healthz", env=env
    )
    yield server
    stop_process(server)


def chat(server, messages: list[dict]):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-semantic", max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model="sim/gpt-4o-mini", temperature=0, messages=messages
        )


def test_a_paraphrase_is_a_semantic_hit_with_the_real_embedder(semantic_gateway):
    first = chat(semantic_gateway, user("How do I reset my password?"))
    assert first.headers["x-llmrelay-cache"] == "miss"
    again = chat(semantic_gateway, user("How can I reset my password?"))
    assert again.headers["x-llmrelay-cache"] == "semantic-hit"
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert again.headers["x-llmrelay-cost-usd"] == "0.00000000"


def test_negation_numbers_and_other_conversations_are_not_hits(semantic_gateway):
    chat(semantic_gateway, user("Can I cancel my order within 30 days?"))
    assert (
        chat(semantic_gateway, user("Can I not cancel my order within 30 days?")).headers["x-llmrelay-cache"]
        == "miss"
    )
    assert (
        chat(semantic_gateway, user("Can I cancel my order within 60 days?")).headers["x-llmrelay-cache"]
        == "miss"
    )
    # The same last question after other earlier turns is another scope: no hit.
    other = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "I bought a phone."},
        {"role": "assistant", "content": "Nice."},
        {"role": "user", "content": "Can I cancel my order within 30 days?"},
    ]
    assert chat(semantic_gateway, other).headers["x-llmrelay-cache"] == "miss"
