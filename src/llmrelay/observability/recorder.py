"""The record stage (outermost): times the whole call, accounts usage and cost, puts the request
id, cost and gateway overhead on the response, and hands one ``CallRecord`` per call to the sinks
(the call log, metrics). It never waits on I/O: sinks are synchronous and cheap."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..cache.entries import Assembler
from ..catalog import Catalog
from ..errors import GatewayError
from ..pipeline import Call, Handler, Result, Stream, watch_stream
from ..types import ChatResponse, Usage
from .records import BodyPolicy, CallRecord

if TYPE_CHECKING:
    from ..relay import Relay

log = logging.getLogger(__name__)

Sink = Callable[[CallRecord], None]


class Recorder:
    def __init__(
        self,
        catalog: Catalog,
        sinks: Sequence[Sink] = (),
        bodies: BodyPolicy = "none",
        route_bodies: Mapping[str, BodyPolicy] | None = None,
    ) -> None:
        self.catalog = catalog
        self.sinks = tuple(sinks)
        self.bodies = bodies
        self.route_bodies = dict(route_bodies or {})  # route name or alias -> its own policy

    @classmethod
    def from_relay(cls, relay: Relay) -> Recorder:
        routes = {name: r.bodies for r in relay.settings.routes if r.bodies for name in r.names}
        return cls(relay.catalog, relay.sinks, relay.settings.calllog.bodies, routes)

    async def __call__(self, call: Call, next: Handler) -> Result:
        call.response_headers["x-llmrelay-request-id"] = call.id
        try:
            result = await next(call)
        except GatewayError as error:
            self._finish(call, usage=error.usage, error=error)
            raise
        except Exception:
            self._finish(call, status="error:InternalError")  # a bug: still on record
            raise
        if isinstance(result, ChatResponse):
            self._finish(call, usage=result.usage, response=result)
            return result
        # A stream's headers leave before its cost is known. Its last attempt is still going, unless
        # the cache served it (no attempt) or a stage read it whole before returning (a guardrail).
        done = call.status == "cache_hit" or (call.attempts and call.attempts[-1].outcome == "success")
        self._describe_model(call, answering=0 if done else 1)
        return self._recorded(call, result)

    def _recorded(self, call: Call, chunks: Stream) -> Stream:
        # Kept only when the record keeps bodies: the answer the stream added up to.
        assembler = Assembler() if self._bodies(call) != "none" else None

        def ended(usage: Usage | None, failure: BaseException | None) -> None:
            if failure is None:
                response = assembler.response() if assembler is not None else None
                self._finish(call, usage=usage, response=response)
            elif isinstance(failure, GatewayError):
                self._finish(call, usage=usage or failure.usage, error=failure)
            else:  # the client went away (GeneratorExit/CancelledError): still a call, and it cost money
                self._finish(call, usage=usage, status="error:ClientDisconnected")

        return watch_stream(chunks, ended, each=assembler.add if assembler is not None else None)

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
        response: ChatResponse | None = None,
    ) -> None:
        call.latency_ms = call.elapsed_ms()
        call.usage = usage
        call.usage_estimated = usage is not None and usage.estimated
        call.error = error
        cache_hit = call.status == "cache_hit"  # set by the cache stage: no provider was paid
        if status is not None:
            call.status = status
        elif error is not None and call.status != "filtered":  # a guardrail's block stays "filtered"
            call.status = f"error:{type(error).__name__}"
        elif call.status == "pending":  # else a status a stage set (cache_hit, filtered) stands
            call.status = "success"
        if cache_hit:
            call.cost_usd = Decimal(0)
        elif usage is not None and call.deployment is not None:
            call.cost_usd = self.catalog.cost(call.deployment, usage)
        headers = call.response_headers
        self._describe_model(call)
        headers["x-llmrelay-overhead-ms"] = f"{max(call.latency_ms - call.upstream_ms, 0):.3f}"
        if call.cost_usd is not None:
            headers["x-llmrelay-cost-usd"] = f"{call.cost_usd:.8f}"
        if self.sinks:
            self._emit(call, response)

    def _bodies(self, call: Call) -> BodyPolicy:
        return self.route_bodies.get(call.requested_model, self.bodies)

    def _emit(self, call: Call, response: ChatResponse | None) -> None:
        bodies = self._bodies(call)
        body: Any = None
        if response is not None and bodies != "none":
            body = response.model_dump(exclude_none=True)
        emit(self.sinks, CallRecord.from_call(call, bodies=bodies, response_body=body))


def emit(sinks: Sequence[Sink], record: CallRecord) -> None:
    for sink in sinks:
        try:
            sink(record)
        except Exception:  # a sink must never fail the call it records
            log.exception("call record sink %r failed for %s", sink, record.id)
