"""Raw-ASGI helpers shared by the gateway and the simulator: headers, a bounded body read, JSON
responses, server-sent events and waiting for the client to leave.

No web framework: the gateway's hot path is one route lookup, one body read and one send, and that
is all it needs (measured in bench/overhead.py). Imports nothing but orjson and the error tree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, MutableMapping
from typing import Any

import orjson

from .errors import InvalidRequestError, PayloadTooLargeError, RequestTimeoutError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # keep reverse proxies (nginx) from buffering the stream
]


class ClientGone(ConnectionResetError):
    """The client disconnected; there is nobody left to answer."""


# --- request ------------------------------------------------------------------------------------


def request_headers(scope: Scope) -> dict[str, str]:
    """Lower-cased names; values as UTF-8 text, else Latin-1. A repeated header keeps its last value."""
    raw = scope["headers"]
    try:
        return {k.decode("latin-1").lower(): v.decode() for k, v in raw}
    except UnicodeDecodeError:  # rare: some value is not UTF-8
        return {k.decode("latin-1").lower(): _header_text(v) for k, v in raw}


def _header_text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than the {limit}-byte limit.")


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole request body, refusing (413) before reading more than ``limit`` bytes, or at once
    when Content-Length says it is larger. ``ClientGone`` if the client leaves while sending it."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError:
            raise InvalidRequestError("The Content-Length header is not a number.") from None
        if too_large:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("client disconnected while sending the body")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise _too_large(limit)
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def body_deadline(receive: Receive, idle_s: float) -> Receive:
    """``receive``, giving up (408) when the request body stops arriving for ``idle_s`` seconds.

    The server times out idle connections between requests, not a body that trickles in or never
    comes (a client that declared more bytes than it sends): each would hold a connection and a
    task for good. Once the body is complete, ``receive`` is the server's own (it then waits for
    the client to leave, as long as a stream lasts). A timer handle of our own costs ~3 us a
    request; ``asyncio.timeout`` ~5."""
    complete = False

    async def receive_body() -> MutableMapping[str, Any]:
        nonlocal complete
        if complete:
            return await receive()
        task = asyncio.current_task()
        assert task is not None
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(idle_s, expire)
        try:
            message = await receive()
        except asyncio.CancelledError:
            if fired and task.uncancel() == 0:  # our cancel, and nobody else's: a timeout
                raise RequestTimeoutError(
                    f"The request body stopped arriving: nothing for {idle_s:g} s."
                ) from None
            raise
        finally:
            timer.cancel()
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return receive_body


async def wait_disconnect(receive: Receive) -> None:
    """Return once the client has gone (only meaningful after the body was read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


# --- response -----------------------------------------------------------------------------------


def encode_headers(extra: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]


async def send_json_bytes(send: Send, status: int, body: bytes, headers: Headers = ()) -> None:
    """A complete response whose body is already-encoded JSON, with its Content-Length."""
    length = (b"content-length", b"%d" % len(body))
    await send(
        {"type": "http.response.start", "status": status, "headers": [*JSON_HEADERS, length, *headers]}
    )
    await send({"type": "http.response.body", "body": body})


def send_json(send: Send, status: int, payload: Any, headers: Headers = ()) -> Coroutine[Any, Any, None]:
    """``await send_json(...)``: ``payload`` as a complete JSON response. A plain function handing
    back ``send_json_bytes``' coroutine, so the gateway's hot path awaits one coroutine, not two."""
    return send_json_bytes(send, status, orjson.dumps(payload), headers)


async def start_response(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    """The status line and headers of a response whose body follows in ``write`` calls."""
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def start_sse(send: Send, headers: Headers = ()) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})


async def write(send: Send, data: bytes, *, more: bool = True) -> None:
    """A piece of the response body; ``more=False`` ends it."""
    await send({"type": "http.response.body", "body": data, "more_body": more})


def sse_data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(event: str, payload: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
