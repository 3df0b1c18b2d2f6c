"""Config: YAML with env interpolation -> typed settings, and errors that say what to fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


@pytest.mark.parametrize(
    "secret", ["abc #def", "abc: def", "!secret", "{oops", "-x", 'it\'s "quoted"', "4100", "sk-1"]
)
def test_a_value_goes_in_as_the_scalar_it_is(secret):
    # Substituted into the text before YAML reads it, a secret with " #" was cut at the comment,
    # one with ": " or a leading "!" broke the parse (and the error printed it).
    text = (
        "server:\n"
        "  master_key: ${S}   # set ${UNSET_HERE_IS_A_COMMENT}\n"
        '  dq: "<${S}>"\n'
        "  sq: '<${S}>'\n"
        "  flow: {a: ${S}, b: [${S}]}\n"
        "  none: ${UNSET:-}\n"
    )
    data = yaml.safe_load(interpolate(text, {"S": secret}))["server"]
    typed = 4100 if secret == "4100" else secret  # a number stays a number (a port from a variable)
    assert data["master_key"] == typed and data["flow"] == {"a": typed, "b": [typed]}
    assert data["dq"] == data["sq"] == f"<{secret}>"
    assert data["none"] is None  # `${KEY:-}`: not set, as the examples use it
    # Inside a longer plain scalar (a DSN, a URL) a value goes in as it is, as it always did.
    dsn = yaml.safe_load(interpolate("dsn: postgresql://u:${S}@db:5432/x", {"S": "p@ss:w#rd"}))
    assert dsn == {"dsn": "postgresql://u:p@ss:w#rd@db:5432/x"}


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
        # Values that loaded, then broke the gateway or the CLI at run time:
        ({"server": {"port": 99999}}, "server.port: Input should be less than or equal to 65535"),
        ({"server": {"master_key": ""}}, "server.master_key"),  # every client locked out
        ({"server": {"max_body_bytes": 0}}, "server.max_body_bytes"),
        ({"pipeline": []}, "pipeline: the pipeline needs its 'execute' stage"),  # every request a 500
        ({"pipeline": ["record", "execute", "execute"]}, "execute appears more than once"),
        ({"jobs": {"workers": {"small": 0}}}, "jobs.workers.small"),  # a worker that never works
        (
            {
                "providers": {"p": {"kind": "openai", "base_url": "http://x"}},
                "models": [{"name": "m", "provider": "p", "context_window": 0}],
            },
            "models.0.context_window",
        ),
        (
            {
                "providers": {"p": {"kind": "openai", "base_url": "http://x"}},
                "models": [{"name": "m", "provider": "p", "price": {"input": -1, "output": 1}}],
            },
            "models.0.price.input",
        ),
    ],
)
def test_invalid_config_names_the_field(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_dict(raw)


def test_a_config_file_that_is_not_text_is_a_clear_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        Settings.load(path)


def test_the_cli_says_in_one_line_what_it_could_not_use(tmp_path):
    # A file, directory or port a command cannot use: one line and a non-zero exit, no traceback.
    (tmp_path / "afile").write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(f"calllog: {{directory: {tmp_path / 'afile' / 'sub'}}}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    for argv, code, words in (
        (["logs", "--config", str(config)], 1, "Not a directory"),
        (["serve", "--port", "99999"], 2, "is not a port number"),
        (["simulate", "--port", "99999"], 2, "is not a port number"),
        (["logs", "-n", "0"], 2, "is not a whole number of at least 1"),
        (
            ["eval", "run", "suite.yaml", "-o", "report.pdf"],
            2,
            "the suffix picks the format",
        ),  # before running
    ):
        done = subprocess.run(
            [sys.executable, "-m", "llmrelay.cli", *argv], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == code and words in done.stderr, (argv, done.stderr)
        assert "Traceback" not in done.stderr


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
