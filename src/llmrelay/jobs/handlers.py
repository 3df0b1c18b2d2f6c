"""What a job of each kind does: ``HANDLERS[kind](relay, job) -> result``.

A handler returns the job's result (a JSON object) or raises:

- ``RetryLater(delay_s, error)``: run it again later (the worker re-queues it, up to its limits);
- ``JobFailed(error)``: a final failure with this error object;
- a ``GatewayError``: failed with that error in OpenAI's shape, or retried when it is an upstream
  429/5xx and the job has attempts left (jobs/worker.py).

Other modules add kinds with ``@register("batch_item")``. Built in: ``chat`` (an async job: one
chat completion through the pipeline) and ``webhook`` (one delivery attempt of a finished job's
result, jobs/webhooks.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import AuthenticationError
from ..keys.service import check_model
from ..pipeline import Call
from ..providers import openai_format
from ..types import ChatResponse

if TYPE_CHECKING:
    from ..relay import Relay
    from .queue import Job

Handler = Callable[["Relay", "Job"], Awaitable[dict[str, Any]]]
HANDLERS: dict[str, Handler] = {}


class RetryLater(Exception):
    def __init__(self, delay_s: float, error: dict[str, Any] | None = None) -> None:
        super().__init__(f"retry in {delay_s:.1f}s")
        self.delay_s = delay_s
        self.error = error


class JobFailed(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "failed"))
        self.error = error


def register(kind: str) -> Callable[[Handler], Handler]:
    """``@register("kind")`` on ``async def handler(relay, job) -> dict``."""

    def add(handler: Handler) -> Handler:
        if kind in HANDLERS and HANDLERS[kind] is not handler:
            raise ValueError(f"a handler for job kind {kind!r} is already registered")
        HANDLERS[kind] = handler
        return handler

    return add


async def job_call(relay: Relay, job: Job, body: dict[str, Any]) -> Call:
    """A pipeline call for ``body`` (an OpenAI chat-completions request) on behalf of the job's
    owner: its key's models, budgets and limits apply, at the jobs' low priority."""
    request = openai_format.parse_request({**body, "stream": False})
    key = await relay.jobs.owner_key(job)
    if job.owner_key_id is not None and key is None:
        raise AuthenticationError(f"The API key that submitted this job ({job.owner_key_id}) was revoked.")
    check_model(key, request.model)
    settings = relay.settings
    # The priority header the limits stage reads (docs/limits.md); a key's priority caps it.
    headers = {"x-llmrelay-priority": str(job.priority + settings.jobs.priority)}
    # The cache partitions by principal: the owner's key id, never another owner's namespace.
    principal = f"job:{job.owner_key_id}" if job.owner_key_id else None
    call = Call(request, api_format="openai", headers=headers, principal=principal)
    call.key = key
    call.extra["job_id"] = job.id
    return call


@register("chat")
async def chat(relay: Relay, job: Job) -> dict[str, Any]:
    """An async job: ``payload["request"]`` through the pipeline; the result is the chat completion."""
    call = await job_call(relay, job, job.payload["request"])
    response = await relay.handle(call)
    assert isinstance(response, ChatResponse)
    return openai_format.response_to_wire(response)


@register("webhook")
async def webhook(relay: Relay, job: Job) -> dict[str, Any]:
    """One delivery attempt of a finished job's result (jobs/webhooks.py)."""
    return await relay.jobs.deliver(job)


__all__ = ["HANDLERS", "JobFailed", "RetryLater", "job_call", "register"]
