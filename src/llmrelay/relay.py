"""``Relay``: the engine, usable in-process (this module) or behind the HTTP server (``server/``).

Both call the same pipeline: ``Relay.handle(call)``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from .cache import CacheStage
from .catalog import Catalog
from .config import Settings, with_simulator_port
from .errors import AuthenticationError, ConfigError, InvalidRequestError, UpstreamTimeout
from .guardrails.input import GuardInput
from .guardrails.output import GuardOutput
from .jobs.service import JobService
from .keys.budget import BudgetStage
from .keys.service import KeyService, check_model
from .limits import LimitsRuntime, LimitStage, build_limits
from .observability.calllog import CallLog
from .observability.metrics import Metrics
from .observability.recorder import Recorder, Sink
from .pipeline import Call, Handler, Result, Stage, compose
from .providers import openai_format
from .providers.base import HttpClient, HTTPProvider
from .providers.registry import build_providers
from .reliability.breaker import Breakers, BreakerSettings, build_breakers
from .reliability.executor import Executor
from .routing.stage import RouteStage
from .tokens import count_prompt_off_loop
from .types import ChatRequest, ChatResponse, Chunk

log = logging.getLogger(__name__)

# None: nothing for it to do with this config. A factory may be async (it reads a store).
StageFactory = Callable[["Relay"], Stage | None | Awaitable[Stage | None]]
_Closable = TypeVar("_Closable", bound=Any)  # a stage with ``async def aclose()``


async def _ready(stage: CacheStage) -> CacheStage:
    """The cache once its semantic index can answer: served before, a paraphrase would miss."""
    await stage.ready()
    return stage


STAGES: dict[str, StageFactory] = {
    "record": Recorder.from_relay,
    "route": RouteStage.from_relay,
    "limit": LimitStage.from_relay,
    "budget": BudgetStage.from_relay,
    "guard_input": GuardInput.from_relay,
    "cache": lambda relay: _ready(relay.owned(CacheStage.from_relay(relay))),
    "guard_output": GuardOutput.from_relay,
    "execute": lambda relay: Executor(
        relay.catalog,
        relay.providers,
        relay.settings.execute,
        relay.breakers,
        gates=relay.limits.gates if relay.limits else None,
    ),
}


class Relay:
    """The llmrelay pipeline in-process.

    >>> async with Relay() as relay:                      # the embedded default: simulated models
    ...     r = await relay.complete(model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    """

    def __init__(self, config: Settings | str | Path | Mapping[str, Any] | None = None) -> None:
        if isinstance(config, Settings):
            self.settings = config
        elif isinstance(config, Mapping):
            self.settings = Settings.from_dict(dict(config))
        else:
            self.settings = Settings.load(config)
        self.catalog = Catalog(self.settings)
        self.http = HttpClient(connect_timeout_s=self.settings.execute.connect_timeout_s)
        self.providers: dict[str, HTTPProvider] = {}
        self.breakers: Breakers = build_breakers(
            BreakerSettings(**self.settings.breaker.model_dump()), self.settings.redis_url
        )
        self._handler: Handler | None = None
        self._simulator: Any = None
        self.calllog: CallLog | None = None
        self.metrics: Metrics | None = None
        self.tracer: Any = None  # observability.tracing.Tracer when traces are configured
        self.limits: LimitsRuntime | None = None  # rate limits and queues, when any can apply
        self.keys = KeyService(self.settings)  # virtual keys and budget spend (docs/keys.md)
        self.jobs = JobService(self)  # async jobs and their queue, opened on first use (docs/jobs.md)
        self.sinks: list[Sink] = []  # what every finished call's record is handed to
        self._start_lock = asyncio.Lock()  # the first calls may arrive together: start once
        self._closers: list[Callable[[], Awaitable[None]]] = []  # of stages holding resources

    async def start(self) -> Relay:
        """Start the embedded simulator if the config uses it, then build the pipeline once."""
        async with self._start_lock:
            if self._handler is None:
                try:
                    await self._start()
                except BaseException:  # e.g. a stage's config error: stop what did start
                    await self.aclose()
                    raise
        return self

    async def _start(self) -> None:
        if self.settings.simulator.enabled and any(p.simulated for p in self.settings.providers.values()):
            from .simulator import SimulatorServer, SimulatorSettings

            ref = self.settings.simulator
            if ref.settings is not None:
                try:
                    sim_settings = SimulatorSettings.model_validate(ref.settings)
                except ValidationError as exc:
                    raise ConfigError(f"simulator.settings: {exc}") from None
            else:
                sim_settings = SimulatorSettings.load(ref.config) if ref.config else SimulatorSettings()
            self._simulator = SimulatorServer(
                sim_settings.model_copy(update={"host": "127.0.0.1", "port": 0})
            )
            port = await self._simulator.start()
            self.settings = with_simulator_port(self.settings, port)
            self.catalog = Catalog(self.settings)
        self.providers = build_providers(self.settings, self.http)
        self.breakers.track(d.key for entry in self.catalog for d in entry.deployments)
        await self.breakers.start()
        await self._start_calllog()
        await self.keys.start()
        self._start_metrics()
        self._start_tracing()
        self._start_limits()
        stages = [await self._stage(name) for name in self.settings.pipeline]
        self._handler = compose([stage for stage in stages if stage is not None])

    async def _start_calllog(self) -> None:
        cfg = self.settings.calllog
        if not cfg.enabled:
            return
        directory = Path(cfg.directory).expanduser()
        self.calllog = CallLog(
            cfg.store,
            directory,
            batch_size=cfg.batch_size,
            flush_interval_s=cfg.flush_interval_s,
            retention_s=cfg.retention_days * 86_400 if cfg.retention_days else None,
            writer_cpus=cfg.writer_cpus,
        )
        await self.calllog.start()
        self.sinks.append(self.calllog.submit)

    def _start_metrics(self) -> None:
        if self.settings.metrics:
            calllog = self.calllog
            self.metrics = Metrics(
                breakers=self.breakers,
                queue_depth=(lambda: calllog.queue_depth) if calllog else None,
                calllog_rejected=(lambda: calllog.rejected) if calllog else None,
            )
            self.sinks.append(self.metrics.observe)
            self.jobs.register(self.metrics.registry)

    def _start_tracing(self) -> None:
        traces = self.settings.traces
        if traces.otlp_endpoint:
            from .observability.tracing import Tracer

            self.tracer = Tracer(
                traces.otlp_endpoint,
                service_name=traces.service_name,
                headers=traces.headers,
                provider_kinds={name: p.kind for name, p in self.settings.providers.items()},
            )
            self.sinks.append(self.tracer.observe)

    def _start_limits(self) -> None:
        self.limits = build_limits(self.settings)
        if self.limits is not None:
            self._closers.append(self.limits.aclose)
            if self.metrics is not None:
                self.limits.register(self.metrics.registry)

    def owned(self, stage: _Closable) -> _Closable:
        """``stage``, closed (``await stage.aclose()``) when this relay closes."""
        self._closers.append(stage.aclose)
        return stage

    async def _stage(self, name: str) -> Stage | None:
        factory = STAGES.get(name)
        if factory is None:
            raise ConfigError(f"Unknown pipeline stage {name!r}; known stages: {', '.join(STAGES)}")
        stage = factory(self)
        return await stage if inspect.isawaitable(stage) else stage

    async def aclose(self) -> None:
        await self.jobs.aclose()  # its workers first: they call the pipeline
        while self._closers:
            await self._closers.pop()()
        if self.calllog is not None:
            await self.calllog.aclose()  # drains what the calls left (they are all over by now)
            self.calllog = None
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)  # flushes the last spans; it blocks
            self.tracer = None
        self.sinks.clear()
        await self.keys.aclose()
        await self.http.close()
        await self.breakers.aclose()
        if self._simulator is not None:
            await self._simulator.stop()
            self._simulator = None
        self._handler = None

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def count_tokens(self, request: ChatRequest) -> int:
        """Input tokens of ``request`` on its model (on a route, its frontier tier's model): the
        upstream's own count where it has one (Anthropic's count_tokens), else llmrelay's
        tokenizer (messages and tool definitions, as usage is estimated for an upstream that
        reports none). Not a call: nothing is recorded, limited or billed."""
        await self.start()
        deployment = self.catalog.get(self._counted_model(request.model)).deployments[0]
        execute = self.settings.execute
        try:
            async with asyncio.timeout(min(execute.attempt_timeout_s, execute.timeout_s)):
                counted = await self.providers[deployment.provider_name].count_tokens(request, deployment)
        except TimeoutError:
            raise UpstreamTimeout(f"{deployment.provider_name} timed out counting tokens") from None
        return counted if counted is not None else await count_prompt_off_loop(request, deployment.upstream)

    def _counted_model(self, name: str) -> str:
        for route in self.settings.routes:
            if name in route.names:
                return next(t.model for t in route.tiers if t.name == route.frontier_tier)
        return name

    async def handle(self, call: Call) -> Result:
        """Run one call through the pipeline (the server's entry point)."""
        if self._handler is None:
            await self.start()
        assert self._handler is not None
        return await self._handler(call)

    async def _call(self, request: ChatRequest, api_key: str | None) -> Call:
        """A library call, under the virtual key ``api_key`` when one is given (its models, limits
        and budgets apply, and its records are its own)."""
        call = Call(request)
        if api_key is not None:
            await self.start()
            call.principal = api_key
            call.key = await self.keys.resolve(api_key)
            if call.key is None:
                raise AuthenticationError("Incorrect API key provided: no active key has this secret.")
            check_model(call.key, request.model)
        return call

    async def complete(
        self,
        request: ChatRequest | Mapping[str, Any] | None = None,
        *,
        api_key: str | None = None,
        **fields: Any,
    ) -> ChatResponse:
        call = await self._call(_request(request, fields, stream=False), api_key)
        result = await self.handle(call)
        assert isinstance(result, ChatResponse)
        return result

    async def stream(
        self,
        request: ChatRequest | Mapping[str, Any] | None = None,
        *,
        api_key: str | None = None,
        **fields: Any,
    ) -> AsyncIterator[Chunk]:
        call = await self._call(_request(request, fields, stream=True), api_key)
        result = await self.handle(call)
        assert not isinstance(result, ChatResponse)
        async for chunk in result:
            yield chunk


def _request(
    request: ChatRequest | Mapping[str, Any] | None, fields: Mapping[str, Any], *, stream: bool
) -> ChatRequest:
    if isinstance(request, ChatRequest):
        if fields:
            raise InvalidRequestError("Pass either a ChatRequest or keyword fields, not both.")
        return request.model_copy(update={"stream": stream})
    return openai_format.parse_request({**(request or {}), **fields, "stream": stream})


class SyncRelay:
    """A thin synchronous facade: the same ``Relay`` on a private event-loop thread."""

    def __init__(self, config: Settings | str | Path | Mapping[str, Any] | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llmrelay-sync", daemon=True)
        self._thread.start()
        self.relay = Relay(config)
        self._run(self.relay.start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def complete(self, request: ChatRequest | Mapping[str, Any] | None = None, **fields: Any) -> ChatResponse:
        return self._run(self.relay.complete(request, **fields))

    def stream(
        self, request: ChatRequest | Mapping[str, Any] | None = None, **fields: Any
    ) -> Iterator[Chunk]:
        chunks = self.relay.stream(request, **fields)
        try:
            while True:
                try:
                    yield self._run(anext(chunks))
                except StopAsyncIteration:
                    return
        finally:
            self._run(chunks.aclose())

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self.relay.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> SyncRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
