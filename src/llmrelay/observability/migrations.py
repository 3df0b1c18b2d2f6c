"""Schema migrations for the call stores: an ordered list of named steps per SQL dialect.

Each store keeps one ``Migrations`` list for its dialect (``"sqlite"``, ``"postgresql"``) and
applies it on open. A step is SQL text (one or more statements) or a callable given the store's
connection, for changes SQL alone cannot express (a backfill computed in Python). Applied names are
recorded in ``_llmrelay_migrations``, so opening a database again applies only what is new, and a
step is never edited once released: a change is a new step at the end of the list.

This module knows no driver but ``sqlite3`` (``apply_sqlite``); another dialect's store runs its own
list with ``pending`` and ``CREATE_TABLE`` (both plain, portable SQL).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..db import immediate

TABLE = "_llmrelay_migrations"

# Portable: SQLite reads DOUBLE PRECISION as REAL. applied_at is unix seconds.
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
)

Step = str | Callable[[Any], Any]  # SQL text, or a function of the dialect's connection
S = TypeVar("S", bound=Callable[[Any], Any])


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    step: Step


class Migrations:
    """The ordered, named schema steps of one dialect. Order is the order of ``add``."""

    def __init__(self, dialect: str, steps: Iterable[tuple[str, Step]] = ()) -> None:
        self.dialect = dialect
        self._steps: list[Migration] = []
        for name, step in steps:
            self.add(name, step)

    def add(self, name: str, step: Step) -> None:
        if any(m.name == name for m in self._steps):
            # Two steps of one name: the second would be skipped wherever the first had run.
            raise ValueError(f"{self.dialect} migration {name!r} is already defined")
        self._steps.append(Migration(name, step))

    def step(self, name: str) -> Callable[[S], S]:
        """Decorator form of ``add`` for a callable step."""

        def register(fn: S) -> S:
            self.add(name, fn)
            return fn

        return register

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._steps]

    def pending(self, applied: Collection[str]) -> list[Migration]:
        """The steps not yet in ``applied``, in order."""
        return [m for m in self._steps if m.name not in applied]

    def __iter__(self) -> Iterator[Migration]:
        return iter(self._steps)

    def __len__(self) -> int:
        return len(self._steps)


def apply_sqlite(conn: sqlite3.Connection, migrations: Migrations) -> list[str]:
    """Apply what ``conn``'s database lacks; returns the names applied (``[]`` when up to date).

    ``conn`` must be in autocommit mode (``isolation_level=None``): each step runs in its own
    ``BEGIN IMMEDIATE`` transaction together with the row recording it, so a failed step leaves
    neither a half-changed schema nor a claim that it ran. The write lock is taken before the
    applied names are read, so two processes opening one new file apply each step once.
    """
    if migrations.dialect != "sqlite":
        raise ValueError(f"apply_sqlite given {migrations.dialect} migrations")
    if conn.isolation_level is not None:
        raise ValueError("apply_sqlite needs a connection opened with isolation_level=None")
    conn.execute(CREATE_TABLE)
    done: list[str] = []
    for migration in migrations.pending(_applied(conn)):
        with immediate(conn):
            if migration.name in _applied(conn):  # another process got here first
                continue
            if isinstance(migration.step, str):
                for statement in _statements(migration.step):
                    conn.execute(statement)
            else:
                migration.step(conn)
            conn.execute(
                f"INSERT INTO {TABLE} (name, applied_at) VALUES (?, ?)", (migration.name, time.time())
            )
        done.append(migration.name)
    return done


def _applied(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute(f"SELECT name FROM {TABLE}")}


def _statements(script: str) -> Iterator[str]:
    """Split SQL text into statements. ``executescript`` would do it, but it commits first and
    runs outside our transaction; ``complete_statement`` keeps a ``;`` inside a string literal or a
    trigger body from ending a statement."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer.strip()
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        yield buffer.strip()
