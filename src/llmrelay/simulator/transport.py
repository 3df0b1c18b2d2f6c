"""One simulated exchange over raw ASGI: the shared helpers (``llmrelay.asgi``) bound to one
request, plus the deliberate misbehaviour only a fake upstream needs (``close_connection``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import orjson

from .. import asgi
from ..asgi import ClientGone, Receive, Scope, Send
from ..errors import InvalidRequestError

__all__ = ["ClientGone", "Exchange", "Receive", "Scope", "Send"]


class Exchange:
    """One HTTP request/response: its scope, channels and headers, and whether the response began
    (after that an error can only hang up)."""

    __slots__ = ("scope", "receive", "send", "headers", "started")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.headers = asgi.request_headers(scope)
        self.started = False

    async def json(self, limit: int) -> Any:
        raw = await asgi.read_body(self.receive, self.headers, limit)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None

    async def respond(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        """A complete JSON response (``body`` already encoded)."""
        self.started = True
        await asgi.send_json_bytes(self.send, status, body, asgi.encode_headers(headers) if headers else ())

    async def start_json(self, content_length: int) -> None:
        """Begin a JSON response whose body follows in ``write`` calls."""
        self.started = True
        length = b"%d" % content_length
        await asgi.start_response(self.send, 200, [*asgi.JSON_HEADERS, (b"content-length", length)])

    async def start_sse(self) -> None:
        self.started = True
        await asgi.start_sse(self.send)

    async def write(self, data: bytes, *, more: bool = True) -> None:
        await asgi.write(self.send, data, more=more)

    async def wait_disconnect(self) -> None:
        await asgi.wait_disconnect(self.receive)

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
                await self.start_json(1000)
            raise ClientGone
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_disconnect(), timeout=2)
