"""Small helpers and mappings shared by several ``anthropic_format`` modules.

Every module reads the clock as ``_common._now()`` (through the module attribute, never a
``from``-import), so patching ``_common._now`` freezes time everywhere.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ...errors import InvalidRequestError
from ...types import (
    FinishReason,
    ThinkingBlock,
    Usage,
)

# Anthropic stop_reason -> canonical finish_reason. pause_turn (a server tool paused a long turn)
# has no OpenAI equivalent; "stop" is the closest thing a chat-completions client understands.
_FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# Block types an Anthropic client may send that we do not interpret but can carry to an Anthropic
# upstream untouched (as ``OtherPart``).
_PASSTHROUGH_BLOCKS = frozenset({"document"})


def _now() -> int:
    return int(time.time())


def _dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _invalid(param: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid request at '{param}': {problem}", param=param)


def _finish_reason(stop_reason: str | None) -> FinishReason:
    return _FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def _usage_from_wire(raw: dict[str, Any]) -> Usage:
    """Anthropic usage -> canonical, where prompt_tokens also counts cache reads and writes, and
    cache writes also count the 1-hour ones (``cache_creation`` splits the total by TTL; without it,
    every write is a 5-minute one, the only kind there was before)."""
    read = raw.get("cache_read_input_tokens") or 0
    by_ttl = raw.get("cache_creation") or {}
    write_1h = by_ttl.get("ephemeral_1h_input_tokens") or 0
    write = raw.get("cache_creation_input_tokens")
    if write is None:
        write = (by_ttl.get("ephemeral_5m_input_tokens") or 0) + write_1h
    details = raw.get("output_tokens_details") or {}
    return Usage(
        prompt_tokens=(raw.get("input_tokens") or 0) + read + write,
        completion_tokens=raw.get("output_tokens") or 0,
        cached_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=details.get("thinking_tokens") or 0,
    )


def _usage_to_wire(usage: Usage) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": max(0, usage.cache_write_tokens - usage.cache_write_1h_tokens),
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
    }
    if usage.reasoning_tokens:
        wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return wire


def _stop_reason(finish_reason: str | None, *, has_tool_calls: bool) -> str:
    # Some OpenAI-compatible upstreams say "stop" after tool calls; Anthropic clients only run
    # tools when stop_reason is "tool_use".
    if has_tool_calls and finish_reason in (None, "stop"):
        return "tool_use"
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _message_id(response_id: str) -> str:
    if response_id.startswith("msg_"):
        return response_id
    return "msg_" + response_id if response_id else _new_id("msg_")


def thinking_to_wire(block: ThinkingBlock) -> dict[str, Any]:
    wire = block.model_dump(exclude_none=True)
    if block.type == "thinking":  # a reasoning server's thinking has no signature; the SDK wants one
        wire.setdefault("signature", "")
    return wire


def thinking_from_wire(block: dict[str, Any], at: str | None = None) -> ThinkingBlock:
    """A thinking block, kept whole: the provider checks its signature when it comes back. ``at``:
    a client's block (a missing field is a 400 there); else an upstream's (extra fields it may add
    later are left out)."""
    needs = ("thinking", "signature") if block["type"] == "thinking" else ("data",)
    for key in needs:
        if not isinstance(block.get(key), str):
            if at is not None:
                raise _invalid(f"{at}.{key}", "Field required")
            raise KeyError(key)
    return ThinkingBlock(type=block["type"], **{k: block[k] for k in needs})
