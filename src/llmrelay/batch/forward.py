"""Batches forwarded to the provider's own batch API: OpenAI's files + batches, Anthropic's message
batches. One class per dialect; each sends the requests as the provider's adapter builds them for a
single call (``Adapter.build``), and reads the answers back with the same adapter
(``Adapter.parse_response``), so an OpenAI client's batch on a Claude model reads like any other.

Upstream custom ids are the requests' positions in the input file (Anthropic allows only
``[A-Za-z0-9_-]{1,64}``; the client's own ids may be anything): the client's ids are put back on
the way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..catalog import Deployment
from ..errors import GatewayError, UpstreamProtocolError, error_for_status
from ..providers.anthropic_format.errors import _error_from_wire as anthropic_error
from ..providers.base import HTTPProvider
from ..types import ChatResponse
from .jsonl import Line


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the provider made of one request: an answer, an error, or nothing (never ran)."""

    index: int
    response: ChatResponse | None = None
    error: GatewayError | None = None
    not_run: str | None = None  # "cancelled" | "expired"
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Status:
    ended: bool
    failed_errors: list[dict[str, Any]] | None = None  # the provider failed the whole batch


class UpstreamBatches:
    """The shared HTTP part: authenticated requests to one provider, errors mapped like a call's."""

    def __init__(self, provider: HTTPProvider, deployment: Deployment) -> None:
        self.provider = provider
        self.deployment = deployment
        self.base = provider.settings.base_url.rstrip("/")

    async def _request(
        self, method: str, url: str, *, json: Any = None, form: aiohttp.FormData | None = None
    ) -> bytes:
        data = orjson.dumps(json) if json is not None else form
        return await self.provider.fetch(method, url, data=data, multipart=form is not None)

    async def _json(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        raw = await self._request(method, url, **kw)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamProtocolError(
                f"{self.provider.name} answered {url} with something other than a JSON object",
                provider=self.provider.name,
            )
        return body

    def build(self, line: Line) -> dict[str, Any]:
        return self.provider.adapter.build(line.request, self.deployment, stream=False)

    def parse(self, body: Any, line: Line) -> ChatResponse:
        return self.provider.adapter.parse_response(body, line.request, self.deployment.model)

    def _index(self, custom_id: Any, lines: Sequence[Line]) -> int | None:
        try:
            index = int(custom_id)
        except (TypeError, ValueError):
            return None
        return index if 0 <= index < len(lines) else None


class OpenAIBatches(UpstreamBatches):
    """``POST /files`` (purpose batch), ``POST /batches``, ``GET /batches/{id}``, the output and
    error files' ``/content``, ``POST /batches/{id}/cancel``."""

    async def submit(self, lines: Sequence[Line], batch_id: str) -> str:
        content = b"".join(
            orjson.dumps(
                {
                    "custom_id": str(line.index),
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": self.build(line),
                }
            )
            + b"\n"
            for line in lines
        )
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=f"{batch_id}.jsonl", content_type="application/jsonl")
        uploaded = await self._json("POST", self.base + "/files", form=form)
        created = await self._json(
            "POST",
            self.base + "/batches",
            json={
                "input_file_id": uploaded.get("id"),
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"llmrelay_batch": batch_id},
            },
        )
        return str(created["id"])

    async def status(self, upstream_id: str) -> tuple[Status, dict[str, Any]]:
        body = await self._json("GET", f"{self.base}/batches/{upstream_id}")
        state = body.get("status")
        if state == "failed":
            errors = (body.get("errors") or {}).get("data") or [
                {"code": "failed", "message": "failed upstream"}
            ]
            return Status(ended=True, failed_errors=errors), body
        return Status(ended=state in ("completed", "expired", "cancelled")), body

    async def results(self, body: dict[str, Any], lines: Sequence[Line]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for file_id in (body.get("output_file_id"), body.get("error_file_id")):
            if not file_id:
                continue
            raw = await self._request("GET", f"{self.base}/files/{file_id}/content")
            for text in raw.splitlines():
                if text.strip():
                    outcome = self._outcome(orjson.loads(text), lines)
                    if outcome is not None:
                        outcomes.append(outcome)
        return outcomes

    def _outcome(self, item: dict[str, Any], lines: Sequence[Line]) -> Outcome | None:
        index = self._index(item.get("custom_id"), lines)
        if index is None:
            return None
        response = item.get("response")
        if response is None:
            code = str((item.get("error") or {}).get("code") or "")
            return Outcome(index, not_run="expired" if "expired" in code else "cancelled")
        request_id = str(response.get("request_id") or "")
        status, body = int(response.get("status_code") or 502), response.get("body")
        if status == 200:
            try:
                return Outcome(index, response=self.parse(body, lines[index]), request_id=request_id)
            except GatewayError as error:
                return Outcome(index, error=error, request_id=request_id)
        message = self.provider.adapter.error_message(orjson.dumps(body))
        error = error_for_status(status, message, provider=self.provider.name, body=None, headers={})
        return Outcome(index, error=error, request_id=request_id)

    async def cancel(self, upstream_id: str) -> None:
        await self._json("POST", f"{self.base}/batches/{upstream_id}/cancel")


class AnthropicBatches(UpstreamBatches):
    """``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``, its ``results_url``,
    ``POST /v1/messages/batches/{id}/cancel``."""

    async def submit(self, lines: Sequence[Line], batch_id: str) -> str:
        requests = [{"custom_id": str(line.index), "params": self.build(line)} for line in lines]
        created = await self._json("POST", self.base + "/v1/messages/batches", json={"requests": requests})
        return str(created["id"])

    async def status(self, upstream_id: str) -> tuple[Status, dict[str, Any]]:
        body = await self._json("GET", f"{self.base}/v1/messages/batches/{upstream_id}")
        return Status(ended=body.get("processing_status") == "ended"), body

    async def results(self, body: dict[str, Any], lines: Sequence[Line]) -> list[Outcome]:
        url = body.get("results_url") or f"{self.base}/v1/messages/batches/{body.get('id')}/results"
        if url.startswith("/"):
            url = self.base + url
        raw = await self._request("GET", url)
        outcomes = []
        for text in raw.splitlines():
            if not text.strip():
                continue
            item = orjson.loads(text)
            index = self._index(item.get("custom_id"), lines)
            if index is None:
                continue
            result = item.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                try:
                    outcomes.append(Outcome(index, response=self.parse(result.get("message"), lines[index])))
                except GatewayError as error:
                    outcomes.append(Outcome(index, error=error))
            elif kind == "errored":
                outcomes.append(Outcome(index, error=anthropic_error(result.get("error") or {})))
            else:  # canceled | expired
                outcomes.append(Outcome(index, not_run="expired" if kind == "expired" else "cancelled"))
        return outcomes

    async def cancel(self, upstream_id: str) -> None:
        await self._json("POST", f"{self.base}/v1/messages/batches/{upstream_id}/cancel")


def upstream_for(provider: HTTPProvider, deployment: Deployment) -> OpenAIBatches | AnthropicBatches:
    kind = provider.settings.kind
    return (
        AnthropicBatches(provider, deployment) if kind == "anthropic" else OpenAIBatches(provider, deployment)
    )
