"""Adapter for the Anthropic Messages API."""

from __future__ import annotations

from typing import Any

from ..catalog import Deployment
from ..types import ChatRequest, ChatResponse
from . import anthropic_format

API_VERSION = "2023-06-01"


class AnthropicAdapter:
    dialect = "anthropic"

    def path(self, stream: bool) -> str:
        return "/v1/messages"

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def build(self, request: ChatRequest, deployment: Deployment, *, stream: bool) -> dict[str, Any]:
        body = anthropic_format.request_to_wire(request, deployment.upstream, stream=stream)
        caching = deployment.prompt_caching
        return anthropic_format.apply_prompt_caching(body, caching.mode, caching.min_tokens)

    def parse_response(self, body: Any, request: ChatRequest, model: str) -> ChatResponse:
        return anthropic_format.parse_response(
            body, model, json_tool=anthropic_format.uses_json_tool(request)
        )

    def stream_decoder(self, request: ChatRequest, model: str) -> anthropic_format.StreamDecoder:
        return anthropic_format.StreamDecoder(model, json_tool=anthropic_format.uses_json_tool(request))

    def error_message(self, body: bytes) -> str:
        return anthropic_format.error_message_from_wire(body)
