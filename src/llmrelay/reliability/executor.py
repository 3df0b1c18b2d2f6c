"""The execute stage: carries out the attempt plan (policy.py) against the providers, under
per-attempt timeouts and the request's total deadline, feeding the circuit breakers.

Streams are primed before they are returned: chunks are pulled until the first one with content,
a tool call, a finish reason or usage. Up to then nothing has reached the client, so a failure is
just another failed attempt and the plan moves on; after it, a failure (a stall, a cut) is raised
from the stream and the server ends it with an explicit error event.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..catalog import Catalog, Deployment, ModelEntry
from ..config import ExecuteSettings
from ..errors import (
    GatewayError,
    InvalidRequestError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..pipeline import Attempt, Call, Handler, Result, Stream
from ..providers.base import HTTPProvider
from ..tokens import count_messages_off_loop
from ..types import Chunk
from .breaker import Breakers
from .policy import Try, Wait, attempt_plan, may_exceed, retryable

if TYPE_CHECKING:
    from ..limits.queue import Gates, Ticket

TIMEOUT_HEADER = "x-llmrelay-timeout"


class CircuitOpen(UpstreamUnavailable):
    """The breaker refused the deployment between the pick and the send (a half-open probe race)."""


_USABLE = frozenset({"closed", "half_open"})
_USABLE_COOLING = _USABLE | {"cooldown"}


class Balancer:
    """Picks a deployment of a model among those whose breaker is not open or cooling down."""

    def __init__(self, breakers: Breakers, rng: random.Random, gates: Gates | None = None) -> None:
        self.breakers = breakers
        self.rng = rng
        self.in_flight: Counter[str] = Counter()
        self.gates = gates

    def pick(self, entry: ModelEntry, avoid: frozenset[str], cooling: bool = False) -> Deployment | None:
        usable = _USABLE_COOLING if cooling else _USABLE
        candidates = [
            d for d in entry.deployments if d.key not in avoid and self.breakers.state(d.key) in usable
        ]
        if len(candidates) > 1 and self.gates is not None:  # one at its limits queues; another may not
            candidates = [d for d in candidates if self.gates.has_room(d.key)] or candidates
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        if entry.settings.balance == "least_in_flight":
            return min(candidates, key=lambda d: (self.in_flight[d.key] / d.weight, self.rng.random()))
        return self.rng.choices(candidates, weights=[d.weight for d in candidates])[0]


class Executor:
    def __init__(
        self,
        catalog: Catalog,
        providers: Mapping[str, HTTPProvider],
        settings: ExecuteSettings,
        breakers: Breakers,
        rng: random.Random | None = None,
        gates: Gates | None = None,  # deployments' rate and concurrency limits (limits/queue.py)
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.settings = settings
        self.breakers = breakers
        self.rng = rng or random.Random()
        self.balancer = Balancer(breakers, self.rng, gates)
        self.gates = gates

    async def __call__(self, call: Call, next: Handler) -> Result:
        chain = self.catalog.chain(call.request.model)
        deadline = call.started + self._timeout_s(call)
        tokenizer = chain[0].deployments[0].upstream
        # The prompt is counted only when some model's context window could be exceeded, then up
        # front (a long one on a worker thread): the plan below is synchronous.
        counted = 0
        if any(may_exceed(call.request, entry.settings.context_window) for entry in chain):
            counted = await count_messages_off_loop(call.request.messages, tokenizer)
        plan = attempt_plan(
            chain,
            call.request,
            self.settings,
            self.balancer.pick,
            prompt_tokens=lambda: counted,  # asked only where may_exceed said so
            cooldown=self.breakers.cooldown,
            rng=self.rng,
        )
        step = plan.send(None)
        waited = 0.0
        while True:
            if isinstance(step, Wait):
                if time.perf_counter() + step.seconds >= deadline:
                    step = plan.send(
                        UpstreamTimeout(f"waiting {step.seconds:g}s more would pass the deadline")
                    )
                    continue  # (the plan raises: there is no step after this)
                await asyncio.sleep(step.seconds)
                waited += step.seconds
                step = plan.send(None)
                continue
            assert isinstance(step, Try)
            try:
                result = await self._attempt(call, step.deployment, deadline, waited)
            except GatewayError as error:
                waited = 0.0
                if time.perf_counter() >= deadline:
                    plan.close()
                    raise self._deadline_error(call) from error
                step = plan.send(error)  # raises when the plan is over
                continue
            plan.close()
            return result

    def _timeout_s(self, call: Call) -> float:
        raw = call.headers.get(TIMEOUT_HEADER)
        if raw is None:
            return self.settings.timeout_s
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value < 86_400:
            raise InvalidRequestError(
                f"The {TIMEOUT_HEADER} header must be a number of seconds above 0.", param=TIMEOUT_HEADER
            )
        return value

    def _deadline_error(self, call: Call) -> UpstreamTimeout:
        tried = "; ".join(f"{a.deployment}: {a.outcome}" for a in call.attempts) or "no attempt finished"
        return UpstreamTimeout(f"The request's deadline passed before any model answered ({tried}).")

    async def _attempt(self, call: Call, deployment: Deployment, deadline: float, waited: float) -> Result:
        # A deployment still cooling down is only ever picked when nothing else is left (policy.py).
        if self.breakers.state(deployment.key) != "cooldown" and not self.breakers.allow(deployment.key):
            raise CircuitOpen(f"{deployment.key}: circuit open", provider=deployment.provider_name)
        # At its limits, the deployment makes the request wait its turn (by priority) here.
        ticket = await self.gates.enter(call, deployment, deadline) if self.gates else None
        if ticket is not None:
            waited += ticket.waited_s
        provider = self.providers[deployment.provider_name]
        started = time.perf_counter()
        response = None
        self.balancer.in_flight[deployment.key] += 1
        streaming = False
        try:
            if call.stream:
                limit = min(self.settings.first_token_timeout_s, deadline - started)
                async with asyncio.timeout(max(limit, 0)):
                    chunks = await provider.stream(call.request, deployment)
                    primed = await _prime(chunks)
                streaming = True
                self._answered(call, deployment)
                return self._relay(call, deployment, chunks, primed, deadline, started, waited, ticket)
            limit = min(self.settings.attempt_timeout_s, deadline - started)
            async with asyncio.timeout(max(limit, 0)):
                response = await provider.complete(call.request, deployment)
        except TimeoutError:
            what = "first token" if call.stream else "answer"
            error = UpstreamTimeout(
                f"{deployment.key}: no {what} within {limit:g}s", provider=deployment.provider_name
            )
            self._failed(call, deployment, error, started, waited)
            raise error from None
        except GatewayError as error:
            self._failed(call, deployment, error, started, waited)
            raise
        finally:
            call.upstream_ms += (time.perf_counter() - started) * 1000
            if not streaming:
                self.balancer.in_flight[deployment.key] -= 1
                if ticket is not None:
                    ticket.release(response.usage if response is not None else None)
        self._answered(call, deployment)
        self._succeeded(call, deployment, started, waited)
        return response

    async def _relay(
        self,
        call: Call,
        deployment: Deployment,
        chunks: Stream,
        primed: list[Chunk],
        deadline: float,
        started: float,
        waited: float,
        ticket: Ticket | None,
    ) -> Stream:
        """The primed chunks, then the rest, each within the stall timeout and the deadline."""
        usage = None
        try:
            for chunk in primed:
                self._first_token(call, chunk)
                usage = chunk.usage or usage
                yield chunk
            while True:
                wait_start = time.perf_counter()
                limit = min(self.settings.stall_timeout_s, deadline - wait_start)
                try:
                    async with asyncio.timeout(max(limit, 0)):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"{deployment.key}: the stream stalled (no chunk for {limit:g}s)",
                        provider=deployment.provider_name,
                    ) from None
                finally:
                    call.upstream_ms += (time.perf_counter() - wait_start) * 1000
                self._first_token(call, chunk)
                usage = chunk.usage or usage
                yield chunk
        except GatewayError as error:
            self._failed(call, deployment, error, started, waited)
            raise
        except BaseException:
            self.breakers.record(deployment.key, True)  # the client left: not the deployment's fault
            raise
        finally:
            self.balancer.in_flight[deployment.key] -= 1
            if ticket is not None:
                ticket.release(usage)
            await chunks.aclose()
        self._succeeded(call, deployment, started, waited)

    @staticmethod
    def _first_token(call: Call, chunk: Chunk) -> None:
        if call.ttft_ms is None and any(c.delta.has_output for c in chunk.choices):
            call.ttft_ms = call.elapsed_ms()

    def _answered(self, call: Call, deployment: Deployment) -> None:
        call.deployment = deployment
        call.model = self.catalog.get(deployment.model)  # a fallback may have answered

    def _succeeded(self, call: Call, deployment: Deployment, started: float, waited: float) -> None:
        self.breakers.record(deployment.key, True)
        call.attempts.append(_attempt(deployment, "success", started, waited, 200))

    def _failed(
        self, call: Call, deployment: Deployment, error: GatewayError, started: float, waited: float
    ) -> None:
        if retryable(error) and not isinstance(error, UpstreamRateLimited | CircuitOpen):
            self.breakers.record(deployment.key, False)  # a 429 is a cooldown (policy.py), not ill health
        status = getattr(error, "status_code", None)
        call.attempts.append(_attempt(deployment, f"error:{type(error).__name__}", started, waited, status))


def _attempt(
    deployment: Deployment, outcome: str, started: float, waited: float, status: int | None
) -> Attempt:
    return Attempt(
        model=deployment.model,
        deployment=deployment.key,
        outcome=outcome,
        latency_ms=(time.perf_counter() - started) * 1000,
        status_code=status,
        waited_ms=waited * 1000,
    )


async def _prime(chunks: Stream) -> list[Chunk]:
    """Chunks up to and including the first that commits the answer (any output, a finish,
    usage); an empty list if the stream ends first."""
    primed: list[Chunk] = []
    async for chunk in chunks:
        primed.append(chunk)
        if chunk.usage is not None or any(c.delta.has_output or c.finish_reason for c in chunk.choices):
            break
    return primed
