"""The ``trained`` router: scores the request with a model made by ``llmrelay router train``
(``trained.py``), loaded once at start-up. Its calibrated threshold is the route's default."""

from __future__ import annotations

from pathlib import Path

from ..pipeline import Call
from .base import Verdict
from .settings import TrainedRouter as TrainedSettings


class Trained:
    kind = "trained"

    def __init__(self, settings: TrainedSettings) -> None:
        from .trained import TrainedRouter, prompt_text  # numpy and the model: only when used

        self.model = TrainedRouter.load(Path(settings.path).expanduser())  # ConfigError if unusable
        self.prompt_text = prompt_text

    @property
    def threshold(self) -> float:
        return self.model.threshold

    async def verdict(self, call: Call) -> Verdict:
        score = self.model.score(self.prompt_text(call.request.messages))
        return Verdict(round(score, 4), f"trained score {score:.3f} (threshold {self.threshold:.3f})")
