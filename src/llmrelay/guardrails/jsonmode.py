"""JSON enforcement: what JSON an answer must be, whether it is, and how to ask again.

An answer is read leniently and judged strictly: whitespace and a Markdown code fence around it
(```json ... ```) are stripped, or the first fenced block is taken when prose surrounds it; then
the text must parse as JSON and validate against the schema (JSON Schema, any draft the schema
names, 2020-12 by default). ``json_object`` asks for an object and nothing more.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import JsonGuard
from ..errors import ConfigError, InvalidRequestError
from ..types import ChatRequest, JSONSchemaFormat, Message, ResponseFormat, Usage

_OBJECT = {"type": "object"}
_FENCED = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_ERROR_CHARS = 500  # of a validation error quoted back to the model or the client

REASK = (
    "Your previous answer is not valid: {error}. Answer again with only the JSON{schema}: "
    "no code fences, no text before or after it."
)


@dataclass(frozen=True, slots=True)
class JsonSpec:
    """What an answer must be: JSON, valid against ``validator``'s schema."""

    validator: Any  # a jsonschema Validator
    named_schema: bool  # a schema beyond "an object": the re-ask says so

    def check(self, text: str) -> tuple[str, str | None]:
        """(the JSON text, None) when ``text`` holds valid JSON; else (``text``, why not)."""
        error = "it is empty"
        for candidate in _candidates(text):
            try:
                value = orjson.loads(candidate)
            except orjson.JSONDecodeError as exc:
                error = f"it is not JSON ({exc})"
                continue
            problem = _first_error(self.validator, value)
            if problem is None:
                return candidate, None
            return text, problem
        return text, error


def spec_for(request: ChatRequest, guard: JsonGuard) -> JsonSpec | None:
    """The JSON this request's answer must be, or None (the guard is off, or nobody asked)."""
    if guard.mode == "off":
        return None
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema and fmt.json_schema.schema_:
        try:
            return _spec(_key(fmt.json_schema.schema_))
        except _BadSchema as exc:
            raise InvalidRequestError(
                f"response_format.json_schema.schema is not a valid JSON Schema: {exc}",
                param="response_format.json_schema.schema",
            ) from None
    asked = fmt is not None and fmt.type in ("json_object", "json_schema")
    if asked or guard.when == "always":
        return policy_spec(guard)
    return None


def policy_spec(guard: JsonGuard) -> JsonSpec:
    """The spec a route's own policy sets (its schema, or any object); checked at start-up."""
    try:
        return _spec(_key(guard.schema_ or _OBJECT))
    except _BadSchema as exc:
        raise ConfigError(f"guardrails.json.schema is not a valid JSON Schema: {exc}") from None


def asking(request: ChatRequest, guard: JsonGuard) -> ChatRequest:
    """The request asking the model for the route's JSON when the client did not (``when: always``)."""
    if request.response_format is not None:
        return request
    if guard.schema_ is None:
        fmt = ResponseFormat(type="json_object")
    else:
        fmt = ResponseFormat(
            type="json_schema", json_schema=JSONSchemaFormat(name="response", schema=guard.schema_)
        )
    return request.model_copy(update={"response_format": fmt})


def reask_request(request: ChatRequest, answer: str, error: str, spec: JsonSpec) -> ChatRequest:
    """The request again, with the invalid answer and what is wrong with it appended."""
    schema = " that matches the requested schema" if spec.named_schema else " object"
    messages = [
        *request.messages,
        Message(role="assistant", content=answer),
        Message(role="user", content=REASK.format(error=error, schema=schema)),
    ]
    return request.model_copy(update={"messages": messages})


def added(a: Usage, b: Usage) -> Usage:
    """Both attempts' tokens: the client pays for the re-ask too."""
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        estimated=a.estimated or b.estimated,
    )


def _candidates(text: str) -> list[str]:
    stripped = text.strip()
    fenced = _FENCED.search(stripped)
    if fenced is None:
        return [stripped] if stripped else []
    inner = fenced.group(1).strip()
    whole = fenced.start() == 0 and fenced.end() == len(stripped)
    return [inner] if whole else [stripped, inner]


def _first_error(validator: Any, value: Any) -> str | None:
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    message = f"{error.message}" + (f" (at /{where})" if where else "")
    return message[:_MAX_ERROR_CHARS]


class _BadSchema(Exception):
    pass


def _key(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)


@functools.lru_cache(maxsize=256)  # a route's clients send the same few schemas: compile each once
def _spec(key: bytes) -> JsonSpec:
    from jsonschema import validators  # ~40 ms to import: only routes that enforce JSON pay it
    from jsonschema.exceptions import SchemaError

    schema = orjson.loads(key)
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise _BadSchema(exc.message) from None
    return JsonSpec(cls(schema), named_schema=schema != _OBJECT)
