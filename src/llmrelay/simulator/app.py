"""The simulator's ASGI app: routing, auth, the chat pipeline, faults and latency."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import orjson

from ..errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
)
from ..providers import anthropic_format
from ..tokens import count_prompt, count_text
from ..types import ChatRequest, ThinkingBlock, Usage
from . import extras, thinking
from .answer import Answer, decide, limit
from .batches import SimulatorBatches
from .caching import OPENAI_MIN, CacheResult, PromptCache
from .faults import FAULT_HEADER, FaultPicker, error_for
from .fixed import FixedReplies, light_request
from .render import ANTHROPIC, OPENAI, RenderedStream, Wire, build_response
from .rules import load_rules
from .settings import ModelProfile, SimulatorSettings
from .transport import ClientGone, Exchange, Receive, Scope, Send

logger = logging.getLogger("llmrelay.simulator")

REPLY_HEADER = "x-sim-reply"
LATENCY_HEADER = "x-sim-latency-ms"


class SimulatorApp:
    """A raw ASGI app (no framework: the simulator should cost as little as possible per request)."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.rules = settings.rules if settings.rules is not None else load_rules(settings.rules_path)
        self.cache = PromptCache(ttl_s=settings.prompt_cache_ttl_s)
        self.faults = FaultPicker(settings.seed)
        self.fixed = FixedReplies(settings.fixed_reply) if settings.fixed_reply is not None else None
        self._ids = itertools.count(1)
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._routes: dict[str, tuple[str, Any]] = {
            "/v1/chat/completions": ("POST", lambda ex: self._chat(ex, OPENAI)),
            "/v1/messages": ("POST", lambda ex: self._chat(ex, ANTHROPIC)),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/embeddings": ("POST", self._embeddings),
            "/v1/moderations": ("POST", self._moderations),
            "/v1/models": ("GET", self._models),
            "/health": ("GET", self._health),
        }
        self.batches = SimulatorBatches(self)  # /v1/files, /v1/batches, /v1/messages/batches

    # --- lifecycle ----------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """End hangs and latency sleeps now, so the server can stop without waiting them out."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def _stop_signal(self) -> asyncio.Event:
        # Created on first use, inside the serving loop (an Event is bound to the loop it waits in).
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
            if self._stopping:
                self._stop_event.set()
        return self._stop_event

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0 or self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_signal().wait(), seconds)

    # --- ASGI entry ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        ex = Exchange(scope, receive, send)
        path = _normalize(scope["path"])
        anthropic = path.startswith("/v1/messages") or (
            path.startswith("/v1/models") and "anthropic-version" in ex.headers
        )
        wire = ANTHROPIC if anthropic else OPENAI
        try:
            await self._dispatch(ex, path)
        except ClientGone:
            pass
        except GatewayError as err:
            await self._send_error(ex, wire, err)
        except Exception:  # a simulator bug: still answer in the route's format
            logger.exception("simulator error on %s %s", scope["method"], path)
            await self._send_error(ex, wire, GatewayError("Internal simulator error."))

    async def _dispatch(self, ex: Exchange, path: str) -> None:
        route = self._routes.get(path)
        if route is None and path.startswith("/v1/models/"):
            route = ("GET", self._model)
        elif route is None and self.batches.serves(path):
            route = (ex.scope["method"], self.batches)  # it checks methods per route itself
        if route is None:
            raise NotFoundError(f"Unknown path: {path}")
        if ex.scope["method"] != route[0]:
            raise MethodNotAllowedError(f"{ex.scope['method']} is not allowed on {path}; use {route[0]}.")
        if path != "/health":
            self._check_key(ex)
        await route[1](ex)

    def _check_key(self, ex: Exchange) -> None:
        key = self.settings.api_key
        if key is None:
            return
        bearer = ex.headers.get("authorization", "")
        if ex.headers.get("x-api-key") == key or bearer == f"Bearer {key}":
            return
        raise AuthenticationError("Invalid or missing API key (simulator started with api_key).")

    async def _send_error(self, ex: Exchange, wire: Wire, err: GatewayError) -> None:
        if ex.started:  # mid-stream: the status line is gone, all that is left is to hang up
            await ex.close_connection()
            return
        await ex.respond(err.status, orjson.dumps(wire.dialect.error(err)), err.headers())

    # --- chat ---------------------------------------------------------------------------------

    async def _chat(self, ex: Exchange, wire: Wire) -> None:
        body = await ex.json(self.settings.max_body_bytes)
        request = light_request(body) if self.fixed is not None else wire.dialect.parse(body)
        if self.fixed is None:
            thinking.check(request, anthropic=wire is ANTHROPIC)
        profile = self.settings.profile_for(request.model)
        fault = self.faults.pick(ex.headers.get(FAULT_HEADER), profile.faults)
        if fault == "stall" and not request.stream:
            fault = "hang"  # a single JSON body has no middle to stall in
        if fault is not None and await self._act_out(ex, fault):
            return
        latency_s = self._latency_ms(ex, profile) / 1000
        per_token_s = profile.per_token_ms / 1000
        if self.fixed is not None:
            rendered, completion = self.fixed.get(wire, request)
        else:
            rendered, completion = self._render(ex, wire, request, body, profile)
        if isinstance(rendered, RenderedStream):
            await self._send_stream(ex, wire, rendered, fault, latency_s, per_token_s)
        else:
            await self._sleep(latency_s + completion * per_token_s)
            await self._send_body(ex, rendered, fault)

    async def _act_out(self, ex: Exchange, fault: str) -> bool:
        """Raise an error fault, or act out hang/drop (True: the exchange is over)."""
        error = error_for(fault, self.settings.retry_after)
        if error is not None:
            raise error
        if fault == "hang":
            await self._hang(ex)
            return True
        if fault == "drop":
            await ex.close_connection()
            return True
        return False  # truncate / malformed / stall: answered, but damaged on the way out

    async def _hang(self, ex: Exchange) -> None:
        """Say nothing (more) until the client leaves; on shutdown (or after hang_max_s) hang up."""
        gone = asyncio.ensure_future(ex.wait_disconnect())
        stop = asyncio.ensure_future(self._stop_signal().wait())
        try:
            await asyncio.wait(
                [gone, stop], timeout=self.settings.hang_max_s, return_when=asyncio.FIRST_COMPLETED
            )
            client_left = gone.done()
        finally:
            gone.cancel()
            stop.cancel()
        if not client_left:
            await ex.close_connection()

    def _latency_ms(self, ex: Exchange, profile: ModelProfile) -> float:
        raw = ex.headers.get(LATENCY_HEADER)
        if raw is None:
            return profile.latency_ms
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 600_000:
            raise InvalidRequestError(
                f"{LATENCY_HEADER} must be a number of ms in [0, 600000].", param=LATENCY_HEADER
            )
        return value

    def _render(
        self, ex: Exchange, wire: Wire, request: ChatRequest, body: dict[str, Any], profile: ModelProfile
    ) -> tuple[bytes | RenderedStream, int]:
        answer = limit(decide(request, self.rules, ex.headers.get(REPLY_HEADER)), request)
        if wire is ANTHROPIC:
            thought = thinking.thinking_for(request, answer.text or "")
        else:
            thought = thinking.reasoning_for(request, answer.text or "", profile)
        usage = self._usage(request, wire, answer, body, thought)
        n = next(self._ids)
        response = build_response(
            request,
            answer,
            usage,
            response_id=f"{wire.id_prefix}{n:012d}",
            tool_id=f"{wire.tool_id_prefix}{n:012d}",
            created=int(time.time()),
            thinking=thought,
        )
        if request.stream:
            return wire.render_stream(request, response), usage.completion_tokens
        return orjson.dumps(wire.dialect.render(response)), usage.completion_tokens

    def _usage(
        self,
        request: ChatRequest,
        wire: Wire,
        answer: Answer,
        body: dict[str, Any],
        thought: ThinkingBlock | None = None,
    ) -> Usage:
        model = request.model
        prompt = count_prompt(request, model)
        if answer.tool_name is not None:
            completion = count_text(answer.tool_name, model) + count_text(answer.tool_arguments or "", model)
        else:
            completion = count_text(answer.text or "", model)
        # Thinking is billed as output; OpenAI-style usage also counts it apart.
        reasoning = count_text(thought.thinking or "", model) if thought is not None else 0
        completion += reasoning
        cache = CacheResult()
        if wire is ANTHROPIC:
            cache = self.cache.anthropic(body)  # on the wire body: breakpoints sit on its blocks
        elif prompt >= OPENAI_MIN:
            cache = self.cache.openai(request)
        read = min(cache.read, prompt)
        write = min(cache.write, prompt - read)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=min(cache.write_1h, write),
            reasoning_tokens=reasoning if wire is OPENAI else 0,
        )

    async def _send_body(self, ex: Exchange, body: bytes, fault: str | None) -> None:
        if fault == "malformed":  # a complete HTTP response whose JSON is cut in half
            await ex.respond(200, body[: len(body) // 2])
        elif fault == "truncate":  # the connection dies mid-body
            await ex.start_json(len(body))
            await ex.write(body[: len(body) // 2])
            await ex.close_connection()
        else:
            await ex.respond(200, body)

    async def _send_stream(
        self,
        ex: Exchange,
        wire: Wire,
        stream: RenderedStream,
        fault: str | None,
        latency_s: float,
        per_token_s: float,
    ) -> None:
        frames = stream.frames
        if fault in ("truncate", "stall"):  # the opening and about half the content, then ...
            frames = frames[: 1 + len(frames) // 2]
        await self._sleep(latency_s)
        await ex.start_sse()
        for data, n_tokens in frames:
            if n_tokens and per_token_s:
                await self._sleep(n_tokens * per_token_s)
            await ex.write(data)
            if fault == "malformed":
                await ex.write(wire.malformed_frame)
                break
        else:
            if fault == "stall":  # ... silence on an open connection (truncate: the end of the body)
                await self._hang(ex)
                return
            if fault != "truncate":
                await ex.write(stream.tail)
        await ex.write(b"", more=False)

    # --- other endpoints ----------------------------------------------------------------------

    async def _count_tokens(self, ex: Exchange) -> None:
        request = anthropic_format.parse_count_request(await ex.json(self.settings.max_body_bytes))
        await ex.respond(200, orjson.dumps({"input_tokens": count_prompt(request, request.model)}))

    async def _embeddings(self, ex: Exchange) -> None:
        body = await ex.json(self.settings.max_body_bytes)
        await ex.respond(200, orjson.dumps(extras.embeddings(body)))

    async def _moderations(self, ex: Exchange) -> None:
        body = await ex.json(self.settings.max_body_bytes)
        result = extras.moderations(body, f"modr-sim{next(self._ids):012d}")
        await ex.respond(200, orjson.dumps(result))

    async def _models(self, ex: Exchange) -> None:
        if "anthropic-version" in ex.headers:
            await ex.respond(200, orjson.dumps(extras.anthropic_models(self.settings.models)))
        else:
            await ex.respond(200, orjson.dumps(extras.openai_models(self.settings.models)))

    async def _model(self, ex: Exchange) -> None:
        model = _normalize(ex.scope["path"]).removeprefix("/v1/models/")
        if model not in self.settings.models:
            raise ModelNotFoundError(f"The model '{model}' does not exist.", param="model")
        shape = extras.anthropic_model if "anthropic-version" in ex.headers else extras.openai_model
        await ex.respond(200, orjson.dumps(shape(model)))

    async def _health(self, ex: Exchange) -> None:
        await ex.respond(200, b'{"status":"ok"}')


def _normalize(path: str) -> str:
    """Accept paths with or without the ``/v1`` prefix (clients differ in where base_url ends)."""
    path = path.rstrip("/") or "/"
    if path == "/health" or path.startswith("/v1/"):
        return path
    return "/v1" + path


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to set up; acknowledge startup and shutdown for servers run with lifespan on."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def build_app(settings: SimulatorSettings) -> SimulatorApp:
    return SimulatorApp(settings)
