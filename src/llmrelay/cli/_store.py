"""Shared by the commands that read the call log: open its store from a config, parse times."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

from ..config import Settings
from ..observability.calllog import open_store
from ..observability.records import CallStore

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def store_from(config: str | None) -> CallStore:
    settings = Settings.load(config)
    directory = Path(settings.calllog.directory).expanduser()
    return open_store(settings.calllog.store, directory)


def parse_since(value: str | None) -> float | None:
    """``30m``, ``2h``, ``7d`` ago, or an ISO date/time; None for all time."""
    if value is None:
        return None
    match = _SPAN.match(value.strip())
    if match:
        return time.time() - float(match.group(1)) * _SECONDS[match.group(2)]
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise SystemExit(f"llmrelay: --since takes 30m, 2h, 7d or an ISO date, not {value!r}") from None
