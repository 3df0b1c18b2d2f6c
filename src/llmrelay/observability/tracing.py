"""OpenTelemetry traces: one span per call and one child span per upstream attempt, built after
the fact from the ``CallRecord`` and exported over OTLP/HTTP (Langfuse, Jaeger, Phoenix, an
OpenTelemetry Collector...).

A sink like ``Metrics``: ``observe(record)`` runs once per finished call on the request path. It
only builds the finished spans, with the record's own start and end times, and hands them to the
SDK's ``BatchSpanProcessor``, which queues them for its background thread: serialising and sending
happen there, never on the request path. ``shutdown()`` flushes what is queued.

Why not ``tracer.start_span(...)`` / ``span.end(...)``: for spans that are over before they are
made, the live-span machinery is pure cost (a sampler decision, a lock and a type check per
attribute, a ``Span`` per span that is then copied into a ``ReadableSpan``): ~30 us a span, ~75 us a
call with its attempts. ``observe`` makes the ``ReadableSpan`` that the processor and the
exporters consume directly, with ids from the provider's id generator and the provider's resource:
~5-10 us a call. The attributes are plain values of our own making (no validation needed), and
every span is sampled (a trace per call; no sampler is consulted).

Each ``Tracer`` owns a private ``TracerProvider`` (resource, id generator, the processor, flushing
at exit): the global one belongs to the application (an app embedding llmrelay may have its own),
and two gateways (or two tests) in one process must not share exporters.

Attributes follow the OpenTelemetry GenAI semantic conventions where one fits (``gen_ai.*``,
``user.id``, ``error.type``, ``http.response.status_code``); the rest are ``llmrelay.*``.

Needs the ``otel`` extra: ``pip install 'llmrelay[otel]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import ConfigError
from .records import AttemptRecord, CallRecord

try:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import NoOpTracer, SpanContext, SpanKind, Status, StatusCode, TraceFlags
except ImportError:  # without the otel extra: Tracer() says what to install
    _OTEL_MISSING = True
else:
    _OTEL_MISSING = False
    _SAMPLED = TraceFlags(TraceFlags.SAMPLED)
    _UNSET = Status(StatusCode.UNSET)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter


INSTALL_HINT = "pip install 'llmrelay[otel]'"
EXTRA_KEYS = ("route", "cache")  # stage-owned entries of CallRecord.extra copied onto the call span

_PLAIN = (str, bool, int, float)


class Tracer:
    """Exports each observed call as OpenTelemetry spans.

    ``endpoint``: the OTLP/HTTP traces URL, e.g. ``http://127.0.0.1:4318/v1/traces``; ``None`` (and
    no ``exporter``) leaves it to the standard ``OTEL_EXPORTER_OTLP_*`` environment variables.
    ``headers``: sent with each OTLP export (e.g. ``Authorization`` for Langfuse).
    ``exporter``: any ``SpanExporter`` instead of OTLP/HTTP (tests pass an ``InMemorySpanExporter``).
    ``provider_kinds``: provider name -> kind (``openai``, ``anthropic``) for ``gen_ai.system``;
    a provider not in it is named as it is.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        service_name: str = "llmrelay",
        exporter: SpanExporter | None = None,
        headers: Mapping[str, str] | None = None,
        provider_kinds: Mapping[str, str] | None = None,
    ) -> None:
        if _OTEL_MISSING:
            raise ConfigError(f"Tracing needs the OpenTelemetry SDK and its OTLP exporter: {INSTALL_HINT}")
        if exporter is not None and endpoint is not None:
            raise ConfigError("Tracer takes an OTLP `endpoint` or an `exporter`, not both.")
        if exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise ConfigError(f"Tracing over OTLP/HTTP needs its exporter: {INSTALL_HINT}") from None
            exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers) if headers else None)
        self.exporter = exporter
        self.provider_kinds = dict(provider_kinds or {})
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._processor = BatchSpanProcessor(exporter)
        self.provider.add_span_processor(self._processor)  # the provider flushes and shuts it down
        self._scope = InstrumentationScope("llmrelay", _version())
        self._ids = self.provider.id_generator
        self._shut = False
        # OTEL_SDK_DISABLED=true: the provider hands out no-op tracers; do nothing, as they would.
        self._off = isinstance(self.provider.get_tracer("llmrelay"), NoOpTracer)

    def observe(self, record: CallRecord) -> None:
        if self._off:
            return
        ids = self._ids
        resource = self.provider.resource  # read each time: the SDK updates it after a fork
        start = _ns(record.started_at)
        end = max(_ns(record.ended_at), start)
        call = SpanContext(ids.generate_trace_id(), ids.generate_span_id(), False, _SAMPLED)
        status = _UNSET
        if record.status.startswith("error"):
            status = Status(StatusCode.ERROR, record.error_message or record.status)
        spans = [
            ReadableSpan(
                name=f"chat {record.requested_model}",
                context=call,
                kind=SpanKind.CLIENT,
                resource=resource,
                attributes=self._call_attributes(record),
                status=status,
                start_time=start,
                end_time=end,
                instrumentation_scope=self._scope,
            )
        ]
        # The record keeps each attempt's duration and the wait before it, not when it began: the
        # attempts are laid out back to back from the call's start (start = the previous attempt's
        # end + this one's wait, duration = its latency), clamped to the call's span. Approximate:
        # the gateway's own work before the first attempt (auth, routing, a cache lookup) puts the
        # real attempts a little later than drawn.
        cursor = start
        for attempt in record.attempts:
            a_start = min(cursor + int(attempt.waited_ms * 1e6), end)
            cursor = min(a_start + int(attempt.latency_ms * 1e6), end)
            failed = attempt.outcome != "success"
            spans.append(
                ReadableSpan(
                    name=f"attempt {attempt.deployment}",
                    context=SpanContext(call.trace_id, ids.generate_span_id(), False, _SAMPLED),
                    parent=call,
                    kind=SpanKind.CLIENT,
                    resource=resource,
                    attributes=_attempt_attributes(attempt, failed),
                    status=Status(StatusCode.ERROR, attempt.outcome) if failed else _UNSET,
                    start_time=a_start,
                    end_time=cursor,
                    instrumentation_scope=self._scope,
                )
            )
        on_end = self._processor.on_end
        for span in reversed(spans):  # children first, as live spans would end
            on_end(span)

    def _call_attributes(self, r: CallRecord) -> dict[str, Any]:
        a: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": r.requested_model,
            "gen_ai.usage.input_tokens": r.prompt_tokens,
            "gen_ai.usage.output_tokens": r.completion_tokens,
            "llmrelay.request_id": r.id,
            "llmrelay.status": r.status,
            "llmrelay.api_format": r.api_format,
            "llmrelay.stream": r.stream,
            "llmrelay.cost_exact": r.cost_exact,
            "llmrelay.cached_tokens": r.cached_tokens,
            "llmrelay.cache_write_tokens": r.cache_write_tokens,
            "llmrelay.reasoning_tokens": r.reasoning_tokens,
            "llmrelay.latency_ms": r.latency_ms,
            "llmrelay.upstream_ms": r.upstream_ms,
            "llmrelay.overhead_ms": r.overhead_ms,
            "llmrelay.attempts": len(r.attempts),
        }
        provider = r.provider
        if provider is None and r.attempts:  # no model answered: the last one tried
            provider = r.attempts[-1].deployment.partition("/")[0]
        if provider is not None:
            system = self.provider_kinds.get(provider, provider)
            a["gen_ai.system"] = system
            a["gen_ai.provider.name"] = system  # the newer conventions' name for gen_ai.system
            a["llmrelay.provider"] = provider
        if r.model is not None:
            a["gen_ai.response.model"] = r.model
        if r.upstream_model is not None:
            a["llmrelay.upstream_model"] = r.upstream_model
        if r.cached_tokens:
            a["gen_ai.usage.cache_read.input_tokens"] = r.cached_tokens
        if r.cache_write_tokens:
            a["gen_ai.usage.cache_creation.input_tokens"] = r.cache_write_tokens
        if r.reasoning_tokens:
            a["gen_ai.usage.reasoning.output_tokens"] = r.reasoning_tokens
        if r.cost_usd is not None:
            a["llmrelay.cost_usd"] = float(r.cost_usd)
        if r.ttft_ms is not None:
            a["llmrelay.ttft_ms"] = r.ttft_ms
        if r.api_key_id is not None:
            a["llmrelay.api_key_id"] = r.api_key_id
        if r.end_user is not None:
            a["llmrelay.end_user"] = r.end_user
            a["user.id"] = r.end_user
        if r.status.startswith("error"):
            a["error.type"] = r.status.removeprefix("error:")
        if r.extra:
            for key in EXTRA_KEYS:
                value = r.extra.get(key)
                if value is not None:
                    _flatten(a, f"llmrelay.{key}", value)
        return a

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything observed so far; True if it all went out in time."""
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush what is queued, then stop the export thread. Later observe() calls are ignored."""
        if self._shut:
            return
        self._shut = self._off = True
        self.provider.shutdown()


def _attempt_attributes(attempt: AttemptRecord, failed: bool) -> dict[str, Any]:
    a: dict[str, Any] = {
        "llmrelay.deployment": attempt.deployment,
        "llmrelay.outcome": attempt.outcome,
        "llmrelay.attempt": attempt.n,
        "llmrelay.waited_ms": attempt.waited_ms,
        "llmrelay.latency_ms": attempt.latency_ms,
    }
    if attempt.status_code is not None:
        a["http.response.status_code"] = attempt.status_code
    if failed:
        a["error.type"] = attempt.outcome.removeprefix("error:")
    return a


def _ns(unix_seconds: float) -> int:
    return int(unix_seconds * 1e9)


def _flatten(out: dict[str, Any], name: str, value: Any) -> None:
    """An attribute per entry of a dict (one level deep); anything not a plain value as JSON text."""
    if isinstance(value, _PLAIN):
        out[name] = value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if v is not None:
                out[f"{name}.{k}"] = v if isinstance(v, _PLAIN) else _json(v)
    else:
        out[name] = _json(value)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _version() -> str | None:
    try:
        return version("llmrelay")
    except PackageNotFoundError:
        return None


__all__ = ["Tracer"]
