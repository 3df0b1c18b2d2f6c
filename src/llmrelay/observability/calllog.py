"""The durable call log: every record reaches the store, and the request path never waits for it.

``submit`` appends the record as one JSON line to this process's journal (``journal.py``: one
``write`` system call into the page cache, a few microseconds) and returns. A writer process of its
own (``writer.py``), started here, tails the journal and writes batches to the store (SQLite or
PostgreSQL), checkpointing after each committed batch. So:

- the store down or slow: records wait in the journal (disk-bounded, not memory-bounded) and go in
  when it is back, in order;
- the process killed, even with SIGKILL: the journal holds every record it accepted; the writer
  drains it (the stores ignore ids they already have, so a batch written but not yet checkpointed
  is not duplicated), or the next start does;
- a record the store refuses for its data (not because it is down) is set aside in
  ``rejected-<day>.jsonl`` and the rest go in (``writer.py``);
- a clean shutdown waits until the writer has committed this process's journal (bounded by
  ``drain_s``).

The writer is a separate process because parsing records and talking to the database on the
serving interpreter cost the gateway a third of its throughput under load (bench/README.md).

This is the bounded queue plus spill file the design asks for, with the spill file always in use:
writing every record to it costs one ``write`` per call and is what makes a kill lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path

import orjson

from ..db import unless_down
from .journal import Appender, pending_bytes, rejected_lines
from .records import CallRecord, CallStore
from .writer import JournalWriter

log = logging.getLogger(__name__)

UNAVAILABLE = (
    "The call log's database cannot be reached right now; calls are still served and their records "
    "wait in the journal until it is back."
)


class CallLog:
    """The serving side of the call log: the journal appender, the writer process it runs, and
    ``store`` opened for reading (the dashboard, the CLI)."""

    def __init__(
        self,
        store_url: str,
        directory: str | Path,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        segment_bytes: int = 64 * 1024 * 1024,
        retention_s: float | None = None,
        drain_s: float = 10.0,
        writer_cpus: tuple[int, ...] | None = None,
    ) -> None:
        self.store_url = store_url
        self.directory = Path(directory).expanduser()
        self.store: CallStore = open_store(store_url, self.directory)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.segment_bytes = segment_bytes
        self.retention_s = retention_s
        self.drain_s = drain_s
        self.writer_cpus = writer_cpus
        self._journal: Appender | None = None
        self._writer: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Schema migrations run here, before the writer needs them; if the database is down, the
        # writer opens (and migrates) it once it is back.
        await unless_down(self.store.open(), "call log", "records wait in the journal until it is back")
        self._journal = Appender(self.directory, segment_bytes=self.segment_bytes)
        self._writer = await self._spawn_writer()
        self._supervisor = asyncio.create_task(self._supervise(), name="llmrelay-calllog-writer")

    async def _spawn_writer(self) -> asyncio.subprocess.Process:
        argv = [
            "-m",
            "llmrelay.observability.writer",
            str(self.directory),
            self.store_url,
            f"--batch-size={self.batch_size}",
            f"--flush-interval-s={self.flush_interval_s}",
            f"--drain-s={self.drain_s}",
            f"--parent-pid={os.getpid()}",
        ]
        if self.retention_s:
            argv.append(f"--retention-s={self.retention_s}")
        if self.writer_cpus:
            argv.append(f"--cpus={','.join(map(str, self.writer_cpus))}")
        return await asyncio.create_subprocess_exec(sys.executable, *argv, stdin=asyncio.subprocess.DEVNULL)

    async def _supervise(self) -> None:
        """A writer that dies (it should not) is started again: records wait in the journal."""
        while (writer := self._writer) is not None:
            code = await writer.wait()
            # A SIGTERM to the whole process group (docker stop, systemd) reaches the writer
            # before the gateway's own shutdown says it is stopping: wait a moment before calling
            # it a failure, so a clean stop does not log one.
            await asyncio.sleep(1.0)
            if self._stopping:
                return
            log.error("call log: the writer process exited with %s; started it again", code)
            self._writer = await self._spawn_writer()

    def submit(self, record: CallRecord) -> None:
        """Append the record to the journal: never waits on the store."""
        assert self._journal is not None, "CallLog.start() was not awaited"
        # orjson serializes the dataclass itself: ~3 us, against ~35 through dataclasses.asdict.
        self._journal.append(orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE))

    @property
    def queue_depth(self) -> int:
        """Records this process submitted that are not in the store yet."""
        return self._journal.uncommitted() if self._journal is not None else 0

    @property
    def rejected(self) -> int:
        """Records the store refused for their data, set aside in ``rejected-*.jsonl``."""
        return rejected_lines(self.directory)

    async def aclose(self) -> None:
        """Stop the writer once it has committed this process's journal (bounded by ``drain_s``)."""
        self._stopping = True
        journal, self._journal = self._journal, None
        writer, self._writer = self._writer, None
        if writer is not None and writer.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                writer.send_signal(signal.SIGTERM)  # it drains what is there, then exits
            try:
                await asyncio.wait_for(writer.wait(), self.drain_s + 2)
            except TimeoutError:
                log.warning("call log: the writer did not stop in time; records stay in the journal")
                with contextlib.suppress(ProcessLookupError):
                    writer.kill()
                await writer.wait()
        if self._supervisor is not None:
            await self._supervisor
            self._supervisor = None
        if journal is not None:
            await self._finish(journal)
            journal.close()
        await self.store.close()

    async def _finish(self, journal: Appender) -> None:
        """Make sure this process's journal is committed: by our writer (normally done by now),
        by another gateway's writer holding the directory, or here, if no writer is left (ours
        was stopped before it was up, or died)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_s
        fd = os.open(self.directory / "writer.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            while pending_bytes(self.directory, journal.slot):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another writer is at work: let it commit ours
                    if loop.time() > deadline:
                        log.warning("call log: journal not drained in time; it stays for the next start")
                        return
                    await asyncio.sleep(0.05)
                    continue
                writer = JournalWriter(self.store, self.directory, batch_size=self.batch_size)
                try:
                    await asyncio.wait_for(writer.drain_until_empty(), max(deadline - loop.time(), 0.1))
                except Exception as exc:  # timed out, or the store is down
                    log.warning("call log: store unavailable at shutdown (%s); the journal stays", exc)
                return
        finally:
            os.close(fd)  # releases the lock if we took it


def open_store(url: str, directory: Path) -> CallStore:
    """A store from a URL: ``sqlite:///path`` (relative paths under ``directory``) or
    ``postgresql://...``."""
    from ..db import sqlite_path

    path = sqlite_path(url, directory, setting="calllog.store")
    if path is None:
        try:
            from .postgres_store import PostgresCallStore
        except ImportError as exc:  # asyncpg is an extra
            from ..errors import ConfigError

            raise ConfigError(
                f"The PostgreSQL call log needs asyncpg: pip install 'llmrelay[postgres]' ({exc})"
            ) from None
        return PostgresCallStore(url)
    from .sqlite_store import SqliteCallStore

    return SqliteCallStore(path)
