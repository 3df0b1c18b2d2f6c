"""The cache stage: answers a request from the cache when it can, and keeps what the rest of the
pipeline answers for the next identical (or, with the semantic cache, equivalent) request.

Per request: ``Cache-Control: no-store`` neither reads nor writes, ``no-cache`` skips the lookup
and refreshes the entry, ``max-age=N`` accepts only an entry younger than N seconds. The response
says what happened in ``x-llmrelay-cache`` (hit, semantic-hit, miss, refresh, bypass) and, on a
hit, ``age``. A hit is recorded with status ``cache_hit``, cost 0 and what the cached call cost
(``extra["saved_usd"]``). Only complete answers are kept: never an error, a cut stream, a filtered
answer or a fallback model's. A store that fails or is slow makes a miss, never a failed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from ..catalog import Catalog
from ..config import CachePolicy
from ..errors import ConfigError, ModelNotFoundError
from ..guardrails.policy import cache_scope
from ..pipeline import Call, Handler, Result, Stream, watch_stream
from ..types import ChatResponse, Usage
from .backends import MemoryBackend, build_backend
from .base import CacheBackend, SemanticIndex
from .entries import Assembler, Entry, chunks_of
from .keys import Keys, deterministic, namespace

if TYPE_CHECKING:
    from ..relay import Relay
    from .semantic.judge import ModelVerifier

log = logging.getLogger(__name__)

T = TypeVar("T")
HEADER = "x-llmrelay-cache"
_WARN_EVERY_S = 60.0


def build_semantic_index(relay: Relay) -> SemanticIndex:
    """The index behind routes with ``cache.semantic.enabled`` (``cache/semantic/``), configured by
    ``cache.semantic_index``. Imported only then: it needs the ``semantic`` extra."""
    try:
        from .semantic import INSTALL_HINT, SemanticSettings
        from .semantic import build_semantic_index as build
    except ImportError as exc:
        raise ConfigError(
            f"The semantic cache needs its extra: pip install 'llmrelay[semantic]' ({exc}); "
            "see docs/semantic-cache.md"
        ) from None
    try:
        settings = SemanticSettings.model_validate(relay.settings.cache.semantic_index)
    except ValidationError as exc:
        raise ConfigError(f"cache.semantic_index: {exc}") from None
    try:
        return build(settings, redis_url=relay.settings.redis_url)
    except ImportError as exc:
        raise ConfigError(f"The semantic cache cannot start ({exc}): {INSTALL_HINT}") from None


def _model_verifiers(relay: Relay, policies: Mapping[str, CachePolicy]) -> dict[str, ModelVerifier]:
    """One ``ModelVerifier`` per route with ``cache.semantic.verify`` (cache/semantic/judge.py)."""
    from .semantic.judge import ModelVerifier

    verifiers = {}
    for name, policy in policies.items():
        verify = policy.semantic.verify
        if not policy.semantic.enabled or verify is None:
            continue
        try:
            relay.catalog.get(verify.model)
        except ModelNotFoundError:
            raise ConfigError(
                f"models.{name}.cache.semantic.verify: no model named {verify.model!r} is configured"
            ) from None
        verifiers[name] = ModelVerifier(verify, relay.handle)
    return verifiers


class CacheStage:
    def __init__(
        self,
        backend: CacheBackend,
        catalog: Catalog,
        policies: Mapping[str, CachePolicy],
        *,
        semantic: SemanticIndex | None = None,
        verifiers: Mapping[str, ModelVerifier] | None = None,
        max_entry_bytes: int = 1024 * 1024,
        timeout_s: float = 0.5,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.policies = dict(policies)  # model name -> its policy; a model without one is not cached
        # What serves each model, in its keys: point a name at another upstream in the config and
        # its old answers are no longer served for it.
        self.upstreams = {
            name: ",".join(sorted(d.key for d in catalog.get(name).deployments)) for name in self.policies
        }
        self.semantic = semantic
        self.verifiers = dict(verifiers or {})  # model name -> the model that confirms its semantic hits
        self.max_entry_bytes = max_entry_bytes
        self.timeout_s = timeout_s
        # A store in this process answers at once: no timer per call for it (~5 us each).
        self._store_timeout: float | None = None if isinstance(backend, MemoryBackend) else timeout_s
        self._warned_at = -_WARN_EVERY_S

    @classmethod
    def from_relay(cls, relay: Relay) -> CacheStage:
        settings = relay.settings.cache
        policies = {}
        for entry in relay.catalog:
            policy = settings.merged(entry.settings.cache)
            if policy.enabled:
                policies[entry.name] = policy
        backend = build_backend(settings, relay.settings.redis_url)
        semantic, verifiers = None, {}
        if any(p.semantic.enabled for p in policies.values()):
            verifiers = _model_verifiers(relay, policies)  # first: a wrong name fails before the model loads
            semantic = build_semantic_index(relay)
        return cls(
            backend,
            relay.catalog,
            policies,
            semantic=semantic,
            verifiers=verifiers,
            max_entry_bytes=settings.max_entry_bytes,
            timeout_s=settings.timeout_s,
        )

    async def ready(self) -> None:
        if self.semantic is not None:
            await self.semantic.ready()

    async def aclose(self) -> None:
        if self.semantic is not None:
            await self.semantic.aclose()
        await self.backend.aclose()

    async def __call__(self, call: Call, next: Handler) -> Result:
        policy = self.policies.get(call.request.model)
        if policy is None:  # the cache is off for it, or no such model (execute says so)
            return await next(call)
        control = _CacheControl.parse(call.headers.get("cache-control"))
        if control.no_store or (policy.only_deterministic and not deterministic(call.request)):
            _mark(call, "bypass")
            return await next(call)
        # A verifying model's own call is never answered by a semantic match (nor checked again).
        semantic = self.semantic is not None and policy.semantic.enabled and "cache_probe" not in call.extra
        # A virtual key's entries follow its id, so rotating its secret keeps its cache.
        owner = call.key.id if call.key is not None else call.principal
        space = f"{namespace(owner, policy.shared)}|{self.upstreams[call.request.model]}"
        if policy.shared and call.key is not None and call.key.guardrails is not None:
            space += "|" + cache_scope(call.key.guardrails)  # answers checked under another key's policy
        keys = Keys.of(call.request, space, semantic=semantic)
        if control.no_cache:
            _mark(call, "refresh")
        else:
            hit = await self._lookup(call, keys, policy, control.max_age)
            if hit is not None:
                return hit
            _mark(call, "miss")
        result = await next(call)
        if isinstance(result, ChatResponse):
            await self._store(call, keys, policy, result)
            return result
        return self._storing(call, keys, policy, result)

    # --- lookup ----------------------------------------------------------------------------------

    async def _lookup(
        self, call: Call, keys: Keys, policy: CachePolicy, max_age: float | None
    ) -> Result | None:
        entry = await self._get(keys.exact)
        kind, similarity = "hit", None
        if entry is None and keys.scope is not None and self.semantic is not None:
            assert keys.query is not None
            verifier, timeout_s = self.verifiers.get(call.request.model), self.timeout_s
            if verifier is None:
                search = self.semantic.search(keys.scope, keys.query, policy.semantic.threshold)
            else:  # the model's own timeout on top of the index's
                confirm = verifier.for_call(call)
                search = self.semantic.search(keys.scope, keys.query, policy.semantic.threshold, confirm)
                timeout_s += verifier.settings.timeout_s
            found = await self._guarded(search, timeout_s)
            if found is not None:
                entry_key, similarity = found
                entry = await self._get(entry_key)
                kind = "semantic-hit"
        if entry is None:
            return None
        age = entry.age_s()
        if max_age is not None and age > max_age:
            return None
        call.status = "cache_hit"  # the recorder keeps it: cost 0, no upstream attempt
        call.extra["cache"] = kind
        call.extra["cache_age_s"] = age
        if similarity is not None:
            call.extra["cache_similarity"] = round(similarity, 4)
        if entry.cost_usd is not None:
            call.extra["saved_usd"] = format(entry.cost_usd, "f")
        call.response_headers[HEADER] = kind
        call.response_headers["age"] = str(age)
        self._answered_by(call, entry)
        return _replay(call, entry.response) if call.stream else entry.response

    async def _get(self, key: str) -> Entry | None:
        data = await self._guarded(self.backend.get(key), self._store_timeout)
        return Entry.decode(data) if data is not None else None

    def _answered_by(self, call: Call, entry: Entry) -> None:
        """The model and deployment that produced the entry, for the record and the headers."""
        try:
            model = self.catalog.get(entry.response.model)
        except ModelNotFoundError:  # no longer configured: the record names no model
            return
        call.model = model
        call.deployment = next((d for d in model.deployments if d.key == entry.deployment), None)

    # --- store -----------------------------------------------------------------------------------

    def _storing(self, call: Call, keys: Keys, policy: CachePolicy, chunks: Stream) -> Stream:
        """The stream, unchanged; once it has ended complete, its assembled answer is stored. An
        error or a client that leaves ends it early, and nothing is stored."""
        assembler = Assembler()

        def ended(usage: Usage | None, failure: BaseException | None) -> Awaitable[None] | None:
            response = assembler.response() if failure is None else None
            return self._store(call, keys, policy, response) if response is not None else None

        return watch_stream(chunks, ended, each=assembler.add)

    async def _store(self, call: Call, keys: Keys, policy: CachePolicy, response: ChatResponse) -> None:
        if not _keepable(call, response):
            return
        deployment = call.deployment
        cost = self.catalog.cost(deployment, response.usage) if deployment is not None else None
        entry = Entry(response, time.time(), cost, deployment.key if deployment is not None else None)
        data = entry.encode()
        if len(data) > self.max_entry_bytes:
            return
        await self._guarded(self.backend.set(keys.exact, data, policy.ttl_s), self._store_timeout)
        if keys.scope is not None and self.semantic is not None:
            assert keys.query is not None
            # (Had the write above failed, a later match would find no entry: a plain miss.)
            await self._guarded(
                self.semantic.add(keys.scope, keys.query, keys.exact, policy.ttl_s), self.timeout_s
            )

    async def _guarded(self, operation: Awaitable[T], timeout_s: float | None) -> T | None:
        """``operation``'s result within ``timeout_s``, or None when it fails or is too slow (then
        one warning a minute at most): an outage of the store or index only costs its savings."""
        try:
            if timeout_s is None:
                return await operation
            async with asyncio.timeout(timeout_s):
                return await operation
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                log.warning(
                    "response cache unavailable (%s: %s); serving without it", type(exc).__name__, exc
                )
            return None


def _keepable(call: Call, response: ChatResponse) -> bool:
    """Only the answer the route itself gives: not one a guardrail filtered, not a provider's
    content filter, not a fallback model's (a stopgap, not the answer to keep serving)."""
    if call.status == "filtered":
        return False
    if any(c.finish_reason == "content_filter" for c in response.choices):
        return False
    return call.model is None or call.model.name == call.request.model


def _mark(call: Call, status: str) -> None:
    call.extra["cache"] = status
    call.response_headers[HEADER] = status


async def _replay(call: Call, response: ChatResponse) -> Stream:
    for chunk in chunks_of(response):
        if call.ttft_ms is None and any(c.delta.has_output for c in chunk.choices):
            call.ttft_ms = call.elapsed_ms()
        yield chunk


@dataclass(frozen=True, slots=True)
class _CacheControl:
    no_store: bool = False
    no_cache: bool = False
    max_age: float | None = None

    @classmethod
    def parse(cls, header: str | None) -> _CacheControl:
        if not header:
            return _NO_DIRECTIVES
        names, max_age = set(), None
        for directive in header.lower().split(","):
            name, _, value = directive.strip().partition("=")
            names.add(name)
            if name == "max-age":
                with contextlib.suppress(ValueError):  # HTTP says to ignore what it cannot read
                    max_age = max(0.0, float(value.strip().strip('"')))
        return cls("no-store" in names, "no-cache" in names, max_age)


_NO_DIRECTIVES = _CacheControl()
