"""What the simulator says: a forced reply, a tool-result acknowledgement, a rule, JSON mode or the echo.

Order (first that applies wins):
1. the ``x-sim-reply`` header;
2. ``tool_choice`` forces a tool (by name, or ``required``) -> a call to it: a matching tool_call
   rule's arguments, else placeholder arguments from the tool's schema (what a real model must do,
   and how JSON mode reaches Anthropic upstreams);
3. the last message is a tool result -> ``"The tool returned: <result>"`` (so a tool loop ends);
4. the first rule matching the last user message (and the model);
5. ``response_format`` json_object / json_schema -> a JSON object;
6. the echo: ``"You said: <last user message>"``.
Then stop sequences cut the text (finish "stop") and the output limit truncates it (finish "length").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ..tokens import encoding_for
from ..types import ChatRequest, FinishReason, NamedToolChoice
from .rules import Rule, expand, find_rule

ECHO_PREFIX = "You said: "
TOOL_RESULT_PREFIX = "The tool returned: "
_TOOL_RESULT_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class Answer:
    text: str | None = None
    tool_name: str | None = None
    tool_arguments: str | None = None  # JSON text
    finish_reason: FinishReason = "stop"


def last_user_text(request: ChatRequest) -> str:
    return next((m.text() for m in reversed(request.messages) if m.role == "user"), "")


def decide(request: ChatRequest, rules: list[Rule], forced_reply: str | None = None) -> Answer:
    if forced_reply is not None:
        return Answer(text=forced_reply)
    user_text = last_user_text(request)
    found = find_rule(rules, user_text, request.model)
    forced = _forced_tool(request)
    if forced is not None:
        return _forced_call(*forced, found, user_text)
    last = request.messages[-1]
    if last.role == "tool":
        result = last.text()
        if len(result) > _TOOL_RESULT_MAX_CHARS:
            result = result[:_TOOL_RESULT_MAX_CHARS] + "..."
        return Answer(text=TOOL_RESULT_PREFIX + result)
    if found is not None:
        return _from_rule(*found)
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema and fmt.json_schema.schema_:
        return Answer(text=_dumps(placeholder(fmt.json_schema.schema_, user_text)))
    if fmt is not None and fmt.type in ("json_object", "json_schema"):
        return Answer(text=_dumps({"answer": user_text}))
    return Answer(text=ECHO_PREFIX + user_text)


def _forced_tool(request: ChatRequest) -> tuple[list[str], dict[str, Any]] | None:
    """(names allowed, schema of the default choice) when tool_choice leaves no room for text."""
    tools = {t.function.name: t.function.parameters or {} for t in request.tools or ()}
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        name = choice.function.get("name", "")
        return [name], tools.get(name, {})
    if choice == "required" and tools:
        return list(tools), next(iter(tools.values()))
    return None


def _forced_call(
    names: list[str], schema: dict[str, Any], found: tuple[Rule, Any] | None, user_text: str
) -> Answer:
    if found is not None and found[0].tool_call is not None and found[0].tool_call.name in names:
        return _from_rule(*found)
    # A bare {"type": "object"} (JSON mode as a tool) gets the same object as json_object mode.
    arguments = placeholder(schema, user_text) if schema.get("properties") else {"answer": user_text}
    return Answer(tool_name=names[0], tool_arguments=_dumps(arguments), finish_reason="tool_calls")


def _from_rule(rule: Rule, match: Any) -> Answer:
    if rule.tool_call is not None:
        arguments = expand(rule.tool_call.arguments, match)
        return Answer(
            tool_name=rule.tool_call.name, tool_arguments=_dumps(arguments), finish_reason="tool_calls"
        )
    if rule.reply is not None:
        return Answer(text=expand(rule.reply, match))
    return Answer(text=_dumps(expand(rule.json_value, match)))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# Values a placeholder may hold in all: a schema asking for minItems 100000000 (or arrays of
# arrays) gets a cut-off answer, as a real model runs out of output tokens, instead of building it
# on the gateway's event loop (the embedded simulator shares it) for minutes.
_PLACEHOLDER_VALUES = 10_000


def placeholder(schema: dict[str, Any], text: str) -> Any:
    """A minimal value satisfying ``schema``: required properties only, type-appropriate values.

    Strings get the user's text (so tests can see it came through), numbers 0, booleans false.
    Local ``$ref``s (``#/$defs/...``) are followed; recursion is cut at a small depth; arrays stop
    growing once the whole value holds ``_PLACEHOLDER_VALUES`` values.
    """
    return _Placeholder(schema, text).value(schema, 0)[0]


class _Placeholder:
    def __init__(self, root: dict[str, Any], text: str) -> None:
        self.root = root
        self.text = text
        self.left = _PLACEHOLDER_VALUES

    def value(self, schema: dict[str, Any], depth: int) -> tuple[Any, int]:
        """The value and how many values it holds (itself included)."""
        if depth > 8:
            return None, 1
        if "$ref" in schema:
            return self.value(_resolve(self.root, schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"], 1
        if schema.get("enum"):
            return schema["enum"][0], 1
        for key in ("anyOf", "oneOf", "allOf"):
            if schema.get(key):
                return self.value(schema[key][0], depth + 1)
        kind = schema.get("type", "object" if "properties" in schema else "string")
        if isinstance(kind, list):  # ["string", "null"]: the first non-null type
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object":
            props = schema.get("properties") or {}
            out, size = {}, 1
            for name in schema.get("required") or ():
                out[name], n = self.value(props.get(name) or {}, depth + 1)
                size += n
            return out, size
        if kind == "array":
            item, n = self.value(schema.get("items") or {}, depth + 1)
            # At least one item when some are asked for: the item was built within the budget.
            count = min(_count(schema.get("minItems")), max(self.left // n, 1))
            self.left -= count * n
            return [item] * count, 1 + count * n
        scalars = {"string": self.text, "integer": 0, "number": 0, "boolean": False, "null": None}
        return scalars.get(kind, self.text), 1


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError, OverflowError):  # a schema's minItems of "many" or 1e400
        return 0


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    if not ref.startswith("#"):
        return {}
    for part in ref.lstrip("#").strip("/").split("/"):
        node = node.get(part) if isinstance(node, dict) and part else node
    return node if isinstance(node, dict) else {}


def limit(answer: Answer, request: ChatRequest) -> Answer:
    """Apply stop sequences, then the output-token limit, to a text answer.

    Tool calls are not truncated: a cut-off arguments string cannot be rendered for Anthropic
    clients (their ``input`` must be an object), and tests can force length with a text reply.
    """
    if answer.text is None:
        return answer
    text = answer.text
    cuts = [i for i in (text.find(s) for s in request.stop_list if s) if i >= 0]
    if cuts:
        answer = replace(answer, text=text[: min(cuts)], finish_reason="stop")
    cap = request.output_limit
    if cap is not None:
        enc = encoding_for(request.model)
        ids = enc.encode_ordinary(answer.text or "")
        if len(ids) > cap:
            answer = replace(answer, text=enc.decode(ids[:cap]), finish_reason="length")
    return answer
