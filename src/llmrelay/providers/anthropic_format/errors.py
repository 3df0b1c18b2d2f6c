"""Errors: Anthropic error objects <-> gateway errors (``error_to_wire``, ``error_message_from_wire``)."""

from __future__ import annotations

import json
from typing import Any

from ...errors import GatewayError, error_for_status
from ._common import _dump_json

# === errors ==================================================================================


# Anthropic error type (in a stream ``error`` event or a 200 error body) -> the HTTP status it
# stands for, so ``error_for_status`` maps it like any other upstream failure. A billing error is a
# problem with *our* account, so it is treated like a credential failure (502), not a client 4xx.
_ERROR_STATUSES: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 403,
    "permission_error": 403,
    "not_found_error": 404,
    "timeout_error": 408,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def _error_from_wire(data: dict[str, Any]) -> GatewayError:
    """An Anthropic ``{"type": "error", "error": {...}}`` object (mid-stream or in a 200 body)."""
    error = data.get("error")
    if not isinstance(error, dict):
        error = {"message": str(error)}
    kind = error.get("type") or "api_error"
    message = str(error.get("message") or kind)
    return error_for_status(
        _ERROR_STATUSES.get(kind, 500),
        message,
        provider="anthropic",
        body=_dump_json(data)[:2000],
        headers={},
    )


def error_to_wire(error: GatewayError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error.anthropic_type, "message": error.message, **error.details()},
    }


def error_message_from_wire(body: bytes) -> str:
    """The human message inside an upstream error body, whatever its shape."""
    try:
        data = json.loads(body)
    except ValueError:  # includes bodies that are not UTF-8
        return body[:300].decode("utf-8", "replace") or "(empty body)"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    return str(data)[:300]
