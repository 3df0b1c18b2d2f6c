"""The Anthropic Messages wire format <-> canonical (OpenAI-shaped) types. Pure functions, no I/O.

Two directions, both used:
- upstream edge (we call Anthropic): ``request_to_wire``, ``parse_response``, ``StreamDecoder``,
  ``error_message_from_wire``;
- client edge (an Anthropic SDK calls our ``/v1/messages``): ``parse_request``, ``response_to_wire``,
  ``StreamEncoder``, ``error_to_wire``.

The shapes differ in four ways that drive most of the code below: Anthropic keeps the system prompt
outside the message list; tool results are ``tool_result`` blocks inside a *user* turn rather than
``tool`` messages; roles must alternate; and ``input_tokens`` excludes cache reads and writes, where
canonical ``prompt_tokens`` includes them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import (
    GatewayError,
    InvalidRequestError,
    UpstreamProtocolError,
    error_for_status,
    invalid_request_from,
)
from ..types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Chunk,
    ChunkChoice,
    ContentPart,
    Delta,
    FinishReason,
    FunctionCall,
    ImagePart,
    Message,
    NamedToolChoice,
    OtherPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)

_M = TypeVar("_M", bound=BaseModel)

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; used when an OpenAI client sent none.

_SYSTEM_ROLES = ("system", "developer")

# Anthropic stop_reason -> canonical finish_reason. pause_turn (a server tool paused a long turn)
# has no OpenAI equivalent; "stop" is the closest thing a chat-completions client understands.
_FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

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

# Block types an Anthropic client may send that we do not interpret but can carry to an Anthropic
# upstream untouched (as ``OtherPart``).
_PASSTHROUGH_BLOCKS = frozenset({"document"})
# Thinking blocks echoed back in assistant history: canonical form has no slot for them, and we
# never produce them, so they are dropped rather than rejected.
_IGNORED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def _now() -> int:
    return int(time.time())


def _dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _invalid(param: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid request at '{param}': {problem}", param=param)


# === client edge: Anthropic request -> canonical ==============================================


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
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        if block["type"] == "tool_use":
            calls.append(_tool_call_from_wire(block, at))
        elif block["type"] not in _IGNORED_BLOCKS:
            parts.append(_part_from_wire(block, at, {"text"}))
    content = _collapse(parts)
    return Message(
        role="assistant", content=None if calls and content == "" else content, tool_calls=calls or None
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


# === upstream edge: canonical request -> Anthropic ============================================


JSON_TOOL = "json_response"


def uses_json_tool(request: ChatRequest) -> bool:
    """JSON mode without client tools is asked of Anthropic as one forced tool whose input schema is
    the wanted object: the model then must produce JSON (and for json_schema, that schema's shape).
    The tool's input comes back to the client as the message text."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text" or request.tools:
        return False
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    return schema is None or schema.get("type") == "object"


def request_to_wire(request: ChatRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """ChatRequest -> the Messages body we send to an Anthropic upstream."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": request.output_limit or DEFAULT_MAX_TOKENS,
        "messages": _messages_to_wire(request.messages),
    }
    json_tool = uses_json_tool(request)
    system = _system_to_wire(request.messages)
    if not json_tool:
        system = _with_json_instruction(system, request.response_format)
    if system:
        body["system"] = system
    if json_tool:
        body["tools"] = [_json_tool_to_wire(request.response_format)]
        body["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    elif request.tools:
        body["tools"] = [_tool_to_wire(tool) for tool in request.tools]
        tool_choice = _tool_choice_to_wire(request.tool_choice, request.parallel_tool_calls)
        if tool_choice:
            body["tool_choice"] = tool_choice
    if request.stop_list:
        body["stop_sequences"] = request.stop_list
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # OpenAI allows up to 2, Anthropic 1
    if request.top_p is not None:
        body["top_p"] = request.top_p
    top_k = (request.model_extra or {}).get("top_k")  # set by parse_request for Anthropic clients
    if top_k is not None:
        body["top_k"] = top_k
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def _system_to_wire(messages: list[Message]) -> str | list[dict[str, Any]] | None:
    """Every system/developer message, wherever it sits, hoisted into Anthropic's one system prompt:
    a string, or text blocks when a cache breakpoint has to be kept."""
    parts: list[TextPart] = []
    for i, message in enumerate(messages):
        if message.role not in _SYSTEM_ROLES:
            continue
        content = (
            message.content if isinstance(message.content, list) else [TextPart(text=message.content or "")]
        )
        for j, part in enumerate(content):
            if not isinstance(part, TextPart):
                raise _invalid(
                    f"messages.{i}.content.{j}", "system messages can only contain text for this model"
                )
            parts.append(part)
    if any(p.cache_control is not None for p in parts):
        return [_text_to_wire(p) for p in parts if p.text or p.cache_control]
    texts = [m.text() for m in messages if m.role in _SYSTEM_ROLES and m.text()]
    return "\n\n".join(texts) or None


def _json_tool_to_wire(fmt: ResponseFormat | None) -> dict[str, Any]:
    schema = fmt.json_schema.schema_ if fmt is not None and fmt.json_schema is not None else None
    return {
        "name": JSON_TOOL,
        "description": "Give your whole answer as this tool's input: a single JSON object.",
        "input_schema": schema or {"type": "object"},
    }


def _with_json_instruction(
    system: str | list[dict[str, Any]] | None, fmt: ResponseFormat | None
) -> str | list[dict[str, Any]] | None:
    """Anthropic's Messages API (2023-06-01) has no JSON mode: ask for it in the system prompt."""
    if fmt is None or fmt.type == "text":
        return system
    instruction = "Respond with only a single valid JSON object: no other text, no Markdown code fences."
    if fmt.json_schema is not None and fmt.json_schema.schema_ is not None:
        instruction += " It must match this JSON schema:\n" + _dump_json(fmt.json_schema.schema_)
    if system is None:
        return instruction
    if isinstance(system, str):
        return f"{system}\n\n{instruction}"
    return [*system, {"type": "text", "text": instruction}]


def _messages_to_wire(messages: list[Message]) -> list[dict[str, Any]]:
    """Non-system messages -> Anthropic turns, merging consecutive same-role turns (Anthropic needs
    alternation); consecutive ``tool`` messages thereby become one user turn of tool_result blocks."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role in _SYSTEM_ROLES:
            continue
        turn = _message_to_wire(message, f"messages.{i}")
        if out and out[-1]["role"] == turn["role"]:
            out[-1]["content"] = _as_blocks(out[-1]["content"]) + _as_blocks(turn["content"])
        else:
            out.append(turn)
    return out


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return content
    return [{"type": "text", "text": content}] if content else []


def _message_to_wire(message: Message, where: str) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "user", "content": [_tool_result_to_wire(message, where)]}
    content = _content_to_wire(message.content, where)
    if message.role == "assistant" and message.tool_calls:
        calls = [_tool_use_to_wire(c, f"{where}.tool_calls.{j}") for j, c in enumerate(message.tool_calls)]
        content = _as_blocks(content) + calls
    return {"role": message.role, "content": content}


def _content_to_wire(content: str | list[ContentPart] | None, where: str) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    # Anthropic rejects empty text blocks; an empty part carries nothing anyway.
    blocks = [_part_to_wire(p, f"{where}.content.{j}") for j, p in enumerate(content)]
    return [b for b in blocks if b.get("type") != "text" or b["text"] or b.get("cache_control")]


def _part_to_wire(part: ContentPart, at: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return _text_to_wire(part)
    if isinstance(part, ImagePart):
        return _image_to_wire(part, at)
    if part.type in _PASSTHROUGH_BLOCKS:
        return part.model_dump()
    raise _invalid(f"{at}.type", f"content part type {part.type!r} is not supported by this model")


def _text_to_wire(part: TextPart) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": part.text}
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def _image_to_wire(part: ImagePart, at: str) -> dict[str, Any]:
    url = part.image_url.url
    if url.startswith("data:"):
        header, comma, data = url[len("data:") :].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or not media_type or encoding != "base64":
            raise _invalid(f"{at}.image_url.url", "data URLs must look like data:<media type>;base64,<data>")
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise _invalid(f"{at}.image_url.url", "must be an http(s) URL or a base64 data URL")
    block: dict[str, Any] = {"type": "image", "source": source}
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def _tool_use_to_wire(call: ToolCall, at: str) -> dict[str, Any]:
    arguments = call.function.arguments
    try:
        # Some OpenAI-compatible clients send "" for a call without arguments.
        tool_input = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        tool_input = None
    if not isinstance(tool_input, dict):
        raise _invalid(f"{at}.function.arguments", "must be a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": tool_input}


def _tool_result_to_wire(message: Message, where: str) -> dict[str, Any]:
    if not message.tool_call_id:
        raise _invalid(f"{where}.tool_call_id", "tool messages need the id of the call they answer")
    content = _content_to_wire(message.content, where)
    return {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": content}


def _tool_to_wire(tool: Tool) -> dict[str, Any]:
    function = tool.function
    wire: dict[str, Any] = {"name": function.name}
    if function.description is not None:
        wire["description"] = function.description
    wire["input_schema"] = function.parameters or {"type": "object", "properties": {}}
    if tool.cache_control is not None:
        wire["cache_control"] = tool.cache_control
    return wire


def _tool_choice_to_wire(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None  # Anthropic's default is auto
    if choice == "none":
        return {"type": "none"}  # disable_parallel_tool_use is not allowed with "none"
    if isinstance(choice, NamedToolChoice):
        if not choice.function.get("name"):
            raise _invalid("tool_choice.function.name", "Field required")
        wire: dict[str, Any] = {"type": "tool", "name": choice.function["name"]}
    else:
        wire = {"type": "any" if choice == "required" else "auto"}
    if parallel is False:
        wire["disable_parallel_tool_use"] = True
    return wire


# === responses ===============================================================================


def parse_response(body: Any, model: str, *, json_tool: bool = False) -> ChatResponse:
    """An upstream Messages response -> ChatResponse named after our client-facing ``model``.

    ``json_tool``: the request asked for JSON through the forced tool (``uses_json_tool``); its
    input becomes the message text.
    """
    if isinstance(body, dict) and body.get("type") == "error":
        raise _error_from_wire(body)
    try:
        blocks = body["content"]
        stop_reason = body.get("stop_reason")
        if json_tool and any(b["type"] == "tool_use" and b["name"] == JSON_TOOL for b in blocks):
            blocks = [
                {"type": "text", "text": _dump_json(b["input"])} if b["type"] == "tool_use" else b
                for b in blocks
                if b["type"] != "text"
            ]
            stop_reason = "end_turn" if stop_reason == "tool_use" else stop_reason
        text = "".join(b["text"] for b in blocks if b["type"] == "text")
        calls = [
            ToolCall(id=b["id"], function=FunctionCall(name=b["name"], arguments=_dump_json(b["input"])))
            for b in blocks
            if b["type"] == "tool_use"
        ]
        # thinking, server-tool and other blocks have no canonical form and are dropped.
        message = Message(
            role="assistant", content=text if text or not calls else None, tool_calls=calls or None
        )
        return ChatResponse(
            id=body["id"],
            created=_now(),
            model=model,
            choices=[Choice(message=message, finish_reason=_finish_reason(stop_reason))],
            usage=_usage_from_wire(body["usage"]),
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise UpstreamProtocolError(
            f"Malformed Anthropic message from upstream: {exc!r}"[:300], provider="anthropic"
        ) from None


def _finish_reason(stop_reason: str | None) -> FinishReason:
    return _FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def _usage_from_wire(raw: dict[str, Any]) -> Usage:
    """Anthropic usage -> canonical, where prompt_tokens also counts cache reads and writes."""
    read = raw.get("cache_read_input_tokens") or 0
    write = raw.get("cache_creation_input_tokens") or 0
    details = raw.get("output_tokens_details") or {}
    return Usage(
        prompt_tokens=(raw.get("input_tokens") or 0) + read + write,
        completion_tokens=raw.get("output_tokens") or 0,
        cached_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=details.get("thinking_tokens") or 0,
    )


def _usage_to_wire(usage: Usage) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }
    if usage.reasoning_tokens:
        wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return wire


def _stop_reason(finish_reason: str | None, *, has_tool_calls: bool) -> str:
    # Some OpenAI-compatible upstreams say "stop" after tool calls; Anthropic clients only run
    # tools when stop_reason is "tool_use".
    if has_tool_calls and finish_reason in (None, "stop"):
        return "tool_use"
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _message_id(response_id: str) -> str:
    if response_id.startswith("msg_"):
        return response_id
    return "msg_" + response_id if response_id else _new_id("msg_")


def response_to_wire(response: ChatResponse) -> dict[str, Any]:
    """ChatResponse -> a Messages response body for an Anthropic client."""
    choice = response.choices[0] if response.choices else Choice(message=Message(role="assistant"))
    message = choice.message
    content: list[dict[str, Any]] = []
    text = message.text() or message.refusal
    if text:
        content.append({"type": "text", "text": text})
    for call in message.tool_calls or ():
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _tool_input(call.function.arguments),
            }
        )
    return {
        "id": _message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": _stop_reason(choice.finish_reason, has_tool_calls=bool(message.tool_calls)),
        "stop_sequence": None,
        "usage": _usage_to_wire(response.usage),
    }


def _tool_input(arguments: str) -> dict[str, Any]:
    """An upstream's tool-call arguments -> Anthropic's ``input`` object."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        # Anthropic clients cannot receive anything but an object; passing garbage on would only
        # move the failure into the client's SDK.
        raise UpstreamProtocolError(
            f"Upstream returned tool arguments that are not a JSON object: {arguments[:200]!r}"
        )
    return value


# === streams =================================================================================


class StreamDecoder:
    """Anthropic SSE events -> canonical chunks (stateful: block index -> tool-call index)."""

    def __init__(self, model: str, *, json_tool: bool = False) -> None:
        self.model = model
        self._json_tool = json_tool  # see uses_json_tool: that tool's input streams as text
        self._json_block: int | None = None
        self._id = ""
        self._created = _now()
        self._usage: dict[str, Any] = {}  # cumulative Anthropic usage, merged from start and delta
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> canonical tool-call index
        self._complete = False

    def feed(self, event: str | None, data: Any) -> list[Chunk]:
        kind = event or (data.get("type") if isinstance(data, dict) else None)
        handler = _DECODER_HANDLERS.get(kind or "")
        if handler is None:
            return []  # ping, and event types Anthropic may add (their versioning policy allows it)
        try:
            return handler(self, data)
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise UpstreamProtocolError(
                f"Malformed Anthropic stream event {kind!r}: {exc!r}"[:300], provider="anthropic"
            ) from None

    @property
    def complete(self) -> bool:
        """True once ``message_stop`` was seen (a stream without it was truncated)."""
        return self._complete

    def _chunk(self, delta: Delta, finish_reason: FinishReason | None = None) -> Chunk:
        choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
        return Chunk(id=self._id, created=self._created, model=self.model, choices=[choice])

    def _merge_usage(self, raw: dict[str, Any] | None) -> None:
        # message_delta counts are cumulative and may omit fields: overwrite only what is present.
        self._usage.update({k: v for k, v in (raw or {}).items() if v is not None})

    def _on_message_start(self, data: dict[str, Any]) -> list[Chunk]:
        message = data["message"]
        self._id = message["id"]
        self._merge_usage(message.get("usage"))
        return [self._chunk(Delta(role="assistant"))]

    def _on_block_start(self, data: dict[str, Any]) -> list[Chunk]:
        block = data["content_block"]
        if self._json_tool and block["type"] == "tool_use" and block["name"] == JSON_TOOL:
            self._json_block = data["index"]
            return [self._chunk(Delta(content=_dump_json(block["input"])))] if block.get("input") else []
        if block["type"] == "tool_use":
            index = self._tool_index[data["index"]] = len(self._tool_index)
            # Anthropic sends input {} here and the JSON in deltas; a non-empty one is kept.
            arguments = _dump_json(block["input"]) if block.get("input") else ""
            function = {"name": block["name"], "arguments": arguments}
            return [
                self._chunk(
                    Delta(
                        tool_calls=[
                            ToolCallDelta(index=index, id=block["id"], type="function", function=function)
                        ]
                    )
                )
            ]
        if block["type"] == "text" and block.get("text"):
            return [self._chunk(Delta(content=block["text"]))]
        return []  # thinking and server-tool blocks have no canonical form

    def _on_block_delta(self, data: dict[str, Any]) -> list[Chunk]:
        delta = data["delta"]
        if delta["type"] == "text_delta" and delta["text"]:
            return [self._chunk(Delta(content=delta["text"]))]
        if delta["type"] == "input_json_delta" and data["index"] == self._json_block:
            return [self._chunk(Delta(content=delta["partial_json"]))] if delta["partial_json"] else []
        if (
            delta["type"] == "input_json_delta"
            and delta["partial_json"]
            and data["index"] in self._tool_index
        ):
            call = ToolCallDelta(
                index=self._tool_index[data["index"]], function={"arguments": delta["partial_json"]}
            )
            return [self._chunk(Delta(tool_calls=[call]))]
        return []  # thinking, signature and citation deltas

    def _on_message_delta(self, data: dict[str, Any]) -> list[Chunk]:
        self._merge_usage(data.get("usage"))
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        if stop_reason == "tool_use" and self._json_block is not None and not self._tool_index:
            stop_reason = "end_turn"  # the forced JSON tool is the answer, not a call to make
        return [self._chunk(Delta(), _finish_reason(stop_reason))] if stop_reason else []

    def _on_message_stop(self, data: dict[str, Any]) -> list[Chunk]:
        self._complete = True
        # The canonical stream always ends with a usage chunk.
        return [
            Chunk(id=self._id, created=self._created, model=self.model, usage=_usage_from_wire(self._usage))
        ]

    def _on_error(self, data: dict[str, Any]) -> list[Chunk]:
        raise _error_from_wire(data)


_DECODER_HANDLERS = {
    "message_start": StreamDecoder._on_message_start,
    "content_block_start": StreamDecoder._on_block_start,
    "content_block_delta": StreamDecoder._on_block_delta,
    "message_delta": StreamDecoder._on_message_delta,
    "message_stop": StreamDecoder._on_message_stop,
    "error": StreamDecoder._on_error,
}

Event = tuple[str, dict[str, Any]]


class StreamEncoder:
    """Canonical chunks -> Anthropic SSE events ``(event_name, data_dict)`` for an Anthropic client.

    Content blocks are opened lazily and strictly one at a time (the SDK accumulates by index);
    ``message_delta`` waits for both the finish reason and the usage chunk that follows it.
    """

    def __init__(self) -> None:
        self._started = False
        self._done = False
        self._block: int | None = None  # index of the open content block
        self._block_is_text = False
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}  # canonical tool-call index -> block index
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    def encode(self, chunk: Chunk) -> list[Event]:
        if self._done:
            return []
        events = [] if self._started else [self._message_start(chunk)]
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # Anthropic has no n > 1
            events += self._text(choice.delta)
            for call in choice.delta.tool_calls or ():
                events += self._tool_call(call)
            self._finish_reason = choice.finish_reason or self._finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if self._finish_reason is not None and self._usage is not None:
            events += self._finish()
        return events

    def close(self) -> list[Event]:
        """Events still owed at the end (content_block_stop, message_delta, message_stop)."""
        if not self._started or self._done:
            return []
        return self._finish()

    def _message_start(self, chunk: Chunk) -> Event:
        self._started = True
        usage = _usage_to_wire(chunk.usage) if chunk.usage else {"input_tokens": 0, "output_tokens": 0}
        message = {
            "id": _message_id(chunk.id),
            "type": "message",
            "role": "assistant",
            "model": chunk.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return "message_start", {"type": "message_start", "message": message}

    def _text(self, delta: Delta) -> list[Event]:
        text = (delta.content or "") + (delta.refusal or "")
        if not text:
            return []
        events = (
            []
            if self._block is not None and self._block_is_text
            else self._open({"type": "text", "text": ""})
        )
        events.append(_block_delta(self._block, {"type": "text_delta", "text": text}))
        return events

    def _tool_call(self, call: ToolCallDelta) -> list[Event]:
        function = call.function or {}
        events: list[Event] = []
        if call.index not in self._tool_blocks:
            block = {
                "type": "tool_use",
                "id": call.id or _new_id("toolu_"),
                "name": function.get("name", ""),
                "input": {},
            }
            events = self._open(block)
            self._tool_blocks[call.index] = self._next_block - 1  # the block just opened
        if function.get("arguments"):
            json_delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(_block_delta(self._tool_blocks[call.index], json_delta))
        return events

    def _open(self, block: dict[str, Any]) -> list[Event]:
        events = self._close_block()
        self._block, self._block_is_text = self._next_block, block["type"] == "text"
        self._next_block += 1
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._block, "content_block": block},
            )
        )
        return events

    def _close_block(self) -> list[Event]:
        if self._block is None:
            return []
        index, self._block = self._block, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _finish(self) -> list[Event]:
        self._done = True
        stop_reason = _stop_reason(self._finish_reason, has_tool_calls=bool(self._tool_blocks))
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": _usage_to_wire(self._usage or Usage()),
        }
        return [
            *self._close_block(),
            ("message_delta", message_delta),
            ("message_stop", {"type": "message_stop"}),
        ]


def _block_delta(index: int | None, delta: dict[str, Any]) -> Event:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


# === errors ==================================================================================


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
    return {"type": "error", "error": {"type": error.anthropic_type, "message": error.message}}


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
