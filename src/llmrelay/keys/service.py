"""``KeyService``: what a gateway (or a ``Relay``) knows about keys: who a presented key is, the
admin operations, and the spend ledger budgets count on.

Auth must not be a database read per request: a resolved key (or an unknown one) is remembered
for ``server.key_cache_ttl_s`` seconds. A key rotated or revoked through this service is forgotten
at once; through another gateway or the CLI, this gateway notices within the TTL.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..db import PostgresUnavailable, unless_down
from ..errors import PermissionDeniedError, StoreUnavailable
from ..observability.records import key_id
from .hashing import hint, new_id, new_secret, secret_hash
from .model import KeyLimits, VirtualKey
from .spend import Ledger, LocalCounters, RedisCounters, saved_spend
from .store import KeyRecord, KeyStore, open_key_store

if TYPE_CHECKING:
    from ..config import KeyConfig, KeyFields, Settings

_CACHE_MAX = 10_000  # remembered lookups; past this the oldest go (random keys must not grow it)


class KeyService:
    def __init__(self, settings: Settings, store: KeyStore | None = None) -> None:
        master = settings.server.master_key
        self.master_key = master
        # The master key's identity: the id its calls were always recorded under.
        self.admin = VirtualKey(id=key_id(master) or "", owner="admin", admin=True) if master else None
        self.ttl_s = settings.server.key_cache_ttl_s
        self.store = store or open_key_store(
            settings.calllog.store, Path(settings.calllog.directory).expanduser()
        )
        self._seed = settings.keys
        self._budgets = settings.budgets
        self._redis_url = settings.redis_url
        self._cache: dict[str, tuple[float, VirtualKey | None]] = {}
        self._opened = False
        self.ledger: Ledger | None = None
        # Whether a key presented here can carry a guardrail policy: any key can with a master key
        # (the admin API makes them at any time); without one, only keys already in the store.
        self.guardrails_possible = master is not None or any(k.guardrails is not None for k in settings.keys)

    async def start(self) -> KeyService:
        await unless_down(self._open(), "keys", "the master key works, virtual keys once it is back")
        return self

    async def opened_store(self) -> KeyStore:
        """The key store, opened and seeded first if the database was down at start (a store read
        before that would miss the config's keys)."""
        await self._open()
        return self.store

    async def _open(self) -> None:
        if self._opened:
            return
        await self.store.open()
        if self._seed:
            await self.store.seed(config_record(k) for k in self._seed)
        if not self.guardrails_possible:  # a library Relay: keys made elsewhere may have a policy
            self.guardrails_possible = any(r.key.guardrails is not None for r in await self.store.list_keys())
        self._opened = True

    async def start_ledger(self) -> Ledger:
        """The spend ledger, started on first need (only the budget stage needs it)."""
        if self.ledger is None:
            counters = (
                RedisCounters(self._redis_url, self._budgets.redis_prefix, saved=saved_spend(self.store))
                if self._redis_url
                else LocalCounters()
            )
            ledger = Ledger(self.store, counters)
            await ledger.start()
            self.ledger = ledger
        return self.ledger

    async def aclose(self) -> None:
        if self.ledger is not None:
            await self.ledger.aclose()
            self.ledger = None
        await self.store.close()

    async def any_budget(self) -> bool:
        """Whether any active key in the store has a budget (when the store cannot say, yes)."""
        try:
            await self._open()
            records = await self.store.list_keys()
        except PostgresUnavailable as exc:
            if exc.lasting:
                raise
            return True
        return any(
            r.key.budget_daily_usd is not None or r.key.budget_monthly_usd is not None for r in records
        )

    # -- auth ------------------------------------------------------------------------------------

    async def resolve(self, presented: str | None) -> VirtualKey | None:
        """The key behind a presented secret: the admin key for the master key, the virtual key
        for an active key's secret, None for anything else."""
        if not presented:
            return None
        if self.master_key is not None and hmac.compare_digest(presented.encode(), self.master_key.encode()):
            return self.admin
        digest = secret_hash(presented)
        return await self._cached(digest, lambda: self.store.by_hash(digest))

    async def by_id(self, key_id: str | None) -> VirtualKey | None:
        """The active key with this id (the admin key for its own id), cached like ``resolve``:
        what a job or batch submitted under a key runs as."""
        if key_id is None:
            return None
        if self.admin is not None and key_id == self.admin.id:
            return self.admin
        return await self._cached(f"id:{key_id}", lambda: self.store.get(key_id))

    async def _cached(self, name: str, fetch: Callable[[], Awaitable[KeyRecord | None]]) -> VirtualKey | None:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            await self._open()
            record = await fetch()
        except PostgresUnavailable as exc:
            if cached is not None:  # the database is down: the key as last seen, not an outage,
                self._cache[name] = (now + self.ttl_s, cached[1])  # asked again after a TTL, not each call
                return cached[1]
            raise StoreUnavailable(
                "API keys cannot be checked right now (their database is unreachable); try again shortly.",
                code="key_store_unavailable",
            ) from exc
        key = record.key if record is not None and record.active else None
        if len(self._cache) >= _CACHE_MAX:
            for stale in list(self._cache)[: _CACHE_MAX // 10]:  # dicts keep insertion order
                del self._cache[stale]
        self._cache[name] = (now + self.ttl_s, key)
        return key

    def forget(self, key_id: str) -> None:
        """Drop what this gateway remembers of a key (after a rotation or a revocation)."""
        for name, (_, key) in list(self._cache.items()):
            if key is not None and key.id == key_id:
                del self._cache[name]
        self._cache.pop(f"id:{key_id}", None)

    # -- admin operations ------------------------------------------------------------------------

    async def create(self, fields: KeyFields) -> tuple[KeyRecord, str]:
        """Store a new key; returns it and its secret (shown this once, never stored)."""
        await self._open()
        secret = new_secret()
        record = KeyRecord(
            virtual_key(new_id(), fields), secret_hash(secret), hint(secret), "api", time.time()
        )
        await self.store.create(record)
        return record, secret

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str] | None:
        await self._open()
        secret = new_secret()
        record = await self.store.rotate(key_id, secret_hash(secret), hint(secret))
        self.forget(key_id)
        return (record, secret) if record is not None else None

    async def revoke(self, key_id: str) -> KeyRecord | None:
        await self._open()
        record = await self.store.revoke(key_id)
        self.forget(key_id)
        return record


def check_model(key: VirtualKey | None, model: str) -> None:
    """A virtual key reaches only its allowed models: 403 otherwise."""
    if key is not None and not key.allows(model):
        raise PermissionDeniedError(
            f"This API key ({key.id}) may not use the model '{model}'; it may use: {', '.join(key.models)}.",
            param="model",
            code="model_not_allowed",
        )


def virtual_key(key_id: str, fields: KeyFields) -> VirtualKey:
    return VirtualKey(
        id=key_id,
        owner=fields.owner,
        models=fields.models,
        limits=KeyLimits(rpm=fields.rpm, tpm=fields.tpm),
        budget_daily_usd=fields.budget_daily_usd,
        budget_monthly_usd=fields.budget_monthly_usd,
        priority=fields.priority,
        metadata=dict(fields.metadata),
        guardrails=fields.guardrails,
    )


def config_record(k: KeyConfig) -> KeyRecord:
    return KeyRecord(virtual_key(k.id, k), secret_hash(k.secret), hint(k.secret), "config", time.time())


__all__ = ["KeyService", "check_model", "config_record", "virtual_key"]
