"""Simulator settings: one pydantic model, loadable from YAML."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError, first_problem
from .rules import Rule

# Fault rolls walk the kinds in this fixed order, so a seed always gives the same faults.
FaultKind = Literal["429", "500", "503", "hang", "drop", "truncate", "malformed", "stall"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

DEFAULT_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5",
    "gpt-5-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "omni-moderation-latest",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-sonnet-4-6",
    "claude-opus-4-1",
)


def _fault_map(value: Any) -> Any:
    """YAML reads ``429: 0.1`` with an int key; fault kinds are strings."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return value


def _check_probabilities(faults: dict[str, float]) -> dict[str, float]:
    for kind, p in faults.items():
        if not 0 <= p <= 1:
            raise ValueError(f"fault {kind!r}: probability {p} is not within [0, 1]")
    if sum(faults.values()) > 1 + 1e-9:
        raise ValueError("fault probabilities add up to more than 1")
    return faults


class ModelOverride(BaseModel):
    """Settings for the models matching one glob; unset fields fall back to the global ones.

    ``faults`` replaces the global map (it does not merge), so ``faults: {}`` turns faults off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float | None = Field(default=None, ge=0)
    per_token_ms: float | None = Field(default=None, ge=0)
    faults: dict[FaultKind, float] | None = None
    # Answers on the OpenAI wire carry `reasoning_content`, as reasoning servers' do (DeepSeek, vLLM).
    reasoning: bool = False

    @field_validator("faults", mode="before")
    @classmethod
    def _str_keys(cls, v: Any) -> Any:
        return _fault_map(v)

    @field_validator("faults")
    @classmethod
    def _valid_faults(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return None if v is None else _check_probabilities(v)


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """The effective latency and faults for one model."""

    latency_ms: float
    per_token_ms: float
    faults: dict[str, float]
    reasoning: bool = False


class SimulatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)  # 0 = pick a free port
    rules_path: Path | None = None  # None (and no inline ``rules``) = the packaged default_rules.yaml
    rules: list[Rule] | None = None  # inline rules; take precedence over rules_path
    seed: int | None = None  # seeds fault rolls, so a run's sequence of faults is reproducible
    latency_ms: float = Field(default=0, ge=0)  # before the first byte
    per_token_ms: float = Field(default=0, ge=0)  # per output token
    faults: dict[FaultKind, float] = {}  # kind -> probability per request
    per_model: dict[str, ModelOverride] = {}  # model glob -> overrides; first match wins
    retry_after: float = Field(default=1, ge=0)  # seconds, sent with simulated 429s
    hang_max_s: float = Field(default=300, gt=0)  # a "hang" (or "stall") gives up after this long
    fixed_reply: str | None = None  # benchmark mode: skip rules/tokenizer, answer this text
    api_key: str | None = None  # when set, requests must carry it (Bearer or x-api-key)
    models: list[str] = list(DEFAULT_MODELS)  # listed by GET /v1/models
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    # How long a cached prompt prefix lives after its last use (Anthropic "ttl": "1h" marks: 12x).
    prompt_cache_ttl_s: float = Field(default=300, gt=0)
    batch_delay_s: float = Field(default=1.0, ge=0)  # a batch (OpenAI's or Anthropic's) ends after this

    @field_validator("faults", mode="before")
    @classmethod
    def _str_keys(cls, v: Any) -> Any:
        return _fault_map(v)

    @field_validator("faults")
    @classmethod
    def _valid_faults(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_probabilities(v)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> SimulatorSettings:
        """Settings from a YAML file; ``overrides`` (e.g. host/port from the CLI) win over it.

        A relative ``rules_path`` is resolved against the config file's directory.
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"Cannot read simulator config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"Simulator config {path} must be a YAML mapping.")
        data.update({k: v for k, v in overrides.items() if v is not None})
        if data.get("rules_path") and not Path(data["rules_path"]).is_absolute():
            data["rules_path"] = path.parent / data["rules_path"]
        return cls._validated(data, f"simulator config {path}")

    @classmethod
    def from_overrides(cls, **overrides: Any) -> SimulatorSettings:
        """The defaults with ``overrides`` (the CLI's host/port/seed), validated."""
        return cls._validated({k: v for k, v in overrides.items() if v is not None}, "simulator settings")

    @classmethod
    def _validated(cls, data: dict[str, Any], source: str) -> SimulatorSettings:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"Invalid {source}: {first_problem(exc)}") from None

    def profile_for(self, model: str) -> ModelProfile:
        for glob, o in self.per_model.items():
            if fnmatch.fnmatchcase(model.lower(), glob.lower()):
                return ModelProfile(
                    latency_ms=self.latency_ms if o.latency_ms is None else o.latency_ms,
                    per_token_ms=self.per_token_ms if o.per_token_ms is None else o.per_token_ms,
                    faults=dict(self.faults if o.faults is None else o.faults),
                    reasoning=o.reasoning,
                )
        return ModelProfile(self.latency_ms, self.per_token_ms, dict(self.faults))
