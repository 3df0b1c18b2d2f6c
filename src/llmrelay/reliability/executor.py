"""The execute stage: one attempt at the model the request names, under a total deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from ..catalog import Catalog, ModelEntry
from ..config import ExecuteSettings
from ..errors import GatewayError, InvalidRequestError, UpstreamTimeout
from ..pipeline import Attempt, Call, Handler, Result, Stream
from ..providers.base import HTTPProvider
from ..types import ChatRequest, ChatResponse


class Executor:
    def __init__(
        self, catalog: Catalog, providers: Mapping[str, HTTPProvider], settings: ExecuteSettings
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.timeout_s = settings.timeout_s

    async def __call__(self, call: Call, next: Handler) -> Result:
        entry = self.catalog.get(call.request.model)
        check_capabilities(call.request, entry)
        call.model = entry
        provider = self.providers[entry.provider_name]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                if call.stream:
                    result: Result = await provider.stream(call.request, entry)
                else:
                    result = await provider.complete(call.request, entry)
        except TimeoutError:
            error = UpstreamTimeout(
                f"{entry.provider_name} did not answer within {self.timeout_s:g}s",
                provider=entry.provider_name,
            )
            self._attempt(call, entry, started, error)
            raise error from None
        except GatewayError as error:
            self._attempt(call, entry, started, error)
            raise
        finally:
            call.upstream_ms += (time.perf_counter() - started) * 1000
        if isinstance(result, ChatResponse):
            self._attempt(call, entry, started)
            return result
        return self._timed_stream(call, entry, result, started + self.timeout_s, started)

    async def _timed_stream(
        self, call: Call, entry: ModelEntry, chunks: Stream, deadline: float, started: float
    ) -> Stream:
        """Pass chunks on, timing the waits on upstream and enforcing the total deadline."""
        try:
            while True:
                wait_start = time.perf_counter()
                remaining = deadline - wait_start
                try:
                    async with asyncio.timeout(max(remaining, 0)):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"{entry.provider_name} stream passed the {self.timeout_s:g}s deadline",
                        provider=entry.provider_name,
                    ) from None
                now = time.perf_counter()
                call.upstream_ms += (now - wait_start) * 1000
                if call.ttft_ms is None and any(c.delta.content or c.delta.tool_calls for c in chunk.choices):
                    call.ttft_ms = (now - call.started) * 1000
                yield chunk
        except GatewayError as error:
            self._attempt(call, entry, started, error)
            raise
        finally:
            await chunks.aclose()
        self._attempt(call, entry, started)

    @staticmethod
    def _attempt(call: Call, entry: ModelEntry, started: float, error: GatewayError | None = None) -> None:
        latency = (time.perf_counter() - started) * 1000
        if error is None:
            call.attempts.append(Attempt(entry.name, entry.provider_name, "success", latency, 200))
        else:
            outcome = f"error:{type(error).__name__}"
            status = getattr(error, "status_code", None)
            call.attempts.append(Attempt(entry.name, entry.provider_name, outcome, latency, status))


def check_capabilities(request: ChatRequest, entry: ModelEntry) -> None:
    """Refuse a request the model cannot serve, with a 400 that says why (not an upstream surprise)."""
    caps = entry.settings.capabilities
    needs = []
    if request.tools and "tools" not in caps:
        needs.append("tools")
    fmt = request.response_format.type if request.response_format else "text"
    if fmt == "json_schema" and "json_schema" not in caps:
        needs.append("json_schema")
    if fmt == "json_object" and "json" not in caps and "json_schema" not in caps:
        needs.append("json")
    if request.stream and "streaming" not in caps:
        needs.append("streaming")
    if "vision" not in caps and any(  # the model's capability first: no scan of every message
        not isinstance(m.content, str | None) and any(p.type == "image_url" for p in m.content)
        for m in request.messages
    ):
        needs.append("vision")
    if needs:
        raise InvalidRequestError(
            f"The model '{entry.name}' does not support {', '.join(needs)}.",
            param="model",
            code="unsupported_capability",
        )
