"""The call log's journal on disk: what the serving process appends and the writer process reads.

Layout of the call-log directory::

    journal-<slot>.lock             held (flock) by the serving process that appends to the slot
    journal-<slot>.<seq>.jsonl      the slot's segments, one JSON record per line, seq ascending
    journal-<slot>.checkpoint       the writer's progress in the slot: "<seq> <offset> <lines>"
    writer.lock                     held by the one writer process draining the directory
    rejected-<YYYYMMDD>.jsonl       lines the store refused for their data, as they were, by UTC day

Each serving process takes a free slot and appends to a new segment (it never reopens an older
one), starting the next segment once the current one is ``segment_bytes`` long. So a segment with
a later one beside it is finished: the writer can delete it once committed without coordinating
with the appender, which shares nothing with the writer but these files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

MAX_SLOTS = 64
_SEGMENT = re.compile(r"journal-(\d+)\.(\d+)\.jsonl")


def segment_path(directory: Path, slot: int, seq: int) -> Path:
    return directory / f"journal-{slot}.{seq:08d}.jsonl"


def rejected_path(directory: Path, day: date) -> Path:
    return directory / f"rejected-{day:%Y%m%d}.jsonl"


def rejected_lines(directory: Path) -> int:
    """Lines set aside in ``rejected-*.jsonl`` (normally none: the files exist only when the store
    refused something, and are read only then)."""
    count = 0
    for path in directory.glob("rejected-*.jsonl"):
        with contextlib.suppress(FileNotFoundError):  # an operator tidying up meanwhile
            count += path.read_bytes().count(b"\n")
    return count


def segments(directory: Path) -> dict[int, list[int]]:
    """Every slot's segment numbers, ascending."""
    found: dict[int, list[int]] = {}
    for entry in os.scandir(directory):
        match = _SEGMENT.fullmatch(entry.name)
        if match:
            found.setdefault(int(match[1]), []).append(int(match[2]))
    for seqs in found.values():
        seqs.sort()
    return found


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far the writer has committed a slot: ``offset`` bytes (``lines`` lines) into ``seq``."""

    seq: int = 0
    offset: int = 0
    lines: int = 0

    @staticmethod
    def path(directory: Path, slot: int) -> Path:
        return directory / f"journal-{slot}.checkpoint"

    @classmethod
    def read(cls, directory: Path, slot: int) -> Checkpoint:
        try:
            seq, offset, lines = (int(n) for n in cls.path(directory, slot).read_text().split())
        except (FileNotFoundError, ValueError):
            return cls()
        return cls(seq, offset, lines)

    def write(self, directory: Path, slot: int) -> None:
        path = self.path(directory, slot)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{self.seq} {self.offset} {self.lines}")
        os.replace(tmp, path)  # atomic: a crash leaves the old checkpoint or the new one


def pending_bytes(directory: Path, slot: int | None = None) -> int:
    """Journal bytes not yet committed to the store, in one slot or all of them."""
    left = 0
    for slot_, seqs in segments(directory).items():
        if slot is not None and slot_ != slot:
            continue
        done = Checkpoint.read(directory, slot_)
        for seq in seqs:
            if seq < done.seq:
                continue
            with contextlib.suppress(FileNotFoundError):
                size = segment_path(directory, slot_, seq).stat().st_size
                left += size - (done.offset if seq == done.seq else 0)
    return left


class Appender:
    """A journal slot of this process: appends records as lines, one ``write`` each."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.slot, self._lock_fd = self._take_slot()
        seqs = segments(directory).get(self.slot, [])
        self.seq = max(seqs[-1] if seqs else 0, Checkpoint.read(directory, self.slot).seq)
        self._fd = -1
        self._size = 0
        self.lines: dict[int, int] = {}  # lines appended per segment by this process
        self._next_segment()

    def _take_slot(self) -> tuple[int, int]:
        for slot in range(1, MAX_SLOTS + 1):
            fd = os.open(self.directory / f"journal-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        raise RuntimeError(f"all {MAX_SLOTS} call-log journal slots in {self.directory} are in use")

    def _next_segment(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self.seq += 1
        path = segment_path(self.directory, self.slot, self.seq)
        self._fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._size = 0
        self.lines[self.seq] = 0

    def append(self, line: bytes) -> None:
        """``line`` ends with a newline; one ``write`` into the page cache, so a kill of this
        process after it returns loses nothing."""
        os.write(self._fd, line)
        self._size += len(line)
        self.lines[self.seq] += 1
        if self._size >= self.segment_bytes:
            self._next_segment()

    def uncommitted(self) -> int:
        """Lines this process appended that the writer has not committed yet."""
        done = Checkpoint.read(self.directory, self.slot)
        for seq in [s for s in self.lines if s < done.seq]:
            del self.lines[seq]  # committed and gone: forget it
        return sum(n for seq, n in self.lines.items() if seq > done.seq) + max(
            self.lines.get(done.seq, 0) - done.lines, 0
        )

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the slot
            self._lock_fd = -1
