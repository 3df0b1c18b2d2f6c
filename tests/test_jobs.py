"""Async jobs end to end: ``llmrelay serve`` (and ``llmrelay worker`` processes) on loopback in front of
the simulator, a webhook receiver on loopback, the job routes over HTTP and results read back with
the official ``openai`` SDK's types."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from openai.types.chat import ChatCompletion

from .conftest import MASTER_KEY, Server, free_port, serve_config, stop_process
from .test_webhooks import Receiver, documented_verify

ALICE = "sk-test-alice-0123456789"
BOB = "sk-test-bob-0123456789"
ROOT = "whsec-test-root-0123456789"


def config(simulator: Server, home: Path, **jobs) -> dict:
    sim = simulator.url
    return {
        "server": {"master_key": MASTER_KEY},
        "calllog": {"directory": str(home), "flush_interval_s": 0.05},
        "execute": {"timeout_s": 20, "max_attempts": 1},
        "providers": {"sim": {"kind": "openai", "base_url": sim + "/v1"}},
        "models": [
            {"name": "gpt-4o-mini", "provider": "sim", "tier": "small"},
            {"name": "slow", "provider": "sim", "upstream": "slow-jobs", "tier": "small"},
            {"name": "big", "provider": "sim", "upstream": "gpt-4o", "tier": "frontier"},
            {"name": "middle", "provider": "sim", "upstream": "gpt-4o-mini", "tier": "mid"},
            {"name": "broken", "provider": "sim", "upstream": "fault-503-jobs", "tier": "mid"},
        ],
        "keys": [
            {"id": "key_alice", "secret": ALICE, "owner": "alice"},
            {"id": "key_bob", "secret": BOB, "owner": "bob", "models": ["gpt-4o-mini"]},
        ],
        "jobs": {
            "poll_interval_s": 0.1,
            "lease_s": 2,
            "retry_base_s": 0.1,
            "max_attempts": 2,
            **jobs,
            "webhooks": {
                "secret": ROOT,
                "allow": ["loopback"],
                "backoff_base_s": 0.1,
                "backoff_max_s": 0.4,
                "max_elapsed_s": 2,
            },
        },
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gateway(simulator: Server, tmp_path_factory) -> Iterator[Server]:
    """Workers inside the gateway (the default)."""
    home = tmp_path_factory.mktemp("jobs-home")
    server = serve_config(config(simulator, home), home)
    yield server
    stop_process(server)


@pytest.fixture(scope="module")
def idle(simulator: Server, tmp_path_factory) -> Iterator[Server]:
    """No workers in the gateway: jobs wait until a ``llmrelay worker`` runs them."""
    home = tmp_path_factory.mktemp("jobs-idle")
    server = serve_config(config(simulator, home, in_gateway=False), home)
    server.config = home / "worker.yaml"  # type: ignore[attr-defined]
    server.config.write_text(yaml.safe_dump(config(simulator, home, in_gateway=False)))  # type: ignore[attr-defined]
    yield server
    stop_process(server)


def api(server: Server, key: str = ALICE) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/v1", headers={"authorization": f"Bearer {key}"}, timeout=10)


def chat(content: str = "hello jobs", model: str = "gpt-4o-mini") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def wait(
    client: httpx.Client,
    job_id: str,
    until=lambda j: j["status"] in ("succeeded", "failed", "cancelled"),
    timeout_s: float = 30,
) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stayed {job}")


def test_a_job_runs_and_its_result_reaches_the_webhook_signed(gateway: Server, receiver: Receiver) -> None:
    with api(gateway) as client:
        r = client.post(
            "/jobs",
            json={
                "request": chat("hello jobs"),
                "webhook": {"url": receiver.url + "/a"},
                "metadata": {"t": "1"},
            },
            headers={"idempotency-key": "ticket-1"},
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] in ("queued", "running") and job["id"].startswith("job_")
        assert job["idempotency_key"] == "ticket-1" and job["metadata"] == {"t": "1"}
        done = wait(client, job["id"], lambda j: j.get("webhook", {}).get("status") == "delivered")
        secret = client.get("/webhooks/secret").json()["secret"]
    assert done["status"] == "succeeded" and done["attempts"] == 1 and done["error"] is None
    completion = ChatCompletion.model_validate(done["result"])  # the SDK's own type
    assert completion.choices[0].message.content == "You said: hello jobs"
    [delivery] = receiver.wait_for("/a")
    assert documented_verify()(secret, delivery["headers"], delivery["body"])
    assert not documented_verify()(ROOT, delivery["headers"], delivery["body"])  # a key's own secret
    assert delivery["headers"]["idempotency-key"] == "ticket-1"
    assert delivery["headers"]["x-llmrelay-job-id"] == job["id"]
    event = orjson.loads(delivery["body"])
    assert event["type"] == "job.succeeded" and event["id"] == "ticket-1"
    assert event["data"]["result"] == done["result"]
    assert done["webhook"]["status"] == "delivered" and done["webhook"]["status_code"] == 200


def test_the_same_idempotency_key_returns_the_same_job(gateway: Server) -> None:
    with api(gateway) as client, api(gateway, BOB) as bob:
        body = {"request": chat()}
        first = client.post("/jobs", json=body, headers={"idempotency-key": "once"}).json()
        again = client.post("/jobs", json=body, headers={"idempotency-key": "once"}).json()
        theirs = bob.post("/jobs", json=body, headers={"idempotency-key": "once"}).json()
        # The same key for another request: that request was never queued, so say so.
        other = client.post("/jobs", json={"request": chat("another")}, headers={"idempotency-key": "once"})
    assert first["id"] == again["id"] and theirs["id"] != first["id"]
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused" and first["id"] in error["message"]


def test_failed_deliveries_are_retried_with_the_same_idempotency_key(
    gateway: Server, receiver: Receiver
) -> None:
    receiver.script["/flaky"] = [500, 502]
    with api(gateway) as client:
        job = client.post(
            "/jobs", json={"request": chat(), "webhook": {"url": receiver.url + "/flaky"}}
        ).json()
        done = wait(client, job["id"], lambda j: j["webhook"]["status"] in ("delivered", "failed"))
        secret = client.get("/webhooks/secret").json()["secret"]
    deliveries = receiver.wait_for("/flaky", 3)
    assert [d["status"] for d in deliveries] == [500, 502, 200]
    assert {d["headers"]["idempotency-key"] for d in deliveries} == {job["idempotency_key"]}
    assert [d["headers"]["x-llmrelay-delivery-attempt"] for d in deliveries] == ["1", "2", "3"]
    assert all(documented_verify()(secret, d["headers"], d["body"]) for d in deliveries)
    assert deliveries[1]["at"] > deliveries[0]["at"]
    assert done["webhook"]["status"] == "delivered" and done["webhook"]["attempts"] == 3


def test_a_receiver_that_keeps_failing_is_given_up_and_the_job_is_kept(
    gateway: Server, receiver: Receiver
) -> None:
    receiver.script["/down"] = [500] * 1000
    with api(gateway) as client:
        job = client.post(
            "/jobs", json={"request": chat(), "webhook": {"url": receiver.url + "/down"}}
        ).json()
        done = wait(client, job["id"], lambda j: j["webhook"]["status"] == "failed", timeout_s=30)
    assert done["status"] == "succeeded" and done["result"]["object"] == "chat.completion"
    hook = done["webhook"]
    assert hook["attempts"] >= 2 and hook["last_error"]["code"] == "webhook_failed"
    assert hook["last_error"]["status_code"] == 500
    assert len(receiver.at("/down")) == hook["attempts"]  # bounded: max_elapsed_s is 2 s


def test_an_upstream_outage_is_retried_then_fails_with_its_error(gateway: Server, receiver: Receiver) -> None:
    with api(gateway) as client:
        job = client.post(
            "/jobs", json={"request": chat(model="broken"), "webhook": {"url": receiver.url + "/fail"}}
        ).json()
        done = wait(client, job["id"])
    assert done["status"] == "failed" and done["attempts"] == 2  # jobs.max_attempts
    assert done["error"]["code"] == "upstream_unavailable" and done["error"]["type"] == "api_error"
    [delivery] = receiver.wait_for("/fail")
    assert orjson.loads(delivery["body"])["type"] == "job.failed"


def test_keys_see_only_their_own_jobs(gateway: Server) -> None:
    with api(gateway) as alice, api(gateway, BOB) as bob, api(gateway, MASTER_KEY) as admin:
        mine = alice.post("/jobs", json={"request": chat("alice's")}).json()
        theirs = bob.post("/jobs", json={"request": chat("bob's")}).json()
        assert bob.get(f"/jobs/{mine['id']}").status_code == 404
        assert bob.post(f"/jobs/{mine['id']}/cancel").status_code == 404
        assert alice.get(f"/jobs/{theirs['id']}").json()["error"]["code"] == "job_not_found"
        listed = {j["id"] for j in bob.get("/jobs", params={"limit": 100}).json()["data"]}
        assert theirs["id"] in listed and mine["id"] not in listed
        everyone = {j["id"] for j in admin.get("/jobs", params={"limit": 100}).json()["data"]}
        assert {mine["id"], theirs["id"]} <= everyone
        assert admin.get(f"/jobs/{mine['id']}").status_code == 200
        page = alice.get("/jobs", params={"limit": 1}).json()
        assert len(page["data"]) == 1 and page["has_more"]
        assert alice.get("/webhooks/secret").json()["secret"] != bob.get("/webhooks/secret").json()["secret"]
    assert httpx.get(gateway.url + "/v1/jobs").status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1]", 400, None),
        (orjson.dumps({"webhook": {"url": "https://example.com"}}), 400, "request"),
        (orjson.dumps({"request": {"model": "gpt-4o-mini"}}), 400, "request.messages"),
        (orjson.dumps({"request": {**chat(), "stream": True}}), 400, "request.stream"),
        (orjson.dumps({"request": chat(), "extra": 1}), 400, "extra"),
        (orjson.dumps({"request": chat(), "webhook": "https://example.com"}), 400, "webhook"),
        (orjson.dumps({"request": chat(), "webhook": {"url": "ftp://example.com"}}), 400, "webhook.url"),
        (
            orjson.dumps({"request": chat(), "webhook": {"url": "https://x.com", "secret": "s"}}),
            400,
            "webhook.secret",
        ),
        (orjson.dumps({"request": chat(), "metadata": {"a": 1}}), 400, "metadata"),
        (orjson.dumps({"request": chat(model="no-such-model")}), 404, "request.model"),
    ],
)
def test_bad_submissions_get_openai_errors(
    gateway: Server, body: bytes, status: int, param: str | None
) -> None:
    with api(gateway) as client:
        r = client.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] in ("invalid_request_error",)
    if param is not None:
        assert error["param"] == param


def test_a_model_the_key_may_not_use_and_a_refused_target(gateway: Server) -> None:
    with api(gateway, BOB) as bob:
        r = bob.post("/jobs", json={"request": chat(model="big")})
        assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    with api(gateway) as alice:
        r = alice.post("/jobs", json={"request": chat(), "webhook": {"url": "http://no-such-host.invalid/"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "webhook.url"
        assert alice.get("/jobs/job_nope").status_code == 404
        assert alice.delete("/jobs").status_code == 405
        assert alice.get("/jobs", params={"limit": "0"}).status_code == 400


def test_cancel_a_running_job(gateway: Server, receiver: Receiver) -> None:
    with api(gateway) as client:
        job = client.post(
            "/jobs", json={"request": chat("one two three four five six seven eight nine ten", model="slow"),
                           "webhook": {"url": receiver.url + "/cancelled"}},
        ).json()  # fmt: skip
        wait(client, job["id"], lambda j: j["status"] == "running")
        cancelled = client.post(f"/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        time.sleep(3)  # the slow answer would have come by now
        final = client.get(f"/jobs/{job['id']}").json()
    assert final["status"] == "cancelled" and final["result"] is None
    assert receiver.at("/cancelled") == []  # a cancelled job sends no webhook


def test_queue_depth_per_tier_and_cancel_queued(idle: Server) -> None:
    with api(idle) as client:
        small = [
            client.post("/jobs", json={"request": chat(f"m{i}", model="middle")}).json() for i in range(3)
        ]
        big = client.post("/jobs", json={"request": chat(model="big")}).json()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = httpx.get(idle.url + "/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"}).text
            if (
                'llmrelay_jobs_queued{tier="mid"} 3.0' in text
                and 'llmrelay_jobs_queued{tier="frontier"} 1.0' in text
            ):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(text)
        assert "llmrelay_jobs_oldest_queued_age_seconds" in text
        for job in [*small, big]:
            assert client.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        while 'llmrelay_jobs_queued{tier="mid"}' in text:
            time.sleep(0.2)
            text = httpx.get(idle.url + "/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"}).text
            assert time.monotonic() < deadline + 10


def start_worker(server: Server, tier: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmrelay.cli", "worker", "--config", str(server.config), "--tier", tier],  # type: ignore[attr-defined]
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
    deadline = time.monotonic() + 20
    while b"llmrelay worker:" not in log.read_bytes():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return process


def test_a_sigkilled_workers_job_is_completed_by_another(
    idle: Server, receiver: Receiver, tmp_path: Path
) -> None:
    verify = documented_verify()
    with api(idle) as client:
        job = client.post(
            "/jobs",
            json={"request": chat("one two three four five six seven eight", model="slow"),
                  "webhook": {"url": receiver.url + "/killed"}},
            headers={"idempotency-key": "survives-kill"},
        ).json()  # fmt: skip
        first = start_worker(idle, "small", tmp_path / "a.log")
        try:
            running = wait(client, job["id"], lambda j: j["status"] == "running")
            assert running["attempts"] == 1
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
        second = start_worker(idle, "small", tmp_path / "b.log")
        try:
            done = wait(
                client, job["id"], lambda j: j.get("webhook", {}).get("status") == "delivered", timeout_s=40
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=15)
        secret = client.get("/webhooks/secret").json()["secret"]
    assert second.returncode == 0
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert (
        ChatCompletion.model_validate(done["result"]).choices[0].message.content.startswith("You said: one")
    )
    [delivery] = receiver.wait_for("/killed")
    assert delivery["headers"]["idempotency-key"] == "survives-kill" == done["idempotency_key"]
    assert verify(secret, delivery["headers"], delivery["body"])


def test_a_worker_stopped_with_sigterm_gives_its_job_back(idle: Server, tmp_path: Path) -> None:
    with api(idle) as client:
        job = client.post(
            "/jobs", json={"request": chat("one two three four five six seven eight", model="slow")}
        ).json()
        worker = start_worker(idle, "small", tmp_path / "w.log")
        wait(client, job["id"], lambda j: j["status"] == "running")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
        back = client.get(f"/jobs/{job['id']}").json()
        assert back["status"] == "queued" and back["attempts"] == 0  # at once, not after the lease
        assert client.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"


def test_worker_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "llmrelay.cli", "worker", "--concurrency", "0"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--concurrency" in r.stderr
    free_port()


def test_finished_jobs_and_deliveries_are_counted(gateway: Server, receiver: Receiver) -> None:
    with api(gateway) as client:
        job = client.post(
            "/jobs", json={"request": chat(), "webhook": {"url": receiver.url + "/counted"}}
        ).json()
        wait(client, job["id"], lambda j: j["webhook"]["status"] == "delivered")
    text = httpx.get(gateway.url + "/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"}).text
    finished = re.search(r'llmrelay_jobs_finished_total\{kind="chat",status="succeeded"\} (\d+)', text)
    delivered = re.search(r'llmrelay_webhook_deliveries_total\{outcome="delivered"\} (\d+)', text)
    assert finished and int(float(finished.group(1))) >= 1, text
    assert delivered and int(float(delivered.group(1))) >= 1, text
    assert 'llmrelay_jobs_finished_total{kind="webhook",status="succeeded"}' in text
