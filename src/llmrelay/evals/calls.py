"""One model call for an eval, through the relay's whole pipeline, and what it measured."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from ..pipeline import Call
from ..providers import openai_format
from ..types import ChatResponse, Usage


@dataclass(frozen=True, slots=True)
class Outcome:
    text: str
    usage: Usage
    cost_usd: Decimal | None  # at the model's price: what the cache saved, when it answered
    spent_usd: Decimal | None  # what was paid (0 on a cache hit)
    cached: bool
    latency_ms: float
    answered_by: str  # the model that answered (a fallback, perhaps)
    call_id: str


async def call_model(relay: Any, request: dict[str, Any], *, no_cache: bool = False) -> Outcome:
    """Send ``request`` (OpenAI chat shape) through ``relay``; ``GatewayError`` when it fails."""
    call = Call(
        openai_format.parse_request({**request, "stream": False}),
        headers={"cache-control": "no-store"} if no_cache else {},
    )
    started = time.perf_counter()
    response = await relay.handle(call)
    latency_ms = (time.perf_counter() - started) * 1000
    assert isinstance(response, ChatResponse)
    usage = response.usage
    cached = call.status == "cache_hit"
    spent = call.cost_usd
    if spent is None and call.deployment is not None and not cached:  # no record stage in the pipeline
        spent = relay.catalog.cost(call.deployment, usage)
    cost = Decimal(call.extra["saved_usd"]) if cached and "saved_usd" in call.extra else spent
    return Outcome(
        text=answer_text(response),
        usage=usage,
        cost_usd=cost,
        spent_usd=Decimal(0) if cached else spent,
        cached=cached,
        latency_ms=latency_ms,
        answered_by=response.model,
        call_id=call.id,
    )


def answer_text(response: ChatResponse) -> str:
    """The first choice's text; tool calls (when there is no text) as JSON, so graders can read them."""
    if not response.choices:
        return ""
    message = response.choices[0].message
    text = message.text()
    if text or not message.tool_calls:
        return text
    calls = [{"name": c.function.name, "arguments": _loads(c.function.arguments)} for c in message.tool_calls]
    return orjson.dumps(calls[0] if len(calls) == 1 else calls).decode()


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
