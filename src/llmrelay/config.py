"""YAML config (with ``${VAR}`` / ``${VAR:-default}`` interpolation) -> typed, immutable settings.

Built once at start-up and passed down explicitly; nothing reads the environment after that.
With no file, ``Settings.embedded()`` gives the zero-setup default: simulated models served by an
embedded simulator, plus the real OpenAI/Anthropic models whose API key is set.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .batch.settings import BatchSettings
from .errors import ConfigError, first_problem
from .routing.settings import RouteSettings, check_routes

ProviderKind = Literal["openai", "anthropic"]
Tier = Literal["frontier", "mid", "small", "open"]
Capability = Literal["tools", "json", "json_schema", "vision", "streaming"]

ALL_CAPABILITIES: tuple[Capability, ...] = ("tools", "json", "json_schema", "vision", "streaming")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SettingsT = TypeVar("_SettingsT", bound=_Settings)


class ProviderSettings(_Settings):
    """An endpoint: one wire dialect at one base URL with one credential."""

    kind: ProviderKind
    base_url: str
    api_key_env: str | None = None  # env var holding the key; None = no key needed (local servers)
    api_key: str | None = None  # a literal key (prefer api_key_env; interpolation works here too)
    headers: dict[str, str] = {}
    simulated: bool = False  # served by the embedded simulator: labelled as such everywhere


class Price(_Settings):
    """USD per million tokens; overrides the price catalog for one model."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    # Anthropic's 1-hour cache writes; default: cache_write.
    cache_write_1h: float | None = Field(default=None, ge=0)


def _off(value: Any) -> Any:
    return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class PromptCachingSettings(_Settings):
    """The providers' prompt caching (docs/prompt-caching.md): what llmrelay does with Anthropic
    ``cache_control`` breakpoints. OpenAI caches by itself; its cached tokens are priced either way."""

    # auto: keep the client's breakpoints and add ours on long stable prefixes (up to Anthropic's 4);
    # passthrough: send the client's as they are; off: remove them (no cache-write premium).
    mode: Annotated[Literal["auto", "passthrough", "off"], BeforeValidator(_off)] = "passthrough"
    min_tokens: int | None = Field(default=None, ge=1)  # None: the model's documented minimum

    def under(self, default: PromptCachingSettings) -> PromptCachingSettings:
        """These settings, with the fields this entry leaves unset taken from ``default``."""
        return default.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


class RateLimits(_Settings):
    """Requests and tokens per minute, as token buckets (docs/limits.md): a full minute's worth may
    come at once, then it refills continuously. Over one: 429 with Retry-After."""

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)  # prompt + output tokens (max_tokens reserved first)

    @property
    def on(self) -> bool:
        return self.rpm is not None or self.tpm is not None


class UpstreamLimits(RateLimits):
    """A deployment's own limits at its provider. Requests over them wait in a priority queue
    (``limits.queue``) instead of failing; rpm/tpm hold across replicas (Redis), the concurrency
    cap is per gateway process."""

    max_concurrency: int | None = Field(default=None, ge=1)

    @property
    def on(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_concurrency is not None


class DeploymentSettings(_Settings):
    """One place a model is served: a provider (endpoint) and that provider's model id."""

    provider: str  # a key of Settings.providers
    upstream: str | None = None  # defaults to the model's upstream id
    weight: float = Field(default=1.0, gt=0)  # share of traffic under the "weighted" balance
    limits: UpstreamLimits | None = None  # the provider's rpm/tpm/max_concurrency for this deployment


class SemanticVerifyModel(_Settings):
    """A model asked "same question?" about a semantic match before it is served (docs/semantic-cache.md):
    its call goes through the pipeline with a record and a cost; a timeout, an error or any answer
    but SAME is a miss."""

    model: str  # a configured model name (a cheap one)
    timeout_s: float = Field(default=2.0, gt=0)
    prompt: str | None = None  # the system prompt; None = cache.semantic.judge.PROMPT
    max_chars: int = Field(default=2000, ge=1)  # each question is cut to this
    cache_ttl_s: float = Field(default=3600.0, gt=0)  # verdicts kept per question pair, in-process
    cache_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1)


class SemanticCacheSettings(_Settings):
    """The semantic cache of a route (docs/caching.md): a near-duplicate last user message, in the
    same scope (model, system prompt, tools, parameters, earlier turns), is served the cached answer."""

    enabled: bool = False
    # For the packaged all-MiniLM-L6-v2 with verification: cache.semantic.DEFAULT_THRESHOLD, chosen on
    # bench/semantic_cache.py (bench/README.md). Another embedder needs its own figure.
    threshold: float = Field(default=0.84, gt=0, le=1)
    verify: SemanticVerifyModel | None = None  # off by default: it costs a model call per candidate hit


class CachePolicy(_Settings):
    """What a route caches and for how long. The global defaults live under ``cache:``; a model (the
    client-facing name: a route, for now) overrides any of them under ``models.<name>.cache``."""

    enabled: bool = True
    ttl_s: float = Field(default=3600.0, gt=0)  # seconds, everywhere (never milliseconds)
    shared: bool = False  # one namespace for every API key instead of one per key
    # Cache only temperature-0 requests (an absent temperature is the provider's default, 1).
    only_deterministic: bool = True
    semantic: SemanticCacheSettings = SemanticCacheSettings()

    def merged(self, override: CachePolicy | None) -> CachePolicy:
        """This policy with the fields ``override`` sets (in ``semantic`` too) replaced."""
        fields = {name: getattr(self, name) for name in CachePolicy.model_fields}
        if override is not None:
            update = override.model_dump(exclude_unset=True)
            if "semantic" in update:  # validated again: a copy's update would keep ``verify`` a dict
                update["semantic"] = SemanticCacheSettings.model_validate(
                    self.semantic.model_dump(exclude_unset=True) | update["semantic"]
                )
            fields.update(update)
        return CachePolicy(**fields)


class CacheSettings(CachePolicy):
    """The response cache: its store (global) and the default policy of every route."""

    backend: Literal["memory", "sqlite", "redis"] = "memory"
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1)  # memory: the LRU's bound, keys and values
    max_entry_bytes: int = Field(default=1024 * 1024, ge=1)  # a larger answer is not stored
    # sqlite: the database file (by default next to the call log's, in LLMRELAY_HOME or ~/.llmrelay)
    sqlite_path: str = Field(
        default_factory=lambda: str(Path(os.environ.get("LLMRELAY_HOME", "~/.llmrelay")) / "cache.db")
    )
    redis_url: str | None = None  # redis: defaults to the top-level redis_url
    timeout_s: float = Field(default=0.5, gt=0)  # a slower store is a miss, never a failed call
    # The semantic index of routes with semantic.enabled: embedder, backend (memory | redis), size
    # bound... (cache.semantic.SemanticSettings, docs/semantic-cache.md); checked when it is built,
    # so a gateway without the semantic extra still loads configs that leave it off.
    semantic_index: dict[str, Any] = {}


GuardMode = Annotated[Literal["off", "block", "flag", "log"], BeforeValidator(_off)]
PiiMode = Annotated[Literal["off", "redact", "block", "flag", "log"], BeforeValidator(_off)]


class InputLimitsGuard(_Settings):
    """Caps on a request's input (guardrails/limits.py); over one: 400 ``guardrail_input_limit``."""

    max_input_chars: int | None = Field(default=None, ge=1)  # message texts and tool-call arguments
    max_input_tokens: int | None = Field(default=None, ge=1)  # prompt tokens, counted offline (tiktoken)
    mode: GuardMode = "block"

    @property
    def on(self) -> bool:
        return self.mode != "off" and (self.max_input_chars is not None or self.max_input_tokens is not None)


class InjectionGuard(_Settings):
    """Prompt-injection and jailbreak detection on user messages and tool results."""

    mode: GuardMode = "off"
    # The detector's score from which it flags; None: its own calibrated operating point.
    threshold: float | None = Field(default=None, gt=0, lt=1)
    # latest: the turn's new input (what follows the last assistant message; earlier turns were
    # checked when they were new); all: every user message and tool result, every time.
    scan: Literal["latest", "all"] = "latest"
    tool_results: bool = True  # indirect injection: text a tool fetched (a web page, a document)


class ModerationGuard(_Settings):
    """Harmful-content checks before (input) and after (output) the call."""

    input: GuardMode = "off"
    output: GuardMode = "off"
    # An OpenAI-kind provider whose /moderations endpoint to call; None: the local rule set.
    provider: str | None = None
    model: str = "omni-moderation-latest"
    categories: tuple[str, ...] = ()  # only these (and their subcategories) count; () = all
    timeout_s: float = Field(default=5.0, gt=0)
    on_error: Literal["allow", "block"] = "allow"  # when the moderation endpoint fails
    # Streams: check the whole answer before sending any of it (no streaming latency benefit),
    # instead of checking it at its end and ending the stream with an error event when it fails.
    hold_streams: bool = False


class PiiGuard(_Settings):
    """PII and secrets in the input (before it goes upstream) and in the answer."""

    input: PiiMode = "off"
    output: PiiMode = "off"
    types: tuple[str, ...] = ()  # e.g. [EMAIL, CREDIT_CARD] or the groups [pii], [secrets]; () = all


class JsonGuard(_Settings):
    """JSON enforcement: parse (code fences stripped), validate against the schema, re-ask once."""

    mode: GuardMode = "off"  # block: no valid JSON after the re-ask is a 502 guardrail_json
    when: Literal["requested", "always"] = "requested"  # requested: response_format asks for JSON
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # used when the request has none
    reask: bool = True

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GuardrailPolicy(_Settings):
    """What the guardrail stages check on a route, and what they do about it (docs/guardrails.md).

    The global policy lives under ``guardrails:``; a model (the client-facing name: a route) sets
    any field under ``models.<name>.guardrails``, and the rest comes from the global one. An API
    key's policy (inline, or a name under ``guardrail_policies:``) can only tighten its route's:
    ``guardrails.policy.tightened(global.merged(model), key)``.
    """

    limits: InputLimitsGuard = InputLimitsGuard()
    injection: InjectionGuard = InjectionGuard()
    moderation: ModerationGuard = ModerationGuard()
    pii: PiiGuard = PiiGuard()
    json_: JsonGuard = Field(default=JsonGuard(), alias="json")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def merged(self, override: GuardrailPolicy | None) -> GuardrailPolicy:
        """This policy with every field ``override`` sets replaced, nested sections field by field
        (a ``json.schema`` is replaced whole, not merged)."""
        return self if override is None else _overlay(self, override)

    @property
    def input_on(self) -> bool:
        return (
            self.limits.on
            or self.injection.mode != "off"
            or self.moderation.input != "off"
            or self.pii.input != "off"
        )

    @property
    def output_on(self) -> bool:
        return self.moderation.output != "off" or self.pii.output != "off" or self.json_.mode != "off"


def _overlay(base: _SettingsT, override: _SettingsT) -> _SettingsT:
    update: dict[str, Any] = {}
    for name in override.model_fields_set:
        value, current = getattr(override, name), getattr(base, name)
        if isinstance(value, _Settings) and isinstance(current, _Settings):
            value = _overlay(current, value)
        update[name] = value
    return base.model_copy(update=update)


class ModelSettings(_Settings):
    name: str  # what clients send as "model"
    provider: str | None = None  # a key of Settings.providers (or give several `deployments`)
    upstream: str | None = None  # the provider's model id; defaults to name
    deployments: tuple[DeploymentSettings, ...] = ()  # several keys/regions of one model
    balance: Literal["weighted", "least_in_flight"] = "weighted"
    fallbacks: tuple[str, ...] = ()  # other models to try, in order, when this one fails
    tier: Tier = "mid"
    context_window: int = Field(default=128_000, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    capabilities: tuple[Capability, ...] = ALL_CAPABILITIES
    price_ref: str | None = None  # model id to look up in the price catalog; defaults to upstream
    price_provider: str | None = None  # price catalog provider id; defaults to the provider kind
    price: Price | None = None
    prompt_caching: PromptCachingSettings | None = None  # fields left unset come from the global one
    cache: CachePolicy | None = None  # overrides of the global `cache:` policy for this model
    guardrails: GuardrailPolicy | None = None  # overrides of the global `guardrails:` policy
    limits: RateLimits | None = None  # this model's rpm/tpm, all callers together (429 over it)
    upstream_limits: UpstreamLimits | None = None  # the provider's, for a `provider:` model

    @model_validator(mode="after")
    def _one_way_to_name_deployments(self) -> ModelSettings:
        if (self.provider is None) == (not self.deployments):
            raise ValueError(f"model {self.name!r} needs either `provider` or `deployments` (not both)")
        if self.deployments and self.upstream_limits is not None:
            raise ValueError(f"model {self.name!r}: with `deployments`, set `limits` on each deployment")
        return self

    @property
    def upstream_id(self) -> str:
        return self.upstream or self.name

    def deployment_list(self) -> tuple[DeploymentSettings, ...]:
        if self.deployments:
            return self.deployments
        assert self.provider is not None
        return (
            DeploymentSettings(
                provider=self.provider, upstream=self.upstream_id, limits=self.upstream_limits
            ),
        )


class ServerSettings(_Settings):
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=0, le=65535)  # 0 = pick a free port
    # When set, clients must send it (Bearer or x-api-key). Empty is refused rather than taken as
    # "no auth": an unset variable behind it would otherwise lock every client out, or let all in.
    master_key: str | None = Field(default=None, min_length=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # A request body that stops arriving for this long is a 408 (it would hold its connection).
    body_timeout_s: float = Field(default=30.0, gt=0)
    # How long a gateway trusts what it looked up about a virtual key (docs/keys.md): a revocation
    # through another gateway or the CLI takes effect within this; through this gateway, at once.
    key_cache_ttl_s: float = Field(default=10.0, ge=0)


POLICY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _policy_tag(value: Any) -> str:
    # Tags show in error paths: the config's "keys.0.guardrails.inline-policy.injection.mode"; the
    # admin API's error drops them ("guardrails.injection.mode"), as it does union branches.
    return "policy-name" if isinstance(value, str) else "inline-policy"


# A key's guardrail policy: the name of one under ``guardrail_policies:``, or inline overrides of
# the ``guardrails:`` fields; either only tightens its route's policy (guardrails/policy.py).
KeyGuardrails = Annotated[
    Annotated[str, Tag("policy-name"), Field(pattern=POLICY_NAME)]
    | Annotated[GuardrailPolicy, Tag("inline-policy")],
    Discriminator(_policy_tag),
]


class KeyFields(_Settings):
    """What a virtual API key is allowed (docs/keys.md): the admin API's body and a config entry's."""

    owner: str = Field(min_length=1)
    models: tuple[str, ...] = ()  # allowed client-facing models; () = all
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget_daily_usd: Decimal | None = Field(default=None, ge=0)
    budget_monthly_usd: Decimal | None = Field(default=None, ge=0)
    priority: int = 0
    metadata: dict[str, str] = {}
    guardrails: KeyGuardrails | None = None  # a policy name or inline overrides; only tightens


class KeyConfig(KeyFields):
    """A virtual API key defined in the config: seeded into the key store, hashed, at start-up;
    removing it from the config revokes it at the next start."""

    id: str = Field(pattern=r"^key_[A-Za-z0-9_-]{1,64}$")
    secret: str = Field(min_length=16)  # prefer ${ENV_VAR}: the config then holds no secret


class BudgetSettings(_Settings):
    """Spend budgets (docs/keys.md). Per key budgets live on the key; these apply to every end user
    (the request's ``user``), counted within each key."""

    user_daily_usd: Decimal | None = Field(default=None, ge=0)
    user_monthly_usd: Decimal | None = Field(default=None, ge=0)
    # The estimate checked before a call prices the prompt plus max_tokens, or this when unset.
    default_max_tokens: int = Field(default=4096, ge=1)
    redis_prefix: str = "llmrelay:budget"  # with redis_url set, spend is counted in Redis


class ExecuteSettings(_Settings):
    """Timeouts, retries and fallback (see docs/reliability.md)."""

    timeout_s: float = Field(default=600.0, gt=0)  # total per request, all attempts and waits included
    connect_timeout_s: float = Field(default=10.0, gt=0)
    attempt_timeout_s: float = Field(default=300.0, gt=0)  # one non-streamed attempt
    first_token_timeout_s: float = Field(default=60.0, gt=0)  # a stream's first content
    stall_timeout_s: float = Field(default=60.0, gt=0)  # a stream's silence between chunks
    max_attempts: int = Field(default=3, ge=1)  # per model of the chain: 1 try + retries
    backoff_base_s: float = Field(default=0.25, ge=0)  # full jitter: wait U(0, min(max, base * 2^n))
    backoff_max_s: float = Field(default=8.0, ge=0)
    retry_after_max_s: float = Field(default=10.0, ge=0)  # a longer Retry-After moves on instead of waiting


class BreakerConfig(_Settings):
    """Circuit breaker per deployment (see reliability/breaker.py)."""

    consecutive_failures: int = Field(default=5, ge=1)
    error_rate: float = Field(default=0.5, gt=0, le=1)
    window_s: float = Field(default=30.0, gt=0)
    min_requests: int = Field(default=10, ge=1)
    open_s: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)


class CallLogSettings(_Settings):
    """The durable call log (observability/calllog.py) and what goes into it."""

    enabled: bool = True
    # Journal and (by default) the SQLite database live here; LLMRELAY_HOME overrides the default.
    directory: str = Field(default_factory=lambda: os.environ.get("LLMRELAY_HOME", "~/.llmrelay"))
    store: str = "sqlite:///calls.db"  # or postgresql://user@host/db (pip install 'llmrelay[postgres]')
    bodies: Literal["none", "redacted", "full"] = "none"  # request/response bodies in the record
    retention_days: float | None = Field(default=30, gt=0)  # None keeps everything
    batch_size: int = Field(default=500, ge=1)
    flush_interval_s: float = Field(default=0.2, gt=0)
    # CPUs the writer process runs on (Linux; None: wherever the scheduler puts it). With cores to
    # spare, one the gateway is kept off (`taskset -c 1-3 llmrelay serve`, writer_cpus: [0]) takes
    # the call log's work out of the requests' way (bench/README.md, "the writer on a core of its own").
    writer_cpus: tuple[int, ...] | None = Field(default=None, min_length=1)

    @field_validator("writer_cpus")
    @classmethod
    def _cpus_here(cls, cpus: tuple[int, ...] | None) -> tuple[int, ...] | None:
        count = os.cpu_count() or 1
        if cpus is not None and not all(0 <= c < count for c in cpus):
            raise ValueError(f"CPUs are numbered 0-{count - 1} on this machine, not {list(cpus)}")
        return cpus


WebhookAllow = Literal["loopback", "private", "link_local"]


class WebhookSettings(_Settings):
    """Webhook deliveries of async jobs (docs/jobs.md)."""

    # The signing root: each key's secret is derived from it (GET /v1/webhooks/secret shows a key
    # its own); with keys off it signs as it is. None: generated once into the call-log directory
    # (set it, e.g. ${LLMRELAY_WEBHOOK_SECRET}, when replicas on several machines deliver).
    secret: str | None = Field(default=None, min_length=16)
    # Address ranges a target may resolve into, refused by default (tests allow loopback).
    allow: tuple[WebhookAllow, ...] = ()
    timeout_s: float = Field(default=10.0, gt=0)  # one delivery attempt
    max_elapsed_s: float = Field(default=3600.0, gt=0)  # retry for this long, then failed (kept)
    backoff_base_s: float = Field(default=1.0, gt=0)  # wait U(0.5, 1) * min(max, base * 2^n)
    backoff_max_s: float = Field(default=300.0, gt=0)
    concurrency: int = Field(default=8, ge=1)  # deliveries at once per worker process


class JobsSettings(_Settings):
    """The durable job queue and its workers (docs/jobs.md)."""

    queue: str = "sqlite:///jobs.db"  # under calllog.directory; or postgresql://... for several machines
    in_gateway: bool = True  # worker pools run inside `llmrelay serve`; off: `llmrelay worker` only
    # Concurrency per tier (a tier left out has no workers).
    workers: dict[Tier, Annotated[int, Field(ge=1)]] = {"small": 8, "mid": 4, "frontier": 2, "open": 2}
    lease_s: float = Field(default=30.0, gt=0)  # a worker silent this long has died: its job runs again
    # The longest an idle pool waits between polls (a job enqueued by this process wakes it at once).
    poll_interval_s: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)  # claims of a job (upstream 429/5xx, dead workers)
    retry_base_s: float = Field(
        default=2.0, ge=0
    )  # a job retried after an upstream 429/5xx waits this, doubled
    priority: int = -1  # the x-llmrelay-priority a job's call carries: below interactive traffic
    retention_days: float | None = Field(default=30, gt=0)  # finished jobs are then deleted
    webhooks: WebhookSettings = WebhookSettings()


class TracesSettings(_Settings):
    """OpenTelemetry spans (GenAI conventions), sent by OTLP/HTTP (pip install 'llmrelay[otel]')."""

    otlp_endpoint: str | None = None  # e.g. http://127.0.0.1:4318/v1/traces; None = no traces
    headers: dict[str, str] = {}  # e.g. an Authorization header for Langfuse
    service_name: str = "llmrelay"


class QueueSettings(_Settings):
    """The wait for a deployment at its limits: highest priority first, with ageing."""

    max_wait_s: float = Field(default=30.0, gt=0)  # then 503 queue_timeout
    aging_s: float = Field(default=10.0, gt=0)  # a waiting request gains one priority level per aging_s
    max_depth: int = Field(default=10_000, ge=1)  # per deployment; beyond it, 503 queue_full at once
    priority_header: str = "x-llmrelay-priority"  # an int; a virtual key's priority is its ceiling


class LimitsSettings(_Settings):
    """Rate limits (docs/limits.md). A key's own rpm/tpm live on the key; a model's and its
    deployments' under ``models``; the default for each end user (the request's ``user``) here."""

    user: RateLimits = RateLimits()  # each end user, within each API key
    default_max_tokens: int = Field(default=4096, ge=1)  # output reserved when max_tokens is unset
    redis_url: str | None = None  # default: the top-level redis_url; unset: in-process buckets
    on_redis_error: Literal["allow", "deny"] = "allow"  # allow: fail open (logged, counted)
    redis_timeout_s: float = Field(default=0.25, gt=0)
    redis_prefix: str = "llmrelay:rl"
    queue: QueueSettings = QueueSettings()


class SimulatorRef(_Settings):
    """The embedded simulator the gateway starts for ``simulated`` providers."""

    enabled: bool = False
    config: str | None = None  # a simulator YAML file; None = built-in rules
    settings: dict[str, Any] | None = None  # or its settings inline (docs/simulator.md), e.g. faults


class Settings(_Settings):
    server: ServerSettings = ServerSettings()
    execute: ExecuteSettings = ExecuteSettings()
    breaker: BreakerConfig = BreakerConfig()
    redis_url: str | None = None  # shared state across replicas (circuit breakers today)
    calllog: CallLogSettings = Field(default_factory=CallLogSettings)
    metrics: bool = True  # Prometheus /metrics
    traces: TracesSettings = TracesSettings()
    cache: CacheSettings = Field(default_factory=CacheSettings)
    providers: dict[str, ProviderSettings] = {}
    models: list[ModelSettings] = []
    simulator: SimulatorRef = SimulatorRef()
    guardrails: GuardrailPolicy = GuardrailPolicy()  # the default of every model (docs/guardrails.md)
    # Named policies API keys refer to (keys[].guardrails: strict); each only tightens a route's.
    guardrail_policies: dict[Annotated[str, Field(pattern=POLICY_NAME)], GuardrailPolicy] = {}
    routes: list[RouteSettings] = []  # model aliases resolved per request (docs/routing.md)
    limits: LimitsSettings = LimitsSettings()  # rate limits and the queue (docs/limits.md)
    keys: tuple[KeyConfig, ...] = ()  # virtual API keys seeded at start-up (docs/keys.md)
    budgets: BudgetSettings = BudgetSettings()
    jobs: JobsSettings = JobsSettings()  # async jobs, webhooks and workers (docs/jobs.md)
    # A stage with nothing to do on any model is left out of the chain (no cost at all).
    pipeline: tuple[str, ...] = (
        "record",
        "route",
        "limit",
        "budget",
        "guard_input",
        "cache",
        "guard_output",
        "execute",
    )
    prompt_caching: PromptCachingSettings = PromptCachingSettings()  # the default for every model
    batch: BatchSettings = BatchSettings()  # the files and batches API (docs/batch.md)

    @field_validator("pipeline")
    @classmethod
    def _one_path(cls, pipeline: tuple[str, ...]) -> tuple[str, ...]:
        # Without "execute" every request would be a 500; a stage twice would run twice.
        if "execute" not in pipeline:
            raise ValueError("the pipeline needs its 'execute' stage (the one that calls the model)")
        twice = sorted({name for name in pipeline if pipeline.count(name) > 1})
        if twice:
            raise ValueError(f"a stage may appear once; {', '.join(twice)} appears more than once")
        return pipeline

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        seen: set[str] = set()
        for m in self.models:
            for d in m.deployment_list():
                if d.provider not in self.providers:
                    raise ValueError(f"model {m.name!r} names unknown provider {d.provider!r}")
            if m.name in seen:
                raise ValueError(f"model {m.name!r} is defined twice")
            seen.add(m.name)
        for m in self.models:
            for fallback in m.fallbacks:
                if fallback not in seen or fallback == m.name:
                    raise ValueError(
                        f"model {m.name!r} falls back to {fallback!r}, which is not another model here"
                    )
        self._check_guardrails()
        check_routes(self.routes, [m.name for m in self.models], self.pipeline)
        self._check_limits()
        self._check_keys(seen)
        return self

    def _check_limits(self) -> None:
        limited = self.limits.user.on or any(m.limits and m.limits.on for m in self.models)
        limited |= any(k.rpm is not None or k.tpm is not None for k in self.keys)
        if limited and "limit" not in self.pipeline:
            raise ValueError("pipeline: rate limits are configured but the pipeline has no 'limit' stage")
        seen: dict[str, UpstreamLimits | None] = {}
        for m in self.models:
            for d in m.deployment_list():
                key = f"{d.provider}/{d.upstream or m.upstream_id}"
                if key in seen and seen[key] != d.limits:
                    raise ValueError(
                        f"model {m.name!r}: deployment {key} has other limits than where it appears "
                        "before (one provider deployment has one set of limits)"
                    )
                seen[key] = d.limits

    def _check_keys(self, models: set[str]) -> None:
        ids, secrets = set(), set()
        for key in self.keys:
            if key.id in ids or key.secret in secrets:
                raise ValueError(f"keys: {key.id!r} repeats another key's id or secret")
            ids.add(key.id)
            secrets.add(key.secret)
            unknown = [m for m in key.models if m not in models] if self.models else []
            if unknown:
                raise ValueError(f"keys: {key.id!r} allows unknown model(s) {', '.join(unknown)}")
            if key.secret == self.server.master_key:
                raise ValueError(f"keys: {key.id!r} has the master key as its secret")
        budgeted = any(k.budget_daily_usd is not None or k.budget_monthly_usd is not None for k in self.keys)
        budgeted |= self.budgets.user_daily_usd is not None or self.budgets.user_monthly_usd is not None
        if budgeted and "budget" not in self.pipeline:
            raise ValueError("pipeline: budgets are configured but the pipeline has no 'budget' stage")

    def moderation_problem(self, policy: GuardrailPolicy) -> str | None:
        """Why ``policy``'s moderation provider cannot moderate here, or None."""
        name = policy.moderation.provider
        if name is not None and (policy.moderation.input != "off" or policy.moderation.output != "off"):
            provider = self.providers.get(name)
            if provider is None or provider.kind != "openai":
                return (
                    f"{name!r} is not an OpenAI-kind provider here (only OpenAI's API has a moderation "
                    "endpoint); leave it unset for the local rules"
                )
        return None

    def _check_guardrails(self) -> None:
        from .guardrails.policy import problem  # it imports this module

        policies = [("guardrails", self.guardrails)] + [
            (f"models.{m.name}.guardrails", self.guardrails.merged(m.guardrails))
            for m in self.models
            if m.guardrails is not None
        ]
        for where, policy in policies:
            found = self.moderation_problem(policy)
            if found is not None:
                raise ValueError(f"{where}.moderation.provider: {found}")
        # API keys' policies: the named ones and the config keys' (their names exist, providers
        # moderate, schemas are schemas, the pipeline has their stages).
        keyed = [(f"guardrail_policies.{n}", p) for n, p in self.guardrail_policies.items()]
        keyed += [
            (f"keys.{i}.guardrails", k.guardrails)
            for i, k in enumerate(self.keys)
            if k.guardrails is not None
        ]
        for where, key_policy in keyed:
            if (found := problem(self, key_policy)) is not None:
                raise ValueError(f"{where}: {found}")
        stages = self.pipeline
        for stage, needed in (
            ("guard_input", any(p.input_on for _, p in policies)),
            ("guard_output", any(p.output_on for _, p in policies)),
        ):
            if needed and stage not in stages:
                raise ValueError(
                    f"pipeline: guardrails are configured but the pipeline has no {stage!r} stage"
                )

        def before(a: str, b: str) -> bool:
            return a not in stages or b not in stages or stages.index(a) < stages.index(b)

        # Outside the cache, a cached answer would skip the input checks; inside it, what the cache
        # keeps is the checked (redacted, validated) answer.
        if not (before("guard_input", "cache") and before("cache", "guard_output")):
            raise ValueError("pipeline: the order must be guard_input, then cache, then guard_output")

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from a YAML file, or the embedded default when ``path`` is None."""
        env = os.environ if env is None else env
        if path is None:
            return cls.embedded(env)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"Cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"Config file {path} is not UTF-8 text (byte {exc.start}).") from None
        try:
            raw = yaml.safe_load(interpolate(text, env)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "config") -> Settings:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {first_problem(exc)}") from None

    @classmethod
    def embedded(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Zero setup: simulated models, plus real ones for each provider key found in ``env``."""
        env = os.environ if env is None else env
        return cls.from_dict(embedded_config(env), source="embedded default")


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without a default is an error.

    A value goes in as the YAML scalar it is, whatever it holds: quoted when a character would
    change its meaning (a secret with ` #` was cut at the comment, one with `: ` or a leading `!`
    broke the parse and the YAML error printed it), escaped inside quotes. ``${...}`` in a comment
    is left alone.
    """
    return "".join(_interpolate_line(line, env) for line in text.splitlines(keepends=True))


# A value that YAML reads back as this same plain scalar, in block or flow context (numbers and
# words stay typed: a port, `off`); anything else is quoted.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/+@=]*")


def _interpolate_line(line: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    quote = ""  # the quote we are inside, if any
    prev = ""  # the last character before this one that is not a blank, outside quotes
    i = 0
    while i < len(line):
        ch = line[i]
        match = _VAR.match(line, i) if ch == "$" else None
        if match:
            value = _value(match, env)
            if quote:
                out.append(_escaped(value, quote))
            elif _whole_scalar(line, i, match.end(), prev):
                # Empty stays empty, which YAML reads as null: `${KEY:-}` means "not set".
                out.append(value if not value or _PLAIN.fullmatch(value) else json.dumps(value))
            else:  # part of a longer plain scalar (a URL, a DSN): as it is, as always
                out.append(value)
            i, prev = match.end(), "$"
            continue
        if not quote and ch == "#" and (i == 0 or line[i - 1] in " \t"):
            out.append(line[i:])  # a comment: as it is
            break
        if quote == '"' and ch == "\\":
            out.append(line[i : i + 2])
            i += 2
            continue
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in "\"'" and prev in ("", ":", "-", "[", "{", ","):
            quote = ch  # a quoted scalar starts (an apostrophe inside a plain word does not)
        if not quote and ch not in " \t":
            prev = ch
        out.append(ch)
        i += 1
    return "".join(out)


def _value(match: re.Match[str], env: Mapping[str, str]) -> str:
    name, default = match.group(1), match.group(2)
    if name in env:
        return env[name]
    if default is not None:
        return default
    raise ConfigError(
        f"Config refers to ${{{name}}}, which is not set (set it, or write ${{{name}:-default}})."
    )


def _escaped(value: str, quote: str) -> str:
    if quote == '"':
        return json.dumps(value)[1:-1]  # JSON's escapes are YAML's double-quoted ones
    return value.replace("'", "''")


def _whole_scalar(line: str, start: int, end: int, prev: str) -> bool:
    """Whether ``line[start:end]`` is a whole unquoted scalar: after a key, a dash or a flow
    opener, and followed by nothing but a comment or the flow's next item or end."""
    if prev not in ("", ":", "-", "[", "{", ",") or (start and line[start - 1] not in " \t[{,"):
        return False
    rest = line[end:].lstrip(" \t")
    return not rest or rest[0] in "\r\n#,]}"


# The simulated models mirror real ones so their prices (and so the cost numbers) are realistic.
_SIMULATED = [
    # name, provider, price_ref, price_provider, tier, context window
    ("sim/gpt-4o-mini", "sim-openai", "gpt-4o-mini", "openai", "small", 128_000),
    ("sim/gpt-4o", "sim-openai", "gpt-4o", "openai", "frontier", 128_000),
    ("sim/claude-haiku", "sim-anthropic", "claude-haiku-4-5", "anthropic", "small", 200_000),
    ("sim/claude-sonnet", "sim-anthropic", "claude-sonnet-4-5", "anthropic", "frontier", 200_000),
]

_REAL = {
    "OPENAI_API_KEY": (
        "openai",
        {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
        [
            ("gpt-4o-mini", "small", 128_000),
            ("gpt-4o", "frontier", 128_000),
            ("gpt-4.1-mini", "mid", 1_047_576),
        ],
    ),
    "ANTHROPIC_API_KEY": (
        "anthropic",
        {"kind": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
        [("claude-haiku-4-5", "small", 200_000), ("claude-sonnet-4-5", "frontier", 200_000)],
    ),
}


def embedded_config(env: Mapping[str, str]) -> dict[str, Any]:
    # base_url of simulated providers is filled in once the embedded simulator has a port.
    providers: dict[str, Any] = {
        "sim-openai": {"kind": "openai", "base_url": "http://127.0.0.1:0/v1", "simulated": True},
        "sim-anthropic": {"kind": "anthropic", "base_url": "http://127.0.0.1:0", "simulated": True},
    }
    models: list[dict[str, Any]] = [
        {
            "name": name,
            "provider": provider,
            "upstream": price_ref,
            "price_ref": price_ref,
            "price_provider": price_provider,
            "tier": tier,
            "context_window": window,
        }
        for name, provider, price_ref, price_provider, tier, window in _SIMULATED
    ]
    for key_env, (provider, endpoint, real_models) in _REAL.items():
        if env.get(key_env):
            providers[provider] = endpoint
            models += [
                {"name": n, "provider": provider, "tier": t, "context_window": w} for n, t, w in real_models
            ]
    return {"providers": providers, "models": models, "simulator": {"enabled": True}}


def with_simulator_port(settings: Settings, port: int) -> Settings:
    """Point every ``simulated`` provider at the embedded simulator once it is listening."""
    providers = {
        name: p.model_copy(update={"base_url": _sim_url(p.kind, port)}) if p.simulated else p
        for name, p in settings.providers.items()
    }
    return settings.model_copy(update={"providers": providers})


def _sim_url(kind: ProviderKind, port: int) -> str:
    return f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")


__all__ = [
    "BreakerConfig",
    "BudgetSettings",
    "CachePolicy",
    "CacheSettings",
    "CallLogSettings",
    "DeploymentSettings",
    "ExecuteSettings",
    "GuardrailPolicy",
    "JobsSettings",
    "KeyConfig",
    "KeyFields",
    "ModelSettings",
    "Price",
    "LimitsSettings",
    "PromptCachingSettings",
    "ProviderSettings",
    "QueueSettings",
    "RateLimits",
    "SemanticCacheSettings",
    "SemanticVerifyModel",
    "ServerSettings",
    "Settings",
    "SimulatorRef",
    "UpstreamLimits",
    "WebhookSettings",
    "interpolate",
    "with_simulator_port",
]
