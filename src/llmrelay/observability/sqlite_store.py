"""The embedded call store: one SQLite file in WAL mode.

``sqlite3`` blocks, so the connection lives on one worker thread of our own (``db.SqliteDatabase``)
and every operation is a job for it: the event loop never waits on the disk, and one thread means
one connection, no locking of ours, and operations run in the order they were asked for (a ``close``
runs after the writes queued before it). WAL with ``synchronous=NORMAL`` lets readers in other
processes work while we write and costs no fsync per commit; a power cut may lose the last commits,
which the call log's journal replays (writes are idempotent on id).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from decimal import Context, Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..batch.schema import SQLITE_MIGRATION as BATCH_MIGRATION
from ..db import SqliteDatabase, immediate
from ..keys.schema import KEY_GUARDRAILS_MIGRATION, KEYS_MIGRATION
from .migrations import Migrations
from .records import ATTEMPT_COLUMNS, CALL_COLUMNS, AttemptRecord, CallRecord, RejectedRecord

T = TypeVar("T")

MIGRATIONS = Migrations(
    "sqlite",
    [
        (
            "001_calls",
            """
            CREATE TABLE calls (
                id TEXT PRIMARY KEY,
                started_at REAL NOT NULL,
                ended_at REAL NOT NULL,
                api_format TEXT NOT NULL,
                api_key_id TEXT,
                end_user TEXT,
                requested_model TEXT NOT NULL,
                model TEXT,
                provider TEXT,
                upstream_model TEXT,
                stream INTEGER NOT NULL,
                status TEXT NOT NULL,
                error_message TEXT,
                prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL,
                cached_tokens INTEGER NOT NULL,
                cache_write_tokens INTEGER NOT NULL,
                reasoning_tokens INTEGER NOT NULL,
                cost_usd TEXT,  -- a Decimal as text: REAL would round it
                cost_exact INTEGER NOT NULL,
                latency_ms REAL NOT NULL,
                ttft_ms REAL,
                upstream_ms REAL NOT NULL,
                overhead_ms REAL NOT NULL,
                extra TEXT NOT NULL,  -- JSON
                request_body TEXT,  -- JSON; NULL when not kept
                response_body TEXT
            );
            -- started_at second in each: a filtered recent() reads its page in order from the index.
            CREATE INDEX calls_started_at ON calls (started_at);
            CREATE INDEX calls_model ON calls (model, started_at);
            CREATE INDEX calls_api_key_id ON calls (api_key_id, started_at);
            CREATE INDEX calls_status ON calls (status, started_at);
            """,
        ),
        (
            "002_attempts",
            """
            CREATE TABLE attempts (
                call_id TEXT NOT NULL,
                n INTEGER NOT NULL,
                model TEXT NOT NULL,
                deployment TEXT NOT NULL,
                outcome TEXT NOT NULL,
                status_code INTEGER,
                latency_ms REAL NOT NULL,
                waited_ms REAL NOT NULL,
                PRIMARY KEY (call_id, n)
            ) WITHOUT ROWID;  -- small rows always looked up by call: the key is the table
            """,
        ),
        ("003_keys", KEYS_MIGRATION),  # virtual API keys and budget spend (keys/store.py)
        ("004_key_guardrails", KEY_GUARDRAILS_MIGRATION),  # a key's guardrail policy
        ("005_batches", BATCH_MIGRATION),  # files and batches (batch/store.py)
    ],
)

# Column order of ``calls``: every scalar field of CallRecord (the test checks none is missing).
_CALL_COLUMNS = CALL_COLUMNS
_ATTEMPT_COLUMNS = ("call_id", *ATTEMPT_COLUMNS)

_SELECT_CALLS = f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls"
_SELECT_ATTEMPTS = f"SELECT {', '.join(_ATTEMPT_COLUMNS)} FROM attempts"


# ON CONFLICT (the key) DO NOTHING skips ids already stored (a replayed batch), and only those:
# INSERT OR IGNORE would also skip, without a word, a row breaking a NOT NULL constraint.
# One row per statement: 32 rows to a statement (multi-row VALUES) measured ~50% slower here.
_INSERT_CALL = (
    f"INSERT INTO calls ({', '.join(_CALL_COLUMNS)}) VALUES ({', '.join('?' * len(_CALL_COLUMNS))})"
    " ON CONFLICT (id) DO NOTHING"
)
_INSERT_ATTEMPT = (
    f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_ATTEMPT_COLUMNS))}) ON CONFLICT (call_id, n) DO NOTHING"
)

# A record in JSON form -> its row: the scalar columns as they are, then the JSON ones (the last three).
_SCALARS = itemgetter(*_CALL_COLUMNS[:-3])
_ATTEMPT_VALUES = itemgetter(*ATTEMPT_COLUMNS)
assert _CALL_COLUMNS[-3:] == ("extra", "request_body", "response_body")

# totals(by=...): the SQL of each group. day is the UTC date of started_at.
_GROUPS = {
    "model": "model",
    "key": "api_key_id",
    "user": "end_user",
    "status": "status",
    "day": "date(started_at, 'unixepoch')",
    # An experiment's arm (routing/experiments.py); calls outside experiments group as NULL.
    "variant": "json_extract(extra, '$.route.experiment') || '/' || json_extract(extra, '$.route.variant')",
}
_NOT_ERRORS = ("success", "cache_hit")

# Costs are summed as Decimals; the default 28 digits could round a large total of long fractions.
_SUM = Context(prec=60)

# A prune deletes this many calls per transaction, so writes queued behind it are not held up long.
_PRUNE_CHUNK = 5_000


class SqliteCallStore:
    """``CallStore`` on a SQLite file (``path``; its directory is created if missing)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s  # another process (a replica) holding the write lock
        self._sqlite = SqliteDatabase(
            self.path,
            migrations=MIGRATIONS,
            busy_timeout_s=busy_timeout_s,
            synchronous="NORMAL",
            optimize_on_close=True,
            label="SqliteCallStore",
        )

    async def open(self) -> None:
        await self._sqlite.open()

    async def write(self, records: Sequence[CallRecord]) -> None:
        if records:
            await self._run(self._write, list(records))

    async def write_json(self, records: list[dict[str, Any]]) -> None:
        """``write`` for records in JSON form that passed ``CallRecord.check``: their rows are built
        from the dicts as they are (~half the writer's CPU a record, against a CallRecord each)."""
        if records:
            await self._run(self._write_json, records)

    async def recent(
        self,
        *,
        limit: int = 50,
        since: float | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        status: str | None = None,
    ) -> list[CallRecord]:
        if limit <= 0:
            return []  # SQLite reads a negative LIMIT as "no limit"
        return await self._run(self._recent, limit, since, model, api_key_id, status)

    async def get(self, call_id: str) -> CallRecord | None:
        return await self._run(self._get, call_id)

    async def totals(
        self, *, by: str, since: float | None = None, api_key_id: str | None = None
    ) -> list[dict[str, Any]]:
        if by not in _GROUPS:
            raise ValueError(f"totals by {by!r}: expected one of {', '.join(_GROUPS)}")
        return await self._run(self._totals, by, since, api_key_id)

    async def prune(self, older_than: float) -> int:
        # One job per chunk: writes queued meanwhile run between the chunks.
        removed = 0
        while True:
            n = await self._run(self._prune_chunk, older_than)
            removed += n
            if n < _PRUNE_CHUNK:
                return removed

    async def close(self) -> None:
        await self._sqlite.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._sqlite.run(fn, *args)

    # The rest runs on the worker thread.

    @property
    def _db(self) -> sqlite3.Connection:
        return self._sqlite.connection

    def _write(self, records: list[CallRecord]) -> None:
        try:
            calls = [_call_row(r) for r in records]
            attempts = [_attempt_row(r.id, a) for r in records for a in r.attempts]
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. extra holding a 65-bit int
            raise RejectedRecord(f"a record cannot be stored: {exc}") from exc
        self._insert(calls, attempts)

    def _write_json(self, records: list[dict[str, Any]]) -> None:
        try:
            calls = [_json_call_row(r) for r in records]
            attempts = [(r["id"], *_ATTEMPT_VALUES(a)) for r in records for a in r.get("attempts") or ()]
        except (TypeError, ValueError, OverflowError) as exc:
            raise RejectedRecord(f"a record cannot be stored: {exc}") from exc
        self._insert(calls, attempts)

    def _insert(self, calls: list[tuple[Any, ...]], attempts: list[tuple[Any, ...]]) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that has to upgrade
        # fails with SQLITE_BUSY at once when another process writes, busy_timeout or not.
        try:
            with immediate(self._db) as db:
                db.executemany(_INSERT_CALL, calls)
                db.executemany(_INSERT_ATTEMPT, attempts)
        except Exception as exc:
            if _refused_for_data(exc):
                raise RejectedRecord(f"SQLite refused a record: {exc}") from exc
            raise  # OperationalError (locked, disk full, read-only, I/O): the store, not the data

    def _recent(
        self,
        limit: int,
        since: float | None,
        model: str | None,
        api_key_id: str | None,
        status: str | None,
    ) -> list[CallRecord]:
        where, params = _filters(since)
        if model is not None:
            where.append("model = ?")
            params.append(model)
        if api_key_id is not None:
            where.append("api_key_id = ?")
            params.append(api_key_id)
        if status is not None:
            # "error" matches "error" and every "error:<Class>". A range, not LIKE, so the index
            # on status serves it (';' is the character after ':').
            where.append("(status = ? OR (status >= ? AND status < ?))")
            params += [status, status + ":", status + ";"]
        sql = _SELECT_CALLS + _where(where) + " ORDER BY started_at DESC, id DESC LIMIT ?"
        records = [_call_record(row) for row in self._db.execute(sql, [*params, limit])]
        if records:
            by_id = {r.id: r for r in records}
            # One query for the whole page; json_each takes any number of ids in one parameter.
            rows = self._db.execute(
                _SELECT_ATTEMPTS + " WHERE call_id IN (SELECT value FROM json_each(?)) ORDER BY call_id, n",
                (orjson.dumps(list(by_id)).decode(),),
            )
            for row in rows:
                by_id[row[0]].attempts.append(AttemptRecord(*row[1:]))
        return records

    def _get(self, call_id: str) -> CallRecord | None:
        row = self._db.execute(_SELECT_CALLS + " WHERE id = ?", (call_id,)).fetchone()
        if row is None:
            return None
        record = _call_record(row)
        rows = self._db.execute(_SELECT_ATTEMPTS + " WHERE call_id = ? ORDER BY n", (call_id,))
        record.attempts = [AttemptRecord(*row[1:]) for row in rows]
        return record

    def _totals(self, by: str, since: float | None, api_key_id: str | None) -> list[dict[str, Any]]:
        # Summed in Python: SQLite's SUM over TEXT goes through REAL and loses the exact cost, and
        # the percentiles need every latency anyway. Counts and tokens ride along in the same pass.
        where, params = _filters(since)
        if api_key_id is not None:  # one key's own calls (keys/logs.py)
            where.append("api_key_id = ?")
            params.append(api_key_id)
        sql = (
            f"SELECT {_GROUPS[by]}, status, prompt_tokens, completion_tokens, cost_usd, latency_ms,"
            f" json_extract(extra, '$.route.saved_usd') FROM calls{_where(where)}"
        )
        groups: dict[Any, _Group] = {}
        for group, status, prompt, completion, cost, latency, saved in self._db.execute(sql, params):
            g = groups.get(group)
            if g is None:
                g = groups[group] = _Group()
            g.requests += 1
            if status not in _NOT_ERRORS:
                g.errors += 1
            g.prompt_tokens += prompt
            g.completion_tokens += completion
            if cost is not None:
                g.cost = _SUM.add(g.cost, Decimal(cost))
            if saved is not None:
                g.saved = _SUM.add(g.saved, Decimal(saved))
            g.latencies.append(latency)
        rows = [g.row(group) for group, g in groups.items()]
        if by == "day":
            rows.sort(key=lambda r: r["group"])
        else:
            # Highest cost first; then the busiest; then by name, so equal rows keep one order.
            rows.sort(key=lambda r: (-Decimal(r["cost_usd"]), -r["requests"], str(r["group"])))
        return rows

    def _prune_chunk(self, older_than: float) -> int:
        chunk = "SELECT id FROM calls WHERE started_at < ? ORDER BY started_at, id LIMIT ?"
        with immediate(self._db) as db:
            db.execute(f"DELETE FROM attempts WHERE call_id IN ({chunk})", (older_than, _PRUNE_CHUNK))
            removed = db.execute(
                f"DELETE FROM calls WHERE id IN ({chunk})", (older_than, _PRUNE_CHUNK)
            ).rowcount
        # The freed pages stay in the file and take the next inserts: with a steady retention the
        # file stops growing, with no VACUUM rewriting it.
        return removed


class _Group:
    __slots__ = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "saved", "latencies")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = Decimal(0)
        self.saved = Decimal(0)  # by routing, against the routes' frontier models
        self.latencies: list[float] = []

    def row(self, group: Any) -> dict[str, Any]:
        self.latencies.sort()
        return {
            "group": group,
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": str(self.cost),
            "saved_usd": str(self.saved),
            "latency_p50_ms": percentile(self.latencies, 0.50),
            "latency_p95_ms": percentile(self.latencies, 0.95),
        }


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks: PostgreSQL's ``percentile_cont``, so both
    stores give one answer. ``ordered`` is sorted and not empty."""
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _filters(since: float | None) -> tuple[list[str], list[Any]]:
    if since is None:
        return [], []
    return ["started_at >= ?"], [since]


def _where(conditions: list[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _json_call_row(r: dict[str, Any]) -> tuple[Any, ...]:
    request, response = r["request_body"], r["response_body"]
    return (
        *_SCALARS(r),
        _json(r["extra"]),
        None if request is None else _json(request),
        None if response is None else _json(response),
    )


def _refused_for_data(exc: Exception) -> bool:
    """Whether SQLite refused the rows themselves (retrying them would fail again): a NOT NULL
    constraint, a value too big (``OverflowError`` for an int over 64 bits, ``DataError`` for a
    string over SQLite's limit), a value of a type it cannot bind."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | OverflowError | ValueError):
        return True
    return isinstance(exc, sqlite3.ProgrammingError) and str(exc).startswith("Error binding parameter")


def _call_row(r: CallRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.started_at,
        r.ended_at,
        r.api_format,
        r.api_key_id,
        r.end_user,
        r.requested_model,
        r.model,
        r.provider,
        r.upstream_model,
        r.stream,
        r.status,
        r.error_message,
        r.prompt_tokens,
        r.completion_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
        None if r.cost_usd is None else str(r.cost_usd),  # str() too in case a Decimal slipped in
        r.cost_exact,
        r.latency_ms,
        r.ttft_ms,
        r.upstream_ms,
        r.overhead_ms,
        _json(r.extra),
        None if r.request_body is None else _json(r.request_body),
        None if r.response_body is None else _json(r.response_body),
    )


def _attempt_row(call_id: str, a: AttemptRecord) -> tuple[Any, ...]:
    return (call_id, a.n, a.model, a.deployment, a.outcome, a.status_code, a.latency_ms, a.waited_ms)


def _call_record(row: tuple[Any, ...]) -> CallRecord:
    values = dict(zip(_CALL_COLUMNS, row, strict=True))
    values["stream"] = bool(values["stream"])
    values["cost_exact"] = bool(values["cost_exact"])
    values["extra"] = orjson.loads(values["extra"])
    for body in ("request_body", "response_body"):
        if values[body] is not None:
            values[body] = orjson.loads(values[body])
    return CallRecord(**values)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _json_default(value: Any) -> Any:
    # A stage may put anything in ``extra``: store a readable form rather than lose the batch.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)
