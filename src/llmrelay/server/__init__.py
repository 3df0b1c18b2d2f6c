"""The HTTP gateway (OpenAI- and Anthropic-compatible)."""

from .app import Gateway, build_app

__all__ = ["Gateway", "build_app"]
