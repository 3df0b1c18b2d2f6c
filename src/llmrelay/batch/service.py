"""``BatchService``: files and batches for one ``Relay`` (the gateway's routes and the workers share
it): create, read, cancel, and end a batch once every request has an outcome.

A batch runs one of two ways, by its model (``batch.mode`` / ``batch.models``, docs/batch.md):
forwarded to the provider's batch API (``forward.py``; a background loop polls it and reads the
results back), or as one low-priority queue job per request run through the pipeline by
llmrelay's workers (``local.py``). Either way every finished request becomes a row of
``batch_items``, and the first to see the last one in ends the batch: the output and error files
are written and the final status set (``finalize``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ulid import ULID

from ..db import PostgresUnavailable, unless_down
from ..errors import ConfigError, GatewayError, InvalidRequestError, NotFoundError
from ..keys.service import check_model
from ..providers import openai_format
from . import output
from .accounting import Accountant
from .forward import Outcome, upstream_for
from .jsonl import ENDPOINTS, Line, parse_lines
from .store import BatchRecord, BatchStore, FileRecord

if TYPE_CHECKING:
    from ..keys.model import VirtualKey
    from ..relay import Relay

log = logging.getLogger("llmrelay.batch")

OFFICIAL_HOSTS = ("api.openai.com", "api.anthropic.com")  # "auto" forwards to these batch APIs
_STALE_FINALIZE_S = 600.0  # a finalizer silent this long died: another replica ends the batch
_SERVICES: weakref.WeakKeyDictionary[Relay, BatchService] = weakref.WeakKeyDictionary()


async def service_for(relay: Relay) -> BatchService:
    """The relay's batch service, started on first use and closed with the relay."""
    service = _SERVICES.get(relay)
    if service is None or service.closed:
        service = _SERVICES[relay] = BatchService(relay)
        relay.owned(service)
    await service.start()
    return service


class BatchService:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.settings = relay.settings.batch
        calllog = relay.settings.calllog
        self.store = BatchStore.beside_calllog(calllog.store, Path(calllog.directory).expanduser())
        self.accountant = Accountant(relay, self.settings.provider_discount)
        self.closed = False
        self._started = False
        self._start_lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: list[tuple[tuple[str, int, int, str, str | None], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._status_cache: dict[str, tuple[float, BatchRecord]] = {}

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            await self.relay.start()
            known = {entry.name for entry in self.relay.catalog}
            unknown = [m for m in self.settings.models if m not in known]
            if unknown:
                raise ConfigError(f"batch.models: unknown model(s) {', '.join(unknown)}")
            await unless_down(self.store.open(), "batches", "the batch API answers once it is back")
            self._loop_task = asyncio.create_task(self._background(), name="llmrelay-batches")
            self._started = True

    async def aclose(self) -> None:
        self.closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in [*self._tasks, *([self._writer] if self._writer else [])]:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if self._started:
            await self.store.close()

    # -- files -------------------------------------------------------------------------------------

    async def create_file(self, owner: str, filename: str, purpose: str, content: bytes) -> FileRecord:
        if purpose != "batch":
            raise InvalidRequestError(
                f"purpose {purpose!r} is not served here: this gateway takes files for batches (purpose 'batch').",
                param="purpose",
            )
        parse_lines(content, max_requests=self.settings.max_requests)  # 400 naming the first bad line
        return await self._add_file(owner, filename, purpose, content)

    async def _add_file(self, owner: str, filename: str, purpose: str, content: bytes) -> FileRecord:
        record = FileRecord(f"file-{ULID()}", owner, purpose, filename, len(content), time.time())
        await self.store.add_file(record, content)
        return record

    async def delete_file(self, owner: str, file_id: str) -> None:
        if await self.store.file_in_use(file_id):
            raise InvalidRequestError(
                f"File {file_id} is the input of a batch still running; cancel or wait for it first.",
                param="file_id",
            )
        await self.store.delete_file(owner, file_id)

    async def file(self, owner: str, file_id: str) -> FileRecord:
        record = await self.store.get_file(owner, file_id)
        if record is None:
            raise NotFoundError(f"No such file: {file_id!r}.", param="file_id", code="file_not_found")
        return record

    # -- batches -----------------------------------------------------------------------------------

    async def batch(self, owner: str, batch_id: str) -> BatchRecord:
        record = await self.store.get_batch(batch_id, owner)
        if record is None:
            raise NotFoundError(f"No such batch: {batch_id!r}.", param="batch_id", code="batch_not_found")
        return record

    async def create_batch(self, owner: str, key: VirtualKey | None, payload: dict[str, Any]) -> BatchRecord:
        endpoint, window, metadata = _batch_fields(payload)
        file_id = payload.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidRequestError(
                "'input_file_id' is required: the id of an uploaded file.", param="input_file_id"
            )
        file = await self.file(owner, file_id)
        if file.purpose != "batch":
            raise InvalidRequestError(
                f"File {file_id} has purpose {file.purpose!r}, not 'batch'.", param="input_file_id"
            )
        content = await self.store.file_content(owner, file_id) or b""
        lines = parse_lines(content, max_requests=self.settings.max_requests)
        model = _one_model(lines)
        check_model(key, model)
        mode = self.mode_for(model)
        now = time.time()
        record = BatchRecord(
            id=f"batch_{ULID()}",
            owner=owner,
            status="validating",
            mode=mode,
            endpoint=endpoint,
            input_file_id=file_id,
            completion_window=window,
            model=model,
            metadata=metadata,
            total=len(lines),
            created_at=now,
            expires_at=now + self.settings.completion_window_s,
        )
        await self.store.add_batch(record)
        if mode == "provider":
            return await self._forward(record, lines)
        from .local import enqueue  # the queue is needed only by local batches

        try:
            await enqueue(self.relay, record, lines, key, self.settings.priority)
        except Exception as exc:  # the queue's store down, say: failed, not "validating" for good
            await self._failed(record, exc)
            raise
        await self.store.update(
            record.id, when=("validating",), status="in_progress", in_progress_at=time.time()
        )
        return await self.batch(owner, record.id)

    async def _failed(self, record: BatchRecord, exc: Exception) -> None:
        """The batch could not start: say why on it, so no batch stays "validating" for good."""
        if isinstance(exc, GatewayError):
            error = {"code": exc.code or "upstream_error", "message": exc.message}
        else:
            error = {"code": "internal_error", "message": "The batch could not be queued; try again."}
        errors = [{**error, "param": None, "line": None}]
        await self.store.update(record.id, status="failed", failed_at=time.time(), errors=errors)

    def mode_for(self, model: str) -> str:
        """``provider`` or ``local`` for a client-facing model (404 if it is not served)."""
        if any(model in route.names for route in self.relay.settings.routes):
            return "local"  # a route picks its model per request: only the pipeline can
        entry = self.relay.catalog.get(model)
        mode = self.settings.models.get(model, self.settings.mode)
        if mode == "auto":
            base = entry.deployments[0].provider.base_url
            return "provider" if any(f"//{host}" in base for host in OFFICIAL_HOSTS) else "local"
        return mode

    async def cancel(self, owner: str, batch_id: str) -> BatchRecord:
        record = await self.batch(owner, batch_id)
        if record.status in ("cancelling", "cancelled"):
            return record
        changed = await self.store.update(
            batch_id, when=("validating", "in_progress"), status="cancelling", cancelling_at=time.time()
        )
        if not changed:
            raise InvalidRequestError(
                f"Batch {batch_id} is {record.status}: only a batch in progress can be cancelled.",
                code="batch_not_cancellable",
            )
        self._status_cache.pop(batch_id, None)
        if record.mode == "provider" and record.upstream_id:
            try:
                await self._upstream(record)[0].cancel(record.upstream_id)
            except GatewayError as exc:  # the poll loop still reads whatever it ends with
                log.warning(
                    "batch %s: cancelling upstream batch %s failed: %s", batch_id, record.upstream_id, exc
                )
        else:
            await self._finalize_if_done(batch_id)  # nothing left running: cancelled at once
        return await self.batch(owner, batch_id)

    async def live_status(self, batch_id: str) -> BatchRecord | None:
        """The batch as workers need it (is it still running?), read at most twice a second."""
        now = time.monotonic()
        cached = self._status_cache.get(batch_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = await self.store.get_batch(batch_id)
        if record is not None:
            if len(self._status_cache) > 1000:
                self._status_cache.clear()
            self._status_cache[batch_id] = (now + 0.5, record)
        return record

    # -- finished requests -------------------------------------------------------------------------

    async def finish_item(
        self, batch_id: str, index: int, outcome: int, line: str, cost: Decimal | None
    ) -> None:
        """Store one request's outcome (group-committed with others finishing at the same time);
        returns once it is durable. The batch ends when its last request is in."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        row = (batch_id, index, outcome, line, None if cost is None else format(cost, "f"))
        self._pending.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_items(), name="llmrelay-batch-items")
        await future

    async def _write_items(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.store.add_items([row for row, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
            for batch_id in dict.fromkeys(row[0] for row, _ in batch):
                await self._finalize_if_done(batch_id)

    async def _finalize_if_done(self, batch_id: str) -> None:
        record = await self.store.claim_finalize(batch_id, require_done=True)
        if record is not None:
            self._spawn(self.finalize(record))

    async def finalize(self, record: BatchRecord) -> None:
        """Write the output and error files and set the final status (the caller claimed it)."""
        items = await self.store.items(record.id)
        out, err, usage, cost = output.summarize(items)
        files = {}
        for name, content in (("output", out), ("error", err)):
            if content:
                stored = await self._add_file(
                    record.owner, f"{record.id}_{name}.jsonl", "batch_output", content
                )
                files[f"{name}_file_id"] = stored.id
        now = time.time()
        if record.status == "cancelling":
            final = "cancelled"
        elif record.skipped or now > record.expires_at:
            final = "expired"
        else:
            final = "completed"
        await self.store.update(
            record.id,
            when=("finalizing", "cancelling"),
            status=final,
            **{f"{final}_at": now},
            usage=usage,
            cost_usd=cost,
            **files,
        )
        self._status_cache.pop(record.id, None)

    # -- forwarded batches -------------------------------------------------------------------------

    def _upstream(self, record: BatchRecord) -> tuple[Any, Any]:
        entry = self.relay.catalog.get(record.model)
        deployment = entry.deployments[0]
        provider = self.relay.providers[deployment.provider_name]
        return upstream_for(provider, deployment), deployment

    async def _forward(self, record: BatchRecord, lines: list[Line]) -> BatchRecord:
        upstream, deployment = self._upstream(record)
        try:
            for line in lines:  # every request must translate before any is sent
                try:
                    upstream.build(line)
                except GatewayError as exc:
                    raise InvalidRequestError(
                        f"Invalid batch file, line {line.number}: {exc.message}",
                        param="file",
                        code="invalid_jsonl",
                    ) from None
            upstream_id = await upstream.submit(lines, record.id)
        except Exception as exc:
            await self._failed(record, exc)
            raise
        await self.store.update(
            record.id,
            when=("validating",),
            status="in_progress",
            in_progress_at=time.time(),
            provider=deployment.provider_name,
            upstream_id=upstream_id,
        )
        return await self.batch(record.owner, record.id)

    async def poll(self, record: BatchRecord) -> None:
        """Check one forwarded batch upstream; once it has ended, read its results and end ours."""
        upstream, deployment = self._upstream(record)
        assert record.upstream_id is not None
        state, body = await upstream.status(record.upstream_id)
        if not state.ended:
            return
        claimed = await self.store.claim_finalize(record.id, require_done=False)
        if claimed is None:
            return  # another replica is on it
        if state.failed_errors is not None:
            await self.store.update(
                record.id, status="failed", failed_at=time.time(), errors=state.failed_errors
            )
            return
        content = await self.store.file_content(record.owner, record.input_file_id) or b""
        lines = parse_lines(content, max_requests=max(self.settings.max_requests, record.total))
        outcomes = {o.index: o for o in await upstream.results(body, lines)}
        key = await self._owner_key(record.owner)
        info = {"id": record.id, "mode": "provider", "upstream_id": record.upstream_id}
        rows, total = [], Decimal(0)
        for line in lines:
            outcome = outcomes.get(line.index)
            if outcome is None:  # the provider never reported it: it did not run
                outcome = Outcome(
                    line.index, not_run="cancelled" if claimed.status == "cancelling" else "expired"
                )
            code, text, cost = self.accountant.item(outcome, line, deployment, key, info)
            total += cost or 0
            rows.append((record.id, line.index, code, text, None if cost is None else format(cost, "f")))
        await self.store.add_items(rows)
        await self.accountant.charge(key, total)
        await self.finalize(await self.store.get_batch(record.id) or claimed)

    async def _owner_key(self, owner: str) -> VirtualKey | None:
        keys = self.relay.keys
        if keys.admin is not None and owner == keys.admin.id:
            return keys.admin
        found = await keys.store.get(owner) if owner else None
        return found.key if found is not None else None

    # -- background --------------------------------------------------------------------------------

    async def _background(self) -> None:
        """Poll forwarded batches that are due, and end batches whose finalizer died."""
        interval = self.settings.poll_interval_s
        while True:
            await asyncio.sleep(min(interval, 5.0))
            try:
                now = time.time()
                for record in await self.store.due_polls(now - interval):
                    if await self.store.claim_poll(record, now):
                        try:
                            await self.poll(record)
                        except GatewayError as exc:
                            log.warning("batch %s: polling upstream failed: %s", record.id, exc)
                for record in await self.store.stale_finalizing(now - _STALE_FINALIZE_S):
                    if await self.store.update(record.id, when=(record.status,), finalizing_at=now):
                        self._spawn(self.finalize(record))
            except PostgresUnavailable as exc:  # down: the next round tries again
                log.warning("batch background loop: %s", exc)
            except Exception:
                log.exception("batch background loop")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("batch task failed", exc_info=task.exception())


def _batch_fields(payload: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    endpoint = payload.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise InvalidRequestError(
            f"'endpoint' must be one of {', '.join(ENDPOINTS)}; got {endpoint!r}.", param="endpoint"
        )
    window = payload.get("completion_window", "24h")
    if window != "24h":
        raise InvalidRequestError("'completion_window' must be '24h'.", param="completion_window")
    metadata = openai_format.check_metadata(payload.get("metadata")) or {}
    return str(endpoint), window, metadata


def _one_model(lines: list[Line]) -> str:
    """A batch runs on one model (as OpenAI's do): the first line's; another is a 400 naming it."""
    model = lines[0].model
    for line in lines:
        if line.model != model:
            raise InvalidRequestError(
                f"Invalid batch file, line {line.number}: model {line.model!r} differs from the first "
                f"line's {model!r}; a batch runs on one model.",
                param="file",
                code="invalid_jsonl",
            )
    return model


__all__ = ["BatchService", "service_for"]
