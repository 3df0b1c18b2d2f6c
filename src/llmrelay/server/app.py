"""The HTTP gateway: OpenAI- and Anthropic-compatible routes in front of one ``Relay``.

Both chat routes run the same handler with a different ``Dialect`` (the wire format at this edge);
every error, ours or a bug, leaves in the route's own error shape with its status code.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    body_deadline,
    encode_headers,
    read_body,
    request_headers,
    send_json,
    start_sse,
    wait_disconnect,
    write,
)
from ..db import PostgresUnavailable
from ..dialects import ANTHROPIC, OPENAI, Dialect
from ..errors import (
    AuthenticationError,
    GatewayError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailable,
)
from ..keys.admin import PREFIX as KEYS_ADMIN
from ..keys.admin import KeysAdmin
from ..keys.model import VirtualKey
from ..keys.service import check_model
from ..observability.recorder import emit
from ..observability.records import CallRecord
from ..pipeline import Call, Stream
from ..providers import anthropic_format
from ..relay import Relay
from ..types import ChatResponse
from .batches import BatchesAPI
from .dashboard import Dashboard
from .http import allow, json_body, presented_key
from .jobs import JobsRoutes

log = logging.getLogger("llmrelay.server")


class Gateway:
    """The ASGI application."""

    def __init__(
        self, relay: Relay, *, on_startup: Callable[[Relay], Awaitable[None] | None] | None = None
    ) -> None:
        self.relay = relay
        self._on_startup = on_startup
        self._master_key = relay.settings.server.master_key
        self._body_limit = relay.settings.server.max_body_bytes
        self._body_timeout_s = relay.settings.server.body_timeout_s
        self._routes: dict[str, tuple[str, Any]] = {
            "/v1/chat/completions": ("POST", self._openai_chat),
            "/chat/completions": ("POST", self._openai_chat),
            "/v1/messages": ("POST", self._anthropic_messages),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/models": ("GET", self._models),
            "/models": ("GET", self._models),
            "/healthz": ("GET", self._health),
            "/admin/breakers": ("GET", self._breakers),
            "/metrics": ("GET", self._metrics),
        }
        self._routes.update(Dashboard(relay, self._authenticate).routes())  # /dashboard, /dashboard/api/*
        self._keys_admin = KeysAdmin(relay, self._require_keys_admin)  # /admin/keys (keys/admin.py)
        self._batches = BatchesAPI(relay, self._authenticate, presented_key)  # /v1/files, /v1/batches
        self._jobs = JobsRoutes(relay, self._authenticate, self._body_limit)  # /v1/jobs (server/jobs.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.relay.start()
                    await self._batches.start()
                    await self._jobs.start()
                    if self._on_startup is not None:
                        maybe = self._on_startup(self.relay)
                        if maybe is not None:
                            await maybe
                except Exception as exc:  # the CLI shows this and exits non-zero
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                # What start-up built (modules, models, schemas, the catalog) lives as long as the
                # process: out of the collector's sight, full collections only walk what requests
                # allocate instead of pausing the event loop for every object start-up made.
                gc.collect()
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.relay.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        dialect = ANTHROPIC if path.startswith("/v1/messages") else OPENAI
        route = self._routes.get(path.rstrip("/") or "/")
        if route is None and path.startswith("/v1/models/"):
            route = ("GET", self._model)
        elif route is None and (path == KEYS_ADMIN or path.startswith(KEYS_ADMIN + "/")):
            route = (scope["method"], self._keys_admin)  # it checks methods per route itself
        elif route is None and BatchesAPI.serves(path):
            route = (scope["method"], self._batches)  # it checks methods per route itself
        elif route is None and self._jobs.handles(path):
            route = (scope["method"], self._jobs)  # it checks methods per route itself
        try:
            if route is None:
                raise NotFoundError(
                    f"Unknown path {path}. This gateway serves /v1/chat/completions, /v1/messages, /v1/models."
                )
            method, handler = route
            allow(scope["method"], (method,), path)
            await handler(scope, body_deadline(receive, self._body_timeout_s), send)
        except GatewayError as error:
            await send_json(send, error.status, dialect.error(error), encode_headers(error.headers()))
        except ClientGone:  # the client left while sending its body: nobody to answer
            return  # nothing to answer
        except PostgresUnavailable as exc:  # keys admin, batches, jobs: the database is down
            log.warning("%s: %s", path, exc)
            error = StoreUnavailable(
                "A database this gateway needs cannot be reached right now; try again shortly."
            )
            await send_json(send, error.status, dialect.error(error))
        except Exception:
            log.exception("unexpected error on %s", path)
            error = GatewayError("The gateway hit an internal error; it has been logged.")
            await send_json(send, 500, dialect.error(error))

    # --- auth -------------------------------------------------------------------------------

    async def _authenticate(self, headers: dict[str, str]) -> VirtualKey | None:
        """The caller's key: with a master key configured, the master key (an admin key) or an
        active virtual key, else 401; without one the gateway is open and this is None."""
        if self._master_key is None:
            return None
        presented = presented_key(headers)
        key = await self.relay.keys.resolve(presented)
        if key is None:
            raise AuthenticationError(
                "Incorrect API key provided."
                if presented
                else "No API key provided: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            )
        return key

    async def _require_admin(self, headers: dict[str, str]) -> None:
        """Routes for the gateway's operator: the master key (open when none is configured)."""
        key = await self._authenticate(headers)
        if key is not None and not key.admin:
            raise PermissionDeniedError("This route needs the master key; a virtual API key cannot use it.")

    async def _require_keys_admin(self, headers: dict[str, str]) -> None:
        if self._master_key is None:
            raise PermissionDeniedError(
                "Managing keys over HTTP needs server.master_key in the config; or use `llmrelay keys`."
            )
        await self._require_admin(headers)

    # --- chat -------------------------------------------------------------------------------

    async def _openai_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._chat(scope, receive, send, OPENAI)

    async def _anthropic_messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._chat(scope, receive, send, ANTHROPIC)

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Anthropic's ``/v1/messages/count_tokens``, for any model served (``Relay.count_tokens``)."""
        headers = request_headers(scope)
        key = await self._authenticate(headers)
        body = json_body(await read_body(receive, headers, self._body_limit))
        request = anthropic_format.parse_count_request(body)
        check_model(key, request.model)
        await send_json(send, 200, {"input_tokens": await self.relay.count_tokens(request)})

    async def _chat(self, scope: Scope, receive: Receive, send: Send, dialect: Dialect) -> None:
        started = time.perf_counter()
        headers = request_headers(scope)
        principal = payload = key = None
        try:
            key = await self._authenticate(headers)
            principal = presented_key(headers)
            payload = json_body(await read_body(receive, headers, self._body_limit))
            request = dialect.parse(payload)
            check_model(key, request.model)
        except GatewayError as error:  # turned away before the pipeline: on record all the same
            record = CallRecord.rejected(
                api_format=dialect.name,
                principal=principal or presented_key(headers),
                payload=payload,
                error=error,
                latency_ms=(time.perf_counter() - started) * 1000,
                api_key_id=key.id if key is not None else None,
            )
            emit(self.relay.sinks, record)
            error_headers = {**error.headers(), "x-llmrelay-request-id": record.id}
            await send_json(send, error.status, dialect.error(error), encode_headers(error_headers))
            return
        call = Call(
            request,
            api_format=dialect.name,
            headers=headers,
            principal=principal,
            started=started,
            key=key,
            gone=lambda: wait_disconnect(receive),
        )
        try:
            result = await self.relay.handle(call)
            if isinstance(result, ChatResponse):
                await send_json(send, 200, dialect.render(result), encode_headers(call.response_headers))
                return
            first = await anext(result)  # failures before the first byte become a plain HTTP error
        except StopAsyncIteration:
            first = None
        except GatewayError as error:
            await send_json(
                send,
                error.status,
                dialect.error(error),
                encode_headers({**call.response_headers, **error.headers()}),
            )
            return
        await self._stream(receive, send, dialect, call, first, result)

    async def _stream(
        self, receive: Receive, send: Send, dialect: Dialect, call: Call, first: Any, chunks: Stream
    ) -> None:
        """Relay the stream while watching for the client to hang up: if it does, the upstream
        stream is closed at once rather than read (and paid for) to its end."""
        pump = asyncio.ensure_future(self._pump(send, dialect, call, first, chunks))
        hangup = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait((pump, hangup), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, hangup):
                task.cancel()
            await asyncio.gather(pump, hangup, return_exceptions=True)

    async def _pump(self, send: Send, dialect: Dialect, call: Call, first: Any, chunks: Stream) -> None:
        await start_sse(send, encode_headers(call.response_headers))
        try:
            async for data in dialect.stream(call.request, _prepend(first, chunks)):
                await write(send, data)
        except GatewayError as error:
            # After the first byte the status is sent: say so explicitly, never a silent cut.
            await write(send, dialect.stream_error(error))
        except Exception:
            log.exception("unexpected error in a stream on %s", call.id)
            await write(send, dialect.stream_error(GatewayError("The gateway hit an internal error.")))
        finally:
            await chunks.aclose()
        await write(send, b"", more=False)

    # --- models and health ------------------------------------------------------------------

    def _served(self) -> dict[str, str]:
        """Every name a client may send as ``model`` -> its owner: the models, then the routes."""
        served = {e.name: e.owner for e in self.relay.catalog}
        served.update({name: "llmrelay-route" for r in self.relay.settings.routes for name in r.names})
        return served

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        key = await self._authenticate(headers)
        served = {name: owner for name, owner in self._served().items() if key is None or key.allows(name)}
        if "anthropic-version" in headers:
            data = [_anthropic_model(name) for name in served]
            body = {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        else:
            body = {"object": "list", "data": [_openai_model(n, owner) for n, owner in served.items()]}
        await send_json(send, 200, body)

    async def _model(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        key = await self._authenticate(headers)
        name = scope["path"][len("/v1/models/") :]
        check_model(key, name)
        owner = self._served().get(name) or self.relay.catalog.get(name).owner  # (raises the 404)
        body = _anthropic_model(name) if "anthropic-version" in headers else _openai_model(name, owner)
        await send_json(send, 200, body)

    async def _breakers(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Circuit-breaker state of every deployment that has seen traffic (shared through Redis
        when configured, so any replica answers for all)."""
        await self._require_admin(request_headers(scope))
        await send_json(send, 200, {"breakers": self.relay.breakers.snapshot()})

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Prometheus exposition (master key when configured: it names models and key ids)."""
        await self._require_admin(request_headers(scope))
        if self.relay.metrics is None:
            raise NotFoundError("Metrics are off in this gateway's config (metrics: false).")
        body, content_type = self.relay.metrics.render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"status": "ok", "models": len(self.relay.catalog)})


def _openai_model(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def _anthropic_model(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}


async def _prepend(first: Any, rest: Stream) -> Stream:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk


def build_app(relay: Relay, **kw: Any) -> Gateway:
    return Gateway(relay, **kw)


__all__ = ["Gateway", "build_app"]
