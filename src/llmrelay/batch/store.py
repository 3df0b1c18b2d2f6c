"""Files and batches, durably: the tables of ``schema.py`` in the call log's database (SQLite in the
call-log directory by default; PostgreSQL, shared by every replica, when ``calllog.store`` is one).

The SQL runs on the call log's ``Database`` (``db.py``: one SQLite thread, or an asyncpg pool),
opened on the same URL: one database, one way to reach it. Owners are key ids; every read and write
a client asks for names its owner, so one key never sees another's files or batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from ..db import Database, calllog_database

FINAL = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: float

    def public(self) -> dict[str, Any]:
        """OpenAI's ``file`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str
    owner: str
    status: str
    mode: str  # provider | local
    endpoint: str
    input_file_id: str
    completion_window: str
    model: str
    metadata: dict[str, str]
    total: int
    created_at: float
    expires_at: float
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    usage: dict[str, Any] | None = None
    cost_usd: str | None = None
    provider: str | None = None
    upstream_id: str | None = None
    polled_at: float | None = None
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # not stored

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.skipped

    def public(self) -> dict[str, Any]:
        """OpenAI's ``batch`` object (plus ``x_llmrelay``: how it runs and what it cost)."""

        def ts(value: float | None) -> int | None:
            return None if value is None else int(value)

        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": ts(self.in_progress_at),
            "expires_at": ts(self.expires_at),
            "finalizing_at": ts(self.finalizing_at),
            "completed_at": ts(self.completed_at),
            "failed_at": ts(self.failed_at),
            "expired_at": ts(self.expired_at),
            "cancelling_at": ts(self.cancelling_at),
            "cancelled_at": ts(self.cancelled_at),
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata or None,
            "usage": self.usage,
            "x_llmrelay": {"mode": self.mode, "cost_usd": self.cost_usd, "not_run": self.skipped},
        }


_JSON = ("metadata", "errors", "usage")
_BATCH_COLUMNS = tuple(f.name for f in fields(BatchRecord) if f.name != "extra")
_FILE_COLUMNS = tuple(f.name for f in fields(FileRecord))
_SELECT_BATCH = f"SELECT {', '.join(_BATCH_COLUMNS)} FROM batches"
_SELECT_FILE = f"SELECT {', '.join(_FILE_COLUMNS)} FROM batch_files"


class BatchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def beside_calllog(cls, url: str, directory: Path) -> BatchStore:
        return cls(calllog_database(url, directory))

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    # -- files -------------------------------------------------------------------------------------

    async def add_file(self, record: FileRecord, content: bytes) -> None:
        names = (*_FILE_COLUMNS, "content")
        await self.db.execute(
            f"INSERT INTO batch_files ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            (*(getattr(record, n) for n in _FILE_COLUMNS), content),
        )

    async def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        rows = await self.db.fetch(_SELECT_FILE + " WHERE id = ? AND owner = ?", (file_id, owner))
        return FileRecord(*rows[0]) if rows else None

    async def file_content(self, owner: str, file_id: str) -> bytes | None:
        rows = await self.db.fetch(
            "SELECT content FROM batch_files WHERE id = ? AND owner = ?", (file_id, owner)
        )
        return bytes(rows[0][0]) if rows else None

    async def delete_file(self, owner: str, file_id: str) -> bool:
        return bool(
            await self.db.execute("DELETE FROM batch_files WHERE id = ? AND owner = ?", (file_id, owner))
        )

    async def file_in_use(self, file_id: str) -> bool:
        """Whether an unfinished batch reads this file (a forwarded one reads it again at the end)."""
        marks = ", ".join("?" * len(FINAL))
        rows = await self.db.fetch(
            f"SELECT 1 FROM batches WHERE input_file_id = ? AND status NOT IN ({marks}) LIMIT 1",
            (file_id, *FINAL),
        )
        return bool(rows)

    async def list_files(
        self, owner: str, *, purpose: str | None, after: str | None, limit: int, newest_first: bool
    ) -> tuple[list[FileRecord], bool]:
        where, args = ["owner = ?"], [owner]
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        rows = await self._page(
            _SELECT_FILE, where, args, after=after, limit=limit, newest_first=newest_first
        )
        return [FileRecord(*r) for r in rows[:limit]], len(rows) > limit

    # -- batches -----------------------------------------------------------------------------------

    async def add_batch(self, record: BatchRecord) -> None:
        await self.db.execute(
            f"INSERT INTO batches ({', '.join(_BATCH_COLUMNS)}) VALUES ({', '.join('?' * len(_BATCH_COLUMNS))})",
            [_encode(name, getattr(record, name)) for name in _BATCH_COLUMNS],
        )

    async def get_batch(self, batch_id: str, owner: str | None = None) -> BatchRecord | None:
        """The batch, if ``owner`` owns it (``None``: whoever does; for workers, not clients)."""
        if owner is None:
            rows = await self.db.fetch(_SELECT_BATCH + " WHERE id = ?", (batch_id,))
        else:
            rows = await self.db.fetch(_SELECT_BATCH + " WHERE id = ? AND owner = ?", (batch_id, owner))
        return _batch(rows[0]) if rows else None

    async def list_batches(
        self, owner: str, *, after: str | None, limit: int
    ) -> tuple[list[BatchRecord], bool]:
        rows = await self._page(
            _SELECT_BATCH, ["owner = ?"], [owner], after=after, limit=limit, newest_first=True
        )
        return [_batch(r) for r in rows[:limit]], len(rows) > limit

    async def update(self, batch_id: str, *, when: tuple[str, ...] = (), **values: Any) -> bool:
        """Set ``values`` on the batch, only while its status is one of ``when`` (if given): the one
        way a status changes, so two replicas racing for a transition cannot both make it."""
        sets = ", ".join(f"{name} = ?" for name in values)
        args = [_encode(name, v) for name, v in values.items()] + [batch_id]
        sql = f"UPDATE batches SET {sets} WHERE id = ?"
        if when:
            sql += f" AND status IN ({', '.join('?' * len(when))})"
            args += list(when)
        return bool(await self.db.execute(sql, args))

    async def claim_finalize(self, batch_id: str, *, require_done: bool) -> BatchRecord | None:
        """Take the job of ending the batch (once: the first caller wins): ``finalizing_at`` set,
        and ``in_progress`` becomes ``finalizing`` (a cancelling batch stays cancelling).
        ``require_done``: only once every request has an outcome."""
        sql = (
            "UPDATE batches SET finalizing_at = ?,"
            " status = CASE WHEN status = 'in_progress' THEN 'finalizing' ELSE status END"
            " WHERE id = ? AND finalizing_at IS NULL AND status IN ('in_progress', 'cancelling')"
        )
        if require_done:
            sql += " AND completed + failed + skipped >= total"
        if not await self.db.execute(sql, (time.time(), batch_id)):
            return None
        return await self.get_batch(batch_id)

    async def stale_finalizing(self, older_than: float) -> list[BatchRecord]:
        """Batches whose finalizer died (a crash between claim and end): to be ended again."""
        rows = await self.db.fetch(
            _SELECT_BATCH + " WHERE status IN ('finalizing', 'cancelling') AND finalizing_at < ?",
            (older_than,),
        )
        return [_batch(r) for r in rows]

    async def due_polls(self, before: float) -> list[BatchRecord]:
        """Forwarded batches still running upstream, last polled before ``before``."""
        rows = await self.db.fetch(
            _SELECT_BATCH + " WHERE mode = 'provider' AND status IN ('in_progress', 'cancelling')"
            " AND finalizing_at IS NULL AND (polled_at IS NULL OR polled_at < ?)",
            (before,),
        )
        return [_batch(r) for r in rows]

    async def claim_poll(self, record: BatchRecord, now: float) -> bool:
        """This replica polls this batch now (another that read the same ``polled_at`` does not)."""
        if record.polled_at is None:
            sql, args = (
                "UPDATE batches SET polled_at = ? WHERE id = ? AND polled_at IS NULL",
                (now, record.id),
            )
        else:
            sql, args = (
                "UPDATE batches SET polled_at = ? WHERE id = ? AND polled_at = ?",
                (now, record.id, record.polled_at),
            )
        return bool(await self.db.execute(sql, args))

    # -- finished requests -------------------------------------------------------------------------

    async def add_items(self, rows: list[tuple[str, int, int, str, str | None]]) -> None:
        """(batch id, index, outcome, output line, cost): a request already stored stays as it was
        (and is not counted again)."""
        if rows:
            await self.db.execute_many(
                "INSERT INTO batch_items (batch_id, idx, outcome, line, cost_usd) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (batch_id, idx) DO NOTHING",
                rows,
            )

    async def items(self, batch_id: str) -> list[tuple[int, int, str, str | None]]:
        """(index, outcome, line, cost) of every finished request, in input order."""
        rows = await self.db.fetch(
            "SELECT idx, outcome, line, cost_usd FROM batch_items WHERE batch_id = ? ORDER BY idx",
            (batch_id,),
        )
        return [(int(i), int(o), line, cost) for i, o, line, cost in rows]

    # -- helpers -----------------------------------------------------------------------------------

    async def _page(
        self,
        select: str,
        where: list[str],
        args: list[Any],
        *,
        after: str | None,
        limit: int,
        newest_first: bool,
    ) -> list[tuple[Any, ...]]:
        """One page of ``limit`` rows (plus one, to tell whether more follow), in id order: ids are
        ULIDs, so id order is creation order, and ``after`` is OpenAI's cursor."""
        if after:
            where = [*where, "id < ?" if newest_first else "id > ?"]
            args = [*args, after]
        order = "DESC" if newest_first else "ASC"
        sql = f"{select} WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?"
        return await self.db.fetch(sql, [*args, limit + 1])


def _encode(name: str, value: Any) -> Any:
    return orjson.dumps(value).decode() if name in _JSON and value is not None else value


def _batch(row: tuple[Any, ...]) -> BatchRecord:
    values = {
        name: (orjson.loads(v) if name in _JSON and v is not None else v)
        for name, v in zip(_BATCH_COLUMNS, row, strict=True)
    }
    return BatchRecord(**values)


__all__ = ["FINAL", "BatchRecord", "BatchStore", "FileRecord"]
