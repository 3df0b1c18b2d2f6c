"""The key store: virtual keys (hashed) and budget spend, in the call log's database.

One implementation of the queries (``KeyStore``) over the call log's database (``db.py``: SQLite on a
thread of its own, or an asyncpg pool). The tables are a migration in each call store's list
(``schema.py``), so opening a key store first migrates the database exactly as the call log would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from ..config import GuardrailPolicy
from ..db import Database, calllog_postgres, calllog_sqlite, sqlite_path
from ..errors import ConfigError
from ..guardrails.policy import as_json
from .hashing import same_hash
from .model import KeyLimits, VirtualKey

_COLUMNS = (
    "id, secret_hash, hint, owner, models, rpm, tpm, budget_daily_usd, budget_monthly_usd, priority,"
    " metadata, source, created_at, rotated_at, revoked_at, guardrails"
)
_SELECT = f"SELECT {_COLUMNS} FROM api_keys"
_INSERT = f"INSERT INTO api_keys ({_COLUMNS}) VALUES ({', '.join('?' * 16)})"
_SEED = (
    _INSERT + " ON CONFLICT (id) DO UPDATE SET secret_hash = excluded.secret_hash, hint = excluded.hint,"
    " owner = excluded.owner, models = excluded.models, rpm = excluded.rpm, tpm = excluded.tpm,"
    " budget_daily_usd = excluded.budget_daily_usd, budget_monthly_usd = excluded.budget_monthly_usd,"
    " priority = excluded.priority, metadata = excluded.metadata, guardrails = excluded.guardrails,"
    " revoked_at = NULL"
    " WHERE api_keys.source = 'config'"  # never overwrite a key made through the API
)
_ADD_SPEND = (
    "INSERT INTO budget_spend (scope, period, spent_pico, updated_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (scope, period) DO UPDATE SET spent_pico = budget_spend.spent_pico + excluded.spent_pico,"
    " updated_at = excluded.updated_at"
)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as stored: the public ``VirtualKey`` plus what only the store and the admin see."""

    key: VirtualKey
    secret_hash: str
    hint: str
    source: str  # api | config
    created_at: float
    rotated_at: float | None = None
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """The admin API's and the CLI's view: never the hash."""
        k = self.key
        return {
            "id": k.id,
            "object": "api_key",
            "owner": k.owner,
            "hint": self.hint,
            "models": list(k.models),
            "rpm": k.limits.rpm,
            "tpm": k.limits.tpm,
            "budget_daily_usd": _text(k.budget_daily_usd),
            "budget_monthly_usd": _text(k.budget_monthly_usd),
            "priority": k.priority,
            "metadata": dict(k.metadata),
            "guardrails": None if k.guardrails is None else as_json(k.guardrails),
            "source": self.source,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
            "revoked_at": self.revoked_at,
        }


class KeyStore:
    """The queries, over the call log's ``Database`` (placeholders written ``?``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    # -- keys --------------------------------------------------------------------------------------

    async def create(self, record: KeyRecord) -> None:
        await self.db.execute(_INSERT, _row(record))

    async def by_hash(self, secret_hash: str) -> KeyRecord | None:
        rows = await self.db.fetch(_SELECT + " WHERE secret_hash = ?", (secret_hash,))
        if not rows:
            return None
        record = _record(rows[0])
        # Found by the hash, so equal: compared again in constant time so no code path ever
        # compares key material with ``==``.
        return record if same_hash(record.secret_hash, secret_hash) else None

    async def get(self, key_id: str) -> KeyRecord | None:
        rows = await self.db.fetch(_SELECT + " WHERE id = ?", (key_id,))
        return _record(rows[0]) if rows else None

    async def list_keys(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        return [_record(row) for row in await self.db.fetch(_SELECT + where + " ORDER BY created_at, id")]

    async def rotate(self, key_id: str, secret_hash: str, hint: str) -> KeyRecord | None:
        """A new secret for an active key: the old one stops working. None if no such active key."""
        changed = await self.db.execute(
            "UPDATE api_keys SET secret_hash = ?, hint = ?, rotated_at = ? WHERE id = ? AND revoked_at IS NULL",
            (secret_hash, hint, time.time(), key_id),
        )
        return await self.get(key_id) if changed else None

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Revoke a key (again is fine: the first time stands). None if there is no such key."""
        await self.db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
        )
        return await self.get(key_id)

    async def seed(self, records: Iterable[KeyRecord]) -> None:
        """Make the config's keys what the store holds: each inserted or updated, and every other
        config-sourced key revoked (it was removed from the config)."""
        records = list(records)
        for record in records:
            try:
                await self.db.execute(_SEED, _row(record))
            except Exception as exc:  # the drivers' unique-violation errors share no base class
                if "unique" not in str(exc).lower():
                    raise
                raise ConfigError(
                    f"keys: {record.key.id!r} has the secret of another key in the store"
                ) from None
        listed = {r.key.id for r in records}
        for (key_id,) in await self.db.fetch(
            "SELECT id FROM api_keys WHERE source = 'config' AND revoked_at IS NULL"
        ):
            if key_id not in listed:
                await self.revoke(key_id)

    # -- spend -------------------------------------------------------------------------------------

    async def add_spend(self, deltas: dict[tuple[str, str], int]) -> None:
        """Add pico-dollars to (scope, period) counters."""
        now = time.time()
        rows: list[Sequence[Any]] = [(s, p, d, now) for (s, p), d in deltas.items() if d]
        if rows:
            await self.db.execute_many(_ADD_SPEND, rows)

    async def spend(
        self, periods: Sequence[str], scopes: Sequence[str] | None = None
    ) -> dict[tuple[str, str], int]:
        """Every counter of these periods (of these scopes only, when given)."""
        if not periods or scopes == []:
            return {}
        sql = f"SELECT scope, period, spent_pico FROM budget_spend WHERE period IN ({_marks(periods)})"
        params = list(periods)
        if scopes is not None:
            sql += f" AND scope IN ({_marks(scopes)})"
            params += scopes
        rows = await self.db.fetch(sql, params)
        return {(scope, period): int(spent) for scope, period, spent in rows}


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


class SqliteKeyStore(KeyStore):
    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        super().__init__(calllog_sqlite(path, busy_timeout_s=busy_timeout_s, label="SqliteKeyStore"))


class PostgresKeyStore(KeyStore):
    def __init__(self, dsn: str, *, connect_timeout: float = 10.0) -> None:
        super().__init__(calllog_postgres(dsn, connect_timeout=connect_timeout))


def open_key_store(url: str, directory: Path) -> KeyStore:
    """The key store beside the call log's (``calllog.store``): same URL, same database."""
    path = sqlite_path(url, directory, setting="calllog.store")
    return PostgresKeyStore(url) if path is None else SqliteKeyStore(path)


# -- rows ------------------------------------------------------------------------------------------


def _row(r: KeyRecord) -> tuple[Any, ...]:
    k = r.key
    return (
        k.id,
        r.secret_hash,
        r.hint,
        k.owner,
        orjson.dumps(list(k.models)).decode(),
        k.limits.rpm,
        k.limits.tpm,
        _text(k.budget_daily_usd),
        _text(k.budget_monthly_usd),
        k.priority,
        orjson.dumps(dict(k.metadata)).decode(),
        r.source,
        r.created_at,
        r.rotated_at,
        r.revoked_at,
        None if k.guardrails is None else orjson.dumps(as_json(k.guardrails)).decode(),
    )


def _record(row: tuple[Any, ...]) -> KeyRecord:
    (
        kid,
        h,
        hint,
        owner,
        models,
        rpm,
        tpm,
        daily,
        monthly,
        priority,
        meta,
        source,
        created,
        rotated,
        revoked,
        guardrails,
    ) = row
    key = VirtualKey(
        id=kid,
        owner=owner,
        models=tuple(orjson.loads(models)),
        limits=KeyLimits(rpm=rpm, tpm=tpm),
        budget_daily_usd=Decimal(daily) if daily is not None else None,
        budget_monthly_usd=Decimal(monthly) if monthly is not None else None,
        priority=priority,
        metadata=orjson.loads(meta),
        guardrails=_policy(guardrails),
    )
    return KeyRecord(key, h, hint, source, created, rotated, revoked)


def _policy(stored: str | None) -> str | GuardrailPolicy | None:
    if stored is None:
        return None
    value = orjson.loads(stored)
    return value if isinstance(value, str) else GuardrailPolicy.model_validate(value)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


__all__ = ["KeyRecord", "KeyStore", "PostgresKeyStore", "SqliteKeyStore", "open_key_store"]
