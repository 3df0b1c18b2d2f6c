"""Upstream edge: canonical request -> Anthropic Messages body (``request_to_wire``, the JSON tool)."""

from __future__ import annotations

from typing import Any

from ...jsondepth import tool_arguments
from ...types import (
    ChatRequest,
    ContentPart,
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from ._common import _PASSTHROUGH_BLOCKS, _dump_json, _invalid, thinking_to_wire

# === upstream edge: canonical request -> Anthropic ============================================


DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; used when an OpenAI client sent none.

_SYSTEM_ROLES = ("system", "developer")


JSON_TOOL = "json_response"


def uses_json_tool(request: ChatRequest) -> bool:
    """JSON mode without client tools is asked of Anthropic as one forced tool whose input schema is
    the wanted object: the model then must produce JSON (and for json_schema, that schema's shape).
    The tool's input comes back to the client as the message text."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text" or request.tools or request.thinks:
        return False  # Anthropic refuses a forced tool while the model thinks: the instruction, then
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    return schema is None or schema.get("type") == "object"


def request_to_wire(request: ChatRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """ChatRequest -> the Messages body we send to an Anthropic upstream."""
    if request.n is not None and request.n > 1:
        raise _invalid(
            "n", "this model returns one choice per request (Anthropic has no 'n'); send n requests"
        )
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
    if request.thinking is not None:
        body["thinking"] = request.thinking.model_dump(exclude_none=True)
    if stream:
        body["stream"] = True
    return body


# What Anthropic's count_tokens takes of a Messages body (sampling options and max_tokens are refused).
_COUNTED = ("model", "messages", "system", "tools", "tool_choice", "thinking")


def count_request_to_wire(request: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """ChatRequest -> the body of an upstream ``/v1/messages/count_tokens``."""
    body = request_to_wire(request, upstream_model, stream=False)
    return {k: body[k] for k in _COUNTED if k in body}


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
    signed = [b for b in message.thinking_blocks or () if b.signature or b.type == "redacted_thinking"]
    if message.role == "assistant" and signed:
        # Thinking goes first in the turn, as the model wrote it (Anthropic checks the order).
        # Unsigned thinking (another model's reasoning) could only fail Anthropic's check: left out.
        content = [thinking_to_wire(b) for b in signed] + _as_blocks(content)
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
    tool_input = tool_arguments(call.function.arguments)
    if tool_input is None:
        raise _invalid(f"{at}.function.arguments", "must be a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": tool_input}


def _tool_result_to_wire(message: Message, where: str) -> dict[str, Any]:
    if not message.tool_call_id:
        raise _invalid(f"{where}.tool_call_id", "tool messages need the id of the call they answer")
    content = _content_to_wire(message.content, where)
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": content}
    if isinstance(content, list) and any("cache_control" in b for b in content):
        # A tool result's breakpoint goes on the tool_result block (where Anthropic takes it).
        marks = [b.pop("cache_control") for b in content if "cache_control" in b]
        block["cache_control"] = marks[-1]
        block["content"] = [b for b in content if b.get("type") != "text" or b["text"]]
    return block


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
