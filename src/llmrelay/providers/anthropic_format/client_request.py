"""Client edge: Anthropic request -> canonical (``parse_request`` and its helpers)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ...errors import InvalidRequestError, invalid_request_from
from ...types import (
    ChatRequest,
    ContentPart,
    FunctionCall,
    ImagePart,
    Message,
    OtherPart,
    TextPart,
    ThinkingBlock,
    ToolCall,
)
from ._common import _PASSTHROUGH_BLOCKS, _dump_json, _invalid, thinking_from_wire

# === client edge: Anthropic request -> canonical ==============================================


_M = TypeVar("_M", bound=BaseModel)


def parse_request(body: Any) -> ChatRequest:
    """A client's Messages body -> ChatRequest, or InvalidRequestError naming the bad field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    for field in ("model", "messages", "max_tokens"):
        if body.get(field) is None:
            raise _invalid(field, "Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _invalid("model", "must be a non-empty string")
    canonical: dict[str, Any] = {
        "model": body["model"],
        "messages": [*_system_from_wire(body.get("system")), *_messages_from_wire(body["messages"])],
        "max_tokens": body["max_tokens"],
        **_options_from_wire(body),
    }
    if body.get("thinking") is not None:
        canonical["thinking"] = body["thinking"]
    if body.get("tools") is not None:
        canonical["tools"] = _tools_from_wire(body["tools"])
    if body.get("tool_choice") is not None:
        canonical["tool_choice"], parallel = _tool_choice_from_wire(body["tool_choice"])
        if parallel is not None:
            canonical["parallel_tool_calls"] = parallel
    try:
        return ChatRequest.model_validate(canonical)
    except ValidationError as exc:
        raise invalid_request_from(exc) from None


def parse_count_request(body: Any) -> ChatRequest:
    """A ``/v1/messages/count_tokens`` body (a Messages body without ``max_tokens``) -> ChatRequest."""
    if isinstance(body, dict) and body.get("max_tokens") is None:
        body = {**body, "max_tokens": 1}  # parse_request needs one; counting ignores it
    return parse_request(body)


def _options_from_wire(body: dict[str, Any]) -> dict[str, Any]:
    """The scalar sampling/streaming options, renamed to their canonical fields."""
    options = {k: body[k] for k in ("temperature", "top_p", "stream") if body.get(k) is not None}
    if body.get("top_k") is not None:
        if not isinstance(body["top_k"], int) or isinstance(body["top_k"], bool) or body["top_k"] < 0:
            raise _invalid("top_k", "must be a non-negative integer")
        options["top_k"] = body["top_k"]  # no canonical field: kept as an extra for Anthropic upstreams
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop_sequences", "must be a list of strings")
        if stops:
            options["stop"] = stops
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _invalid("metadata", "must be an object")
        if metadata.get("user_id") is not None:
            if not isinstance(metadata["user_id"], str):
                raise _invalid("metadata.user_id", "must be a string")
            options["user"] = metadata["user_id"]
    return options


def _system_from_wire(system: Any) -> list[Message]:
    if system is None or system in ("", []):
        return []
    if isinstance(system, str):
        return [Message(role="system", content=system)]
    if not isinstance(system, list):
        raise _invalid("system", "must be a string or a list of text blocks")
    parts = [_part_from_wire(block, f"system.{j}", {"text"}) for j, block in enumerate(system)]
    return [Message(role="system", content=_collapse(parts))]


def _messages_from_wire(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages", "must be a non-empty list of messages")
    out: list[Message] = []
    for i, msg in enumerate(raw):
        where = f"messages.{i}"
        if not isinstance(msg, dict):
            raise _invalid(where, "must be an object with 'role' and 'content'")
        if msg.get("role") not in ("user", "assistant"):
            raise _invalid(f"{where}.role", "must be 'user' or 'assistant'")
        blocks = _blocks_from_wire(msg.get("content"), f"{where}.content")
        if msg["role"] == "user":
            out.extend(_user_from_wire(blocks, where))
        else:
            out.append(_assistant_from_wire(blocks, where))
    return out


def _blocks_from_wire(content: Any, where: str) -> list[dict[str, Any]]:
    """Message content as a block list (a plain string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _invalid(where, "must be a string or a list of content blocks")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _invalid(f"{where}.{j}", "must be a content block object with a 'type'")
    return content


def _user_from_wire(blocks: list[dict[str, Any]], where: str) -> list[Message]:
    """One user turn -> one ``tool`` message per tool_result, then a user message for the rest.

    Tool messages go first because OpenAI requires them right after the assistant's tool calls.
    """
    results: list[Message] = []
    parts: list[ContentPart] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        if block["type"] == "tool_result":
            results.append(_tool_result_from_wire(block, at))
        else:
            parts.append(_part_from_wire(block, at, {"text", "image", *_PASSTHROUGH_BLOCKS}))
    if parts or not results:
        results.append(Message(role="user", content=_collapse(parts)))
    return results


def _assistant_from_wire(blocks: list[dict[str, Any]], where: str) -> Message:
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    thinking: list[ThinkingBlock] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        if block["type"] == "tool_use":
            calls.append(_tool_call_from_wire(block, at))
        elif block["type"] in ("thinking", "redacted_thinking"):
            thinking.append(thinking_from_wire(block, at))
        else:
            parts.append(_part_from_wire(block, at, {"text"}))
    content = _collapse(parts)
    return Message(
        role="assistant",
        content=None if calls and content == "" else content,
        tool_calls=calls or None,
        thinking_blocks=thinking or None,
    )


def _part_from_wire(block: Any, at: str, allowed: set[str]) -> ContentPart:
    """One text/image/passthrough block -> a canonical content part."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in allowed:
        raise _invalid(
            f"{at}.type", f"block type {kind!r} is not allowed here (expected one of {sorted(allowed)})"
        )
    if kind in _PASSTHROUGH_BLOCKS:
        return _validated(OtherPart, block, at)
    if kind == "text":
        return _validated(
            TextPart, {k: block[k] for k in ("type", "text", "cache_control") if k in block}, at
        )
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{at}.source", "Field required")
    if source.get("type") == "base64":
        if not isinstance(source.get("media_type"), str) or not isinstance(source.get("data"), str):
            raise _invalid(f"{at}.source", "base64 image sources need string 'media_type' and 'data'")
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif source.get("type") == "url":
        if not isinstance(source.get("url"), str):
            raise _invalid(f"{at}.source.url", "Field required")
        url = source["url"]
    else:
        raise _invalid(f"{at}.source.type", "image sources must be of type 'base64' or 'url'")
    return _validated(ImagePart, {"image_url": {"url": url}, "cache_control": block.get("cache_control")}, at)


def _validated(model: type[_M], data: Any, at: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request_from(exc, prefix=f"{at}.") from None


def _collapse(parts: list[ContentPart]) -> str | list[ContentPart]:
    """Plain text blocks -> one string (what every OpenAI-compatible upstream accepts); a list is
    kept only when it carries something a string cannot: images, cache breakpoints, documents."""
    if all(isinstance(p, TextPart) and p.cache_control is None for p in parts):
        return "".join(p.text for p in parts)  # type: ignore[union-attr]
    return parts


def _tool_call_from_wire(block: dict[str, Any], at: str) -> ToolCall:
    for key in ("id", "name"):
        if not isinstance(block.get(key), str) or not block[key]:
            raise _invalid(f"{at}.{key}", "Field required")
    if not isinstance(block.get("input"), dict):
        raise _invalid(f"{at}.input", "must be an object")
    return ToolCall(
        id=block["id"], function=FunctionCall(name=block["name"], arguments=_dump_json(block["input"]))
    )


def _tool_result_from_wire(block: dict[str, Any], at: str) -> Message:
    if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
        raise _invalid(f"{at}.tool_use_id", "Field required")
    raw = block.get("content")
    if raw is None:
        raw = ""
    parts: list[ContentPart] = [
        _part_from_wire(b, f"{at}.content.{j}", {"text", "image", *_PASSTHROUGH_BLOCKS})
        for j, b in enumerate(_blocks_from_wire(raw, f"{at}.content"))
    ]
    if block.get("is_error"):
        # Canonical tool messages have no error flag; say it in the text the model will read.
        parts.insert(0, TextPart(text="Error: "))
    mark = block.get("cache_control")
    if mark is not None:
        # Canonical tool messages have no slot for it either: it rides on the last part, and
        # request_to_wire puts it back on the tool_result block.
        if not isinstance(mark, dict):
            raise _invalid(f"{at}.cache_control", "must be an object")
        last = parts.pop() if parts else TextPart(text="")
        parts.append(last.model_copy(update={"cache_control": mark}))
    return Message(role="tool", tool_call_id=block["tool_use_id"], content=_collapse(parts))


def _tools_from_wire(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise _invalid("tools", "must be a list of tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise _invalid(f"tools.{i}", "must be an object")
        if tool.get("type") not in (None, "custom"):
            raise _invalid(
                f"tools.{i}.type", f"server tool {tool['type']!r} is not supported by this gateway"
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _invalid(f"tools.{i}.name", "Field required")
        if not isinstance(tool.get("input_schema"), dict):
            raise _invalid(f"tools.{i}.input_schema", "Field required")
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description") is not None:
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function, "cache_control": tool.get("cache_control")})
    return tools


def _tool_choice_from_wire(raw: Any) -> tuple[Any, bool | None]:
    """Anthropic tool_choice -> (canonical tool_choice, parallel_tool_calls)."""
    if not isinstance(raw, dict):
        raise _invalid("tool_choice", "must be an object")
    parallel = False if raw.get("disable_parallel_tool_use") else None
    kind = raw.get("type")
    if kind == "tool":
        if not isinstance(raw.get("name"), str) or not raw["name"]:
            raise _invalid("tool_choice.name", "Field required")
        return {"type": "function", "function": {"name": raw["name"]}}, parallel
    simple = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in simple:
        raise _invalid("tool_choice.type", "must be one of 'auto', 'any', 'tool', 'none'")
    return simple[kind], parallel
