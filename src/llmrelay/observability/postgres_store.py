"""The PostgreSQL call store: one call log shared by several gateway replicas.

``calls`` and ``attempts`` are range-partitioned by UTC day on ``started_at``: retention drops whole
days (``DROP TABLE`` gives the space back at once, where ``DELETE`` leaves dead rows to vacuum) and a
query over a window reads only that window's partitions. A day's partitions are created when its first
record arrives. The schema is a list of named migrations, applied in order and recorded in
``_llmrelay_migrations``; advisory locks let replicas start, write and prune at the same time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from ..batch.schema import POSTGRES_MIGRATION as BATCH_MIGRATION
from ..db import MIGRATION_LOCK, PostgresDatabase, PostgresUnavailable, apply_postgres, dsn_host
from ..keys.schema import KEY_GUARDRAILS_MIGRATION, KEYS_MIGRATION
from . import records
from .records import CALL_COLUMNS, AttemptRecord, CallRecord, RejectedRecord

log = logging.getLogger(__name__)

# Key for pg_advisory_xact_lock: creating and dropping daily partitions (the next after db.py's).
_PARTITION_LOCK = MIGRATION_LOCK + 1

# Long enough for a batch or a day's count; short enough that a half-open connection is noticed.
_COMMAND_TIMEOUT_S = 60.0
# Dropping a partition locks ``calls`` exclusively; queued behind a long report, that lock would stall
# every insert behind it. Give up instead: the partition goes at the next prune.
_PRUNE_LOCK_TIMEOUT = "5s"

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_calls",
        """
        CREATE TABLE calls (
            id                  text             NOT NULL,
            started_at          timestamptz      NOT NULL,
            ended_at            timestamptz      NOT NULL,
            api_format          text             NOT NULL,
            api_key_id          text,
            end_user            text,
            requested_model     text             NOT NULL,
            model               text,
            provider            text,
            upstream_model      text,
            stream              boolean          NOT NULL,
            status              text             NOT NULL,
            error_message       text,
            prompt_tokens       integer          NOT NULL,
            completion_tokens   integer          NOT NULL,
            cached_tokens       integer          NOT NULL,
            cache_write_tokens  integer          NOT NULL,
            reasoning_tokens    integer          NOT NULL,
            cost_usd            numeric,
            cost_exact          boolean          NOT NULL,
            latency_ms          double precision NOT NULL,
            ttft_ms             double precision,
            upstream_ms         double precision NOT NULL,
            overhead_ms         double precision NOT NULL,
            extra               jsonb            NOT NULL DEFAULT '{}',
            request_body        jsonb,
            response_body       jsonb,
            -- A partitioned table's unique keys must hold the partition key: id alone cannot be one.
            PRIMARY KEY (id, started_at)
        ) PARTITION BY RANGE (started_at);
        CREATE INDEX calls_started_at ON calls (started_at);
        CREATE INDEX calls_model ON calls (model, started_at);
        CREATE INDEX calls_api_key_id ON calls (api_key_id, started_at);
        """,
    ),
    (
        "0002_attempts",
        """
        CREATE TABLE attempts (
            call_id      text             NOT NULL,
            started_at   timestamptz      NOT NULL,  -- the call's: its partition is the call's day
            n            integer          NOT NULL,
            model        text             NOT NULL,
            deployment   text             NOT NULL,
            outcome      text             NOT NULL,
            status_code  integer,
            latency_ms   double precision NOT NULL,
            waited_ms    double precision NOT NULL,
            PRIMARY KEY (call_id, started_at, n)
        ) PARTITION BY RANGE (started_at);
        """,
    ),
    ("0003_keys", KEYS_MIGRATION),  # virtual API keys and budget spend (keys/store.py)
    ("0004_key_guardrails", KEY_GUARDRAILS_MIGRATION),  # a key's guardrail policy
    ("0005_batches", BATCH_MIGRATION),  # files and batches (batch/store.py)
)

ATTEMPT_COLUMNS = ("call_id", "started_at", *records.ATTEMPT_COLUMNS)  # partitioned by the call's day
_PARTITIONED = ("calls", "attempts")
_PARTITION_NAME = re.compile(r"^calls_p(\d{8})$")

_SELECT_CALLS = f"SELECT {', '.join(CALL_COLUMNS)} FROM calls"
_SELECT_ATTEMPTS = (
    "SELECT call_id, started_at, n, model, deployment, outcome, status_code, latency_ms, waited_ms"
    " FROM attempts WHERE call_id = ANY($1::text[]) AND started_at BETWEEN $2 AND $3"  # the range prunes
    " ORDER BY call_id, n"
)

# Each group as a SQL expression; ``day`` is the UTC calendar day, whatever the session's TimeZone.
_GROUPS = {
    "model": "model",
    "key": "api_key_id",
    "user": "end_user",
    "day": "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "status": "status",
    # An experiment's arm (routing/experiments.py); calls outside experiments group as NULL.
    "variant": "(extra->'route'->>'experiment') || '/' || (extra->'route'->>'variant')",
}


class PostgresCallStore:
    def __init__(
        self, dsn: str, *, pool_min: int = 1, pool_max: int = 4, connect_timeout: float = 10.0
    ) -> None:
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.connect_timeout = connect_timeout
        self._db = PostgresDatabase(
            dsn,
            migrations=MIGRATIONS,
            pool_min=pool_min,
            pool_max=pool_max,
            connect_timeout=connect_timeout,
            command_timeout=_COMMAND_TIMEOUT_S,
            init=_create_staging,  # each connection's staging tables copy the migrated tables
            label="calllog.store",
        )
        # Days whose partitions are known to exist. Another replica's prune can drop one behind our
        # back: an insert that then finds no partition forgets the day and creates it again.
        self._partitions: set[date] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    # -- writing ---------------------------------------------------------------------------------

    async def write(self, records: list[CallRecord]) -> None:
        """One transaction per batch; ids already stored are skipped, so a replayed batch is harmless.
        Records PostgreSQL refuses for their data raise ``RejectedRecord``; other errors (PostgreSQL
        down included) propagate as they are: the caller keeps the batch and retries."""
        if not records:
            return
        try:
            calls = [_call_row(r) for r in records]
            attempts = [_attempt_row(r, a, calls[i][1]) for i, r in enumerate(records) for a in r.attempts]
        except (TypeError, ValueError, OverflowError, OSError) as exc:  # no I/O yet: a timestamp
            # out of range is an OverflowError, ValueError or (for some) OSError from fromtimestamp
            raise RejectedRecord(f"a record cannot be stored: {exc}") from exc
        days = {row[1].date() for row in calls}
        async with self._db.connection() as conn:
            await self._ensure_partitions(conn, days)
            try:
                try:
                    await _insert(conn, calls, attempts)
                except asyncpg.CheckViolationError:  # "no partition of relation ... found for row"
                    self._partitions -= days
                    await self._ensure_partitions(conn, days)
                    await _insert(conn, calls, attempts)
            except _DATA_ERRORS as exc:
                raise RejectedRecord(f"PostgreSQL refused a record: {exc}") from exc

    async def write_json(self, records: list[dict[str, Any]]) -> None:
        """``write`` for records in JSON form that passed ``CallRecord.check``."""
        try:
            built = [CallRecord.from_dict(r, checked=True) for r in records]
        except (TypeError, ValueError) as exc:  # check() should have caught it: still not a stall
            raise RejectedRecord(f"a record cannot be stored: {exc}") from exc
        await self.write(built)

    async def _ensure_partitions(self, conn: asyncpg.Connection, days: set[date]) -> None:
        missing = days - self._partitions
        if not missing:
            return
        today = datetime.now(UTC).date()
        if today in missing:
            # Tomorrow's too, so the first write after midnight does no DDL (which takes an exclusive
            # lock on the parent and would queue behind any long-running report).
            missing.add(today + timedelta(days=1))
        async with conn.transaction():
            # Two replicas running CREATE TABLE IF NOT EXISTS for one name at once can still collide
            # in the catalog: take turns.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
            for day in sorted(missing):
                low, high = _day_start(day).isoformat(), _day_start(day + timedelta(days=1)).isoformat()
                for table in _PARTITIONED:
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {_partition(table, day)} PARTITION OF {table}"
                        f" FOR VALUES FROM ('{low}') TO ('{high}')"
                    )
        self._partitions |= missing

    # -- reading ---------------------------------------------------------------------------------

    async def recent(
        self,
        *,
        limit: int = 50,
        since: float | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        status: str | None = None,
    ) -> list[CallRecord]:
        """Newest first. ``status`` matches exactly or as a prefix before ':' ("error" finds
        "error:Timeout")."""
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if since is not None:
            where.append(f"started_at >= {arg(_timestamp(since))}")
        if model is not None:
            where.append(f"model = {arg(model)}")
        if api_key_id is not None:
            where.append(f"api_key_id = {arg(api_key_id)}")
        if status is not None:
            where.append(f"(status = {arg(status)} OR status LIKE {arg(_like_escape(status) + ':%')})")
        sql = _SELECT_CALLS + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY started_at DESC, id DESC LIMIT {arg(max(limit, 0))}"
        async with self._db.connection() as conn:
            return await _with_attempts(conn, await conn.fetch(sql, *args))

    async def get(self, call_id: str) -> CallRecord | None:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                _SELECT_CALLS + " WHERE id = $1 ORDER BY started_at DESC LIMIT 1", call_id
            )
            records = await _with_attempts(conn, rows)
        return records[0] if records else None

    async def totals(
        self, *, by: str, since: float | None = None, api_key_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Per group: requests, errors (neither success nor cache_hit), tokens, exact cost (a string),
        latency p50/p95 (interpolated). Most expensive first; by day, oldest first."""
        try:
            group = _GROUPS[by]
        except KeyError:
            raise ValueError(f"totals(by=...) must be one of {', '.join(_GROUPS)}; got {by!r}") from None
        conditions, args = [], []
        if since is not None:
            args.append(_timestamp(since))
            conditions.append(f"started_at >= ${len(args)}")
        if api_key_id is not None:  # one key's own calls (keys/logs.py)
            args.append(api_key_id)
            conditions.append(f"api_key_id = ${len(args)}")
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        # Positions, not names: "cost_usd" is also an input column.
        order = "1" if by == "day" else "6 DESC, 2 DESC, 1 NULLS LAST"
        sql = f"""
            SELECT {group} AS "group",
                   count(*) AS requests,
                   count(*) FILTER (WHERE status NOT IN ('success', 'cache_hit')) AS errors,
                   coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
                   coalesce(sum(completion_tokens), 0) AS completion_tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd,
                   coalesce(sum((extra->'route'->>'saved_usd')::numeric), 0) AS saved_usd,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS latency_p50_ms,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms
            FROM calls {where}
            GROUP BY 1
            ORDER BY {order}
        """
        async with self._db.connection() as conn:
            rows = await conn.fetch(sql, *args)
        return [
            {**dict(row), "cost_usd": _money(row["cost_usd"]), "saved_usd": _money(row["saved_usd"])}
            for row in rows
        ]

    # -- retention -------------------------------------------------------------------------------

    async def prune(self, older_than: float) -> int:
        """Remove calls (and their attempts) started before ``older_than``: each day entirely before it
        by dropping its partitions, the day it falls in by deleting rows. Returns the calls removed."""
        cutoff = _timestamp(older_than)
        removed = 0
        async with self._db.connection() as conn:
            names = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'calls'::regclass"
            )
            days = sorted(
                datetime.strptime(m[1], "%Y%m%d").date()
                for m in (_PARTITION_NAME.match(r["relname"]) for r in names)
                if m
            )
            for day in days:
                if _day_start(day + timedelta(days=1)) > cutoff:
                    break
                try:
                    removed += await _drop_day(conn, day)
                except asyncpg.LockNotAvailableError:
                    log.warning("call store: partitions for %s are busy; they go at the next prune", day)
                self._partitions.discard(day)
            # The day the cutoff falls in: its partition stays, its earlier rows go.
            day_start = _day_start(cutoff.date())
            if day_start < cutoff:
                async with conn.transaction():
                    await conn.execute(
                        "DELETE FROM attempts WHERE started_at >= $1 AND started_at < $2", day_start, cutoff
                    )
                    status = await conn.execute(
                        "DELETE FROM calls WHERE started_at >= $1 AND started_at < $2", day_start, cutoff
                    )
                removed += int(status.split()[-1])  # "DELETE <n>"
        return removed


# -- migrations ----------------------------------------------------------------------------------


async def apply_migrations(
    conn: asyncpg.Connection, migrations: Iterable[tuple[str, str]] = MIGRATIONS
) -> list[str]:
    """Apply, in order and in one transaction, the call store's migrations not yet recorded."""
    return await apply_postgres(conn, migrations)


# -- helpers -------------------------------------------------------------------------------------

# Refusals of the rows themselves: SQLSTATE class 22 (a value out of range, a NUL in text) and 23
# (a NOT NULL), and asyncpg's own encoding errors (an int over 32 bits, a str for a number), raised
# before anything is sent. Connection and server errors (class 08, 53 disk full, 57 shutdown ...)
# are not among them: the batch waits and is tried again.
_DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    OverflowError,
    TypeError,
    ValueError,
)

# Batches arrive by COPY into per-connection staging tables, then move over with INSERT ... SELECT
# ... ON CONFLICT DO NOTHING (COPY itself cannot skip ids already stored). Measured here in batches of
# 500 with one attempt each: ~27k records/s, against ~21k for executemany of INSERT ... ON CONFLICT.
# ON COMMIT DELETE ROWS empties them with each batch's commit; they live as long as the connection.
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS _llmrelay_calls_in (LIKE calls) ON COMMIT DELETE ROWS;"
    " CREATE TEMP TABLE IF NOT EXISTS _llmrelay_attempts_in (LIKE attempts) ON COMMIT DELETE ROWS"
)
_MOVE_CALLS = (
    f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) SELECT {', '.join(CALL_COLUMNS)}"
    f" FROM _llmrelay_calls_in ON CONFLICT DO NOTHING"
)
_MOVE_ATTEMPTS = (
    f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) SELECT {', '.join(ATTEMPT_COLUMNS)}"
    f" FROM _llmrelay_attempts_in ON CONFLICT DO NOTHING"
)


async def _create_staging(conn: asyncpg.Connection) -> None:
    await conn.execute(_STAGING)


async def _insert(
    conn: asyncpg.Connection, calls: list[tuple[Any, ...]], attempts: list[tuple[Any, ...]]
) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("_llmrelay_calls_in", records=calls, columns=CALL_COLUMNS)
        await conn.execute(_MOVE_CALLS)
        if attempts:
            await conn.copy_records_to_table(
                "_llmrelay_attempts_in", records=attempts, columns=ATTEMPT_COLUMNS
            )
            await conn.execute(_MOVE_ATTEMPTS)


async def _drop_day(conn: asyncpg.Connection, day: date) -> int:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{_PRUNE_LOCK_TIMEOUT}'")
        # Serialized with partition creation and other replicas' prunes, so a day is counted once.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
        calls, attempts = _partition("calls", day), _partition("attempts", day)
        if await conn.fetchval("SELECT to_regclass($1)", calls) is None:
            return 0
        count = await conn.fetchval(f"SELECT count(*) FROM {calls}")
        await conn.execute(f"DROP TABLE IF EXISTS {calls}, {attempts}")
    return count


async def _with_attempts(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[CallRecord]:
    """The records of ``rows`` with their attempts, fetched in one query for the whole page."""
    if not rows:
        return []
    starts = [row["started_at"] for row in rows]
    found = await conn.fetch(_SELECT_ATTEMPTS, [row["id"] for row in rows], min(starts), max(starts))
    by_call: dict[tuple[str, datetime], list[AttemptRecord]] = {}
    for a in found:
        by_call.setdefault((a["call_id"], a["started_at"]), []).append(
            AttemptRecord(
                a["n"],
                a["model"],
                a["deployment"],
                a["outcome"],
                a["status_code"],
                a["latency_ms"],
                a["waited_ms"],
            )
        )
    return [_record(row, by_call.get((row["id"], row["started_at"]), [])) for row in rows]


def _call_row(r: CallRecord) -> tuple[Any, ...]:
    return (
        r.id,
        _timestamp(r.started_at),
        _timestamp(r.ended_at),
        r.api_format,
        _text(r.api_key_id),
        _text(r.end_user),
        _text(r.requested_model),
        _text(r.model),
        _text(r.provider),
        _text(r.upstream_model),
        r.stream,
        _text(r.status),
        _text(r.error_message),
        r.prompt_tokens,
        r.completion_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
        Decimal(r.cost_usd) if r.cost_usd is not None else None,
        r.cost_exact,
        r.latency_ms,
        r.ttft_ms,
        r.upstream_ms,
        r.overhead_ms,
        _json(r.extra or {}),
        _json(r.request_body) if r.request_body is not None else None,
        _json(r.response_body) if r.response_body is not None else None,
    )


def _attempt_row(r: CallRecord, a: AttemptRecord, started_at: datetime) -> tuple[Any, ...]:
    return (
        r.id,
        started_at,
        a.n,
        _text(a.model),
        _text(a.deployment),
        _text(a.outcome),
        a.status_code,
        a.latency_ms,
        a.waited_ms,
    )


def _record(row: asyncpg.Record, attempts: list[AttemptRecord]) -> CallRecord:
    fields = dict(row)
    fields["started_at"] = row["started_at"].timestamp()
    fields["ended_at"] = row["ended_at"].timestamp()
    fields["cost_usd"] = _money(row["cost_usd"]) if row["cost_usd"] is not None else None
    for name in ("extra", "request_body", "response_body"):
        fields[name] = orjson.loads(row[name]) if row[name] is not None else None
    return CallRecord(**fields, attempts=attempts)


def _timestamp(seconds: float) -> datetime:
    # timestamptz keeps microseconds: a record's times come back rounded to the microsecond.
    return datetime.fromtimestamp(seconds, UTC)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _partition(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _money(value: Decimal) -> str:
    return format(value, "f")  # plain digits: str() would write 1.5E-7 for a very cheap call


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; one in a client's `user` field must not wedge the whole batch
    # (the caller retries a failed batch until it goes in).
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _json(value: Any) -> str:
    text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    if "\\u0000" in text:  # jsonb refuses NUL too: clean the strings (rare, so the slow way)
        text = orjson.dumps(_without_nul(value), default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k) if isinstance(k, str) else k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


__all__ = ["MIGRATIONS", "PostgresCallStore", "PostgresUnavailable", "apply_migrations", "dsn_host"]
