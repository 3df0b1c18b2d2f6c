"""One shared HTTP path for every provider: an endpoint + a sans-I/O adapter + a pooled aiohttp client.

An ``Adapter`` knows one wire dialect and does no I/O; ``HTTPProvider`` sends what it builds, maps
transport failures into our error tree at this one seam, and turns SSE into canonical chunks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
import orjson

from ..catalog import Deployment
from ..config import ProviderSettings
from ..errors import (
    ConfigError,
    GatewayError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    error_for_status,
)
from ..tokens import count_messages, count_text
from ..types import ChatRequest, ChatResponse, Chunk, Moderation, Usage
from . import anthropic_format, openai_format


class StreamDecoder(Protocol):
    def feed(self, event: str | None, data: Any) -> list[Chunk]: ...

    @property
    def complete(self) -> bool: ...


class Adapter(Protocol):
    """One wire dialect, no I/O."""

    dialect: str

    def path(self, stream: bool) -> str: ...

    def headers(self, api_key: str | None) -> dict[str, str]: ...

    def build(self, request: ChatRequest, deployment: Deployment, *, stream: bool) -> dict[str, Any]: ...

    def parse_response(self, body: Any, request: ChatRequest, model: str) -> ChatResponse: ...

    def stream_decoder(self, request: ChatRequest, model: str) -> StreamDecoder: ...

    def error_message(self, body: bytes) -> str: ...


class HttpClient:
    """The process's pooled HTTP client, created lazily inside the running event loop."""

    def __init__(self, *, connect_timeout_s: float = 10.0) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._connect_timeout_s = connect_timeout_s

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s),
                # We pass bodies through as bytes; aiohttp must not second-guess encodings.
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HTTPProvider:
    """A provider endpoint speaking one dialect over HTTP."""

    def __init__(self, name: str, settings: ProviderSettings, adapter: Adapter, client: HttpClient) -> None:
        self.name = name
        self.settings = settings
        self.adapter = adapter
        self._client = client
        self._base = settings.base_url.rstrip("/")
        self._api_key = _resolve_key(settings)

    def _headers(self) -> dict[str, str]:
        if self._api_key is None and self.settings.api_key_env and not self.settings.simulated:
            env = self.settings.api_key_env
            raise ConfigError(
                f"Provider '{self.name}' needs an API key: set {env} in the gateway's environment "
                f"(export {env}=...) and restart, or remove the models that use it from the config."
            )
        return {
            **self.adapter.headers(self._api_key),
            **self.settings.headers,
            "content-type": "application/json",
        }

    async def _post(
        self, request: ChatRequest, deployment: Deployment, *, stream: bool
    ) -> aiohttp.ClientResponse:
        body = orjson.dumps(self.adapter.build(request, deployment, stream=stream))
        url = self._base + self.adapter.path(stream)
        with _mapped_transport_errors(self.name):
            resp = await self._client.session.post(url, data=body, headers=self._headers())
            if resp.status >= 400:
                raw = await resp.read()
                resp.release()
                raise error_for_status(
                    resp.status,
                    self.adapter.error_message(raw),
                    provider=self.name,
                    body=raw[:2000].decode("utf-8", "replace"),
                    headers=resp.headers,
                )
        return resp

    async def complete(self, request: ChatRequest, deployment: Deployment) -> ChatResponse:
        resp = await self._post(request, deployment, stream=False)
        with _mapped_transport_errors(self.name):
            raw = await resp.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"{self.name} returned a body that is not JSON",
                provider=self.name,
                status_code=resp.status,
                body=raw[:500].decode("utf-8", "replace"),
            ) from None
        return self.adapter.parse_response(body, request, deployment.model)

    async def fetch(self, method: str, url: str, *, data: Any = None, multipart: bool = False) -> bytes:
        """An authenticated request other than a chat call (moderation, batch files and batches):
        the body, or the upstream's error mapped as a call's would be."""
        headers = self._headers()  # credentials and the dialect's headers, as for a call
        if multipart:
            headers.pop("content-type", None)  # aiohttp writes the multipart boundary
        with _mapped_transport_errors(self.name):
            async with self._client.session.request(method, url, data=data, headers=headers) as resp:
                raw = await resp.read()
        if resp.status >= 400:
            raise error_for_status(
                resp.status,
                self.adapter.error_message(raw),
                provider=self.name,
                body=raw[:2000].decode("utf-8", "replace"),
                headers=resp.headers,
            )
        return raw

    async def moderate(self, texts: list[str], model: str) -> list[Moderation]:
        """OpenAI's ``POST /moderations`` (the only dialect that has one): a result per text."""
        if self.adapter.dialect != "openai":
            raise ConfigError(
                f"Provider '{self.name}' speaks {self.adapter.dialect}: it has no moderation endpoint."
            )
        raw = await self.fetch(
            "POST", self._base + "/moderations", data=orjson.dumps({"model": model, "input": texts})
        )
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"{self.name} sent a moderation answer that is not JSON", provider=self.name
            ) from None
        return openai_format.moderations_from_wire(parsed, len(texts))

    async def count_tokens(self, request: ChatRequest, deployment: Deployment) -> int | None:
        """The upstream's own count of the request's input tokens (Anthropic's count_tokens); None
        for a dialect without one."""
        if self.adapter.dialect != "anthropic":
            return None
        body = orjson.dumps(anthropic_format.count_request_to_wire(request, deployment.upstream))
        raw = await self.fetch("POST", self._base + "/v1/messages/count_tokens", data=body)
        try:
            tokens = orjson.loads(raw)["input_tokens"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            tokens = None
        if not isinstance(tokens, int) or isinstance(tokens, bool):
            raise UpstreamProtocolError(
                f"{self.name} sent a token count without an integer input_tokens: {raw[:200]!r}",
                provider=self.name,
            )
        return tokens

    async def stream(self, request: ChatRequest, deployment: Deployment) -> AsyncIterator[Chunk]:
        """Send the request and return its chunks once the upstream has answered 2xx.

        Awaiting this raises for failures before the stream starts (so they can become an HTTP
        error or a fallback); failures after it are raised from the iterator.
        """
        resp = await self._post(request, deployment, stream=True)
        decoder = self.adapter.stream_decoder(request, deployment.model)
        return self._chunks(resp, decoder, request, deployment.upstream)

    async def _chunks(
        self, resp: aiohttp.ClientResponse, decoder: StreamDecoder, request: ChatRequest, model: str
    ) -> AsyncIterator[Chunk]:
        usage_seen = False
        text: list[str] = []  # only to estimate usage for upstreams that never report it
        last: Chunk | None = None
        try:
            with _mapped_transport_errors(self.name):
                async for event, data in iter_sse(resp.content):
                    if data == "[DONE]":
                        break
                    try:
                        parsed = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamProtocolError(
                            f"{self.name} sent a stream event that is not JSON: {data[:200]!r}",
                            provider=self.name,
                        ) from None
                    for chunk in decoder.feed(event, parsed):
                        usage_seen = usage_seen or chunk.usage is not None
                        for c in chunk.choices:
                            if c.delta.content:
                                text.append(c.delta.content)
                        last = chunk
                        yield chunk
            if not decoder.complete:
                raise UpstreamProtocolError(
                    f"{self.name} ended the stream before it was complete (truncated)", provider=self.name
                )
            if not usage_seen and last is not None:
                # The canonical stream always ends in usage; estimate it with the real tokenizer.
                usage = Usage(
                    prompt_tokens=count_messages(request.messages, model),
                    completion_tokens=count_text("".join(text), model),
                    estimated=True,
                )
                yield Chunk(id=last.id, created=last.created, model=last.model, usage=usage)
        finally:
            resp.release()


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str | None, str]]:
    """Server-sent events as (event name, data) pairs."""
    event: str | None = None
    data: list[str] = []
    async for raw_line in content:
        line = raw_line.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" ") if len(line) > 5 else "")
        elif line.startswith("event:"):
            event = line[6:].strip()
        # ids, retries and ":" comments carry nothing we use
    if data:
        yield event, "\n".join(data)


class _mapped_transport_errors:
    """Translate aiohttp/asyncio transport failures into our tree (the one seam for them)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, GatewayError):
            return False
        p = self.provider
        if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(f"{p} timed out", provider=p) from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise UpstreamConnectionError(f"Cannot connect to {p}: {exc.os_error}", provider=p) from exc
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
            raise UpstreamConnectionError(f"{p} dropped the connection mid-response", provider=p) from exc
        if isinstance(exc, aiohttp.ClientError):
            raise UpstreamConnectionError(f"{p}: {type(exc).__name__}: {exc}", provider=p) from exc
        if isinstance(exc, UnicodeDecodeError):
            raise UpstreamProtocolError(f"{p} sent bytes that are not UTF-8", provider=p) from exc
        return False


def _resolve_key(settings: ProviderSettings, env: Mapping[str, str] | None = None) -> str | None:
    if settings.api_key:
        return settings.api_key
    if settings.api_key_env:
        return (env or os.environ).get(settings.api_key_env) or None
    return None


__all__ = ["Adapter", "HTTPProvider", "HttpClient", "StreamDecoder", "UpstreamError", "iter_sse"]
