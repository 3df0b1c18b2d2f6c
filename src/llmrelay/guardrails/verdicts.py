"""What each guard found and did: one verdict per guard per call on ``call.extra["guardrails"]``
(so on the call record, and counted by the metrics), and what a finding does under each mode.

A verdict is a dict: ``name`` (the guard), ``stage`` (input or output), ``verdict`` (the action:
pass, block, flag, log, redact, reask, error) and what the guard measured (``score``,
``categories``, ``types``, ``count``, ``reason``...).
"""

from __future__ import annotations

from typing import Any

from ..config import GuardMode
from ..errors import GuardrailBlocked
from ..pipeline import Call

HEADER = "x-llmrelay-guardrails"  # the guards that flagged the call (mode flag), comma-separated


def note(call: Call, name: str, stage: str, verdict: str, **measured: Any) -> None:
    entry = {"name": name, "stage": stage, "verdict": verdict}
    entry.update((k, v) for k, v in measured.items() if v is not None)
    call.extra.setdefault("guardrails", []).append(entry)


def found(
    call: Call,
    name: str,
    stage: str,
    mode: GuardMode,
    message: str,
    *,
    error: type[GuardrailBlocked] = GuardrailBlocked,
    param: str | None = None,
    **measured: Any,
) -> None:
    """A guard found something. ``block``: the call ends here (status ``filtered``, the error
    raised); ``flag``: noted, and named in the response's ``x-llmrelay-guardrails`` header (when
    the headers have not left yet: not for a stream's output); ``log``: noted only."""
    note(call, name, stage, mode, **measured)
    if mode == "block":
        call.status = "filtered"
        raise error(message, guard=name, param=param)
    if mode == "flag":
        headers = call.response_headers
        headers[HEADER] = f"{headers[HEADER]}, {name}" if HEADER in headers else name
