"""The record stage (outermost): times the whole call, accounts usage and cost, and puts the
request id, cost and gateway overhead on the response. It never waits on I/O."""

from __future__ import annotations

from ..catalog import Catalog
from ..errors import GatewayError
from ..pipeline import Call, Handler, Result, Stream
from ..types import ChatResponse, Usage


class Recorder:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def __call__(self, call: Call, next: Handler) -> Result:
        call.response_headers["x-llmrelay-request-id"] = call.id
        try:
            result = await next(call)
        except GatewayError as error:
            self._finish(call, error=error)
            raise
        if isinstance(result, ChatResponse):
            self._finish(call, usage=result.usage)
            return result
        self._describe_model(call, answering=1)  # a stream's headers leave before its cost is known
        return self._recorded(call, result)

    async def _recorded(self, call: Call, chunks: Stream) -> Stream:
        usage: Usage | None = None
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                yield chunk
        except GatewayError as error:
            self._finish(call, usage=usage, error=error)
            raise
        except BaseException:
            # The client went away (GeneratorExit/CancelledError): still a call, and it cost money.
            self._finish(call, usage=usage, status="error:ClientDisconnected")
            raise
        self._finish(call, usage=usage)

    def _describe_model(self, call: Call, answering: int = 0) -> None:
        """``answering``: 1 while a stream's attempt is still going (recorded when it ends)."""
        headers = call.response_headers
        if call.attempts or answering:
            headers["x-llmrelay-attempts"] = str(len(call.attempts) + answering)
        if call.deployment is not None:
            headers["x-llmrelay-model"] = call.deployment.model
            if call.deployment.provider.simulated:
                headers["x-llmrelay-simulated"] = "true"

    def _finish(
        self,
        call: Call,
        *,
        usage: Usage | None = None,
        error: GatewayError | None = None,
        status: str | None = None,
    ) -> None:
        call.latency_ms = call.elapsed_ms()
        call.usage = usage
        call.usage_estimated = usage is not None and usage.estimated
        call.error = error
        call.status = status or (f"error:{type(error).__name__}" if error else "success")
        if usage is not None and call.deployment is not None:
            call.cost_usd = self.catalog.cost(call.deployment, usage)
        headers = call.response_headers
        self._describe_model(call)
        headers["x-llmrelay-overhead-ms"] = f"{max(call.latency_ms - call.upstream_ms, 0):.3f}"
        if call.cost_usd is not None:
            headers["x-llmrelay-cost-usd"] = f"{call.cost_usd:.8f}"
