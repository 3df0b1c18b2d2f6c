"""Lines of a batch's output and error files, in OpenAI's shape, and what a finished batch sums up.

    {"id": "batch_req_...", "custom_id": "...", "response": {"status_code": 200, "request_id": "...",
     "body": {...chat completion...}}, "error": null}

A request that failed has its error body (OpenAI's shape) and status instead, in the error file; one
that never ran (the batch was cancelled or expired first) has ``response: null`` and an ``error``
with code ``batch_cancelled`` or ``batch_expired``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from ulid import ULID

from ..errors import GatewayError
from ..providers import openai_format

ANSWERED, FAILED, NOT_RUN = 1, 0, -1


def answered(custom_id: str, body: dict[str, Any], request_id: str) -> str:
    return _line(custom_id, {"status_code": 200, "request_id": request_id, "body": body}, None)


def failed(custom_id: str, error: GatewayError, request_id: str) -> str:
    body = openai_format.error_to_wire(error)
    return _line(custom_id, {"status_code": error.status, "request_id": request_id, "body": body}, None)


def not_run(custom_id: str, code: str, message: str) -> str:
    return _line(custom_id, None, {"code": code, "message": message})


def cancelled(custom_id: str) -> str:
    return not_run(custom_id, "batch_cancelled", "The batch was cancelled before this request ran.")


def expired(custom_id: str) -> str:
    return not_run(custom_id, "batch_expired", "The batch expired before this request ran.")


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> str:
    item = {"id": f"batch_req_{ULID()}", "custom_id": custom_id, "response": response, "error": error}
    return orjson.dumps(item).decode()


def summarize(items: list[tuple[int, int, str, str | None]]) -> tuple[bytes, bytes, dict[str, Any], str]:
    """The output file (answered requests), the error file (the rest), the batch's token usage and
    its cost (USD, as text) from the finished requests, in input order."""
    output: list[str] = []
    errors: list[str] = []
    usage = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0}
    cost = Decimal(0)
    for _, outcome, line, item_cost in items:
        (output if outcome == ANSWERED else errors).append(line)
        if item_cost is not None:
            cost += Decimal(item_cost)
        if outcome == ANSWERED:
            wire = (orjson.loads(line)["response"]["body"] or {}).get("usage") or {}
            usage["input_tokens"] += wire.get("prompt_tokens") or 0
            usage["output_tokens"] += wire.get("completion_tokens") or 0
            usage["cached_tokens"] += (wire.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            usage["reasoning_tokens"] += (wire.get("completion_tokens_details") or {}).get(
                "reasoning_tokens"
            ) or 0
    shaped = {
        "input_tokens": usage["input_tokens"],
        "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
        "output_tokens": usage["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
        "total_tokens": usage["input_tokens"] + usage["output_tokens"],
    }
    return _jsonl(output), _jsonl(errors), shaped, format(cost, "f")


def _jsonl(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()
