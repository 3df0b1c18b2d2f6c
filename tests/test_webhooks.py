"""Webhook signing, the target checks and delivery attempts, against a real receiver on loopback.
The signature is checked with the recipe printed in docs/jobs.md, run as it is written there."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmrelay.errors import InvalidRequestError
from llmrelay.jobs.webhooks import (
    Sender,
    WebhookRefused,
    address_range,
    backoff_s,
    check_target,
    key_secret,
    parse_target,
    root_secret,
    sign,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "jobs.md"


def documented_verify():
    """The ``verify`` function of docs/jobs.md's recipe, executed from the page itself."""
    text = DOCS.read_text()
    section = text[text.index("### Verifying a webhook") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace["verify"]


class Receiver:
    """An HTTP server on loopback recording every POST; ``script[path]`` lists the statuses its
    next requests get (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    statuses = receiver.script.get(self.path) or []
                    status = statuses.pop(0) if statuses else 200
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "status": status,
                            "at": time.time(),
                        }
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def wait_for(self, path: str, n: int = 1, timeout_s: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.at(path))} deliveries, expected {n}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_the_documented_recipe_verifies_our_signature_and_nothing_else() -> None:
    verify = documented_verify()
    secret, body = "whsec_abc", b'{"id": "job_1"}'
    now = str(int(time.time()))
    headers = {"x-llmrelay-timestamp": now, "x-llmrelay-signature": sign(secret, now, body)}
    assert verify(secret, headers, body)
    assert not verify("whsec_other", headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(secret, {**headers, "x-llmrelay-timestamp": str(int(now) + 1)}, body)
    old = str(int(time.time()) - 3600)
    assert not verify(
        secret, {"x-llmrelay-timestamp": old, "x-llmrelay-signature": sign(secret, old, body)}, body
    )
    # The scheme itself, spelled out independently of our code:
    expected = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["x-llmrelay-signature"] == "v1=" + expected


def test_secrets_per_key_and_the_generated_root(tmp_path: Path) -> None:
    root = root_secret(None, tmp_path)
    assert root.startswith("whsec_") and root_secret(None, tmp_path) == root  # generated once
    assert (tmp_path / "webhook.secret").stat().st_mode & 0o777 == 0o600
    assert root_secret("configured-root-0123456789", tmp_path) == "configured-root-0123456789"
    a, b = key_secret(root, "key_a"), key_secret(root, "key_b")
    assert a != b and a.startswith("whsec_") and key_secret(root, "key_a") == a
    assert key_secret(root, None) == root  # no keys: the root signs


def test_address_ranges() -> None:
    import ipaddress

    assert address_range(ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert address_range(ipaddress.ip_address("::1")) == "loopback"
    assert address_range(ipaddress.ip_address("::ffff:127.0.0.1")) == "loopback"  # mapped
    assert address_range(ipaddress.ip_address("0.0.0.0")) == "loopback"  # reaches this host
    assert address_range(ipaddress.ip_address("8.8.8.8")) is None
    assert address_range(ipaddress.ip_address("2001:4860:4860::8888")) is None


@pytest.mark.parametrize(
    "url",
    ["", "ftp://example.com/x", "http://", "https://user:pw@example.com/", "not a url", 42, "http://[::1"],
)
def test_malformed_targets_are_400s(url) -> None:
    with pytest.raises(InvalidRequestError) as err:
        parse_target(url)
    assert err.value.status == 400 and err.value.param == "webhook.url"


async def test_targets_resolving_to_refused_ranges(receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    for url in (f"http://localhost:{port}/x", f"http://127.0.0.1:{port}/x", f"http://[::1]:{port}/x"):
        with pytest.raises(WebhookRefused, match="loopback"):
            await check_target(url, ())
        await check_target(url, ("loopback",))
    with pytest.raises(InvalidRequestError, match="does not resolve"):
        await check_target("http://no-such-host.invalid/x", ())


async def test_a_delivery_to_a_refused_address_never_connects(receiver: Receiver) -> None:
    """The resolver inside the connection checks again (a name that now resolves inward), and an
    address literal is checked before connecting: nothing reaches the receiver."""
    sender = Sender((), timeout_s=2)
    try:
        port = receiver.url.rsplit(":", 1)[1]
        for url in (f"http://localhost:{port}/refused", f"{receiver.url}/refused"):
            outcome = await sender.post(url, b"{}", "s", {})
            assert not outcome.ok and outcome.status is None and "loopback" in outcome.error
        assert receiver.at("/refused") == []
    finally:
        await sender.close()


async def test_a_delivery_is_signed_and_reports_the_receivers_status(receiver: Receiver) -> None:
    verify = documented_verify()
    receiver.script["/once"] = [503]
    sender = Sender(("loopback",), timeout_s=2)
    try:
        body = json.dumps({"hello": "world"}).encode()
        first = await sender.post(receiver.url + "/once", body, "whsec_k", {"idempotency-key": "idem-1"})
        second = await sender.post(receiver.url + "/once", body, "whsec_k", {"idempotency-key": "idem-1"})
    finally:
        await sender.close()
    assert (first.ok, first.status, first.error) == (False, 503, "HTTP 503")
    assert (second.ok, second.status) == (True, 200)
    for request in receiver.at("/once"):
        assert request["body"] == body and request["headers"]["idempotency-key"] == "idem-1"
        assert verify("whsec_k", request["headers"], request["body"])


async def test_an_unreachable_receiver_is_a_failed_attempt() -> None:
    from .conftest import free_port

    sender = Sender(("loopback",), timeout_s=2)
    try:
        outcome = await sender.post(f"http://127.0.0.1:{free_port()}/", b"{}", "s", {})
    finally:
        await sender.close()
    assert not outcome.ok and outcome.status is None and outcome.error


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    waits = [backoff_s(n, 1.0, 8.0) for n in (1, 2, 3, 4, 5, 6)]
    for n, wait in enumerate(waits, start=1):
        step = min(8.0, 2 ** (n - 1))
        assert step * 0.5 <= wait <= step
