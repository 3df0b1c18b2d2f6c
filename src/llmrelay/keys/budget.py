"""The ``budget`` stage: spend budgets in USD per key and per end user, per UTC day and month.

Before the call, its worst case is priced with the catalog (the prompt's tokens counted, plus
``max_tokens`` or ``budgets.default_max_tokens``, at the dearest model of its fallback chain) and
reserved on every counter the call is charged to, atomically (``spend.py``); a counter that would
pass its limit refuses the call with a 429 ``budget_exceeded`` in the route's format, Retry-After
at the period's reset. After the call (a stream: when it ends) the reservation is replaced by the
actual cost, computed like the record's ``cost_usd`` (cache hits cost nothing; an error costs the
tokens it had already used).

End users are the request's ``user``, counted within each key (a user id is chosen by the key's
holder, so two teams' "alice" are two people). The stage is left out of the chain when no budget
can apply: no master key (so no virtual key can be presented), no user budget configured, and no
budgeted key in the store at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..config import BudgetSettings
from ..errors import BudgetExceeded, GatewayError
from ..pipeline import Call, Handler, Result, watch_stream
from ..tokens import count_messages, token_upper_bound
from ..types import ChatResponse, Usage
from .spend import Charge, Ledger, from_pico, periods, reset_in_s, to_pico

if TYPE_CHECKING:
    from ..relay import Relay
    from .model import VirtualKey

_NAMES = {"d": "daily", "m": "monthly"}
_KNOWN_MAX = 10_000


class BudgetStage:
    def __init__(self, catalog: Catalog, ledger: Ledger, settings: BudgetSettings) -> None:
        self.catalog = catalog
        self.ledger = ledger
        self.settings = settings
        self._user_limits = (settings.user_daily_usd, settings.user_monthly_usd)
        self._users = any(v is not None for v in self._user_limits)
        self._periods = periods()
        self._day_ends = 0.0
        # The charges of a (key, user) today: made once, not per call.
        self._known: dict[tuple[object, str | None], list[Charge]] = {}

    @classmethod
    async def from_relay(cls, relay: Relay) -> BudgetStage | None:
        keys = relay.keys
        settings = relay.settings
        needed = (
            settings.server.master_key is not None
            or settings.budgets.user_daily_usd is not None
            or settings.budgets.user_monthly_usd is not None
            or await keys.any_budget()
        )
        if not needed:
            return None
        return cls(relay.catalog, await keys.start_ledger(), settings.budgets)

    async def __call__(self, call: Call, next: Handler) -> Result:
        charges = self._charges(call)
        if not charges:
            return await next(call)
        # First with a bound on the prompt's tokens (its UTF-8 bytes: no tokenizer, which costs more
        # than the rest of the stage); only a call that does not fit is counted exactly and tried
        # again, so a refusal is always on the exact estimate.
        estimate = to_pico(self._estimate(call, exact=False))
        refused = await self.ledger.reserve(charges, estimate)
        if refused is not None:
            estimate = to_pico(self._estimate(call, exact=True))
            refused = await self.ledger.reserve(charges, estimate)
            if refused is not None:
                raise self._refusal(*refused, estimate)
        try:
            result = await next(call)
        except GatewayError as error:
            await self._settle(call, charges, estimate, error.usage)
            raise
        except BaseException:
            await self._settle(call, charges, estimate, None)
            raise
        if isinstance(result, ChatResponse):
            await self._settle(call, charges, estimate, result.usage)
            return result
        return watch_stream(
            result,
            lambda usage, failure: self._settle(
                call,
                charges,
                estimate,
                usage or (failure.usage if isinstance(failure, GatewayError) else None),
            ),
        )

    def _charges(self, call: Call) -> list[Charge]:
        key = call.key
        user = call.request.user
        if (key is None or key.admin) and not (self._users and user):
            return []  # nothing to charge: skip the clock and the rest
        now = time.time()
        if now >= self._day_ends:  # the UTC day's periods, formatted once a day
            self._periods = periods()
            self._day_ends = now + reset_in_s(self._periods[0])
            self._known.clear()
        known = (key.id, key.budget_daily_usd, key.budget_monthly_usd) if key is not None else None, user
        charges = self._known.get(known)
        if charges is None:
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()
            charges = self._known[known] = self._new_charges(key, user)
        return charges

    def _new_charges(self, key: VirtualKey | None, user: str | None) -> list[Charge]:
        day, month = self._periods
        charges: list[Charge] = []
        if key is not None and not key.admin:
            limits = (key.budget_daily_usd, key.budget_monthly_usd)
            # Counted whether or not a budget is set, so one set later starts from the true spend.
            for period, limit in zip((day, month), limits, strict=True):
                label = f"the {_NAMES[period[0]]} budget of key {key.id}"
                charges.append(Charge(f"key:{key.id}", period, _limit(limit), label))
        if self._users and user:
            scope = f"user:{key.id if key is not None else '-'}:{user}"
            for period, limit in zip((day, month), self._user_limits, strict=True):
                if limit is not None:
                    label = f"the {_NAMES[period[0]]} budget of end user {user!r}"
                    charges.append(Charge(scope, period, _limit(limit), label))
        return charges

    def _estimate(self, call: Call, *, exact: bool) -> Decimal:
        """The most this call can cost: prompt + output cap, at the dearest model it may end on.
        ``exact``: the prompt counted by the tokenizer; else a bound no tokenizer exceeds."""
        request = call.request
        output = request.output_limit or self.settings.default_max_tokens
        worst = Decimal(0)
        prompt: int | None = None if exact else token_upper_bound(request.messages)
        for entry in self.catalog.chain(request.model):
            for deployment in entry.deployments:
                if prompt is None:  # counted once, with the first upstream's tokenizer
                    prompt = count_messages(list(request.messages), deployment.upstream)
                cost = self.catalog.cost(deployment, Usage(prompt_tokens=prompt, completion_tokens=output))
                if cost is not None and cost > worst:
                    worst = cost
        return worst

    def _refusal(self, charge: Charge, spent: int, estimate: int) -> BudgetExceeded:
        limit = from_pico(charge.limit or 0)
        return BudgetExceeded(
            f"Budget exceeded: {charge.label} is ${limit} (UTC {charge.period[2:]}); ${from_pico(spent)} is "
            f"spent or reserved, and this request may cost up to ${from_pico(estimate)} (its prompt plus "
            "max_tokens). Lower max_tokens, or wait for the budget to reset.",
            retry_after=reset_in_s(charge.period),
        )

    async def _settle(
        self, call: Call, charges: Sequence[Charge], estimate: int, usage: Usage | None
    ) -> None:
        cost = Decimal(0)
        if usage is not None and call.deployment is not None and call.status != "cache_hit":
            cost = self.catalog.cost(call.deployment, usage) or Decimal(0)
        await self.ledger.settle(charges, estimate, to_pico(cost))


def _limit(usd: Decimal | None) -> int | None:
    return None if usd is None else to_pico(usd)
