"""Small raw-ASGI helpers: read a bounded body, send JSON, send server-sent events.

No web framework: the hot path is one route lookup, one body read and one send, and that is all a
gateway needs (measured in bench/overhead.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..errors import InvalidRequestError, PayloadTooLargeError

Scope = dict[str, Any]
Receive = Any
Send = Any

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # keep reverse proxies (nginx) from buffering the stream
]


def request_headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The whole request body, refusing (413) before reading more than ``limit`` bytes."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLargeError(f"The request body is larger than the {limit}-byte limit.")
        except ValueError:
            raise InvalidRequestError("The Content-Length header is not a number.") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected while sending the body")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise PayloadTooLargeError(f"The request body is larger than the {limit}-byte limit.")
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def encode_headers(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]


async def send_json(send: Send, status: int, body: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    out = orjson.dumps(body)
    length = (b"content-length", b"%d" % len(out))
    await send(
        {"type": "http.response.start", "status": status, "headers": [*JSON_HEADERS, length, *headers]}
    )
    await send({"type": "http.response.body", "body": out})


async def start_sse(send: Send, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})


async def send_sse(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


def sse_data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(event: str, payload: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
