"""Raw ASGI plumbing for one request: headers, body, responses, streams and deliberate misbehaviour."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from ..errors import InvalidRequestError, PayloadTooLargeError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = b"application/json"
SSE = b"text/event-stream"


class ClientGone(Exception):
    """The client disconnected; there is nobody left to answer."""


def _header_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class Exchange:
    """One HTTP request/response over ASGI."""

    __slots__ = ("scope", "receive", "send", "headers", "started")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        # ASGI servers lower-case header names; a repeated header keeps its last value.
        self.headers = {k.decode("latin-1"): _header_text(v) for k, v in scope["headers"]}
        self.started = False

    async def body(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise PayloadTooLargeError(f"Request body exceeds {limit} bytes.")
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def json(self, limit: int) -> Any:
        raw = await self.body(limit)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None

    async def start(self, status: int, content_type: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        raw = [(b"content-type", content_type)] + [(k.encode(), v.encode()) for k, v in headers]
        if content_type == SSE:
            raw += [(b"cache-control", b"no-cache")]
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(
        self, status: int, body: bytes, content_type: bytes = JSON, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        await self.start(status, content_type, [*headers, ("content-length", str(len(body)))])
        await self.write(body, more=False)

    async def wait_disconnect(self) -> None:
        """Return once the client has gone (only meaningful after the body was read)."""
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def close_connection(self) -> None:
        """Close the TCP connection without (finishing) a response.

        ASGI has no message for this, and an app that raises or returns early makes uvicorn send a
        500 (if nothing was sent yet) and log an error. uvicorn's ``send`` is a bound method of the
        request cycle, which holds the transport: closing it directly is what a crashing upstream
        looks like. Waiting for ``http.disconnect`` afterwards lets uvicorn see the connection as
        gone, so it neither sends a 500 nor logs the exchange as an application error.
        """
        transport = getattr(getattr(self.send, "__self__", None), "transport", None)
        if transport is None:
            # Another ASGI server: start a response that promises more than it gets, then bail out.
            if not self.started:
                await self.start(200, JSON, [("content-length", "1000")])
            raise ClientGone
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_disconnect(), timeout=2)
