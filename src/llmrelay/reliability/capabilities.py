"""What a request needs from a model, so that a model lacking it is skipped (or refused) up front."""

from __future__ import annotations

from ..types import ChatRequest


def missing_capabilities(request: ChatRequest, capabilities: tuple[str, ...]) -> list[str]:
    missing = []
    if request.tools and "tools" not in capabilities:
        missing.append("tools")
    fmt = request.response_format.type if request.response_format else "text"
    if fmt == "json_schema" and "json_schema" not in capabilities:
        missing.append("json_schema")
    if fmt == "json_object" and "json" not in capabilities and "json_schema" not in capabilities:
        missing.append("json")
    if request.stream and "streaming" not in capabilities:
        missing.append("streaming")
    if "vision" not in capabilities and any(  # the model's capability first: no scan of every message
        not isinstance(m.content, str | None) and any(p.type == "image_url" for p in m.content)
        for m in request.messages
    ):
        missing.append("vision")
    return missing
