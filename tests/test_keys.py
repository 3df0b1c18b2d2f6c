"""Virtual API keys against a real gateway: the admin API, auth with keys, allowed models, key ids on
the record, rotation and revocation, and a key reading only its own calls."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import anthropic
import httpx
import openai
import pytest

from .conftest import MASTER_KEY, gateway_config, recorded, serve_config, stop_process

ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def gw(simulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keys")
    config = gateway_config(simulator.url, master_key=MASTER_KEY, key_cache_ttl_s=0.3)
    config["calllog"] = {"directory": str(tmp / "home"), "flush_interval_s": 0.05}
    server = serve_config(config, tmp)
    yield server
    stop_process(server)


def admin(gw, method: str, path: str, key: str = MASTER_KEY, **kw) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"authorization": f"Bearer {key}"}, timeout=10, **kw)


def create(gw, **fields) -> dict:
    r = admin(gw, "POST", "/admin/keys", json={"owner": "team", **fields})
    assert r.status_code == 201, r.text
    return r.json()


def client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def ask(gw, key: str, model: str = "gpt-4o-mini", **kw):
    with client(gw, key) as c:
        return c.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hello"}], **kw
        )


# -- the admin API ---------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_stores_only_its_hash(gw):
    made = create(gw, models=["gpt-4o-mini"], rpm=60, budget_daily_usd="2.50", metadata={"team": "search"})
    secret = made["key"]
    assert secret.startswith("sk-llmrelay-") and len(secret) > 40
    assert made["id"].startswith("key_") and made["hint"].endswith(secret[-4:])
    assert made["budget_daily_usd"] == "2.50" and made["rpm"] == 60 and made["models"] == ["gpt-4o-mini"]
    listed = admin(gw, "GET", "/admin/keys").json()["data"]
    assert made["id"] in {k["id"] for k in listed}
    got = admin(gw, "GET", f"/admin/keys/{made['id']}").json()
    assert "key" not in got and secret not in str(listed) + str(got)
    assert got["spend"]["daily_usd"] == "0"
    # The database holds the SHA-256 of the secret, never the secret.
    db = sqlite3.connect(gw.home / "calls.db")
    try:
        (stored,) = db.execute("SELECT secret_hash FROM api_keys WHERE id = ?", (made["id"],)).fetchone()
    finally:
        db.close()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.encode() not in (gw.home / "calls.db").read_bytes()


def test_a_virtual_key_calls_its_models_and_is_recorded_under_its_id(gw):
    made = create(gw, models=["gpt-4o-mini"])
    raw = ask(gw, made["key"])
    assert raw.parse().choices[0].message.content == "You said: hello"
    record = _record(gw, raw.headers["x-llmrelay-request-id"])
    assert record.api_key_id == made["id"]


def test_a_key_is_refused_other_models_in_each_wire_format(gw):
    made = create(gw, models=["gpt-4o-mini"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        ask(gw, made["key"], model="claude-haiku")
    assert denied.value.status_code == 403 and denied.value.code == "model_not_allowed"
    assert "gpt-4o-mini" in denied.value.message
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=made["key"], max_retries=0) as c,
        pytest.raises(anthropic.PermissionDeniedError) as denied_a,
    ):
        c.messages.create(model="claude-haiku", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert denied_a.value.body["error"]["type"] == "permission_error"
    # /v1/models lists only what the key may use.
    with client(gw, made["key"]) as c:
        assert [m.id for m in c.models.list()] == ["gpt-4o-mini"]


def test_admin_routes_answer_clear_errors(gw):
    made = create(gw)
    no_key = httpx.get(gw.url + "/admin/keys")
    assert no_key.status_code == 401 and "No API key" in no_key.json()["error"]["message"]
    assert admin(gw, "GET", "/admin/keys", key="sk-wrong-key-000000").status_code == 401
    as_key = admin(gw, "GET", "/admin/keys", key=made["key"])
    assert as_key.status_code == 403 and as_key.json()["error"]["type"] == "permission_error"
    assert admin(gw, "GET", "/metrics", key=made["key"]).status_code == 403
    missing = admin(gw, "GET", "/admin/keys/key_nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    for body, param in (
        ({"owner": "x", "budget_daily_usd": -1}, "budget_daily_usd"),
        ({"owner": "x", "models": ["no-such-model"]}, "models"),
        ({"owner": "x", "colour": "red"}, "colour"),
        ({}, "owner"),
    ):
        bad = admin(gw, "POST", "/admin/keys", json=body)
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["param"] == param
    assert admin(gw, "POST", "/admin/keys", content=b"{nope").status_code == 400
    assert admin(gw, "PUT", "/admin/keys").status_code == 405
    wrong = admin(gw, "PUT", f"/admin/keys/{made['id']}")  # a route, not with this method: 405
    assert wrong.status_code == 405 and "GET or DELETE" in wrong.json()["error"]["message"]
    assert admin(gw, "GET", f"/admin/keys/{made['id']}/rotate").status_code == 405
    assert admin(gw, "POST", f"/admin/keys/{made['id']}/frobnicate").status_code == 404


def test_rotate_keeps_the_id_and_retires_the_old_secret(gw):
    made = create(gw)
    old = made["key"]
    ask(gw, old)  # now in the gateway's lookup cache
    rotated = admin(gw, "POST", f"/admin/keys/{made['id']}/rotate").json()
    assert rotated["id"] == made["id"] and rotated["key"] != old and rotated["rotated_at"]
    with pytest.raises(openai.AuthenticationError):  # at once on this gateway, cache or not
        ask(gw, old)
    raw = ask(gw, rotated["key"])
    assert _record(gw, raw.headers["x-llmrelay-request-id"]).api_key_id == made["id"]


def test_a_keys_cache_entries_are_its_own_and_survive_rotation(gw):
    made, other = create(gw), create(gw)
    prompt = {"temperature": 0, "messages": [{"role": "user", "content": "cache me under my key id"}]}
    with client(gw, made["key"]) as c:
        first = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", **prompt)
    assert first.headers["x-llmrelay-cache"] == "miss"
    rotated = admin(gw, "POST", f"/admin/keys/{made['id']}/rotate").json()
    with client(gw, rotated["key"]) as c:  # the same key under its new secret: its entry still serves
        again = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", **prompt)
    assert again.headers["x-llmrelay-cache"] == "hit"
    with client(gw, other["key"]) as c:  # another key never gets it
        theirs = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", **prompt)
    assert theirs.headers["x-llmrelay-cache"] == "miss"


def test_revoke_through_the_gateway_takes_effect_at_once(gw):
    made = create(gw)
    ask(gw, made["key"])
    revoked = admin(gw, "DELETE", f"/admin/keys/{made['id']}").json()
    assert revoked["revoked_at"]
    with pytest.raises(openai.AuthenticationError):
        ask(gw, made["key"])
    assert made["id"] not in {k["id"] for k in admin(gw, "GET", "/admin/keys").json()["data"]}
    assert made["id"] in {k["id"] for k in admin(gw, "GET", "/admin/keys?all=true").json()["data"]}
    rotate = admin(gw, "POST", f"/admin/keys/{made['id']}/rotate")
    assert rotate.status_code == 400 and "revoked" in rotate.json()["error"]["message"]


def test_the_cli_manages_keys_a_running_gateway_sees_within_the_ttl(gw):
    import json
    import subprocess
    import sys

    config = next(gw.log_path.parent.glob("gateway-*.yaml"))

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "llmrelay.cli", "keys", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    made = json.loads(cli("create", "--owner", "cli-team", "--models", "gpt-4o-mini", "--json"))
    assert ask(gw, made["key"]).parse().choices
    assert "cli-team" in cli("list")
    cli("revoke", made["id"])
    deadline = time.monotonic() + 5  # the gateway's key_cache_ttl_s is 0.3 s
    while time.monotonic() < deadline:
        try:
            ask(gw, made["key"])
        except openai.AuthenticationError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a key revoked by the CLI still worked after the cache TTL")


# -- a key reads only its own records ---------------------------------------------------------------


def test_a_key_cannot_read_another_keys_logs(gw):
    a, b = create(gw, owner="team-a"), create(gw, owner="team-b")
    a_ids = [ask(gw, a["key"]).headers["x-llmrelay-request-id"] for _ in range(2)]
    b_id = ask(gw, b["key"]).headers["x-llmrelay-request-id"]
    for call_id in (*a_ids, b_id):
        _record(gw, call_id)  # all three are in the call log

    def api(key: str, path: str) -> httpx.Response:
        return admin(gw, "GET", "/dashboard/api/" + path, key=key)

    seen_a = {c["id"] for c in api(a["key"], "recent?limit=200").json()["calls"]}
    assert set(a_ids) <= seen_a and b_id not in seen_a
    assert {c["api_key_id"] for c in api(a["key"], "recent?limit=200").json()["calls"]} == {a["id"]}
    # Asking for B's calls by key or by id finds nothing.
    assert api(a["key"], f"recent?key={b['id']}").json()["calls"] == []
    assert api(a["key"], f"call?id={b_id}").status_code == 404
    assert api(b["key"], f"call?id={b_id}").json()["api_key_id"] == b["id"]
    summary = api(a["key"], "summary?since=1h").json()
    assert summary["requests"] == 2 and summary["auth"] == "api_key"
    assert [k["group"] for k in api(a["key"], "top?since=1h").json()["keys"]] == [a["id"]]
    # The master key sees both.
    everything = {c["id"] for c in api(MASTER_KEY, "recent?limit=200").json()["calls"]}
    assert set(a_ids) | {b_id} <= everything
    # A revoked or unknown key sees nothing at all.
    assert api("sk-llmrelay-unknown-0000000000", "recent").status_code == 401


def _record(gw, call_id: str):
    import asyncio

    return asyncio.run(recorded(gw.home, call_id))


# -- the library, the config, the example ------------------------------------------------------------


async def test_the_library_applies_a_key_given_to_it(simulator, tmp_path):
    from llmrelay import Relay
    from llmrelay.errors import AuthenticationError, PermissionDeniedError

    config = gateway_config(simulator.url, master_key=MASTER_KEY)
    config["calllog"] = {"directory": str(tmp_path)}
    config["keys"] = [
        {"id": "key_lib", "secret": "sk-llmrelay-library-0001", "owner": "lib", "models": ["gpt-4o-mini"]}
    ]
    async with Relay(config) as relay:
        hello = [{"role": "user", "content": "hello"}]
        answer = await relay.complete(model="gpt-4o-mini", messages=hello, api_key="sk-llmrelay-library-0001")
        assert answer.choices[0].message.content == "You said: hello"
        with pytest.raises(PermissionDeniedError):
            await relay.complete(model="claude-haiku", messages=hello, api_key="sk-llmrelay-library-0001")
        with pytest.raises(AuthenticationError):
            await relay.complete(model="gpt-4o-mini", messages=hello, api_key="sk-llmrelay-library-0002")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"keys": [{"id": "key_a", "secret": "s" * 16, "owner": "o", "models": ["nope"]}]}, "unknown model"),
        ({"keys": [{"id": "key_a", "secret": "s" * 16, "owner": "o"}] * 2}, "repeats"),
        ({"keys": [{"id": "bad id", "secret": "s" * 16, "owner": "o"}]}, "keys.0.id"),
        ({"keys": [{"id": "key_a", "secret": "short", "owner": "o"}]}, "keys.0.secret"),
        ({"budgets": {"user_daily_usd": 1}, "pipeline": ["record", "execute"]}, "no 'budget' stage"),
    ],
)
def test_key_config_mistakes_are_named(extra, message):
    from llmrelay.config import Settings
    from llmrelay.errors import ConfigError

    base = gateway_config("http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=message):
        Settings.from_dict({**base, **extra})


def test_the_example_seeds_its_demo_key(tmp_path, monkeypatch):
    from pathlib import Path

    from .conftest import free_port, start_process

    example = Path(__file__).resolve().parent.parent / "examples" / "limits.yaml"
    for name in ("LLMRELAY_MASTER_KEY", "LLMRELAY_DEMO_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)  # the example's own defaults, whatever this machine sets
    env = {"LLMRELAY_HOME": str(tmp_path)}
    server = start_process(
        ["serve", "--config", str(example)], free_port(), tmp_path, ready_path="/healthz", env=env
    )
    try:
        hello = [{"role": "user", "content": "hi"}]
        with openai.OpenAI(
            base_url=server.url + "/v1", api_key="sk-llmrelay-demo-limited", max_retries=0
        ) as demo:
            assert demo.chat.completions.create(model="sim/gpt-4o-mini", messages=hello).choices
            with pytest.raises(openai.PermissionDeniedError):
                demo.chat.completions.create(model="sim/gpt-4o", messages=hello)
        keys = httpx.get(
            server.url + "/admin/keys", headers={"authorization": "Bearer sk-llmrelay-demo-master"}
        )
        (key,) = keys.json()["data"]
        assert key["id"] == "key_demo_limited" and key["rpm"] == 5 and key["source"] == "config"
    finally:
        stop_process(server)
