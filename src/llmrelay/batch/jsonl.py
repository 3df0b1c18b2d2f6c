"""A batch input file, checked line by line: every line is one request, and the first bad one is a
400 that names its line (1-based), so a 10,000-line file is fixed in one go, not by bisection."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from .. import jsondepth
from ..errors import GatewayError, InvalidRequestError
from ..providers import openai_format
from ..types import ChatRequest

ENDPOINTS = ("/v1/chat/completions",)  # what a batch line may call here


@dataclass(frozen=True, slots=True)
class Line:
    index: int  # 0-based position among the file's requests
    number: int  # its line in the file (1-based), for messages
    custom_id: str
    body: dict[str, Any]
    request: ChatRequest

    @property
    def model(self) -> str:
        return self.request.model


def parse_lines(content: bytes, *, max_requests: int) -> list[Line]:
    """Every request of a batch input file, or a 400 naming the first bad line."""
    lines: list[Line] = []
    seen: dict[str, int] = {}
    for number, raw in _numbered(content):
        line = _parse(number, raw, len(lines))
        if line.custom_id in seen:
            raise _bad(
                number, f"custom_id {line.custom_id!r} repeats line {seen[line.custom_id]}", "custom_id"
            )
        seen[line.custom_id] = number
        lines.append(line)
        if len(lines) > max_requests:
            raise InvalidRequestError(
                f"The file has more than {max_requests} requests, the most one batch takes here.",
                param="file",
                code="too_many_requests",
            )
    if not lines:
        raise InvalidRequestError("The file has no requests: one JSON object per line.", param="file")
    return lines


def _numbered(content: bytes) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(content.split(b"\n"), 1):
        if raw.strip():
            yield number, raw


def _parse(number: int, raw: bytes, index: int) -> Line:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(number, f"not valid JSON ({exc})") from None
    if jsondepth.too_deep(raw, item):
        raise _bad(number, f"nests JSON more than {jsondepth.MAX_DEPTH} levels deep")
    if not isinstance(item, dict):
        raise _bad(number, "must be a JSON object with custom_id, method, url and body")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _bad(number, "'custom_id' must be a non-empty string", "custom_id")
    if item.get("method", "POST") != "POST":
        raise _bad(number, "'method' must be POST", "method")
    url = item.get("url")
    if url not in ENDPOINTS:
        raise _bad(number, f"'url' must be one of {', '.join(ENDPOINTS)}; got {url!r}", "url")
    body = item.get("body")
    if not isinstance(body, dict):
        raise _bad(number, "'body' must be a JSON object: the request's body", "body")
    if body.get("stream"):
        raise _bad(number, "'body.stream' must be false: batch answers are not streamed", "body.stream")
    try:
        request = openai_format.parse_request(body)
    except GatewayError as exc:
        param = f"body.{exc.param}" if exc.param else "body"
        raise _bad(number, exc.message, param) from None
    return Line(index, number, custom_id, body, request)


def _bad(number: int, problem: str, param: str | None = None) -> InvalidRequestError:
    where = f"line {number}" + (f" ({param})" if param else "")
    return InvalidRequestError(f"Invalid batch file, {where}: {problem}.", param="file", code="invalid_jsonl")
