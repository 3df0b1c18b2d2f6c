"""The providers' batch APIs, simulated: OpenAI's files + batches and Anthropic's message batches.

A batch completes ``batch_delay_s`` after it was created (simulator setting): the first read after
that answers every request with the simulator's usual rules (and its per-model faults: a model set
to fail with 429/500/503 fails each request of it), so the gateway's forwarding is tested against a
real HTTP server. State lives in memory, as the rest of the simulator's.
"""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..asgi import encode_headers, read_body, start_response, write
from ..batch.multipart import form_parts
from ..errors import GatewayError, InvalidRequestError, MethodNotAllowedError, NotFoundError
from . import thinking
from .faults import error_for
from .render import ANTHROPIC, OPENAI, Wire
from .transport import Exchange

if TYPE_CHECKING:
    from .app import SimulatorApp

PREFIXES = ("/v1/files", "/v1/batches", "/v1/messages/batches")
_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SimulatorBatches:
    def __init__(self, app: SimulatorApp) -> None:
        self.app = app
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.openai: dict[str, dict[str, Any]] = {}
        self.anthropic: dict[str, dict[str, Any]] = {}
        self._requests: dict[str, list[dict[str, Any]]] = {}  # Anthropic batch id -> its requests
        self._ids = itertools.count(1)

    @staticmethod
    def serves(path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in PREFIXES)

    async def __call__(self, ex: Exchange) -> None:
        path, method = ex.scope["path"], ex.scope["method"]
        path = path if path.startswith("/v1/") else "/v1" + path
        parts = path.removeprefix("/v1/").strip("/").split("/")
        if parts[0] == "messages":
            await self._anthropic(ex, method, parts[2:])
        elif parts[0] == "files":
            await self._files(ex, method, parts[1:])
        else:
            await self._openai(ex, method, parts[1:])

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):012d}"

    def _due(self, created: float) -> bool:
        return time.time() >= created + self.app.settings.batch_delay_s

    def _answer(self, ex: Exchange, wire: Wire, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One request of a batch, answered as the chat route would: (status, body)."""
        try:
            request = wire.dialect.parse(body)
            thinking.check(request, anthropic=wire is ANTHROPIC)
            profile = self.app.settings.profile_for(request.model)
            error = error_for(self.app.faults.pick(None, profile.faults) or "", self.app.settings.retry_after)
            if error is not None:
                raise error
            single = request.model_copy(update={"stream": False})
            rendered, _ = self.app._render(ex, wire, single, body, profile)
        except GatewayError as error:
            return error.status, wire.dialect.error(error)
        assert isinstance(rendered, bytes)
        return 200, orjson.loads(rendered)

    # -- OpenAI files ------------------------------------------------------------------------------

    async def _files(self, ex: Exchange, method: str, rest: list[str]) -> None:
        if not rest:
            _allow(method, "POST")
            raw = await read_body(ex.receive, ex.headers, self.app.settings.max_body_bytes)
            parts = form_parts(raw, ex.headers.get("content-type", ""))
            filename, content = parts.get("file") or (None, None)
            if content is None:
                raise InvalidRequestError("Missing the 'file' part.", param="file")
            purpose = (parts.get("purpose") or (None, b""))[1].decode()
            await ex.respond(200, orjson.dumps(self._add_file(filename or "upload.jsonl", purpose, content)))
            return
        file = self.files.get(rest[0])
        if file is None:
            raise NotFoundError(f"No such File object: {rest[0]}")
        _allow(method, "GET")
        if rest[1:] == ["content"]:
            await _send_raw(ex, self.contents[rest[0]])
        else:
            await ex.respond(200, orjson.dumps(file))

    def _add_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = self._id("file-sim")
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.contents[file_id] = content
        return self.files[file_id]

    # -- OpenAI batches ----------------------------------------------------------------------------

    async def _openai(self, ex: Exchange, method: str, rest: list[str]) -> None:
        if not rest:
            _allow(method, "POST")
            body = await ex.json(self.app.settings.max_body_bytes)
            file_id = body.get("input_file_id") if isinstance(body, dict) else None
            if file_id not in self.files:
                raise InvalidRequestError(f"No such input file: {file_id!r}", param="input_file_id")
            now = time.time()
            lines = [orjson.loads(x) for x in self.contents[file_id].splitlines() if x.strip()]
            batch_id = self._id("batch_sim")
            self.openai[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body.get("endpoint"),
                "errors": None,
                "input_file_id": file_id,
                "completion_window": body.get("completion_window", "24h"),
                "status": "in_progress",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": int(now),
                "in_progress_at": int(now),
                "expires_at": int(now + 86_400),
                "completed_at": None,
                "cancelled_at": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "metadata": body.get("metadata"),
                "_created": now,
            }
            await ex.respond(200, _public(self.openai[batch_id]))
            return
        batch = self.openai.get(rest[0])
        if batch is None:
            raise NotFoundError(f"No such batch: {rest[0]}")
        if rest[1:] == ["cancel"]:
            _allow(method, "POST")
            if batch["status"] == "in_progress":
                batch.update(status="cancelled", cancelled_at=int(time.time()))
        else:
            _allow(method, "GET")
            if batch["status"] == "in_progress" and self._due(batch["_created"]):
                self._run_openai(ex, batch)
        await ex.respond(200, _public(batch))

    def _run_openai(self, ex: Exchange, batch: dict[str, Any]) -> None:
        output, errors = [], []
        for line in self.contents[batch["input_file_id"]].splitlines():
            if not line.strip():
                continue
            item = orjson.loads(line)
            status, body = self._answer(ex, OPENAI, item.get("body") or {})
            response = {"status_code": status, "request_id": self._id("req_sim"), "body": body}
            out = {
                "id": self._id("batch_req_sim"),
                "custom_id": item.get("custom_id"),
                "response": response,
                "error": None,
            }
            (output if status == 200 else errors).append(orjson.dumps(out) + b"\n")
        for name, lines in (("output", output), ("error", errors)):
            if lines:
                batch[f"{name}_file_id"] = self._add_file(
                    f"{batch['id']}_{name}.jsonl", "batch_output", b"".join(lines)
                )["id"]
        batch["request_counts"].update(completed=len(output), failed=len(errors))
        batch.update(status="completed", completed_at=int(time.time()))

    # -- Anthropic message batches -----------------------------------------------------------------

    async def _anthropic(self, ex: Exchange, method: str, rest: list[str]) -> None:
        if not rest:
            _allow(method, "POST")
            body = await ex.json(self.app.settings.max_body_bytes)
            requests = body.get("requests") if isinstance(body, dict) else None
            if not isinstance(requests, list) or not requests:
                raise InvalidRequestError("requests: a non-empty list is required", param="requests")
            for i, r in enumerate(requests):
                if not isinstance(r, dict) or not _CUSTOM_ID.match(str(r.get("custom_id", ""))):
                    raise InvalidRequestError(f"requests.{i}.custom_id: must match {_CUSTOM_ID.pattern}")
                ANTHROPIC.dialect.parse(r.get("params"))  # a 400 now, as Anthropic validates up front
            batch_id = self._id("msgbatch_sim")
            now = time.time()
            self._requests[batch_id] = requests
            self.anthropic[batch_id] = {
                "id": batch_id,
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {
                    "processing": len(requests),
                    "succeeded": 0,
                    "errored": 0,
                    "canceled": 0,
                    "expired": 0,
                },
                "ended_at": None,
                "created_at": _iso(now),
                "expires_at": _iso(now + 86_400),
                "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": None,
                "_created": now,
            }
            await ex.respond(200, _public(self.anthropic[batch_id]))
            return
        batch = self.anthropic.get(rest[0])
        if batch is None:
            raise NotFoundError(f"No such message batch: {rest[0]}")
        action = rest[1:]
        if action == ["results"]:
            _allow(method, "GET")
            if batch["processing_status"] != "ended":
                raise InvalidRequestError(
                    f"Message batch {rest[0]} has not ended; its results are not ready."
                )
            await _send_raw(ex, batch["_results"])
            return
        if action == ["cancel"]:
            _allow(method, "POST")
            if batch["processing_status"] == "in_progress":
                self._end_anthropic(ex, batch, cancel=True)
        else:
            _allow(method, "GET")
            if batch["processing_status"] == "in_progress" and self._due(batch["_created"]):
                self._end_anthropic(ex, batch, cancel=False)
        await ex.respond(200, _public(batch))

    def _end_anthropic(self, ex: Exchange, batch: dict[str, Any], *, cancel: bool) -> None:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        lines = []
        for r in self._requests.pop(batch["id"]):
            if cancel:
                result: dict[str, Any] = {"type": "canceled"}
            else:
                status, body = self._answer(ex, ANTHROPIC, r["params"])
                result = (
                    {"type": "succeeded", "message": body}
                    if status == 200
                    else {"type": "errored", "error": body}
                )
            counts["succeeded" if result["type"] == "succeeded" else result["type"]] += 1
            lines.append(orjson.dumps({"custom_id": r["custom_id"], "result": result}) + b"\n")
        host = ex.headers.get("host", "127.0.0.1")
        now = time.time()
        batch.update(
            processing_status="ended",
            request_counts=counts,
            ended_at=_iso(now),
            cancel_initiated_at=_iso(now) if cancel else None,
            results_url=f"http://{host}/v1/messages/batches/{batch['id']}/results",
            _results=b"".join(lines),
        )


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowedError(f"{method} is not allowed here; use {allowed}.")


def _public(batch: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in batch.items() if not k.startswith("_")})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def _send_raw(ex: Exchange, content: bytes) -> None:
    ex.started = True
    headers = {"content-type": "application/octet-stream", "content-length": str(len(content))}
    await start_response(ex.send, 200, encode_headers(headers))
    await write(ex.send, content, more=False)
