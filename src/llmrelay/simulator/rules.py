r"""Canned answers: a YAML list of rules, first match wins.

    - match: 'weather in (\w+)'          # regex on the last user message, case-insensitive
      model: "gpt-4o*"                     # optional glob on the requested model
      tool_call: {name: get_weather, arguments: {city: '\1'}}   # \1, \g<name>: the regex's groups
    - match: "^ping$"
      reply: "pong"
    - match: "give me json"
      json: {ok: true}

(YAML single quotes keep backslashes as written; in double quotes write them twice.)
"""

from __future__ import annotations

import fnmatch
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError


class ToolCallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    arguments: dict[str, Any] = {}


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: str
    model: str | None = None
    reply: str | None = None
    tool_call: ToolCallSpec | None = None
    json_value: Any = Field(default=None, alias="json")

    _pattern: re.Pattern[str] = PrivateAttr()

    @field_validator("match")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"bad regex {v!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_answer(self) -> Rule:
        given = [k for k in ("reply", "tool_call", "json_value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"rule {self.match!r} needs exactly one of reply, tool_call, json")
        return self

    def model_post_init(self, _context: Any) -> None:
        self._pattern = re.compile(self.match, re.IGNORECASE)

    def search(self, text: str, model: str) -> re.Match[str] | None:
        if self.model is not None and not fnmatch.fnmatchcase(model.lower(), self.model.lower()):
            return None
        return self._pattern.search(text)


def expand(value: Any, match: re.Match[str]) -> Any:
    r"""Substitute the match's groups (``\1``, ``\g<name>``) into every string inside ``value``."""
    if isinstance(value, str):
        try:
            return match.expand(value)
        except (re.error, IndexError):
            return value  # a backslash that was not meant as a group reference: keep the text as written
    if isinstance(value, dict):
        return {k: expand(v, match) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, match) for v in value]
    return value


def parse_rules(data: Any, *, source: str = "rules") -> list[Rule]:
    """A YAML document (a list, or a mapping with a ``rules`` list) -> rules."""
    if isinstance(data, dict):
        data = data.get("rules")
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"{source}: expected a list of rules")
    try:
        return [Rule.model_validate(item) for item in data]
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid rule: {exc}") from None


def load_rules(path: str | Path | None) -> list[Rule]:
    """Rules from a YAML file, or the packaged ``default_rules.yaml`` when ``path`` is None."""
    try:
        if path is None:
            text = resources.files(__package__).joinpath("default_rules.yaml").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read simulator rules {path}: {exc}") from None
    return parse_rules(data, source=str(path or "default_rules.yaml"))


def find_rule(rules: list[Rule], text: str, model: str) -> tuple[Rule, re.Match[str]] | None:
    for rule in rules:
        if (m := rule.search(text, model)) is not None:
            return rule, m
    return None
