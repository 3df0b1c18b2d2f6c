"""Training rows for the trained router, and the text a router scores in a chat request."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    weak: float  # how the weak model did: 1/0 correctness, or a judge score
    strong: float

    @property
    def target(self) -> float:
        """1 when the strong model does better, the thing the router predicts."""
        return 1.0 if self.strong > self.weak else 0.0


def prompt_text(messages: Iterable[Any]) -> str:
    """The text a router scores: the last user message (dicts or ``types.Message``).

    The last user turn is what the answer depends on most; earlier turns and the system prompt
    mostly repeat across requests of one application and would blur the signal. A request with no
    user message falls back to all its text.
    """
    messages = list(messages)
    users = [m for m in messages if _get(m, "role") == "user"]
    return "\n".join(_content_text(_get(m, "content")) for m in (users[-1:] or messages)).strip()


def _get(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, Mapping) else getattr(message, key, None)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:  # OpenAI and Anthropic content parts both use {"type": "text", "text": ...}
        if _get(part, "type") == "text" and isinstance(_get(part, "text"), str):
            parts.append(_get(part, "text"))
    return "\n".join(parts)


def examples_from_rows(rows: Iterable[Mapping[str, Any] | Example]) -> list[Example]:
    """Training rows -> examples; a bad row raises ``ConfigError`` naming its (1-based) number."""
    examples = []
    for n, row in enumerate(rows, 1):
        try:
            examples.append(row if isinstance(row, Example) else example_from_row(row))
        except ConfigError as exc:
            raise ConfigError(f"row {n}: {exc.message}") from None
    if not examples:
        raise ConfigError("no training rows")
    return examples


def example_from_row(row: Any) -> Example:
    """One training row -> an example, or ``ConfigError`` saying what is wrong with it.

    A row has the prompt as ``prompt`` (a string) or ``messages`` (chat messages), and one of:
    ``weak_correct`` + ``strong_correct`` (booleans), ``label`` (``"weak"``: the weak model will
    do, ``"strong"``: it will not), or ``weak_score`` + ``strong_score`` (numbers, e.g. judge
    scores; higher is better).
    """
    if not isinstance(row, Mapping):
        raise ConfigError(f"expected a JSON object, got {type(row).__name__}")
    if isinstance(row.get("prompt"), str):
        text = row["prompt"]
    elif isinstance(row.get("messages"), list):
        text = prompt_text(row["messages"])
    else:
        raise ConfigError("needs 'prompt' (a string) or 'messages' (a list of chat messages)")
    if not text.strip():
        raise ConfigError("the prompt is empty")
    return Example(text, *_outcome(row))


def _outcome(row: Mapping[str, Any]) -> tuple[float, float]:
    if "weak_correct" in row or "strong_correct" in row:
        weak, strong = row.get("weak_correct"), row.get("strong_correct")
        if not isinstance(weak, bool) or not isinstance(strong, bool):
            raise ConfigError("'weak_correct' and 'strong_correct' must both be true or false")
        return float(weak), float(strong)
    if "label" in row:
        if row["label"] not in ("weak", "strong"):
            raise ConfigError(f'\'label\' must be "weak" or "strong", not {row["label"]!r}')
        return (1.0, 1.0) if row["label"] == "weak" else (0.0, 1.0)
    if "weak_score" in row or "strong_score" in row:
        weak, strong = row.get("weak_score"), row.get("strong_score")
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in (weak, strong)
        ):
            raise ConfigError("'weak_score' and 'strong_score' must both be finite numbers")
        return float(weak), float(strong)  # type: ignore[arg-type]
    raise ConfigError("needs 'weak_correct'+'strong_correct', 'label', or 'weak_score'+'strong_score'")
