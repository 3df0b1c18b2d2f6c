"""Guardrail policy in the config: global defaults, per-model overrides, what is refused at start,
and no stage at all in the chain when no route has guardrails."""

from __future__ import annotations

import pytest

from llmrelay import Relay
from llmrelay.config import GuardrailPolicy, Settings
from llmrelay.errors import ConfigError
from llmrelay.guardrails.input import GuardInput
from llmrelay.guardrails.output import GuardOutput
from llmrelay.pipeline import _Bound

PROVIDERS = {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}


def settings(guardrails=None, models=None, **extra) -> Settings:
    raw = {"providers": PROVIDERS, "models": models or [{"name": "m", "provider": "p"}], **extra}
    if guardrails is not None:
        raw["guardrails"] = guardrails
    return Settings.from_dict(raw)


def test_a_model_overrides_only_what_it_sets():
    s = settings(
        {
            "injection": {"mode": "block", "threshold": 0.7},
            "json": {"mode": "block", "schema": {"type": "object"}},
        },
        [
            {"name": "m", "provider": "p"},
            {
                "name": "strict",
                "provider": "p",
                "guardrails": {"injection": {"threshold": 0.3}, "json": {"schema": {"type": "array"}}},
            },
        ],
    )
    default = s.guardrails.merged(s.models[0].guardrails)
    strict = s.guardrails.merged(s.models[1].guardrails)
    assert default == s.guardrails
    assert strict.injection.mode == "block" and strict.injection.threshold == 0.3  # mode kept, threshold set
    assert strict.json_.mode == "block" and strict.json_.schema_ == {
        "type": "array"
    }  # a schema is replaced whole
    # An API key's policy (issue #9) is one more layer on top, merged the same way.
    key = GuardrailPolicy.model_validate({"injection": {"mode": "log"}})
    assert strict.merged(key).injection.mode == "log" and strict.merged(key).injection.threshold == 0.3


def test_nothing_is_on_by_default():
    policy = settings().guardrails
    assert not policy.input_on and not policy.output_on


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"guardrails": {"injection": {"mode": "block"}}, "pipeline": ["record", "cache", "execute"]},
            "guard_input",
        ),
        (
            {
                "guardrails": {"json": {"mode": "block"}},
                "pipeline": ["record", "guard_input", "cache", "execute"],
            },
            "guard_output",
        ),
        (
            {
                "guardrails": {"pii": {"output": "redact"}},
                "pipeline": ["record", "guard_output", "cache", "execute"],
            },
            "order",
        ),
        ({"guardrails": {"injection": {"mode": "sometimes"}}}, "injection.mode"),
        ({"guardrails": {"moderation": {"input": "block", "provider": "nope"}}}, "moderation.provider"),
        ({"guardrails": {"limits": {"max_input_chars": 0}}}, "limits.max_input_chars"),
    ],
)
def test_bad_guardrail_config_is_refused_at_start(raw, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_dict({"providers": PROVIDERS, "models": [{"name": "m", "provider": "p"}], **raw})


async def test_a_bad_schema_in_the_policy_fails_the_start():
    relay = Relay(settings({"json": {"mode": "block", "when": "always", "schema": {"type": "nonsense"}}}))
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        await relay.start()


def _stages(relay: Relay) -> list[object]:
    stages, handler = [], relay._handler
    while isinstance(handler, _Bound):
        stages.append(handler.stage)
        handler = handler.next
    return stages


async def test_no_guard_stage_runs_when_no_route_has_guardrails():
    async with Relay(settings(calllog={"enabled": False})) as relay:
        kinds = {type(s) for s in _stages(relay)}
        assert GuardInput not in kinds and GuardOutput not in kinds
    models = [
        {"name": "m", "provider": "p"},
        {"name": "guarded", "provider": "p", "guardrails": {"pii": {"output": "redact"}}},
    ]
    async with Relay(settings(models=models, calllog={"enabled": False})) as relay:
        (output,) = [s for s in _stages(relay) if isinstance(s, GuardOutput)]
        assert set(output.policies) == {"guarded"}  # the other model takes the fast path
        assert not any(isinstance(s, GuardInput) for s in _stages(relay))
