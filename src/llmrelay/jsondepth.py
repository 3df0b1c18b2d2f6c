"""How deep a client's JSON may nest: ``MAX_DEPTH`` levels.

orjson reads up to 1,024 levels but writes at most 254, and the gateway writes what clients send
inside bodies of its own (the upstream request, a job, a batch line, the call record, a cache key).
A body nested between 255 and 1,024 levels deep was read, then failed to be written, a 500. So a
body is refused up front beyond ``MAX_DEPTH`` levels, which leaves room for the wrapping and is far
more than any real request or JSON schema nests.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 128
_WRITABLE = 254  # orjson.dumps: "Recursion limit reached" beyond this


def too_deep(raw: bytes | str, value: Any) -> bool:
    """Whether ``value``, parsed from ``raw``, nests more than ``MAX_DEPTH`` levels."""
    opens = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else raw.count("[") + raw.count("{")
    if opens <= MAX_DEPTH:  # fewer brackets than levels: the usual case, no more to do
        return False
    wrapped = value
    for _ in range(_WRITABLE - MAX_DEPTH):  # orjson measures the depth for us, in C
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except TypeError:
        return True
    return False


def tool_arguments(text: str) -> dict[str, Any] | None:
    """A tool call's arguments (a string inside the body) as the object to pass on, ``{}`` when
    blank (some OpenAI-compatible clients send "" for a call without any), or None: not JSON, not
    an object, or nested too deep."""
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)  # unlike json.loads, refuses lone surrogates and huge numbers
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or too_deep(text, value):
        return None
    return value


__all__ = ["MAX_DEPTH", "too_deep", "tool_arguments"]
