"""Adapter for OpenAI chat completions, and so for every OpenAI-compatible server by ``base_url``
(vLLM, Ollama, llama.cpp server, Groq, Together, DeepSeek, ...)."""

from __future__ import annotations

from typing import Any

from ..catalog import Deployment
from ..errors import UpstreamError
from ..types import ChatRequest, ChatResponse, Chunk
from . import openai_format


class OpenAIAdapter:
    dialect = "openai"

    def path(self, stream: bool) -> str:
        return "/chat/completions"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def build(self, request: ChatRequest, deployment: Deployment, *, stream: bool) -> dict[str, Any]:
        return openai_format.request_to_wire(request, deployment.upstream, stream=stream)

    def parse_response(self, body: Any, request: ChatRequest, model: str) -> ChatResponse:
        return openai_format.parse_response(body, model)

    def stream_decoder(self, request: ChatRequest, model: str) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(model)

    def error_message(self, body: bytes) -> str:
        return openai_format.error_message_from_wire(body)


class OpenAIStreamDecoder:
    """OpenAI SSE -> canonical chunks. Complete once a finish_reason was seen: [DONE] alone is no
    proof the answer is whole. (Missing usage is estimated by the shared HTTP path.)"""

    def __init__(self, model: str) -> None:
        self.model = model
        self._finished = False

    def feed(self, event: str | None, data: Any) -> list[Chunk]:
        if isinstance(data, dict) and "error" in data:
            err = data["error"]
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            raise UpstreamError(f"Upstream error mid-stream: {message}")
        chunk = openai_format.parse_chunk(data, self.model)
        if any(c.finish_reason for c in chunk.choices):
            self._finished = True
        return [chunk]

    @property
    def complete(self) -> bool:
        return self._finished
