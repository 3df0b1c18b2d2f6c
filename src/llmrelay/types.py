"""Canonical request, response, stream chunk and usage.

The OpenAI chat-completions shape is the lingua franca: every layer passes these types, and wire
formats (OpenAI, Anthropic) are translated into and out of them only at the edges
(``llmrelay.providers.*_format``). Fields a client sends that we do not model are kept in
``ChatRequest.model_extra`` and passed through to OpenAI-compatible upstreams untouched.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- message content --------------------------------------------------------------------------


class TextPart(_Model):
    type: Literal["text"] = "text"
    text: str
    # Anthropic prompt-caching breakpoint, carried through canonical form so it survives conversion.
    cache_control: dict[str, Any] | None = None


class ImageURL(_Model):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Model):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL
    cache_control: dict[str, Any] | None = None


class OtherPart(BaseModel):
    """A content part we do not interpret (input_audio, file, ...): passed through as-is."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


def _part_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"part:{kind}" if kind in ("text", "image_url") else "part:other"


# Tags carry a "part:" prefix so error locations can drop them (see errors.invalid_request_from).
ContentPart = Annotated[
    Annotated[TextPart, Tag("part:text")]
    | Annotated[ImagePart, Tag("part:image_url")]
    | Annotated[OtherPart, Tag("part:other")],
    Discriminator(_part_kind),
]


class FunctionCall(_Model):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(_Model):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ThinkingBlock(_Model):
    """One block of a model's extended thinking (Anthropic): its text and the signature the provider
    checks when the block is sent back in a later turn, or a ``redacted_thinking`` block's
    encrypted ``data``. Carried as given, never altered: a changed block fails its signature."""

    type: Literal["thinking", "redacted_thinking"] = "thinking"
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class Message(_Model):
    role: Role
    content: str | list[ContentPart] | None = Field(default=None, validate_default=True)
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    thinking_blocks: list[ThinkingBlock] | None = None  # an assistant turn's thinking, in order

    @field_validator("content")
    @classmethod
    def _content_given(cls, content: Any, info: ValidationInfo) -> Any:
        # Only an assistant turn may leave it out (it called tools instead); OpenAI refuses the rest.
        role = info.data.get("role")
        if content is None and role not in (None, "assistant"):
            raise ValueError(f"a {role} message needs content: a string or a list of parts, not null")
        return content

    def text(self) -> str:
        """The message's text content joined, ignoring non-text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def thinking_text(self) -> str:
        """The text of the turn's thinking blocks, joined (redacted blocks have none)."""
        return "".join(b.thinking or "" for b in self.thinking_blocks or ())


# --- tools and output format ------------------------------------------------------------------


class FunctionDef(_Model):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Model):
    type: Literal["function"] = "function"
    function: FunctionDef
    cache_control: dict[str, Any] | None = None


class NamedToolChoice(_Model):
    type: Literal["function"] = "function"
    function: dict[str, str]  # {"name": ...}


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JSONSchemaFormat(_Model):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_Model):
    include_usage: bool | None = None


class ThinkingConfig(BaseModel):
    """Anthropic's ``thinking`` option (``{"type": "enabled", "budget_tokens": 2048}``), checked for
    shape only: which types and budgets a model takes is the provider's to say."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    budget_tokens: int | None = Field(default=None, ge=1, strict=True)


# --- request ----------------------------------------------------------------------------------


class ChatRequest(BaseModel):
    """A chat-completions request in canonical (OpenAI) form."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    # Numbers and flags as JSON types, as OpenAI takes them: "10", true or 10.0 for max_tokens, or 1
    # for stream, are 400s naming the field, not coerced (strict: an int is still a float).
    parallel_tool_calls: bool | None = Field(default=None, strict=True)
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, strict=True)
    n: int | None = Field(default=None, ge=1, le=128, strict=True)
    stream: bool | None = Field(default=None, strict=True)
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    thinking: ThinkingConfig | None = None  # extended thinking: Anthropic upstreams only

    @field_validator("tool_choice")
    @classmethod
    def _chosen_tool_given(cls, choice: Any, info: ValidationInfo) -> Any:
        # A call forced to a tool the request does not define could only be made up. ("auto" and
        # "none" without tools say nothing, and are dropped on the way.)
        if choice in (None, "none", "auto") or "tools" not in info.data:  # tools itself invalid
            return choice
        names = {t.function.name for t in info.data["tools"] or ()}
        if not names:
            raise ValueError(f"tool_choice {choice!r} needs tools, and none are given")
        if isinstance(choice, NamedToolChoice) and choice.function.get("name") not in names:
            raise ValueError(f"the tool {choice.function.get('name')!r} is not among the tools given")
        return choice

    @field_validator("stream_options")
    @classmethod
    def _streaming(cls, options: Any, info: ValidationInfo) -> Any:
        if options is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true")
        return options

    @property
    def output_limit(self) -> int | None:
        """The output-token cap the client asked for, whichever field it used."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def thinks(self) -> bool:
        """Extended thinking is asked for (a ``thinking`` of any type but "disabled")."""
        return self.thinking is not None and self.thinking.type != "disabled"

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# --- usage, response, chunk -------------------------------------------------------------------


class Usage(_Model):
    """Token counts in OpenAI semantics: ``prompt_tokens`` includes cached-read and cache-write
    tokens (``cached_tokens + cache_write_tokens <= prompt_tokens``); ``cache_write_tokens``
    includes the writes to 1-hour entries (``cache_write_1h_tokens <= cache_write_tokens``, the rest
    are 5-minute writes); ``completion_tokens`` includes reasoning tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0  # Anthropic bills these at 2x the input price, 5-minute ones 1.25x
    reasoning_tokens: int = 0
    # Counted by llmrelay's tokenizer because the upstream reported none (not part of any wire format).
    estimated: bool = Field(default=False, exclude=True)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Choice(_Model):
    index: int = 0
    message: Message
    finish_reason: FinishReason | None = None


class ChatResponse(_Model):
    id: str
    created: int
    model: str  # the client-facing model name that answered
    choices: list[Choice]
    usage: Usage = Usage()
    system_fingerprint: str | None = None


class ToolCallDelta(_Model):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None  # {"name"?: ..., "arguments"?: partial JSON}


class ThinkingDelta(_Model):
    """A piece of thinking block ``index``: its type when it opens, then text and signature pieces."""

    index: int
    type: Literal["thinking", "redacted_thinking"] | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class Delta(_Model):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    refusal: str | None = None
    thinking_blocks: list[ThinkingDelta] | None = None

    def thinking_text(self) -> str:
        """The text of this delta's thinking pieces, joined."""
        return "".join(p.thinking or "" for p in self.thinking_blocks or ())

    @property
    def has_output(self) -> bool:
        """Some of the answer (text, a tool call, a refusal, thinking), not only the role."""
        return bool(self.content or self.tool_calls or self.refusal or self.thinking_blocks)


class ChunkChoice(_Model):
    index: int = 0
    delta: Delta = Delta()
    finish_reason: FinishReason | None = None


class Chunk(_Model):
    """One streamed event. A canonical stream always ends with a chunk carrying ``usage``
    (after the one with ``finish_reason``), or raises a ``GatewayError``."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice] = []
    usage: Usage | None = None


class Moderation(_Model):
    """One input's moderation result: flagged or not, the categories that flagged it, and every
    category's score (0..1). Category names are OpenAI's (``violence``, ``self-harm/intent``...)."""

    flagged: bool
    categories: list[str] = []
    scores: dict[str, float] = {}
