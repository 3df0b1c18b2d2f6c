"""The call-log writer: a process of its own that drains the journal into the store.

The serving process only appends records to the journal (``journal.Appender``); parsing them and
writing them to SQLite or PostgreSQL happens here, so none of that work competes with requests for
the serving interpreter (its GIL, its event loop). The gateway starts one writer per call log
(``CallLog.start``); several gateways sharing a directory each start one, and ``writer.lock``
makes one of them drain every slot while the others wait to take over.

    python -m llmrelay.observability.writer DIRECTORY STORE_URL [--batch-size N] ...

A record the store refuses for its data (``RejectedRecord``: a number out of range, a NUL, a
value of the wrong type) would fail the same way at every retry and hold up the whole log behind it.
So the writer narrows a refused batch down by halves, commits the rest, and appends each refused
line, as it was in the journal, to ``rejected-<UTC date>.jsonl`` beside the journal, with one
warning in the log; lines that are not a record at all go there too. A store that is down, locked
or full raises something else: then nothing moves and the batch is tried again until it goes in.

It stops on SIGTERM, or when the process that started it is gone (even killed with SIGKILL), after
draining what is in the journal (bounded by ``--drain-s``). SIGINT is ignored: a Ctrl-C in a
terminal reaches the whole process group, and the gateway stops its writer itself, after its last
record.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .journal import Checkpoint, rejected_path, segment_path, segments
from .records import CallRecord, CallStore, RejectedRecord

log = logging.getLogger(__name__)

_READ_BYTES = 4 * 1024 * 1024  # journal bytes read at a time (several batches)


class JournalWriter:
    """Writes every slot's journal lines to ``store`` in batches, checkpointing after each."""

    def __init__(
        self,
        store: CallStore,
        directory: str | Path,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        retention_s: float | None = None,
    ) -> None:
        self.store = store
        self.directory = Path(directory)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retention_s = retention_s
        self.store_healthy = True
        self.rejected = 0  # lines set aside by this writer
        self._last_prune = 0.0

    async def run(self, stop: asyncio.Event, drain_s: float = 10.0) -> None:
        """Drain every ``flush_interval_s`` until ``stop`` is set, then drain what is left (bounded
        by ``drain_s``; what the store refuses by then stays in the journal for the next writer)."""
        backoff = 0.5
        while not stop.is_set():
            try:
                await self.drain()
            except Exception as exc:  # the store is down: the records wait in the journal
                if self.store_healthy:
                    log.warning("call log: store write failed (%s); records wait in the journal", exc)
                self.store_healthy = False
                await _wait(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not self.store_healthy:
                log.warning("call log: store is back; journal replayed")
            self.store_healthy, backoff = True, 0.5
            await self._prune()
            # Between passes records accumulate into real batches: committing every few records
            # costs the database more than the records themselves.
            await _wait(stop, self.flush_interval_s)
        try:
            await asyncio.wait_for(self.drain_until_empty(), drain_s)
        except TimeoutError:
            log.warning("call log: not drained within %.0f s; records stay in the journal", drain_s)
        except Exception as exc:
            log.warning("call log: store unavailable at shutdown (%s); records stay in the journal", exc)

    async def drain_until_empty(self) -> None:
        while await self.drain():
            pass

    async def drain(self) -> int:
        """One pass over every slot: write all complete lines there are; how many."""
        written = 0
        for slot, seqs in sorted(segments(self.directory).items()):
            written += await self._drain_slot(slot, seqs)
        return written

    async def _drain_slot(self, slot: int, seqs: list[int]) -> int:
        done = Checkpoint.read(self.directory, slot)
        written = 0
        for i, seq in enumerate(seqs):
            path = segment_path(self.directory, slot, seq)
            if seq < done.seq:
                path.unlink(missing_ok=True)  # committed; left by a crash between checkpoint and delete
                continue
            if seq > done.seq:
                done = Checkpoint(seq, 0, 0)
            done, n = await self._drain_segment(path, slot, done)
            written += n
            if i + 1 == len(seqs):
                break  # the newest segment: its appender may still be writing to it
            # A later segment exists, so this one is finished: move past it, then delete it.
            left = path.stat().st_size - done.offset if path.exists() else 0
            if left:
                log.error("call log: skipping %d bytes of a cut line at the end of %s", left, path.name)
            done = Checkpoint(seqs[i + 1], 0, 0)
            done.write(self.directory, slot)
            path.unlink(missing_ok=True)
        return written

    async def _drain_segment(self, path: Path, slot: int, done: Checkpoint) -> tuple[Checkpoint, int]:
        written = 0
        try:
            f = path.open("rb")
        except FileNotFoundError:
            return done, 0
        with f:
            f.seek(done.offset)
            while True:
                data = f.read(_READ_BYTES)
                at_end = len(data) < _READ_BYTES
                if not at_end and b"\n" not in data:  # one line longer than a read: to its end
                    data += f.readline()
                end = data.rfind(b"\n") + 1  # a line still being written is not ours to read yet
                if not end:
                    return done, written
                lines = data[:end].split(b"\n")[:-1]
                f.seek(done.offset + end)
                for start in range(0, len(lines), self.batch_size):
                    batch = lines[start : start + self.batch_size]
                    await self._commit(self._parse(batch))
                    done = Checkpoint(
                        done.seq, done.offset + sum(map(len, batch)) + len(batch), done.lines + len(batch)
                    )
                    done.write(self.directory, slot)
                    written += len(batch)
                if at_end:
                    # What was appended meanwhile waits for the next pass. Reading on at once would
                    # chase a steady stream of records with a commit every one or two of them
                    # (measured at c=1: 935 commits of 2 records median), costing the store and the
                    # machine far more than the records themselves.
                    return done, written

    def _parse(self, lines: list[bytes]) -> list[tuple[bytes, dict[str, Any]]]:
        parsed = []
        check = CallRecord.check
        for line in lines:
            try:
                data = orjson.loads(line)
                if type(data) is not dict:  # else check's AttributeError would stop the writer for good
                    raise TypeError(f"a JSON {type(data).__name__}, not an object")
                check(data)
                parsed.append((line, data))
            except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
                self._reject(line, f"not a call record ({type(exc).__name__}: {exc})")
        return parsed

    async def _commit(self, batch: list[tuple[bytes, dict[str, Any]]]) -> None:
        """Write ``batch``; when the store refuses it for its data, each half on its own, down to
        the records at fault (~2 log2(n) writes for one bad record in n), which are set aside.
        Any other error propagates, and the whole batch stays in the journal."""
        if not batch:
            return
        try:
            # Rows straight from the parsed lines: a CallRecord each would cost ~5 us a record.
            await self.store.write_json([record for _, record in batch])
        except RejectedRecord as exc:
            if len(batch) == 1:
                self._reject(batch[0][0], str(exc))
                return
            half = len(batch) // 2
            await self._commit(batch[:half])  # committed halves are not undone by a later outage:
            await self._commit(batch[half:])  # the replay skips the ids already stored

    def _reject(self, line: bytes, reason: str) -> None:
        path = rejected_path(self.directory, datetime.now(UTC).date())
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)  # as private as the journal
        try:
            os.write(fd, line + b"\n")
        finally:
            os.close(fd)
        self.rejected += 1
        log.warning(
            "call log: a record was refused and set aside in %s: %s: %r", path.name, reason, line[:200]
        )

    async def _prune(self) -> None:
        if not self.retention_s or time.monotonic() - self._last_prune < 3600:
            return
        self._last_prune = time.monotonic()
        try:
            await self.store.prune(time.time() - self.retention_s)
        except Exception as exc:  # retention can wait for the next round
            log.warning("call log: pruning old records failed: %s", exc)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


# --- the process --------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    from .calllog import open_store

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    watch = asyncio.create_task(_watch_parent(args.parent_pid, stop))
    directory = Path(args.directory)
    lock_fd = os.open(directory / "writer.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        while True:  # another gateway's writer may hold the directory: wait to take over
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop.is_set():
                    return
                await _wait(stop, 0.25)
        store = open_store(args.store, directory)
        backoff = 0.5
        while True:
            try:
                await store.open()
                break
            except Exception as exc:
                if stop.is_set():
                    log.warning("call log: store unavailable (%s); records stay in the journal", exc)
                    return
                log.warning("call log: cannot open the store (%s); retrying", exc)
                await _wait(stop, backoff)
                backoff = min(backoff * 2, 5.0)
        writer = JournalWriter(
            store,
            directory,
            batch_size=args.batch_size,
            flush_interval_s=args.flush_interval_s,
            retention_s=args.retention_s,
        )
        try:
            await writer.run(stop, drain_s=args.drain_s)
        finally:
            await store.close()
    finally:
        watch.cancel()
        os.close(lock_fd)


async def _watch_parent(parent_pid: int | None, stop: asyncio.Event) -> None:
    if not parent_pid:
        return
    while os.getppid() == parent_pid:
        await asyncio.sleep(0.25)
    stop.set()  # the gateway is gone (killed?): drain what it left, then go


def _background() -> None:
    """Run as background work (nice 10): when cores are scarce, the requests being recorded go
    first. Not SCHED_IDLE: on a saturated machine that would starve the writer and let the journal
    grow for as long as the load lasts.

    Nice alone does not keep the writer out of the requests' way on Linux 6.6+ (EEVDF): a task
    that wakes up (the gateway, the upstream, the client) waits for the running one's protected
    slice (1.4 ms on 2 cores) whatever their weights, and with autogroup (the default on many
    distributions) neither nice nor SCHED_IDLE ranks the writer against other sessions at all. A
    long slice of its own is what lets a waking task with a shorter one preempt it at once
    (PREEMPT_SHORT): measured at c=1, the requests overlapping a writer batch that took >0.8 ms
    went from 14-35% to 0-5%, SQLite's p99 from x2.3-3.8 of the call log off to ~x1 (bench/README.md)."""
    with contextlib.suppress(OSError):
        os.nice(10)
    _long_slice()


_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # syscall numbers; elsewhere nice alone
_SLICE_NS = 50_000_000  # the kernel takes 0.1-100 ms; threads started later inherit it


def _long_slice() -> None:
    """``sched_setattr`` (no Python binding) with SCHED_OTHER, our nice and a custom slice.
    Kernels before 6.12 ignore the slice; failures leave the writer as it was."""
    number = _SCHED_SETATTR.get(os.uname().machine)
    if number is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes
        import struct

        # struct sched_attr, version 0 (48 bytes): size, policy, flags, nice, priority, runtime,
        # deadline, period.
        attr = struct.pack("IIQiIQQQ", 48, os.SCHED_OTHER, 0, os.nice(0), 0, _SLICE_NS, 0, 0)
        ctypes.CDLL(None, use_errno=True).syscall(number, 0, ctypes.c_char_p(attr), 0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m llmrelay.observability.writer", description=__doc__)
    ap.add_argument("directory")
    ap.add_argument("store", help="sqlite:///path or postgresql://...")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--flush-interval-s", type=float, default=0.2)
    ap.add_argument("--retention-s", type=float, default=None)
    ap.add_argument("--drain-s", type=float, default=10.0)
    ap.add_argument("--parent-pid", type=int, default=None)
    ap.add_argument("--cpus", default=None, help="CPUs to run on, e.g. 0 or 0,1 (Linux)")
    args = ap.parse_args(argv)
    _background()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s llmrelay call-log writer: %(message)s")
    if args.cpus:
        _pin({int(c) for c in args.cpus.split(",")})
    asyncio.run(_serve(args))


def _pin(cpus: set[int]) -> None:
    """Before any thread starts (they inherit it). Not allowed here (a container's cpuset, not
    Linux): a warning, and the writer runs unpinned rather than not at all."""
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError, ValueError) as exc:
        log.warning("call log: cannot run the writer on CPUs %s (%s); running it unpinned", sorted(cpus), exc)


if __name__ == "__main__":
    main()
