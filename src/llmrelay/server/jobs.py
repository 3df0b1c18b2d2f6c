"""``/v1/jobs``: async chat jobs with webhooks, in OpenAI-style JSON (docs/jobs.md).

POST /v1/jobs                  {"request": <chat completion body>, "webhook": {"url": ...},
                               "metadata": {...}} -> 202, the job (queued). Header
                               ``Idempotency-Key``: the same key again returns the same job.
GET  /v1/jobs[?limit=&after=]  the caller's jobs, newest first
GET  /v1/jobs/{id}             one job: status, result (the chat completion) or error, webhook
POST /v1/jobs/{id}/cancel      cancel a queued or running job
GET  /v1/webhooks/secret       the caller's webhook signing secret

Auth like every route (docs/keys.md): a virtual key sees only its own jobs (another key's is a 404);
the master key, and everyone on a gateway without keys, sees all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..asgi import Receive, Scope, Send, read_body, request_headers, send_json
from ..errors import GatewayError, InvalidRequestError, NotFoundError
from ..jobs.queue import Job
from ..jobs.service import check_webhook
from ..keys.model import VirtualKey
from ..keys.service import check_model
from ..providers import openai_format
from .http import allow, json_object, list_page, query_limit, query_params

if TYPE_CHECKING:
    from ..relay import Relay

PREFIX = "/v1/jobs"
SECRET_PATH = "/v1/webhooks/secret"
_MAX_LIMIT = 100
_FIELDS = {"request", "webhook", "metadata"}

Authenticate = Callable[[dict[str, str]], Awaitable[VirtualKey | None]]


class JobsRoutes:
    def __init__(self, relay: Relay, authenticate: Authenticate, body_limit: int) -> None:
        self.relay = relay
        self.authenticate = authenticate
        self.body_limit = body_limit

    async def start(self) -> None:
        """Open the queue at start-up (jobs left from before a restart run again) and, with
        ``jobs.in_gateway``, run the worker pools in this process."""
        await self.relay.jobs.open()
        if self.relay.settings.jobs.in_gateway:
            await self.relay.jobs.start_workers()

    def handles(self, path: str) -> bool:
        return path in (PREFIX, SECRET_PATH) or path.startswith(PREFIX + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        key = await self.authenticate(headers)
        method, path = scope["method"], scope["path"].rstrip("/")
        if path == SECRET_PATH:
            allow(method, ("GET",), path)
            owner = key.id if key is not None else None
            secret = self.relay.jobs.webhook_secret(owner)
            return await send_json(send, 200, {"object": "webhook_secret", "key_id": owner, "secret": secret})
        parts = path[len(PREFIX) :].strip("/").split("/") if path != PREFIX else []
        if not parts:
            if method == "POST":
                return await self._create(receive, headers, key, send)
            allow(method, ("GET", "POST"), path)
            return await self._list(scope, key, send)
        if len(parts) == 1:
            allow(method, ("GET",), path)
            job = await self._visible(parts[0], key)
            return await send_json(send, 200, await self.relay.jobs.view(job))
        if len(parts) == 2 and parts[1] == "cancel":
            allow(method, ("POST",), path)
            job = await self._visible(parts[0], key)
            queue = await self.relay.jobs.open()
            cancelled = await queue.cancel(job.id)
            assert cancelled is not None
            return await send_json(send, 200, await self.relay.jobs.view(cancelled))
        raise NotFoundError(
            f"Unknown path {scope['path']}: the job routes are {PREFIX}, {PREFIX}/<id> and {PREFIX}/<id>/cancel."
        )

    async def _create(
        self, receive: Receive, headers: dict[str, str], key: VirtualKey | None, send: Send
    ) -> None:
        payload = json_object(
            await read_body(receive, headers, self.body_limit),
            shape='{"request": {...}, "webhook": {"url": ...}}',
        )
        unknown = sorted(set(payload) - _FIELDS)
        if unknown:
            raise InvalidRequestError(f"Unknown field {unknown[0]!r}.", param=unknown[0])
        request = payload.get("request")
        if not isinstance(request, dict):
            raise InvalidRequestError(
                "request must be a chat completion request body (an object with model and messages).",
                param="request",
            )
        if request.get("stream"):
            raise InvalidRequestError(
                "A job's request cannot stream; its result is kept whole.", param="request.stream"
            )
        try:
            parsed = openai_format.parse_request({**request, "stream": False})
        except GatewayError as error:  # name the field inside the job's request
            error.param = f"request.{error.param}" if error.param else "request"
            raise
        check_model(key, parsed.model)
        webhook = check_webhook(payload.get("webhook"))
        metadata = openai_format.check_metadata(payload.get("metadata"))
        idempotency_key = headers.get("idempotency-key") or None
        if idempotency_key is not None and len(idempotency_key) > 255:
            raise InvalidRequestError(
                "The Idempotency-Key header is longer than 255 characters.", param="idempotency-key"
            )
        job = await self.relay.jobs.submit(
            request, webhook=webhook, key=key, idempotency_key=idempotency_key, metadata=metadata
        )
        await send_json(send, 202, await self.relay.jobs.view(job))

    async def _list(self, scope: Scope, key: VirtualKey | None, send: Send) -> None:
        query = query_params(scope)
        limit = query_limit(query, default=20, most=_MAX_LIMIT)
        queue = await self.relay.jobs.open()
        jobs = await queue.list(
            owner_key_id=_owner_filter(key), kind="chat", limit=limit, after=query.get("after")
        )
        data = [await self.relay.jobs.view(job) for job in jobs]
        await send_json(send, 200, list_page(data, has_more=len(data) == limit))

    async def _visible(self, job_id: str, key: VirtualKey | None) -> Job:
        queue = await self.relay.jobs.open()
        job = await queue.get(job_id)
        owner = _owner_filter(key)
        # Another key's job is a 404, not a 403: a key learns nothing about other keys' jobs.
        if job is None or job.kind != "chat" or (owner is not None and job.owner_key_id != owner):
            raise NotFoundError(f"No job with id {job_id!r}.", code="job_not_found")
        return job


def _owner_filter(key: VirtualKey | None) -> str | None:
    """Whose jobs the caller sees: a virtual key its own; the master key (and an open gateway) all."""
    return None if key is None or key.admin else key.id


__all__ = ["PREFIX", "JobsRoutes"]
