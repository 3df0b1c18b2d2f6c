"""The raw-ASGI helpers the gateway and the simulator share (``llmrelay.asgi``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmrelay import asgi
from llmrelay.errors import InvalidRequestError, PayloadTooLargeError


def receiver(*messages: dict[str, Any]):
    pending = list(messages)
    taken: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        taken.append(pending.pop(0))
        return taken[-1]

    return receive, taken


def part(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def test_request_headers_lower_cased_utf8_else_latin1() -> None:
    scope = {"headers": [(b"X-Sim-Reply", "héllo".encode()), (b"x-odd", b"\xe9t\xe9"), (b"x-k", b"a")]}
    assert asgi.request_headers(scope) == {"x-sim-reply": "héllo", "x-odd": "été", "x-k": "a"}
    assert asgi.request_headers({"headers": [(b"x-k", b"a"), (b"x-k", b"b")]}) == {"x-k": "b"}


async def test_read_body_joins_parts() -> None:
    receive, _ = receiver(part(b"ab", more=True), part(b"cd"))
    assert await asgi.read_body(receive, {}, 4) == b"abcd"


async def test_read_body_refuses_a_declared_length_before_reading() -> None:
    receive, taken = receiver(part(b"x"))
    with pytest.raises(PayloadTooLargeError):
        await asgi.read_body(receive, {"content-length": "5"}, 4)
    assert taken == []
    with pytest.raises(InvalidRequestError, match="not a number"):
        await asgi.read_body(receive, {"content-length": "lots"}, 4)


async def test_read_body_stops_at_the_limit() -> None:
    receive, taken = receiver(part(b"abc", more=True), part(b"de", more=True), part(b"never"))
    with pytest.raises(PayloadTooLargeError):
        await asgi.read_body(receive, {}, 4)
    assert len(taken) == 2


async def test_read_body_client_gone() -> None:
    receive, _ = receiver(part(b"ab", more=True), {"type": "http.disconnect"})
    with pytest.raises(asgi.ClientGone):
        await asgi.read_body(receive, {}, 10)


async def test_send_json_has_content_length() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi.send_json(send, 201, {"a": "é"}, asgi.encode_headers({"retry-after": "3"}))
    start, body = sent
    assert start["status"] == 201
    assert dict(start["headers"]) == {
        b"content-type": b"application/json",
        b"content-length": b"%d" % len(body["body"]),
        b"retry-after": b"3",
    }
    assert orjson.loads(body["body"]) == {"a": "é"}
    assert body.get("more_body", False) is False


async def test_wait_disconnect() -> None:
    receive, taken = receiver(part(b""), {"type": "http.disconnect"})
    await asgi.wait_disconnect(receive)
    assert len(taken) == 2
