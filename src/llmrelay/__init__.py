"""llmrelay: a production layer for LLM calls, as an HTTP gateway or in-process."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings
    from .errors import GatewayError
    from .relay import Relay, SyncRelay
    from .types import ChatRequest, ChatResponse, Chunk, Message, Usage

# Imported on first use, so a process that needs one corner of the package (the call-log writer)
# does not pay for loading all of it.
_EXPORTS = {
    "ChatRequest": ".types",
    "ChatResponse": ".types",
    "Chunk": ".types",
    "GatewayError": ".errors",
    "Message": ".types",
    "Relay": ".relay",
    "Settings": ".config",
    "SyncRelay": ".relay",
    "Usage": ".types",
}


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'llmrelay' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Chunk",
    "GatewayError",
    "Message",
    "Relay",
    "Settings",
    "SyncRelay",
    "Usage",
]
