"""The dashboard: its JSON API over a real gateway's call log, and the page itself in headless Chromium.

The browser tests drive Debian's Chromium (``/usr/bin/chromium``) through Playwright; they skip when
either is missing, except under CI (``LLMRELAY_REQUIRE_SERVICES=1``), where they must run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmrelay.observability.records import AttemptRecord, CallRecord, key_id
from llmrelay.observability.sqlite_store import SqliteCallStore
from llmrelay.server import dashboard
from llmrelay.server.dashboard import OTHER

from .conftest import (
    MASTER_KEY,
    Server,
    calllog_gateway_config,
    serve_config,
    stop_process,
)
from .factories import call_record

HELLO = [{"role": "user", "content": "hello"}]
BEARER = {"authorization": f"Bearer {MASTER_KEY}"}
API = ("summary?since=1h", "series?since=1h", "top?since=1h", "recent", "call?id=req_x")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def gateway_config(sim: str, home: Path, *, calllog: bool = True, **server: Any) -> dict:
    return {**calllog_gateway_config(sim, home, "dashboard", enabled=calllog), "server": server}


@pytest.fixture(scope="module")
def gateway(simulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with a master key and a call log (SQLite in a temp dir) in front of the simulator."""
    tmp = tmp_path_factory.mktemp("dashboard")
    server = serve_config(gateway_config(simulator.url, tmp / "home", master_key=MASTER_KEY), tmp)
    yield server
    stop_process(server)


@pytest.fixture(scope="module")
def calls(gateway: Server) -> dict[str, str]:
    """Four calls (a success, a stream, a fallback, an error), their ids by kind, once all are in the
    store (as the dashboard API sees it)."""
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        ok = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=HELLO, user="alice"
        )
        list(client.chat.completions.create(model="claude", messages=HELLO, stream=True, user="bob"))
        fell_back = client.chat.completions.with_raw_response.create(model="flaky", messages=HELLO)
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="broken", messages=HELLO)
    ids = {
        "success": ok.headers["x-llmrelay-request-id"],
        "fallback": fell_back.headers["x-llmrelay-request-id"],
        "error": failed.value.response.headers["x-llmrelay-request-id"],
    }
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        recent = httpx.get(gateway.url + "/dashboard/api/recent", headers=BEARER).json()["calls"]
        if len(recent) >= 4:
            return ids
        time.sleep(0.05)
    raise AssertionError(f"the calls did not reach the call log within 10s:\n{gateway.log()}")


@pytest.fixture(scope="module")
def open_gateway(simulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No master key, no call log."""
    tmp = tmp_path_factory.mktemp("dashboard-off")
    server = serve_config(gateway_config(simulator.url, tmp / "home", calllog=False), tmp)
    yield server
    stop_process(server)


def session_cookie(expires: int, key: str = MASTER_KEY) -> str:
    mac = hmac.new(key.encode(), f"llmrelay-dashboard:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


# --- the API, without a browser ---------------------------------------------------------------------


def test_the_dashboard_needs_the_master_key(gateway: Server) -> None:
    for path in API:
        url = f"{gateway.url}/dashboard/api/{path}"
        for headers in ({}, {"authorization": "Bearer sk-wrong"}, {"cookie": "llmrelay_dashboard=1.abc"}):
            response = httpx.get(url, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"]["type"] == "authentication_error"
    assert (
        httpx.get(f"{gateway.url}/dashboard/api/recent", headers={"x-api-key": MASTER_KEY}).status_code == 200
    )
    # The page itself: a sign-in form, nothing of the dashboard.
    page = httpx.get(gateway.url + "/dashboard")
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert 'action="/dashboard/login"' in page.text and "api/summary" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # No key in URLs: a ?key= parameter is not accepted.
    assert httpx.get(f"{gateway.url}/dashboard/api/recent?key={MASTER_KEY}").status_code == 401


def test_signing_in_sets_a_session_cookie_that_is_not_the_key(gateway: Server) -> None:
    wrong = httpx.post(gateway.url + "/dashboard/login", data={"key": "sk-wrong"})
    assert (
        wrong.status_code == 401 and "not the master key" in wrong.text and "set-cookie" not in wrong.headers
    )
    right = httpx.post(gateway.url + "/dashboard/login", data={"key": MASTER_KEY})
    assert right.status_code == 303 and right.headers["location"] == "/dashboard"
    cookie = right.headers["set-cookie"]
    assert all(part in cookie for part in ("HttpOnly", "SameSite=Strict", "Path=/dashboard", "Max-Age=43200"))
    assert MASTER_KEY not in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    with httpx.Client(base_url=gateway.url, cookies={"llmrelay_dashboard": token}) as browser:
        page = browser.get("/dashboard")
        assert page.status_code == 200 and "<title>llmrelay · dashboard</title>" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
        assert browser.get("/dashboard/api/summary").status_code == 200
        logout = browser.post("/dashboard/logout")
        assert logout.status_code == 303 and "Max-Age=0" in logout.headers["set-cookie"]
    tampered = token[:-1] + ("0" if token[-1] != "0" else "1")
    expired = session_cookie(int(time.time()) - 1)
    for value in (tampered, expired, session_cookie(int(time.time()) + 60, key="sk-other")):
        response = httpx.get(gateway.url + "/dashboard/api/summary", cookies={"llmrelay_dashboard": value})
        assert response.status_code == 401
    # Forged expiries that str.isdigit() takes but int() refuses (or takes 4,300 digits to refuse).
    for raw in (b"llmrelay_dashboard=\xb2.x", b"llmrelay_dashboard=" + b"9" * 5000 + b".x"):
        for path in ("/dashboard/api/summary", "/dashboard"):
            assert httpx.get(gateway.url + path, headers={b"cookie": raw}).status_code == 401, (
                raw[:30],
                path,
            )


def test_the_api_reads_the_call_log(gateway: Server, calls: dict[str, str]) -> None:
    def get(path: str) -> Any:
        response = httpx.get(f"{gateway.url}/dashboard/api/{path}", headers=BEARER)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        return response.json()

    summary = get("summary?since=1h")
    assert summary["requests"] == 4 and summary["errors"] == 1 and summary["error_rate"] == 0.25
    assert summary["fallbacks"] == 1 and summary["auth"] == "master_key" and not summary["sampled"]
    assert (
        summary["cache_hits"] == 0 and summary["cache_hit_rate"] == 0 and Decimal(summary["saved_usd"]) == 0
    )
    assert 0 < summary["latency_p50_ms"] <= summary["latency_p95_ms"]
    cost = Decimal(summary["cost_usd"])
    assert cost > 0
    by_model = {row["group"]: row for row in summary["by_model"]}
    assert set(by_model) == {"gpt-4o-mini", "claude", None}  # None: no model answered (the error)
    assert by_model["claude"]["requests"] == 2 and by_model[None]["error_rate"] == 1.0
    assert sum(Decimal(r["cost_usd"]) for r in summary["by_model"]) == cost

    for window, step, buckets in (("1h", 300, 13), ("24h", 3600, 25), ("7d", 86400, 8)):
        series = get(f"series?since={window}")
        assert series["step_s"] == step and len(series["buckets"]) == buckets, window
        assert sum(b["requests"] for b in series["buckets"]) == 4
        assert sum(b["errors"] for b in series["buckets"]) == 1
        assert set(series["models"]) == {"gpt-4o-mini", "claude"}  # the failed call cost nothing
        split = sum(Decimal(c) for b in series["buckets"] for c in b["cost_by_model"].values())
        assert split == sum(Decimal(b["cost_usd"]) for b in series["buckets"]) == cost

    top = get("top?since=24h")
    assert [(k["group"], k["requests"]) for k in top["keys"]] == [(key_id(MASTER_KEY), 4)]
    assert {u["group"] for u in top["users"]} == {"alice", "bob", None}

    recent = get("recent?limit=50")["calls"]
    assert [c["started_at"] for c in recent] == sorted((c["started_at"] for c in recent), reverse=True)
    by_id = {c["id"]: c for c in recent}
    assert by_id[calls["error"]]["status"] == "error:UpstreamUnavailable"
    assert by_id[calls["fallback"]]["fallback"] and by_id[calls["fallback"]]["attempts"] == 3
    assert "request_body" not in by_id[calls["success"]]
    assert [c["id"] for c in get("recent?status=error")["calls"]] == [calls["error"]]
    assert len(get("recent?limit=2")["calls"]) == 2

    call = get(f"call?id={calls['fallback']}")
    assert call["requested_model"] == "flaky" and call["model"] == "claude" and call["status"] == "success"
    assert [(a["deployment"], a["outcome"]) for a in call["attempts"]] == [
        ("oa/fault-500-dashboard", "error:UpstreamUnavailable"),
        ("oa/fault-500-dashboard", "error:UpstreamUnavailable"),
        ("an/claude-haiku-4-5", "success"),
    ]
    assert all(a["latency_ms"] >= 0 and a["waited_ms"] >= 0 for a in call["attempts"])


def test_bad_requests_are_told_what_is_wrong(gateway: Server) -> None:
    def get(path: str) -> httpx.Response:
        return httpx.get(f"{gateway.url}/dashboard/api/{path}", headers=BEARER)

    assert (
        get("summary?since=2w").status_code == 400
        and get("summary?since=2w").json()["error"]["param"] == "since"
    )
    assert get("recent?limit=many").status_code == 400
    misspelt = get("recent?status=sucess")
    assert misspelt.status_code == 400 and misspelt.json()["error"]["param"] == "status"
    assert get("recent?status=error:UpstreamTimeout").status_code == 200
    assert get("call").status_code == 400
    missing = get("call?id=req_nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "call_not_found"
    assert httpx.get(gateway.url + "/dashboard/login").status_code == 405


def test_with_the_call_log_off_the_api_says_so(open_gateway: Server) -> None:
    assert httpx.get(open_gateway.url + "/dashboard").status_code == 200  # no master key: open
    for path in API:
        response = httpx.get(f"{open_gateway.url}/dashboard/api/{path}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "calllog_off"
        assert "call log is off" in response.json()["error"]["message"]


# --- the figures, over a store filled by hand -------------------------------------------------------

NOW = 1_750_000_000.0  # a fixed clock


def record(i: int, started_at: float, **kw: Any) -> CallRecord:
    return call_record(
        **{
            "id": f"req_{i:026d}",
            "started_at": started_at,
            "ended_at": started_at + 0.1,
            "api_key_id": "key_a",
            "cost_usd": "0.001",
            "latency_ms": 100.0 * (i + 1),
            "upstream_ms": 99.0,
            "attempts": [AttemptRecord(1, "m", "p/u", "success", 200, 99.0, 0.0)],
            **kw,
        }
    )


@pytest.fixture
async def store(tmp_path: Path):
    store = SqliteCallStore(tmp_path / "calls.db")
    await store.open()
    yield store
    await store.close()


async def test_cache_fields_come_from_extra(store: SqliteCallStore) -> None:
    await store.write(
        [
            record(0, NOW - 60, extra={"cache": "hit", "saved_usd": "0.0025"}),
            record(1, NOW - 50, status="cache_hit", cost_usd="0", extra={"saved_usd": "0.001"}),
            record(2, NOW - 40, extra={"cache": {"status": "semantic-hit"}}),
            record(3, NOW - 30, extra={"cache": "miss"}),
            record(4, NOW - 20, status="error:UpstreamTimeout", cost_usd=None),
            record(5, NOW - 7200),  # outside 1h
        ]
    )
    s = await dashboard.summary(store, "1h", now=NOW)
    assert (s["requests"], s["errors"], s["cache_hits"]) == (5, 1, 3)
    assert s["cache_hit_rate"] == 0.6 and Decimal(s["saved_usd"]) == Decimal("0.0035")
    assert s["latency_p50_ms"] == 300.0 and s["latency_p95_ms"] == pytest.approx(480.0)
    assert Decimal(s["cost_usd"]) == Decimal("0.003")


async def test_buckets_and_a_sampled_window(store: SqliteCallStore, monkeypatch: pytest.MonkeyPatch) -> None:
    day = 86_400
    midnight = NOW // day * day
    await store.write(
        [
            record(0, midnight - 2 * day + 10, model="old"),  # two days ago
            record(1, midnight - 10, model="a"),  # yesterday, last minute
            record(2, midnight + 10, model="a"),
            record(3, midnight + 20, model="b", cost_usd="0.003"),
            record(4, midnight + 30, model="b", status="error:X", cost_usd=None),
        ]
    )
    hourly = await dashboard.series(store, "24h", now=NOW)
    hours = {b["start"]: b for b in hourly["buckets"] if b["requests"]}
    assert hours[midnight - 3600]["requests"] == 1
    assert hours[midnight]["requests"] == 3 and hours[midnight]["errors"] == 1
    assert hours[midnight]["cost_by_model"] == {"a": "0.001", "b": "0.003"}
    assert hourly["models"] == ["b", "a"]  # the costliest first

    monkeypatch.setattr(dashboard, "SCAN_LIMIT", 3)  # the scan reaches back to midnight only
    daily = await dashboard.series(store, "7d", now=NOW)
    assert daily["sampled"] and daily["sample_size"] == 3 and daily["sample_from"] == midnight + 10
    days = {b["start"]: b for b in daily["buckets"]}
    assert days[midnight]["requests"] == 3 and days[midnight]["cost_by_model"] == {"a": "0.001", "b": "0.003"}
    # Earlier days keep their exact totals (from totals(by="day")); the split the scan missed is OTHER.
    assert days[midnight - day]["requests"] == 1 and days[midnight - day]["cost_by_model"] == {OTHER: "0.001"}
    assert days[midnight - 2 * day]["cost_usd"] == "0.001"
    assert daily["models"][-1] == OTHER
    s = await dashboard.summary(store, "7d", now=NOW)
    assert s["requests"] == 5 and s["sampled"] and s["sample_size"] == 3


# --- the page, in headless Chromium -----------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install 'playwright>=1.45')"
    if missing is None and not os.access(CHROMIUM, os.X_OK):
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    if missing is not None:
        if os.environ.get("LLMRELAY_REQUIRE_SERVICES") == "1":
            pytest.fail(f"LLMRELAY_REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Any) -> tuple[Any, list[str]]:
    """A page that collects script errors and console errors (a CSP violation is one)."""
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    return page, problems


def unexpected(problems: list[str], status: int) -> list[str]:
    """The problems a page logged, less Chromium's note on each response with the expected status."""
    expected = f"Failed to load resource: the server responded with a status of {status} "
    return [p for p in problems if not p.startswith(expected)]


def test_the_page_shows_the_calls_and_a_drill_down(gateway: Server, calls: dict[str, str], browser) -> None:
    from playwright.sync_api import expect

    page, problems = open_page(browser)
    assert page.goto(gateway.url + "/dashboard").status == 401  # the sign-in form
    page.fill("#key", "sk-wrong")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not the master key")
    page.fill("#key", MASTER_KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/dashboard#24h$"))

    expect(page.locator("[data-kpi=requests] .value")).to_have_text("4")
    expect(page.locator("[data-kpi=requests] .sub")).to_have_text("1 answered by a fallback")
    expect(page.locator("[data-kpi=error-rate] .value")).to_have_text("25.0%")
    expect(page.locator("[data-kpi=cache-hit-rate] .value")).to_have_text("0.0%")
    expect(page.locator("[data-kpi=cost] .value")).to_have_text(re.compile(r"^\$0\.0+[1-9]"))
    models = page.locator("#models-table tbody tr")
    expect(models).to_have_count(3)
    expect(models.filter(has_text="gpt-4o-mini")).to_have_count(1)
    expect(models.filter(has_text="claude").locator("td").nth(1)).to_have_text("2")
    expect(page.locator("#keys-table")).to_contain_text(key_id(MASTER_KEY) or "")
    expect(page.locator("#users-table")).to_contain_text("alice")
    expect(page.locator("#cost-chart svg rect")).not_to_have_count(0)
    expect(page.locator("#requests-chart .legend")).to_contain_text("error rate")

    recent = page.locator("#recent-table tbody tr.call")
    expect(recent).to_have_count(4)
    error_row = page.locator(f'tr.call[data-id="{calls["error"]}"]')
    expect(error_row).to_contain_text("error:UpstreamUnavailable")
    expect(error_row).to_contain_text("broken")
    expect(page.locator(f'tr.call[data-id="{calls["fallback"]}"]')).to_contain_text("flaky→ claude")

    page.locator(f'tr.call[data-id="{calls["fallback"]}"]').click()
    drill = page.locator("#drill")
    expect(drill.locator("h3")).to_have_text("Attempts (3)")
    attempts = drill.locator("#attempts-table tbody tr")
    expect(attempts).to_have_count(3)
    expect(attempts.nth(0)).to_contain_text("oa/fault-500-dashboard")
    expect(attempts.nth(0)).to_contain_text("error:UpstreamUnavailable")
    expect(attempts.nth(0).locator("td").nth(4)).to_have_text("500")
    expect(attempts.nth(2)).to_contain_text("an/claude-haiku-4-5")
    expect(attempts.nth(2)).to_contain_text("success")
    expect(drill).to_contain_text("claude (an/claude-haiku-4-5)")

    page.locator(f'tr.call[data-id="{calls["error"]}"]').click()
    expect(drill.locator("dl")).to_contain_text("error:UpstreamUnavailable")
    expect(drill.locator("#attempts-table tbody tr")).to_have_count(2)

    page.click("button[data-window='7d']")
    expect(page).to_have_url(re.compile(r"#7d$"))
    expect(page.locator("button[data-window='7d']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-kpi=requests] .value")).to_have_text("4")
    page.click("button[data-window='1h']")
    expect(page.locator("[data-kpi=requests] .value")).to_have_text("4")
    page.locator(f'tr.call[data-id="{calls["fallback"]}"]').click()
    expect(drill.locator("#attempts-table tbody tr")).to_have_count(3)

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the full-page shot
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert unexpected(problems, 401) == []  # no script error, no CSP violation; the 401s: the sign-in

    page.click("#logout button")  # signing out brings back the form
    expect(page.locator("#key")).to_be_visible()


def test_the_page_says_when_the_call_log_is_off(open_gateway: Server, browser) -> None:
    from playwright.sync_api import expect

    page, problems = open_page(browser)
    assert page.goto(open_gateway.url + "/dashboard").status == 200  # no master key: no sign-in
    expect(page.locator("#notice")).to_contain_text("The call log is off")
    expect(page.locator("#notice")).to_contain_text("calllog.enabled")
    expect(page.locator("#content")).to_be_hidden()
    expect(page.locator("#logout")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-calllog-off.png"))
    assert unexpected(problems, 404) == []  # the API's 404s (call log off), nothing else
