"""``llmrelay serve`` with no config and no key: simulated models, clearly labelled, from nothing."""

from __future__ import annotations

import anthropic
import httpx
import openai

from .conftest import free_port, start_process, stop_process


def test_embedded_default_serves_simulated_models(tmp_path):
    server = start_process(["serve"], free_port(), tmp_path, ready_path="/healthz")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="anything", max_retries=0)
        ids = [m.id for m in client.models.list()]
        assert ids == ["sim/gpt-4o-mini", "sim/gpt-4o", "sim/claude-haiku", "sim/claude-sonnet"]

        raw = client.chat.completions.with_raw_response.create(
            model="sim/gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert raw.parse().choices[0].message.content == "You said: hello"
        assert raw.headers["x-llmrelay-simulated"] == "true"
        assert float(raw.headers["x-llmrelay-cost-usd"]) > 0  # priced like the real gpt-4o-mini

        message = anthropic.Anthropic(base_url=server.url, api_key="anything", max_retries=0).messages.create(
            model="sim/claude-sonnet", max_tokens=20, messages=[{"role": "user", "content": "hello"}]
        )
        assert message.content[0].text == "You said: hello"

        curl_like = httpx.post(
            server.url + "/v1/chat/completions",
            content=b'{"model":"sim/claude-haiku","messages":[{"role":"user","content":"curl"}]}',
        )
        assert curl_like.json()["choices"][0]["message"]["content"] == "You said: curl"
    finally:
        stop_process(server)
    banner = server.log()
    assert f"http://127.0.0.1:{server.url.rsplit(':', 1)[1]}" in banner
    assert "sim/claude-sonnet" in banner and "simulated" in banner


def test_provider_keys_add_the_real_models(tmp_path):
    # Only the catalog is checked: no request goes to a real provider (no network here).
    server = start_process(
        ["serve"],
        free_port(),
        tmp_path,
        ready_path="/healthz",
        env={"OPENAI_API_KEY": "sk-not-real", "ANTHROPIC_API_KEY": "sk-ant-not-real"},
    )
    try:
        ids = {m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
    finally:
        stop_process(server)
    assert {"sim/gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "claude-haiku-4-5"} <= ids


def test_bad_config_exits_with_a_clear_message(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: x\n    provider: nowhere\n")
    result = subprocess.run(
        [sys.executable, "-m", "llmrelay.cli", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown provider 'nowhere'" in result.stderr and "Traceback" not in result.stderr


def test_taken_port_is_one_clear_line():
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "llmrelay", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
