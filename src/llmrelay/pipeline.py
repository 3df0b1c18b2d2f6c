"""The stage protocol, the per-request ``Call`` context, and how stages compose.

A stage is one object with one job, written like a middleware: it gets the ``Call`` and the next
handler and returns a ``ChatResponse`` or a stream of ``Chunk``s. What a stage learns (model used,
attempts, timings) it writes onto the ``Call``; the recorder, outermost, reads it from there.
The chain is composed once at start-up from the config's ``pipeline`` list.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ulid import ULID

from .errors import ConfigError, GatewayError
from .types import ChatRequest, ChatResponse, Chunk, Usage

if TYPE_CHECKING:
    from .catalog import Deployment, ModelEntry
    from .keys.model import VirtualKey

Stream = AsyncIterator[Chunk]
Result = ChatResponse | Stream
Handler = Callable[["Call"], Awaitable[Result]]
ApiFormat = Literal["openai", "anthropic", "library"]


class Stage(Protocol):
    async def __call__(self, call: Call, next: Handler) -> Result: ...


@dataclass(slots=True)
class Attempt:
    """One upstream try: which deployment, how it ended, how long it took and waited before."""

    model: str  # the client-facing model it was for
    deployment: str  # "<provider>/<upstream model id>"
    outcome: str  # "success" or "error:<ErrorClass>"
    latency_ms: float
    status_code: int | None = None  # the upstream's HTTP status, when it sent one
    waited_ms: float = 0.0  # backoff or Retry-After wait before this attempt


@dataclass(slots=True)
class Call:
    """Everything known about one client call, filled in by the stages as it passes through."""

    request: ChatRequest
    api_format: ApiFormat = "library"
    headers: Mapping[str, str] = field(default_factory=dict)  # incoming, lower-cased names
    principal: str | None = None
    key: VirtualKey | None = None  # the caller's virtual key (set by the server's auth step)
    # Returns once the client has disconnected (set by the server): what a request waiting in a
    # queue watches, so that a caller who gave up leaves it. None in the library.
    gone: Callable[[], Awaitable[None]] | None = None
    id: str = field(default_factory=lambda: f"req_{ULID()}")
    started: float = field(default_factory=time.perf_counter)
    # Written by the executor:
    model: ModelEntry | None = None  # the model that answered (a fallback, perhaps)
    deployment: Deployment | None = None  # and where
    attempts: list[Attempt] = field(default_factory=list)
    upstream_ms: float = 0.0  # time spent waiting on providers
    ttft_ms: float | None = None
    # Written by the recorder:
    usage: Usage | None = None
    usage_estimated: bool = False  # counted by our tokenizer: the upstream reported none
    cost_usd: Decimal | None = None
    status: str = "pending"
    error: GatewayError | None = None
    latency_ms: float | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    # What later stages learn (route decision, cache status, guardrail verdicts), for the record:
    extra: dict[str, Any] = field(default_factory=dict)
    requested_model: str = ""  # what the client named (a route resolves it to a model): set at creation

    def __post_init__(self) -> None:
        self.requested_model = self.requested_model or self.request.model

    @property
    def stream(self) -> bool:
        return bool(self.request.stream)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


async def watch_stream(
    chunks: Stream,
    ended: Callable[[Usage | None, BaseException | None], Awaitable[None] | None],
    each: Callable[[Chunk], None] | None = None,
) -> Stream:
    """``chunks`` unchanged; when the stream stops (finished, failed, or the client gone), calls
    ``ended(last usage seen, the exception or None)``: how a stage settles what a stream spent.
    ``each`` sees every chunk on its way (to keep what the stream adds up to)."""
    usage: Usage | None = None
    failure: BaseException | None = None
    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                usage = chunk.usage
            if each is not None:
                each(chunk)
            yield chunk
    except BaseException as exc:
        failure = exc
        raise
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:  # a client gone: the stages inside settle now, not at collection
            await close()
        outcome = ended(usage, failure)
        if outcome is not None:
            await outcome


async def _end_of_chain(call: Call) -> Result:
    raise ConfigError("The pipeline has no stage that executes the request; add 'execute' to it.")


def compose(stages: Sequence[Stage], terminal: Handler = _end_of_chain) -> Handler:
    """Wrap the stages so the first listed is outermost: ``stages[0](call, stages[1](call, ...))``."""
    handler = terminal
    for stage in reversed(stages):
        handler = _bind(stage, handler)
    return handler


def _bind(stage: Stage, next_handler: Handler) -> Handler:
    return _Bound(stage, next_handler)


class _Bound:
    """``stage`` with its ``next`` bound; calling it returns the stage's coroutine itself (no
    wrapper coroutine per stage per request)."""

    __slots__ = ("next", "stage")

    def __init__(self, stage: Stage, next_handler: Handler) -> None:
        self.stage = stage
        self.next = next_handler

    def __call__(self, call: Call) -> Awaitable[Result]:
        return self.stage(call, self.next)
