"""HTTPProvider against upstreams that behave like real third-party servers do (not our simulator):
CRLF line endings, SSE comments, no usage in streams, bodies that are not JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from llmrelay.catalog import Catalog
from llmrelay.config import Settings
from llmrelay.errors import UpstreamConnectionError, UpstreamProtocolError
from llmrelay.providers.base import HttpClient
from llmrelay.providers.registry import build_providers
from llmrelay.tokens import count_messages, count_text
from llmrelay.types import ChatRequest

from .conftest import free_port


def sse(*events: str, sep: str = "\n") -> bytes:
    return "".join(f"data: {e}{sep}{sep}" for e in events).encode()


CHUNK = '{"id":"c","created":1,"model":"x","choices":[{"index":0,"delta":{"content":"%s"}}]}'
FINISH = '{"id":"c","created":1,"model":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'

BODIES = {
    # An OpenAI-compatible server that ignores stream_options.include_usage, uses CRLF and keep-alives.
    "no-usage": b": keep-alive\r\n\r\n"
    + sse(CHUNK % "Hello", CHUNK % " world", FINISH, "[DONE]", sep="\r\n"),
    "done-without-finish": sse(CHUNK % "Hel", "[DONE]"),
    "not-json-event": sse("{oops"),
}


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        kind = body["messages"][-1]["content"]
        if not body.get("stream"):
            return web.Response(body=b"<html>502 Bad Gateway</html>", content_type="text/html")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(BODIES[kind])
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


async def _provider(base_url: str):
    settings = Settings.from_dict(
        {
            "providers": {"p": {"kind": "openai", "base_url": base_url}},
            "models": [{"name": "m", "provider": "p", "upstream": "gpt-4o-mini"}],
        }
    )
    client = HttpClient()
    return build_providers(settings, client)["p"], Catalog(settings).get("m").deployments[0], client


def _request(content: str) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": content}], stream=True)


async def test_stream_without_usage_gets_an_estimate_from_the_real_tokenizer(upstream):
    provider, entry, client = await _provider(upstream)
    try:
        chunks = [c async for c in await provider.stream(_request("no-usage"), entry)]
    finally:
        await client.close()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    usage = chunks[-1].usage
    assert usage.prompt_tokens == count_messages(_request("no-usage").messages, "gpt-4o-mini")
    assert usage.completion_tokens == count_text("Hello world", "gpt-4o-mini")


@pytest.mark.parametrize(
    ("kind", "match"), [("done-without-finish", "truncated"), ("not-json-event", "not JSON")]
)
async def test_broken_streams_raise_instead_of_ending_quietly(upstream, kind, match):
    provider, entry, client = await _provider(upstream)
    try:
        with pytest.raises(UpstreamProtocolError, match=match):
            async for _ in await provider.stream(_request(kind), entry):
                pass
    finally:
        await client.close()


async def test_non_json_body_is_a_protocol_error(upstream):
    provider, entry, client = await _provider(upstream)
    try:
        with pytest.raises(UpstreamProtocolError, match="not JSON"):
            await provider.complete(_request("x").model_copy(update={"stream": False}), entry)
    finally:
        await client.close()


async def test_connection_refused_is_a_connection_error():
    provider, entry, client = await _provider(f"http://127.0.0.1:{free_port()}/v1")
    try:
        with pytest.raises(UpstreamConnectionError, match="Cannot connect"):
            await provider.complete(_request("x").model_copy(update={"stream": False}), entry)
    finally:
        await client.close()
