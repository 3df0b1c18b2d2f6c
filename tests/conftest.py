"""Shared fixtures: real ``llmrelay simulate`` and ``llmrelay serve`` processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

MASTER_KEY = "sk-test-master"


def pytest_configure(config: pytest.Config) -> None:
    # Call-log journals and databases of every gateway started by the tests go here, not ~/.llmrelay.
    os.environ.setdefault("LLMRELAY_HOME", tempfile.mkdtemp(prefix="llmrelay-test-home-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path | None = None  # a gateway's call-log directory, when serve_config started it

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_process(
    args: list[str], port: int, tmp: Path, *, ready_path: str, env: dict[str, str] | None = None
) -> Server:
    """Start ``python -m llmrelay.cli ARGS`` and wait until it answers ``ready_path``."""
    log_path = tmp / f"server-{port}.log"
    full_env = {**os.environ, **(env or {})}
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        if env is None or key not in env:
            full_env.pop(key, None)
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "llmrelay.cli", *args, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{args} exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + ready_path, timeout=0.5).status_code < 500:
                return Server(url, process, log_path)
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{args} did not start within 20s:\n{log_path.read_text()}")


async def recorded(home: Path, call_id: str):
    """The call's record, once the call log (SQLite under ``home``) has written it."""
    from llmrelay.observability.sqlite_store import SqliteCallStore

    store = SqliteCallStore(home / "calls.db")
    await store.open()
    try:
        for _ in range(200):
            record = await store.get(call_id)
            if record is not None:
                return record
            await asyncio.sleep(0.05)
    finally:
        await store.close()
    raise AssertionError(f"{call_id} never reached the call log")


def serve_config(config: dict, tmp: Path) -> Server:
    """``llmrelay serve`` on ``config`` (written as YAML under ``tmp``), ready to answer."""
    path = tmp / f"gateway-{free_port()}.yaml"
    path.write_text(yaml.safe_dump(config))
    server = start_process(["serve", "--config", str(path)], free_port(), tmp, ready_path="/healthz")
    directory = config.get("calllog", {}).get("directory")
    server.home = Path(directory) if directory else None
    return server


def simulate_config(settings: dict, tmp: Path) -> Server:
    """``llmrelay simulate`` with ``settings`` (written as YAML under ``tmp``), ready to answer."""
    path = tmp / f"simulator-{free_port()}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return start_process(["simulate", "--config", str(path)], free_port(), tmp, ready_path="/v1/models")


def stop_process(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


FAULTS = ("429", "500", "503", "hang", "drop", "truncate", "malformed", "stall")
SIMULATOR_CONFIG = {
    "seed": 1,
    "retry_after": 7,
    "hang_max_s": 30,
    "rules": [
        {"match": r"weather in (\w+)", "tool_call": {"name": "get_weather", "arguments": {"city": r"\1"}}},
        # JSON the guardrails must catch (tests/test_guard_json.py): broken, fenced in prose, off-schema.
        {"match": "broken json please", "reply": '```json\n{"answer": 1,}\n```'},
        {"match": "fenced json please", "reply": 'Here it is:\n```json\n{"ok": true}\n```\nAnything else?'},
        {"match": "wrong city please", "json": {"city": 3}},
        {"match": ".", "model": "json-broken*", "reply": "Sorry, no JSON today."},
        {"match": "please refuse", "reply": "I cannot help with that."},  # tests/test_guards.py
    ],
    # Upstream model "fault-<kind>" always fails that way; everything else is healthy.
    "per_model": {
        **{f"fault-{kind}*": {"faults": {kind: 1.0}} for kind in FAULTS},  # fault-500-x too
        "slow-*": {"per_token_ms": 200},  # a 20-token reply streams for about 4 s
        "reasoner-*": {"reasoning": True},  # answers with reasoning_content, as DeepSeek's do
    },
}


@pytest.fixture(scope="session")
def simulator(session_tmp: Path) -> Iterator[Server]:
    """``llmrelay simulate`` on a free loopback port, with the rules and faults above."""
    server = simulate_config(SIMULATOR_CONFIG, session_tmp)
    yield server
    stop_process(server)


def calllog_gateway_config(sim: str, home: Path, tag: str, **calllog: object) -> dict:
    """Four models whose calls cover the record's cases (success, stream, fallback, failure), logged
    to SQLite under ``home``; ``tag`` names the failing upstreams after the test module."""
    return {
        "execute": {"timeout_s": 5, "max_attempts": 2, "backoff_base_s": 0.01},
        "calllog": {
            "directory": str(home),
            "store": "sqlite:///calls.db",
            "flush_interval_s": 0.05,
            **calllog,
        },
        "providers": {
            "oa": {"kind": "openai", "base_url": sim + "/v1"},
            "an": {"kind": "anthropic", "base_url": sim},
        },
        "models": [
            {"name": "gpt-4o-mini", "provider": "oa"},
            {"name": "claude", "provider": "an", "upstream": "claude-haiku-4-5"},
            {"name": "flaky", "provider": "oa", "upstream": f"fault-500-{tag}", "fallbacks": ["claude"]},
            {"name": "broken", "provider": "oa", "upstream": f"fault-503-{tag}"},
        ],
    }


def gateway_config(simulator_url: str, **server: object) -> dict:
    """A config serving one model per upstream dialect, both on the simulator."""
    return {
        "server": dict(server),
        "execute": {"timeout_s": 5},
        "providers": {
            "up-openai": {"kind": "openai", "base_url": simulator_url + "/v1"},
            "up-anthropic": {"kind": "anthropic", "base_url": simulator_url, "api_key": "sk-upstream"},
            "down": {"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1"},  # nothing listens
            "keyless": {
                "kind": "openai",
                "base_url": simulator_url + "/v1",
                "api_key_env": "LLMRELAY_TEST_UNSET_KEY",
            },
        },
        "models": [
            {"name": "gpt-4o-mini", "provider": "up-openai", "tier": "small"},
            {
                "name": "claude-haiku",
                "provider": "up-anthropic",
                "upstream": "claude-haiku-4-5",
                "tier": "small",
            },
            {
                "name": "text-only",
                "provider": "up-openai",
                "upstream": "gpt-4o-mini",
                "capabilities": ["streaming"],
            },
            {"name": "reasoner", "provider": "up-openai", "upstream": "reasoner-r1"},
            {"name": "unreachable", "provider": "down", "upstream": "gpt-4o-mini"},
            {"name": "needs-key", "provider": "keyless", "upstream": "gpt-4o-mini"},
            *(
                {"name": f"{kind}-{dialect}", "provider": f"up-{dialect}", "upstream": f"fault-{kind}"}
                for kind in FAULTS
                for dialect in ("openai", "anthropic")
            ),
        ],
    }


@pytest.fixture(scope="session")
def gateway(simulator: Server, session_tmp: Path) -> Iterator[Server]:
    """``llmrelay serve --config`` in front of the simulator, with a master key."""
    config = session_tmp / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(gateway_config(simulator.url, master_key=MASTER_KEY, max_body_bytes=200_000))
    )
    server = start_process(
        ["serve", "--config", str(config)], free_port(), session_tmp, ready_path="/healthz"
    )
    yield server
    stop_process(server)


# --- Redis: the machine's real one, for the backends that share state across replicas ----------

REDIS_URL = os.environ.get("LLMRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_or_skip() -> None:
    """Skip when no Redis is reachable (fail instead under LLMRELAY_REQUIRE_SERVICES=1, as CI sets)."""
    reason = None
    try:
        import redis  # noqa: F401
    except ImportError:
        reason = "the redis package is not installed (pip install -e '.[dev]')"
    else:
        parts = urlsplit(REDIS_URL)
        try:
            socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.5).close()
        except OSError as exc:
            reason = f"no Redis at {REDIS_URL} ({exc.strerror or exc})"
    if reason:
        if os.environ.get("LLMRELAY_REQUIRE_SERVICES") == "1":
            pytest.fail(f"LLMRELAY_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


@contextlib.contextmanager
def redis_prefix_that_expires(name: str) -> Iterator[str]:
    """A fresh key prefix; afterwards, every key under it must carry a TTL (nothing accumulates in
    a long-lived Redis), and they are deleted."""
    redis_or_skip()
    import redis

    prefix = f"llmrelay-test:{uuid.uuid4().hex}:{name}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield prefix
        keys = list(client.scan_iter(f"{prefix}:*"))
        assert all(client.pttl(k) > 0 for k in keys), [k for k in keys if client.pttl(k) <= 0]
        if keys:
            client.delete(*keys)
    finally:
        client.close()
