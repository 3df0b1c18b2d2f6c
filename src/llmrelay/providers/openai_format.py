"""The OpenAI chat-completions wire format <-> canonical types. Pure functions, no I/O.

Canonical form *is* OpenAI's shape, so most of this is validation and the few places where the
wire differs (usage details, object tags, the stream's usage chunk).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import GatewayError, InvalidRequestError, UpstreamProtocolError, invalid_request_from
from ..types import ChatRequest, ChatResponse, Chunk, Delta, Moderation, Usage

# --- requests ---------------------------------------------------------------------------------

# What OpenAI-compatible reasoning servers (DeepSeek, vLLM's reasoning parsers) call a message's
# reasoning: canonical thinking, without a signature.
REASONING = "reasoning_content"


def parse_request(body: Any) -> ChatRequest:
    """A client's chat-completions body -> ChatRequest, or a 400 naming the bad field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    messages = body.get("messages")
    if isinstance(messages, list) and any(isinstance(m, dict) and REASONING in m for m in messages):
        # An answer's reasoning sent back with it (the SDK's message object, appended as it is):
        # the text of its thinking_blocks, or a reasoning server's own; no model takes it back.
        body = {**body, "messages": [_without_reasoning(m) for m in messages]}
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_request_from(exc) from None


def _without_reasoning(message: Any) -> Any:
    if not isinstance(message, dict) or REASONING not in message:
        return message
    return {k: v for k, v in message.items() if k != REASONING}


def check_metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's ``metadata`` rule (batches, jobs): up to 16 string pairs, keys up to 64 characters,
    values up to 512; None when absent, a 400 naming the field otherwise."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise InvalidRequestError(
            "'metadata' must be an object of up to 16 string pairs (keys up to 64 characters,"
            " values up to 512).",
            param="metadata",
        )
    return value


# Extended thinking is Anthropic's: OpenAI rejects the option, and thinking blocks in history mean
# nothing to another model (and would be refused as unknown fields).
_NOT_FOR_OPENAI: Any = {"thinking": True, "messages": {"__all__": {"thinking_blocks"}}}


def request_to_wire(request: ChatRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """ChatRequest -> the body we send to an OpenAI-compatible upstream."""
    body = request.model_dump(exclude_none=True, by_alias=True, exclude=_NOT_FOR_OPENAI)
    body["model"] = upstream_model
    if stream:
        body["stream"] = True
        # Always ask for usage: cost and the call record need it, whether or not the client did.
        body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


# --- usage ------------------------------------------------------------------------------------


def usage_from_wire(raw: dict[str, Any] | None) -> Usage:
    if not raw:
        return Usage()
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=raw.get("prompt_tokens") or 0,
        completion_tokens=raw.get("completion_tokens") or 0,
        cached_tokens=prompt_details.get("cached_tokens") or 0,
        # OpenAI-compatible servers that relay Anthropic sometimes report writes here.
        cache_write_tokens=prompt_details.get("cache_write_tokens")
        or raw.get("cache_creation_input_tokens")
        or 0,
        reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
    )


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


# --- responses --------------------------------------------------------------------------------


def parse_response(body: Any, model: str) -> ChatResponse:
    """An upstream's chat-completion body -> ChatResponse, named after our client-facing ``model``."""
    try:
        return ChatResponse(
            id=body["id"],
            created=body.get("created") or 0,
            model=model,
            choices=[
                {
                    "index": c.get("index", i),
                    "message": _message_from_wire(c["message"]),
                    "finish_reason": c.get("finish_reason"),
                }
                for i, c in enumerate(body["choices"])
            ],
            usage=usage_from_wire(body.get("usage")),
            system_fingerprint=body.get("system_fingerprint"),
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise UpstreamProtocolError(f"Malformed chat completion from upstream: {exc!r}"[:300]) from None


_MESSAGE_FIELDS = frozenset({"role", "content", "tool_calls", "refusal", "name"})


def _message_from_wire(raw: dict[str, Any]) -> dict[str, Any]:
    message = {k: v for k, v in raw.items() if k in _MESSAGE_FIELDS and v is not None}
    if isinstance(raw.get(REASONING), str) and raw[REASONING]:
        message["thinking_blocks"] = [{"type": "thinking", "thinking": raw[REASONING]}]
    return message


def response_to_wire(response: ChatResponse) -> dict[str, Any]:
    body = response.model_dump(exclude_none=True, exclude={"usage"})
    body["object"] = "chat.completion"
    for choice, canonical in zip(body["choices"], response.choices, strict=True):
        choice.setdefault("finish_reason", None)
        choice["logprobs"] = None
        choice["message"].setdefault("content", None)
        if canonical.message.thinking_blocks:
            # Both spellings of the thinking: its blocks (signatures included, to send back to a
            # Claude model) and its text, where reasoning servers' clients look for it.
            choice["message"][REASONING] = canonical.message.thinking_text()
    body["usage"] = usage_to_wire(response.usage)
    return body


# --- stream chunks ----------------------------------------------------------------------------


def parse_chunk(data: Any, model: str) -> Chunk:
    """One upstream SSE ``data:`` object -> Chunk."""
    try:
        usage = data.get("usage")
        return Chunk(
            id=data.get("id") or "",
            created=data.get("created") or 0,
            model=model,
            choices=[
                {
                    "index": c.get("index", 0),
                    "delta": _delta_from_wire(c.get("delta") or {}),
                    "finish_reason": c.get("finish_reason"),
                }
                for c in data.get("choices") or ()
            ],
            usage=usage_from_wire(usage) if usage else None,
        )
    except (TypeError, AttributeError, ValidationError) as exc:
        raise UpstreamProtocolError(f"Malformed stream chunk from upstream: {exc!r}"[:300]) from None


_DELTA_FIELDS = frozenset({"role", "content", "tool_calls", "refusal"})


def _delta_from_wire(raw: dict[str, Any]) -> dict[str, Any]:
    delta = {k: v for k, v in raw.items() if k in _DELTA_FIELDS and v is not None}
    if isinstance(raw.get(REASONING), str) and raw[REASONING]:
        delta["thinking_blocks"] = [{"index": 0, "thinking": raw[REASONING]}]
    return delta


def chunk_to_wire(chunk: Chunk) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": chunk.id,
        "object": "chat.completion.chunk",
        "created": chunk.created,
        "model": chunk.model,
        "choices": [
            {
                "index": c.index,
                "delta": _delta_to_wire(c.delta),
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
            for c in chunk.choices
        ],
    }
    if chunk.usage is not None:
        body["usage"] = usage_to_wire(chunk.usage)
    return body


def _delta_to_wire(delta: Delta) -> dict[str, Any]:
    wire = delta.model_dump(exclude_none=True)
    if text := delta.thinking_text():
        wire[REASONING] = text
    return wire


# --- errors -----------------------------------------------------------------------------------


def error_to_wire(error: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.openai_type,
            "param": error.param,
            "code": error.code,
            **error.details(),
        }
    }


# --- moderations -------------------------------------------------------------------------------


def moderations_from_wire(body: Any, expected: int) -> list[Moderation]:
    """A ``POST /moderations`` answer -> one ``Moderation`` per input, in order."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        raise UpstreamProtocolError(f"moderation answer without {expected} results: {str(body)[:200]}")
    out = []
    for result in results:
        if not isinstance(result, dict):
            raise UpstreamProtocolError(f"moderation result is not an object: {str(result)[:200]}")
        categories = result.get("categories") or {}
        scores = result.get("category_scores") or {}
        out.append(
            Moderation(
                flagged=bool(result.get("flagged")),
                categories=[name for name, on in categories.items() if on],
                scores={name: float(v) for name, v in scores.items() if isinstance(v, int | float)},
            )
        )
    return out


def error_message_from_wire(body: bytes) -> str:
    """The human message inside an upstream error body, whatever its shape."""
    import orjson

    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace") or "(empty body)"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return str(data)[:300]
