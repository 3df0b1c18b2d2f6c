"""Local batches: one low-priority queue job per request (kind ``batch_item``, ``jobs/``), run by
llmrelay's workers through the normal pipeline, so cache, guardrails, budgets and fallbacks apply
as to any call (and cost the synchronous price: there is no provider discount to pass on).

A job re-run after its worker died stores its outcome again; the store keeps the first and counts
it once, so every request appears exactly once in the batch's output or error file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError
from ..jobs.handlers import JobFailed, job_call, register
from ..jobs.worker import _RETRYABLE
from ..pipeline import Call
from ..providers import openai_format
from ..types import ChatResponse
from . import output
from .jsonl import Line
from .service import service_for

if TYPE_CHECKING:
    from ..jobs.queue import Job
    from ..keys.model import VirtualKey
    from ..relay import Relay
    from .store import BatchRecord

KIND = "batch_item"


async def enqueue(
    relay: Relay, batch: BatchRecord, lines: Sequence[Line], key: VirtualKey | None, priority: int
) -> None:
    jobs = relay.jobs
    tier = jobs.tier_of(batch.model)
    queue = await jobs.open()
    payloads = [
        {"batch_id": batch.id, "index": line.index, "custom_id": line.custom_id, "body": line.body}
        for line in lines
    ]
    await queue.enqueue_many(
        KIND, payloads, tier=tier, priority=priority, owner_key_id=key.id if key is not None else None
    )
    if jobs.workers is not None:
        jobs.workers.wake(tier)


@register(KIND)
async def run_item(relay: Relay, job: Job) -> dict[str, Any]:
    payload = job.payload
    batch_id, index, custom_id = payload["batch_id"], payload["index"], payload["custom_id"]
    service = await service_for(relay)
    batch = await service.live_status(batch_id)
    if batch is None:
        raise JobFailed(
            {
                "message": f"Batch {batch_id} is gone.",
                "type": "api_error",
                "param": None,
                "code": "batch_gone",
            }
        )
    cost: Decimal | None = None
    if batch.status in ("cancelling", "cancelled"):
        outcome, line = output.NOT_RUN, output.cancelled(custom_id)
    elif time.time() > batch.expires_at or batch.status == "expired":
        outcome, line = output.NOT_RUN, output.expired(custom_id)
    elif batch.status not in ("validating", "in_progress"):
        return {"batch_id": batch_id, "index": index, "outcome": "already_final"}
    else:
        call: Call | None = None
        try:
            call = await job_call(relay, job, payload["body"])
            call.extra["batch"] = {"id": batch_id, "custom_id": custom_id, "mode": "local"}
            response = await relay.handle(call)
            assert isinstance(response, ChatResponse)
            outcome = output.ANSWERED
            line = output.answered(custom_id, openai_format.response_to_wire(response), call.id)
        except GatewayError as error:
            if error.status in _RETRYABLE and job.attempts < relay.settings.jobs.max_attempts:
                raise  # the worker tries it again later, with backoff
            outcome = output.FAILED
            line = output.failed(custom_id, error, call.id if call is not None else job.id)
        if call is not None:
            cost = call.cost_usd
    await service.finish_item(batch_id, index, outcome, line, cost)
    return {"batch_id": batch_id, "index": index, "outcome": outcome}
