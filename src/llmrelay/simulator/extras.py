"""The non-chat endpoints: model lists, embeddings and moderations (OpenAI shapes)."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any

from ..errors import InvalidRequestError
from ..tokens import count_text

EMBEDDING_DIMS = 256
_MAX_DIMS = 3072
_CREATED = 1_700_000_000  # a fixed timestamp keeps model listings byte-for-byte stable


def openai_models(models: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [openai_model(m) for m in models]}


def openai_model(model: str) -> dict[str, Any]:
    owner = "anthropic" if model.startswith("claude") else "openai"
    return {"id": model, "object": "model", "created": _CREATED, "owned_by": owner}


def anthropic_model(model: str) -> dict[str, Any]:
    return {"type": "model", "id": model, "display_name": model, "created_at": "2025-01-01T00:00:00Z"}


def anthropic_models(models: list[str]) -> dict[str, Any]:
    data = [anthropic_model(m) for m in models if m.startswith("claude")]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


# --- embeddings -------------------------------------------------------------------------------


def _embedding_inputs(raw: Any) -> list[str]:
    """``input`` as texts; token-id arrays are kept as their text form (they only seed a hash)."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, str) for x in raw):
            return raw
        if all(isinstance(x, int) for x in raw):
            return [" ".join(map(str, raw))]
        if all(isinstance(x, list) and all(isinstance(i, int) for i in x) for x in raw):
            return [" ".join(map(str, x)) for x in raw]
    raise InvalidRequestError(
        "'input' must be a non-empty string, list of strings, or token array(s).", param="input"
    )


def pseudo_embedding(text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    """A deterministic unit vector from a hash of ``text``: same text, same vector."""
    digest = hashlib.shake_256(text.encode("utf-8")).digest(2 * dims)
    raw = struct.unpack(f"<{dims}h", digest)
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def embeddings(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("'model' is required.", param="model")
    texts = _embedding_inputs(body.get("input"))
    dims = body.get("dimensions") or EMBEDDING_DIMS
    if not isinstance(dims, int) or not 1 <= dims <= _MAX_DIMS:
        raise InvalidRequestError(f"'dimensions' must be an integer in [1, {_MAX_DIMS}].", param="dimensions")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vector: Any = pseudo_embedding(text, dims)
        if as_base64:  # the official SDK asks for this by default: little-endian float32
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(count_text(t, model) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# --- moderations ------------------------------------------------------------------------------

# A few obvious keywords per category, plus "[flag:<category>]" to trigger any category on purpose.
MODERATION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "harassment": ("idiot", "moron", "loser"),
    "harassment/threatening": ("i will find you", "watch your back"),
    "hate": ("subhuman", "vermin"),
    "hate/threatening": ("exterminate them",),
    "illicit": ("launder money", "counterfeit money", "make meth"),
    "illicit/violent": ("build a bomb", "make a bomb"),
    "self-harm": ("hurt myself", "self-harm"),
    "self-harm/intent": ("i want to die", "kill myself"),
    "self-harm/instructions": ("how to hurt myself",),
    "sexual": ("porn", "explicit sex"),
    "sexual/minors": (),
    "violence": ("kill", "murder", "stab"),
    "violence/graphic": ("gore", "dismember"),
}


# Whole words only, so "kill" does not flag "skill".
_PATTERNS = {
    cat: re.compile("|".join([re.escape(f"[flag:{cat}]"), *(rf"\b{re.escape(w)}\b" for w in words)]), re.I)
    for cat, words in MODERATION_KEYWORDS.items()
}


def _moderation_texts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return raw
    if isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
        # multi-modal input is one input: its text parts together (images are never flagged)
        return [" ".join(str(x.get("text", "")) for x in raw if x.get("type") == "text")]
    raise InvalidRequestError(
        "'input' must be a string, a list of strings, or a list of parts.", param="input"
    )


def _moderate(text: str) -> dict[str, Any]:
    hits = {cat for cat, pattern in _PATTERNS.items() if pattern.search(text)}
    hits |= {cat.split("/")[0] for cat in hits}  # a subcategory implies its parent
    return {
        "flagged": bool(hits),
        "categories": {cat: cat in hits for cat in MODERATION_KEYWORDS},
        "category_scores": {cat: 0.97 if cat in hits else 0.0001 for cat in MODERATION_KEYWORDS},
        "category_applied_input_types": {cat: ["text"] for cat in MODERATION_KEYWORDS},
    }


def moderations(body: Any, response_id: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model") or "omni-moderation-latest"
    results = [_moderate(text) for text in _moderation_texts(body.get("input"))]
    return {"id": response_id, "model": model, "results": results}
