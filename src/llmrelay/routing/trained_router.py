"""The ``trained`` router: scores the request with a model made by ``llmrelay router train``
(``trained.py``), loaded once at start-up. Its calibrated threshold is the route's default."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..pipeline import Call
from .base import Verdict
from .settings import TrainedRouter as TrainedSettings


class Trained:
    kind = "trained"

    def __init__(self, settings: TrainedSettings) -> None:
        from .trained import TrainedRouter, prompt_text  # numpy and the model: only when used

        path = Path(settings.path).expanduser()
        try:
            self.model = TrainedRouter.load(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"The trained router at {path} cannot be loaded: {exc}") from None
        self.prompt_text = prompt_text

    @property
    def threshold(self) -> float:
        return self.model.threshold

    async def verdict(self, call: Call) -> Verdict:
        messages = [m.model_dump(exclude_none=True) for m in call.request.messages]
        score = float(self.model.score(self.prompt_text(messages)))
        return Verdict(round(score, 4), f"trained score {score:.3f} (threshold {self.threshold:.3f})")
