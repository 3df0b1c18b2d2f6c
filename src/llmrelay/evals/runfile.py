"""The run file: one JSON line per finished (case, model), appended as it finishes.

    {"kind": "run", "suite": "tickets", "models": [...], "cases": [...], ...}   # a header
    {"kind": "result", "case": "t1", "model": "sim/gpt-4o", "status": "pass", ...}

A run killed at any moment loses only the calls in flight: a half-written last line is dropped
when the file is opened again, and ``--resume`` runs only the pairs without a result (or whose
case changed since, or that ended in an error). Each resumption appends a new header; the last
one describes the run, and for a pair the last result wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import orjson

from ..errors import ConfigError

Status = Literal["pass", "fail", "error"]


@dataclass(slots=True)
class Result:
    case: str
    model: str
    status: Status
    category: str | None = None
    case_hash: str = ""
    score: float = 0.0
    grades: list[dict[str, Any]] = field(default_factory=list)  # grader, passed, score, reason
    input: str = ""
    output: str = ""
    expected: Any = None
    error: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal | None = None  # at the model's price (the cache's savings count as cost)
    spent_usd: Decimal | None = None  # actually paid
    judge_cost_usd: Decimal = Decimal(0)
    cached: bool = False
    answered_by: str | None = None
    call_id: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.case, self.model

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "result", **asdict(self)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Result:
        known = {k: v for k, v in row.items() if k in cls.__dataclass_fields__}
        for money in ("cost_usd", "spent_usd", "judge_cost_usd"):
            if known.get(money) is not None:
                known[money] = Decimal(known[money])
        return cls(**known)


@dataclass
class RunFile:
    path: Path
    header: dict[str, Any]
    results: dict[tuple[str, str], Result]  # the last result of each (case, model)

    @classmethod
    def create(cls, path: str | Path, header: dict[str, Any]) -> RunFile:
        path = Path(path)
        if path.exists() and path.stat().st_size:
            raise ConfigError(f"{path} already holds a run: resume it with --resume, or choose another file")
        path.parent.mkdir(parents=True, exist_ok=True)
        run = cls(path, {}, {})
        run.write_header(header)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunFile:
        """Read a run; a half-written last line (the process was killed mid-write) is cut off."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read run file {path}: {exc.strerror}") from None
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with path.open("r+b") as f:
                f.truncate(end)
        header: dict[str, Any] | None = None
        results: dict[tuple[str, str], Result] = {}
        for n, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ConfigError(f"{path}:{n}: not a run file line (invalid JSON)") from None
            if row.get("kind") == "run":
                header = row
            elif row.get("kind") == "result":
                result = Result.from_json(row)
                results[result.key] = result
        if header is None:
            raise ConfigError(f"{path} is not an llmrelay eval run (no header line)")
        return cls(path, header, results)

    def write_header(self, header: dict[str, Any]) -> None:
        self.header = {"kind": "run", **header}
        self._append(self.header)

    def append(self, result: Result) -> None:
        self.results[result.key] = result
        self._append(result.to_json())

    def _append(self, row: dict[str, Any]) -> None:
        line = orjson.dumps(row, default=str) + b"\n"
        # One write of one line on an O_APPEND descriptor: a kill leaves at most a partial last line.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def ordered(self) -> list[Result]:
        """The results in the header's case order, then model order (the report's order)."""
        return order(self.results.values(), self.header.get("cases", []), self.header.get("models", []))


def order(results: Iterable[Result], cases: list[str], models: list[str]) -> list[Result]:
    case_rank = {c: i for i, c in enumerate(cases)}
    model_rank = {m: i for i, m in enumerate(models)}
    return sorted(
        results,
        key=lambda r: (
            case_rank.get(r.case, len(case_rank)),
            r.case,
            model_rank.get(r.model, len(model_rank)),
            r.model,
        ),
    )
