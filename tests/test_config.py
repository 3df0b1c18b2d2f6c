"""Config: YAML with env interpolation -> typed settings, and errors that say what to fix."""

from __future__ import annotations

import pytest

from llmrelay.config import Settings, interpolate
from llmrelay.errors import ConfigError

YAML = """
server:
  port: ${PORT:-4100}
  master_key: ${MASTER}
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:8000/v1"}
models:
  - {name: small, provider: local, upstream: llama-3.1-8b, tier: small, context_window: 8192,
     capabilities: [streaming], price: {input: 0.1, output: 0.2}}
"""


def test_load_with_interpolation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    settings = Settings.load(path, env={"MASTER": "sk-1"})
    assert settings.server.port == 4100 and settings.server.master_key == "sk-1"
    (model,) = settings.models
    assert (model.upstream_id, model.tier, model.context_window, model.capabilities) == (
        "llama-3.1-8b",
        "small",
        8192,
        ("streaming",),
    )


def test_unset_variable_without_default_is_an_error():
    with pytest.raises(ConfigError, match=r"\$\{MASTER\}"):
        interpolate("key: ${MASTER}", {})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"models": [{"name": "a", "provider": "ghost"}]}, "unknown provider 'ghost'"),
        ({"providers": {"p": {"kind": "grpc", "base_url": "x"}}}, "providers.p.kind"),
        ({"server": {"port": "high"}}, "server.port"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_config_names_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_dict(raw)


def test_embedded_default_adds_real_models_only_with_keys():
    bare = {m.name for m in Settings.embedded({}).models}
    assert bare == {"sim/gpt-4o-mini", "sim/gpt-4o", "sim/claude-haiku", "sim/claude-sonnet"}
    with_key = {m.name for m in Settings.embedded({"ANTHROPIC_API_KEY": "k"}).models}
    assert {"claude-sonnet-4-5", "claude-haiku-4-5"} <= with_key and "gpt-4o" not in with_key


def test_examples_load():
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "examples").glob("*.yaml")):
        settings = Settings.load(path, env={})
        assert settings.models, path


def test_a_bare_yaml_off_is_off_for_prompt_caching(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("prompt_caching: {mode: off}\n")  # YAML 1.1 reads a bare off as false
    assert Settings.load(path, env={}).prompt_caching.mode == "off"
