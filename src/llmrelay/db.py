"""One way to reach a database: SQLite on a thread of its own, or PostgreSQL through an asyncpg pool.

The stores (calls, keys, batches, jobs) write their SQL once, with ``?`` placeholders, and run it
through a ``Database``: ``fetch`` (reads), ``write_fetch`` (``UPDATE ... RETURNING``), ``execute``
(the rows changed), ``execute_many`` and ``transaction`` (several statements, all or none). Each
database opens by applying its store's migrations, so a store never sees an old schema.

SQLite blocks, so its connection lives on one worker thread and every operation is a job for it: the
event loop never waits on the disk, and operations run in the order they were asked for. Writes take
the write lock up front (``BEGIN IMMEDIATE``): a statement that reads first and upgrades later can
meet another process's write and fail at once instead of waiting out the busy timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from .errors import ConfigError

if TYPE_CHECKING:
    from .observability.migrations import Migrations

log = logging.getLogger(__name__)

T = TypeVar("T")
Steps = list[tuple[str, Sequence[Any]]]

# Key for pg_advisory_xact_lock, spelled so no other application on the database is likely to use it.
MIGRATION_LOCK = int.from_bytes(b"llmrelay", "big")  # "llmrelay" as an int64


class PostgresUnavailable(ConnectionError):
    """PostgreSQL could not be reached (or refused us) when a store opened. ``lasting``: it
    refused us (a bad password, no such database), which waiting will not mend."""

    def __init__(self, message: str, *, lasting: bool = False) -> None:
        super().__init__(message)
        self.lasting = lasting


async def unless_down(step: Awaitable[Any], what: str, meanwhile: str) -> None:
    """Await ``step`` (a store opening, at start-up); PostgreSQL down is one warning, not a failed
    start: a replica restarted during an outage must serve. Refused (``lasting``) still raises."""
    try:
        await step
    except PostgresUnavailable as exc:
        if exc.lasting:
            raise
        log.warning("%s: %s; %s", what, exc, meanwhile)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """What talking to a PostgreSQL that is down, restarting, shutting down, full or cut off
    raises: connection refused, reset or timed out, and asyncpg's errors for those."""
    try:
        import asyncpg
    except ImportError:  # no PostgreSQL here
        return (OSError, TimeoutError)
    return (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
        asyncpg.TooManyConnectionsError,
    )


class Database:
    """What the stores' queries run on (placeholders written ``?``)."""

    dialect: str  # "sqlite" | "postgresql"

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def write_fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A write that returns rows (``UPDATE ... RETURNING``)."""
        raise NotImplementedError

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        raise NotImplementedError

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def transaction(self, steps: Steps, *, guarded: bool = False, durable: bool = False) -> list[int]:
        """Run statements in one transaction; the rows each changed. ``guarded``: when the first
        changes nothing, the transaction stops there and is rolled back. ``durable``: committed
        only once on disk (where the database was told it need not wait)."""
        raise NotImplementedError


# -- SQLite ----------------------------------------------------------------------------------------


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction on an autocommit connection (``isolation_level=None``), its lock taken up
    front; committed when the block ends, rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class _Rollback(Exception):
    """A transaction whose first (guarding) statement changed nothing: undo the rest."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts


class SqliteDatabase(Database):
    """One file in WAL mode (its directory created if missing), its connection on one thread."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        migrations: Migrations,
        busy_timeout_s: float = 5.0,
        synchronous: str | None = None,
        optimize_on_close: bool = False,
        label: str = "SQLite database",
    ) -> None:
        self.path = Path(path)
        self.migrations = migrations
        self.busy_timeout_s = busy_timeout_s  # another process holding the write lock
        # "NORMAL": no fsync per commit; a power cut (not a killed process) may lose the last ones.
        self.synchronous = synchronous
        self.optimize_on_close = optimize_on_close
        self.label = label
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the executor's thread

    async def open(self) -> None:
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmrelay-sqlite")
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._open)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            executor.shutdown(wait=True)  # idle by now: this only joins the thread

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the connection's thread (where ``connection`` may be used)."""
        if self._executor is None:
            raise RuntimeError(f"{self.label} is not open")
        # A cancelled caller does not stop the job: a write already started still commits.
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection: on the worker thread only (inside ``run``)."""
        assert self._conn is not None
        return self._conn

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self.run(lambda: self.connection.execute(sql, tuple(args)).fetchall())

    async def write_fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def write() -> list[tuple[Any, ...]]:
            with immediate(self.connection) as db:
                return db.execute(sql, tuple(args)).fetchall()

        return await self.run(write)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        [count] = await self.transaction([(sql, args)])
        return count

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        def write() -> None:
            with immediate(self.connection) as db:
                db.executemany(sql, rows)

        await self.run(write)

    async def transaction(self, steps: Steps, *, guarded: bool = False, durable: bool = False) -> list[int]:
        # ``durable`` changes nothing here: every commit alike survives a killed process.
        def write() -> list[int]:
            counts: list[int] = []
            with immediate(self.connection) as db:
                for sql, args in steps:
                    counts.append(db.execute(sql, tuple(args)).rowcount)
                    if guarded and counts[0] == 0:
                        raise _Rollback(counts)
            return counts

        try:
            return await self.run(write)
        except _Rollback as rolled:
            return rolled.counts

    def _open(self) -> None:
        from .observability.migrations import apply_sqlite

        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we write BEGIN/COMMIT ourselves (``immediate``) instead of the
        # module's implicit transactions.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            if self.synchronous is not None:
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            apply_sqlite(conn, self.migrations)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self.optimize_on_close:
                conn.execute("PRAGMA optimize")  # what SQLite advises before closing
        except sqlite3.OperationalError:
            # Advice, not a duty: another process (the gateway's writer) may hold the database, and
            # a reader closing must not fail for that.
            pass
        finally:
            conn.close()


# -- PostgreSQL ------------------------------------------------------------------------------------

_MARK = re.compile(r"\?")


def numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (no ``?`` appears in our SQL otherwise)."""
    counter = itertools.count(1)
    return _MARK.sub(lambda _: f"${next(counter)}", sql)


def rowcount(status: str) -> int:
    """The rows a statement changed, from asyncpg's status: "UPDATE <n>", "INSERT 0 <n>", "DELETE <n>"."""
    return int(status.split()[-1])


class _OneLine(logging.Filter):
    """asyncpg retries its pool's lost connections in the background (backing off to a minute) and
    logs each failure with a traceback: during an outage, a page of the same stack a minute. The
    one line is what an operator needs; our own "cannot connect" warnings say the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()} ({record.exc_info[1]!r})"
            record.args = None
            record.exc_info = None
        return True


def _quiet_pool_retries() -> None:
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OneLine) for f in pool_log.filters):
        pool_log.addFilter(_OneLine())


class PostgresDatabase(Database):
    """An asyncpg pool, opened after the migrations ran on a connection of their own."""

    dialect = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        migrations: Iterable[tuple[str, str]],
        pool_min: int = 1,
        pool_max: int = 2,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
        init: Callable[[Any], Awaitable[None]] | None = None,
        server_settings: dict[str, str] | None = None,
        label: str = "PostgreSQL database",
    ) -> None:
        self.dsn = dsn
        self.migrations = tuple(migrations)
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.init = init
        self.server_settings = server_settings
        self.label = label
        self._pool: Any = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            import asyncpg
        except ImportError:
            raise ConfigError(
                f"{self.label} is PostgreSQL but asyncpg is not installed: pip install 'llmrelay[postgres]'"
            ) from None
        where = dsn_host(self.dsn)
        unreachable = unreachable_errors()
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
        except unreachable as exc:  # refused, timed out, starting up
            raise PostgresUnavailable(
                f"cannot connect to PostgreSQL at {where} ({self.label}): {exc}"
            ) from exc
        except asyncpg.PostgresError as exc:  # a bad password, no such database
            raise PostgresUnavailable(
                f"PostgreSQL at {where} ({self.label}) refused us: {exc}", lasting=True
            ) from exc
        try:
            applied = await apply_postgres(conn, self.migrations)
        finally:
            await conn.close()
        if applied:
            log.info("%s: applied migrations %s on PostgreSQL at %s", self.label, ", ".join(applied), where)
        _quiet_pool_retries()
        try:
            # The pool comes after the migrations: an ``init`` may copy the tables they made.
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                init=self.init,
                server_settings=self.server_settings,
            )
        except unreachable as exc:
            raise PostgresUnavailable(
                f"lost PostgreSQL at {where} ({self.label}) while opening: {exc}"
            ) from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled connection. The pool opens here if PostgreSQL was down when the store started
        (a gateway serves through an outage); a database down, restarting or cut off, here or
        mid-query, is ``PostgresUnavailable``, whatever asyncpg or the socket raised."""
        if self._pool is None:
            await self.open()
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except unreachable_errors() as exc:
            raise PostgresUnavailable(
                f"lost PostgreSQL at {dsn_host(self.dsn)} ({self.label}): {exc}"
            ) from exc

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.connection() as conn:
            return [tuple(row) for row in await conn.fetch(numbered(sql), *args)]

    write_fetch = fetch  # one statement is its own transaction

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self.connection() as conn:
            return rowcount(await conn.execute(numbered(sql), *args))

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.connection() as conn:
            await conn.executemany(numbered(sql), rows)

    async def transaction(self, steps: Steps, *, guarded: bool = False, durable: bool = False) -> list[int]:
        async with self.connection() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                if durable:
                    await conn.execute("SET LOCAL synchronous_commit = on")
                counts = []
                for sql, args in steps:
                    counts.append(rowcount(await conn.execute(numbered(sql), *args)))
                    if guarded and counts[0] == 0:
                        await tx.rollback()
                        return counts
                await tx.commit()
                return counts
            except BaseException:
                await tx.rollback()
                raise


async def apply_postgres(conn: Any, migrations: Iterable[tuple[str, str]]) -> list[str]:
    """Apply, in order and in one transaction, the migrations not yet recorded; return their names."""
    async with conn.transaction():
        # Replicas starting together on an empty database: the first migrates, the others wait and
        # then find nothing left to do.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS _llmrelay_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM _llmrelay_migrations")}
        applied = []
        for name, sql in migrations:
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO _llmrelay_migrations (name) VALUES ($1)", name)
            applied.append(name)
        # Names recorded but unknown here are a newer replica's (a rolling deploy); migrations only
        # add, so this one can keep running on the schema as it is.
    return applied


def dsn_host(dsn: str) -> str:
    """host:port of a DSN, for error messages (never the password)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
        return f"{host}:{parts.port or 5432}"
    except ValueError:
        return "the configured host"


# -- URLs ------------------------------------------------------------------------------------------


def sqlite_path(url: str, directory: Path, *, setting: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (relative paths under ``directory``); None for a
    ``postgresql://`` one; a ConfigError naming ``setting`` for anything else."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :]).expanduser()
        return path if path.is_absolute() else Path(directory).expanduser() / path
    raise ConfigError(f"{setting} must be sqlite:///<path> or postgresql://...; got {url!r}")


def calllog_sqlite(path: str | Path, **options: Any) -> SqliteDatabase:
    """The call log's SQLite file, migrated as the call store would: the key and batch tables are
    migrations in the call stores' lists."""
    from .observability.sqlite_store import MIGRATIONS

    return SqliteDatabase(path, migrations=MIGRATIONS, **options)


def calllog_postgres(dsn: str, **options: Any) -> PostgresDatabase:
    """The call log's PostgreSQL database, migrated as the call store would."""
    from .observability.postgres_store import MIGRATIONS

    return PostgresDatabase(dsn, migrations=MIGRATIONS, **{"label": "calllog.store", **options})


def calllog_database(url: str, directory: Path) -> Database:
    """The call log's database from its URL (``calllog.store``)."""
    path = sqlite_path(url, directory, setting="calllog.store")
    return calllog_postgres(url) if path is None else calllog_sqlite(path)


__all__ = [
    "Database",
    "PostgresDatabase",
    "PostgresUnavailable",
    "unless_down",
    "unreachable_errors",
    "SqliteDatabase",
    "apply_postgres",
    "calllog_database",
    "calllog_postgres",
    "calllog_sqlite",
    "dsn_host",
    "immediate",
    "numbered",
    "rowcount",
    "sqlite_path",
]
