"""llmrelay: a production layer for LLM calls, as an HTTP gateway or in-process."""

from .config import Settings
from .errors import GatewayError
from .relay import Relay, SyncRelay
from .types import ChatRequest, ChatResponse, Chunk, Message, Usage

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
