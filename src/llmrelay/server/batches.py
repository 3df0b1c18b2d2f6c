"""``/v1/files`` and ``/v1/batches``: OpenAI's files and batch API, so the official SDK's
``client.files.*`` and ``client.batches.*`` work unchanged (docs/batch.md).

POST   /v1/files                    multipart: ``file`` (JSONL of requests) and ``purpose=batch``
GET    /v1/files[?purpose&after&limit&order]
GET    /v1/files/{id}               DELETE /v1/files/{id}      GET /v1/files/{id}/content
POST   /v1/batches                  {input_file_id, endpoint, completion_window, metadata}
GET    /v1/batches[?after&limit]    GET /v1/batches/{id}       POST /v1/batches/{id}/cancel

Every file and batch belongs to the key that made it (the virtual key's id, or a hash of the key
presented when the gateway has no master key): another key gets a 404, as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..asgi import (
    Receive,
    Scope,
    Send,
    encode_headers,
    read_body,
    request_headers,
    send_json,
    start_response,
    write,
)
from ..batch.multipart import form_parts
from ..batch.service import BatchService, service_for
from ..errors import InvalidRequestError, NotFoundError
from ..keys.model import VirtualKey
from ..observability.records import key_id
from .http import allow, json_object, list_page, query_limit, query_params

if TYPE_CHECKING:
    from ..relay import Relay

PREFIXES = ("/v1/files", "/v1/batches", "/files", "/batches")
_JSON_LIMIT = 64 * 1024


class BatchesAPI:
    def __init__(
        self,
        relay: Relay,
        authenticate: Callable[[dict[str, str]], Awaitable[VirtualKey | None]],
        presented: Callable[[dict[str, str]], str | None],
    ) -> None:
        self.relay = relay
        self.authenticate = authenticate
        self.presented = presented

    @staticmethod
    def serves(path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in PREFIXES)

    async def start(self) -> None:
        """Start the batch service with the gateway (it polls forwarded batches in the background)."""
        if self.relay.settings.batch.enabled:
            await service_for(self.relay)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.relay.settings.batch.enabled:
            raise NotFoundError("The batch API is off in this gateway's config (batch.enabled: false).")
        headers = request_headers(scope)
        key = await self.authenticate(headers)
        owner = key.id if key is not None else (key_id(self.presented(headers)) or "")
        service = await service_for(self.relay)
        path = scope["path"].removeprefix("/v1")
        collection, _, rest = path.strip("/").partition("/")
        object_id, _, action = rest.partition("/")
        method = scope["method"]
        query = query_params(scope)
        if collection == "files":
            await self._files(service, owner, method, object_id, action, query, receive, headers, send)
        else:
            await self._batches(service, owner, key, method, object_id, action, query, receive, headers, send)

    # -- files -------------------------------------------------------------------------------------

    async def _files(
        self,
        service: BatchService,
        owner: str,
        method: str,
        file_id: str,
        action: str,
        query: dict[str, str],
        receive: Receive,
        headers: dict[str, str],
        send: Send,
    ) -> None:
        if not file_id:
            allow(method, ("GET", "POST"), "/v1/files")
            if method == "POST":
                body = await read_body(receive, headers, self.relay.settings.batch.max_file_bytes)
                parts = form_parts(body, headers.get("content-type", ""))
                filename, content = parts.get("file") or (None, None)
                if content is None:
                    raise InvalidRequestError(
                        "The form has no 'file' part: the JSONL file to upload.", param="file"
                    )
                purpose = (parts.get("purpose") or (None, b""))[1].decode("utf-8", "replace")
                record = await service.create_file(owner, filename or "upload.jsonl", purpose, content)
                return await send_json(send, 200, record.public())
            order = query.get("order", "desc")
            if order not in ("asc", "desc"):
                raise InvalidRequestError("'order' must be asc or desc.", param="order")
            files, more = await service.store.list_files(
                owner,
                purpose=query.get("purpose"),
                after=query.get("after"),
                limit=query_limit(query, default=10_000, most=10_000),
                newest_first=order == "desc",
            )
            return await send_json(send, 200, list_page([f.public() for f in files], more))
        if action == "content":
            allow(method, ("GET",), "/v1/files/{id}/content")
            content = await service.store.file_content(owner, file_id)
            if content is None:
                await service.file(owner, file_id)  # the 404
            assert content is not None
            return await _send_bytes(send, content)
        if action:
            raise NotFoundError(f"Unknown path /v1/files/{file_id}/{action}.")
        allow(method, ("GET", "DELETE"), "/v1/files/{id}")
        record = await service.file(owner, file_id)
        if method == "DELETE":
            await service.delete_file(owner, file_id)
            return await send_json(send, 200, {"id": record.id, "object": "file", "deleted": True})
        await send_json(send, 200, record.public())

    # -- batches -----------------------------------------------------------------------------------

    async def _batches(
        self,
        service: BatchService,
        owner: str,
        key: VirtualKey | None,
        method: str,
        batch_id: str,
        action: str,
        query: dict[str, str],
        receive: Receive,
        headers: dict[str, str],
        send: Send,
    ) -> None:
        if not batch_id:
            allow(method, ("GET", "POST"), "/v1/batches")
            if method == "POST":
                payload = json_object(await read_body(receive, headers, _JSON_LIMIT))
                record = await service.create_batch(owner, key, payload)
                return await send_json(send, 200, record.public())
            batches, more = await service.store.list_batches(
                owner, after=query.get("after"), limit=query_limit(query, default=20, most=100)
            )
            return await send_json(send, 200, list_page([b.public() for b in batches], more))
        if action == "cancel":
            allow(method, ("POST",), "/v1/batches/{id}/cancel")
            return await send_json(send, 200, (await service.cancel(owner, batch_id)).public())
        if action:
            raise NotFoundError(f"Unknown path /v1/batches/{batch_id}/{action}.")
        allow(method, ("GET",), "/v1/batches/{id}")
        await send_json(send, 200, (await service.batch(owner, batch_id)).public())


async def _send_bytes(send: Send, content: bytes) -> None:
    await start_response(
        send,
        200,
        encode_headers({"content-type": "application/octet-stream", "content-length": str(len(content))}),
    )
    await write(send, content, more=False)
