"""What is written down about each call: one ``CallRecord`` per client call, one ``AttemptRecord``
per upstream attempt, built from the ``Call`` context once the call is over.

Stages add to a record by writing onto ``Call`` (typed fields, or ``Call.extra`` for things a later
stage learns: route decision, cache status, guardrail verdicts); ``CallRecord.from_call`` copies
them, so the writer and the stores never change when a stage is added.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ulid import ULID

if TYPE_CHECKING:
    from ..pipeline import Call

BodyPolicy = Literal["full", "redacted", "none"]

# Token counts are bounded where they enter a record: an upstream reporting an absurd count (or a
# bug) must not yield a record no store can hold. PostgreSQL's columns are 32-bit ``integer``.
MAX_TOKENS = 2**31 - 1


class RejectedRecord(Exception):
    """A store refused records for their data (a number out of range, a NUL, a value of the wrong
    type, a missing one): the same records would fail the same way again, unlike a store that is
    down. Stores raise it for the whole batch, from the driver's error; the writer then narrows the
    batch down to the records at fault and sets them aside."""


@dataclass(slots=True)
class AttemptRecord:
    n: int  # 1-based position among the call's attempts
    model: str
    deployment: str
    outcome: str  # "success" | "error:<ErrorClass>"
    status_code: int | None
    latency_ms: float
    waited_ms: float


@dataclass(slots=True)
class CallRecord:
    id: str  # "req_<ULID>": sortable by time
    started_at: float  # unix seconds
    ended_at: float
    api_format: str  # openai | anthropic | library
    api_key_id: str | None  # the virtual key's id, else a short hash of the key presented; never the key
    end_user: str | None  # the request's `user`
    requested_model: str
    model: str | None  # the model that answered (a fallback, perhaps)
    provider: str | None
    upstream_model: str | None
    stream: bool
    status: str  # success | error:<ErrorClass> | filtered | cache_hit
    error_message: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: str | None  # a Decimal as text: exact to the digit in every store
    cost_exact: bool  # False when usage was estimated (an upstream that reported none)
    latency_ms: float
    ttft_ms: float | None
    upstream_ms: float
    overhead_ms: float
    attempts: list[AttemptRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # route, cache, guardrails...: stage-owned
    request_body: Any = None  # per the body policy
    response_body: Any = None

    @classmethod
    def from_call(cls, call: Call, *, bodies: BodyPolicy = "none", response_body: Any = None) -> CallRecord:
        now = time.time()
        latency = call.latency_ms if call.latency_ms is not None else call.elapsed_ms()
        usage = call.usage
        deployment = call.deployment
        return cls(
            id=call.id,
            started_at=now - latency / 1000,
            ended_at=now,
            api_format=call.api_format,
            api_key_id=call.key.id if call.key is not None else key_id(call.principal),
            end_user=call.request.user,
            requested_model=call.requested_model,
            model=deployment.model if deployment else None,
            provider=deployment.provider_name if deployment else None,
            upstream_model=deployment.upstream if deployment else None,
            stream=call.stream,
            status=call.status,
            error_message=call.error.message if call.error is not None else None,
            prompt_tokens=min(usage.prompt_tokens, MAX_TOKENS) if usage else 0,
            completion_tokens=min(usage.completion_tokens, MAX_TOKENS) if usage else 0,
            cached_tokens=min(usage.cached_tokens, MAX_TOKENS) if usage else 0,
            cache_write_tokens=min(usage.cache_write_tokens, MAX_TOKENS) if usage else 0,
            reasoning_tokens=min(usage.reasoning_tokens, MAX_TOKENS) if usage else 0,
            cost_usd=format(call.cost_usd, "f") if call.cost_usd is not None else None,  # never 1E-7
            cost_exact=not call.usage_estimated,
            latency_ms=latency,
            ttft_ms=call.ttft_ms,
            upstream_ms=call.upstream_ms,
            overhead_ms=max(latency - call.upstream_ms, 0.0),
            attempts=[
                AttemptRecord(i, a.model, a.deployment, a.outcome, a.status_code, a.latency_ms, a.waited_ms)
                for i, a in enumerate(call.attempts, 1)
            ],
            extra=dict(call.extra),
            request_body=_body(call.request.model_dump(exclude_none=True), bodies)
            if bodies != "none"
            else None,
            response_body=_body(response_body, bodies),
        )

    @classmethod
    def rejected(
        cls,
        *,
        api_format: str,
        principal: str | None,
        payload: Any,
        error: Exception,
        latency_ms: float,
        api_key_id: str | None = None,  # the virtual key's id, when the key was known
    ) -> CallRecord:
        """A call turned away before it became a request (bad key, body or JSON): still a call."""
        fields = payload if isinstance(payload, dict) else {}
        model, user = fields.get("model"), fields.get("user")
        now = time.time()
        return cls(
            id=f"req_{ULID()}",
            started_at=now - latency_ms / 1000,
            ended_at=now,
            api_format=api_format,
            api_key_id=api_key_id or key_id(principal),
            end_user=user if isinstance(user, str) else None,
            requested_model=model if isinstance(model, str) else "",
            model=None,
            provider=None,
            upstream_model=None,
            stream=fields.get("stream") is True,
            status=f"error:{type(error).__name__}",
            error_message=str(error),
            prompt_tokens=0,
            completion_tokens=0,
            cached_tokens=0,
            cache_write_tokens=0,
            reasoning_tokens=0,
            cost_usd=None,
            cost_exact=True,
            latency_ms=latency_ms,
            ttft_ms=None,
            upstream_ms=0.0,
            overhead_ms=latency_ms,
        )

    @property
    def fell_back(self) -> bool:
        """Answered by another model than the one it was for: the requested one, or its route's pick."""
        meant = (self.extra.get("route") or {}).get("model") or self.requested_model
        return self.model is not None and self.model != meant

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, checked: bool = False) -> CallRecord:
        """A record from its ``to_dict`` (or JSON) form; ``checked``: ``check`` has passed it."""
        if not checked:
            cls.check(data)
        attempts = [AttemptRecord(**a) for a in data.get("attempts") or ()]
        return cls(**{**data, "attempts": attempts})

    @staticmethod
    def check(data: dict[str, Any]) -> None:
        """That ``data`` is a record in JSON form, every field of the type it is declared with
        (attempts included): a ``TypeError`` (or ``KeyError``) names the first field that is not.
        A journal line written by something else (or damaged) is refused here rather than stored
        wrong: SQLite would take ``"12"`` for a token count without a word and break the reports."""
        _check(data, _CALL_TYPES, _CALL_FIELDS)
        for a in data.get("attempts") or ():
            if type(a) is not dict:
                raise TypeError(f"attempts: a JSON {type(a).__name__}, not an object")
            _check(a, _ATTEMPT_TYPES, _ATTEMPT_FIELDS)


# Column order for the stores: the record's fields, attempts in a table of their own.
CALL_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CallRecord) if f.name != "attempts")
ATTEMPT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AttemptRecord))

# What each declared type admits from JSON (a float field may come back as an int: 500.0 -> 500).
# None: anything (bodies). A field of a type not listed here fails at import, so it gets an entry.
_JSON_TYPES: dict[str, tuple[type, ...] | None] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "int | None": (int, type(None)),
    "float": (float, int),
    "float | None": (float, int, type(None)),
    "bool": (bool,),
    "dict[str, Any]": (dict,),
    "list[AttemptRecord]": (list,),
    "Any": None,
}


def _types(cls: type) -> tuple[tuple[str, tuple[type, ...], bool], ...]:
    """(field, the types its JSON may have, whether it may be missing), checked fields only."""
    return tuple(
        (f.name, allowed, f.default is not MISSING or f.default_factory is not MISSING)
        for f in fields(cls)
        if (allowed := _JSON_TYPES[str(f.type)]) is not None
    )


def _check(
    data: dict[str, Any], types: tuple[tuple[str, tuple[type, ...], bool], ...], known: frozenset[str]
) -> None:
    if not data.keys() <= known:  # a field this version does not have would be dropped unseen
        raise TypeError(f"unknown fields: {', '.join(sorted(data.keys() - known))}")
    for name, allowed, optional in types:
        if name not in data:
            if optional:
                continue
            raise KeyError(name)
        if type(data[name]) not in allowed:  # exact types: a bool is no token count
            raise TypeError(f"{name}: a {type(data[name]).__name__} ({data[name]!r:.40})")


_CALL_TYPES = _types(CallRecord)
_ATTEMPT_TYPES = _types(AttemptRecord)
_CALL_FIELDS = frozenset(f.name for f in fields(CallRecord))
_ATTEMPT_FIELDS = frozenset(f.name for f in fields(AttemptRecord))


def status_filter(text: str) -> str:
    """``text`` as a filter on ``CallRecord.status`` ("error" matches every error), or ValueError:
    a misspelt status would otherwise match no call and read as "none of those"."""
    kind, colon, error_class = text.partition(":")
    if text in ("success", "filtered", "cache_hit", "error") or (
        kind == "error" and colon and error_class.isidentifier()
    ):
        return text
    raise ValueError(
        f"{text!r} is not a call status: success, error (any error), error:<ErrorClass> "
        "(e.g. error:UpstreamTimeout), filtered or cache_hit"
    )


@functools.lru_cache(maxsize=4096)  # a gateway sees the same keys over and over: hash each once
def key_id(presented: str | None) -> str | None:
    """A stable, non-reversible id for an API key: enough to group by, useless to an attacker."""
    if not presented:
        return None
    return "key_" + hashlib.sha256(presented.encode()).hexdigest()[:12]


def _body(body: Any, policy: BodyPolicy) -> Any:
    if policy == "full" or body is None:
        return body if policy == "full" else None
    if policy == "redacted":
        return _redact(body)
    return None


_WORDS = frozenset({"content", "text", "arguments"})
# Words too when they are a string: a thinking block's text and signature, a redacted one's data,
# a reasoning server's reasoning (``thinking`` is also the request's option object: kept).
_WORDS_IF_TEXT = frozenset({"thinking", "signature", "data", "reasoning_content"})


def _redact(value: Any) -> Any:
    """Keep the shape (roles, models, tool names, sizes), drop the words."""
    if isinstance(value, dict):
        return {
            k: _size(v) if k in _WORDS or (k in _WORDS_IF_TEXT and isinstance(v, str)) else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _size(value: Any) -> str:
    if isinstance(value, str):
        return f"<{len(value)} chars>"
    if isinstance(value, list):
        return f"<{len(value)} parts>"
    return "<redacted>"


class CallStore(Protocol):
    """Where call records live: SQLite (embedded default) or PostgreSQL (several replicas)."""

    async def open(self) -> None: ...  # connect and apply migrations

    async def write(self, records: list[CallRecord]) -> None: ...  # idempotent on id

    # The same for records in JSON form that passed CallRecord.check (the writer's journal lines):
    # a store may build its rows from them directly, without a CallRecord each.
    async def write_json(self, records: list[dict[str, Any]]) -> None: ...

    async def recent(
        self,
        *,
        limit: int = 50,
        since: float | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        status: str | None = None,
    ) -> list[CallRecord]: ...  # newest first, with attempts

    async def get(self, call_id: str) -> CallRecord | None: ...

    async def totals(
        self, *, by: str, since: float | None = None, api_key_id: str | None = None
    ) -> list[dict[str, Any]]: ...

    # by: model | key | user | day | status | variant -> rows {group, requests, errors, prompt_tokens,
    #     completion_tokens, cost_usd (str), saved_usd (str: by routing), latency_p50_ms, latency_p95_ms}

    async def prune(self, older_than: float) -> int: ...  # retention; returns records removed

    async def close(self) -> None: ...
