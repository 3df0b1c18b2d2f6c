"""What a forwarded batch's requests cost, on record: one call record per request (like any call,
with ``extra.batch``), priced at the provider's batch discount, and the same cost charged to the
owner key's budget counters. (A local batch's requests go through the pipeline, whose record and
budget stages do this themselves, at the synchronous price.)"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..keys.spend import Charge, periods, to_pico
from ..observability.recorder import emit
from ..observability.records import CallRecord
from ..pipeline import Call
from ..providers import openai_format
from . import output
from .forward import Outcome
from .jsonl import Line

if TYPE_CHECKING:
    from ..catalog import Deployment
    from ..keys.model import VirtualKey
    from ..relay import Relay


class Accountant:
    def __init__(self, relay: Relay, discount: float) -> None:
        self.relay = relay
        self.discount = Decimal(str(discount))

    def item(
        self,
        outcome: Outcome,
        line: Line,
        deployment: Deployment,
        key: VirtualKey | None,
        batch: dict[str, Any],
    ) -> tuple[int, str, Decimal | None]:
        """The request's (outcome code, output line, cost), its call record emitted."""
        if outcome.not_run is not None:
            text = (
                output.expired(line.custom_id)
                if outcome.not_run == "expired"
                else output.cancelled(line.custom_id)
            )
            return output.NOT_RUN, text, None
        call = Call(line.request, api_format="openai")
        call.key = key
        call.deployment = deployment
        call.model = self.relay.catalog.get(deployment.model)
        call.latency_ms = 0.0  # it ran inside the provider's batch: no latency of ours to speak of
        call.extra["batch"] = {**batch, "custom_id": line.custom_id, "discount": str(self.discount)}
        if outcome.response is not None:
            response = outcome.response
            call.usage = response.usage
            full = self.relay.catalog.cost(deployment, response.usage) if response.usage else None
            call.cost_usd = None if full is None else full * self.discount
            call.status = "success"
            text = output.answered(
                line.custom_id, openai_format.response_to_wire(response), outcome.request_id or call.id
            )
            code = output.ANSWERED
        else:
            assert outcome.error is not None
            call.error = outcome.error
            call.status = f"error:{type(outcome.error).__name__}"
            text = output.failed(line.custom_id, outcome.error, outcome.request_id or call.id)
            code = output.FAILED
        emit(self.relay.sinks, CallRecord.from_call(call))
        return code, text, call.cost_usd

    async def charge(self, key: VirtualKey | None, cost: Decimal) -> None:
        """Add the batch's cost to its key's daily and monthly spend (budgets count it)."""
        if key is None or key.admin or cost <= 0:
            return
        pico = to_pico(cost)
        day, month = periods()
        scope = f"key:{key.id}"
        ledger = self.relay.keys.ledger
        if ledger is not None:
            charges = [Charge(scope, period, None, scope) for period in (day, month)]
            await ledger.settle(charges, 0, pico)
        else:
            await self.relay.keys.store.add_spend({(scope, day): pico, (scope, month): pico})
