"""The ``batch:`` section of the config (docs/batch.md): limits of the files and batches API, and how
each model's batches run: forwarded to the provider's own batch API, or by llmrelay's workers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# auto: the provider's batch API when the model is served by OpenAI's or Anthropic's own API, else
# local; provider: always forward (any openai- or anthropic-kind endpoint that has one, such as the
# simulator); local: always run through the pipeline by llmrelay's workers.
BatchMode = Literal["auto", "provider", "local"]


class BatchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True  # serve /v1/files and /v1/batches
    mode: BatchMode = "auto"
    models: dict[str, BatchMode] = {}  # per client-facing model: overrides ``mode``
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)  # an upload larger: 413
    max_requests: int = Field(default=50_000, ge=1)  # lines per input file
    # What a provider's batch API charges against its synchronous price (OpenAI and Anthropic: half).
    provider_discount: float = Field(default=0.5, gt=0, le=1)
    poll_interval_s: float = Field(default=30.0, gt=0)  # how often forwarded batches are checked
    completion_window_s: float = Field(default=86_400.0, gt=0)  # the "24h" every batch asks for
    priority: int = -10  # of the queue jobs that run a local batch's items (below interactive work)
