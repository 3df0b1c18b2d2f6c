"""What the gateway's JSON routes share: a request's JSON body, the methods a path takes, the query
string and its ``limit``, and OpenAI's list object. Errors leave as ``GatewayError``s, which the app answers in the route's shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import orjson

from .. import jsondepth
from ..asgi import Scope
from ..errors import InvalidRequestError, MethodNotAllowedError


def json_body(body: bytes) -> Any:
    """The parsed body, or a 400 that says it is not JSON (or nests too deep to pass on)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request: it is not valid JSON."
        ) from None
    if jsondepth.too_deep(body, payload):
        raise InvalidRequestError(f"The request body nests JSON more than {jsondepth.MAX_DEPTH} levels deep.")
    return payload


def json_object(body: bytes, *, shape: str = "") -> dict[str, Any]:
    """The body as a JSON object; ``shape`` shows the caller what one looks like."""
    payload = json_body(body)
    if not isinstance(payload, dict):
        raise InvalidRequestError(f"The request body must be a JSON object{': ' + shape if shape else ''}.")
    return payload


def presented_key(headers: dict[str, str]) -> str | None:
    """The API key a request carries: ``x-api-key`` (Anthropic's SDK) or ``Authorization: Bearer``
    (OpenAI's). An empty ``x-api-key`` counts as none, so it does not hide a Bearer key."""
    presented = (headers.get("x-api-key") or "").strip()
    auth = headers.get("authorization", "")
    if not presented and auth[:7].lower() == "bearer ":
        presented = auth[7:].strip()
    return presented or None


def allow(method: str, allowed: Sequence[str], path: str) -> None:
    """A 405 unless ``method`` is one of ``allowed`` on ``path``."""
    if method not in allowed:
        raise MethodNotAllowedError(f"{method} is not allowed on {path}; use {' or '.join(allowed)}.")


def query_params(scope: Scope) -> dict[str, str]:
    """The query string's parameters (the last value of a repeated one)."""
    return {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}


def query_limit(query: dict[str, str], *, default: int, most: int) -> int:
    """The ``limit`` parameter of a list, from 1 to ``most``."""
    raw = query.get("limit")
    if raw is None:
        return default
    # isdigit() alone takes "²" and Arabic-Indic digits, which int() refuses or reads: ASCII only,
    # and few enough digits that int() never meets its 4,300-digit limit.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= most:
        raise InvalidRequestError(f"'limit' must be an integer from 1 to {most}.", param="limit")
    return int(raw)


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's ``list`` object, with the cursors of the page it holds."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


__all__ = ["allow", "json_body", "json_object", "list_page", "presented_key", "query_limit", "query_params"]
