"""The admin dashboard: one self-contained page (``dashboard.html``: inline CSS, JS and SVG charts,
nothing fetched from elsewhere) and the small JSON API it reads, all under ``/dashboard``.

It reads only the call log's store (``recent``, ``get``, ``totals``); with the call log off every
API route answers 404 with the code ``calllog_off`` and the page says so.

Auth, when a master key is configured: the API takes it as ``Authorization: Bearer`` (or
``x-api-key``), like every other admin route. A browser signs in once through a small form
(``POST /dashboard/login``), which sets an HttpOnly, ``SameSite=Strict`` cookie holding an expiry
and an HMAC of it under the master key: not the key itself, useless elsewhere, dead after
``SESSION_S`` or when the key changes. No ``?key=`` parameter: a key in a URL ends up in browser
history and proxy logs. Without a master key the dashboard is open, like the rest of the gateway.
A virtual API key may read the JSON API too, and sees only its own calls (``keys/logs.py``).

Numbers: counts, errors, tokens and cost come from ``totals()`` and are exact over the window. What
``totals()`` cannot give (overall latency percentiles, cache hits and savings from ``extra``, hourly
and five-minute buckets, the per-model split of each day) comes from one ``recent()`` scan of at most
``SCAN_LIMIT`` calls; when a window holds more, the answer says ``sampled`` and from when the scan
covers, and the page shows it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from ..asgi import Receive, Scope, Send, read_body, request_headers, send_json_bytes
from ..db import PostgresUnavailable
from ..errors import AuthenticationError, InvalidRequestError, NotFoundError, StoreUnavailable
from ..keys.logs import KeyScopedStore
from ..keys.model import VirtualKey
from ..observability.calllog import UNAVAILABLE
from ..observability.records import CallRecord, CallStore, status_filter
from ..observability.sqlite_store import percentile
from .http import presented_key

if TYPE_CHECKING:
    from ..relay import Relay

Authenticate = Callable[[dict[str, str]], Awaitable[VirtualKey | None]]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

# window -> (span, bucket) in seconds
WINDOWS: dict[str, tuple[int, int]] = {"1h": (3_600, 300), "24h": (86_400, 3_600), "7d": (7 * 86_400, 86_400)}
DEFAULT_WINDOW = "24h"
SCAN_LIMIT = 10_000  # calls read per recent() scan (each a full record): bounds memory and time
SESSION_S = 12 * 3_600
COOKIE = "llmrelay_dashboard"
NOT_ERRORS = ("success", "cache_hit")  # as the stores count errors
CALLLOG_OFF = (
    "The call log is off in this gateway's config (calllog.enabled: false), and the dashboard reads "
    "only the call log: turn it on to see calls here."
)
OTHER = "(older calls, not broken down)"


# --- what the API computes (plain functions over a store, so tests can call them directly) ----------


def window_bounds(window: str, now: float | None = None) -> tuple[float, float, int]:
    """(since, now, bucket seconds) of a window name; ``InvalidRequestError`` for an unknown one."""
    if window not in WINDOWS:
        raise InvalidRequestError(
            f"since must be one of {', '.join(WINDOWS)}; got {window!r}.", param="since"
        )
    span, step = WINDOWS[window]
    now = time.time() if now is None else now
    return now - span, now, step


async def scan(store: CallStore, since: float) -> tuple[list[CallRecord], bool]:
    """The window's calls, newest first, at most ``SCAN_LIMIT``; and whether that was all of them."""
    records = await store.recent(limit=SCAN_LIMIT + 1, since=since)
    return records[:SCAN_LIMIT], len(records) <= SCAN_LIMIT


def cache_hit(record: CallRecord) -> bool:
    cache = record.extra.get("cache") if record.extra else None
    if isinstance(cache, dict):  # a stage that records more than the verdict
        cache = cache.get("status")
    return record.status == "cache_hit" or cache in ("hit", "semantic-hit")


def saved_usd(record: CallRecord) -> Decimal:
    value = record.extra.get("saved_usd") if record.extra else None
    if value is None:
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _with_rate(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "error_rate": _rate(row["errors"], row["requests"])}


async def summary(store: CallStore, window: str, now: float | None = None) -> dict[str, Any]:
    since, now, _ = window_bounds(window, now)
    records, complete = await scan(store, since)  # first: the totals read after it hold all of it
    by_model = await store.totals(by="model", since=since)
    requests = sum(r["requests"] for r in by_model)
    errors = sum(r["errors"] for r in by_model)
    cost = sum((Decimal(r["cost_usd"]) for r in by_model), Decimal(0))
    latencies = sorted(r.latency_ms for r in records)
    hits = sum(1 for r in records if cache_hit(r))
    return {
        "window": window,
        "since": since,
        "now": now,
        "requests": requests,
        "errors": errors,
        "error_rate": _rate(errors, requests),
        "cost_usd": str(cost),
        "prompt_tokens": sum(r["prompt_tokens"] for r in by_model),
        "completion_tokens": sum(r["completion_tokens"] for r in by_model),
        "cache_hits": hits,
        "cache_hit_rate": _rate(hits, len(records)),
        "saved_usd": str(sum((saved_usd(r) for r in records), Decimal(0))),
        "fallbacks": sum(1 for r in records if r.fell_back),
        "latency_p50_ms": percentile(latencies, 0.50) if latencies else None,
        "latency_p95_ms": percentile(latencies, 0.95) if latencies else None,
        "by_model": [_with_rate(r) for r in by_model],
        **_sample(records, complete),
    }


def _sample(records: list[CallRecord], complete: bool) -> dict[str, Any]:
    """How much of the window the scanned figures cover."""
    return {
        "sampled": not complete,
        "sample_size": len(records),
        "sample_from": None if complete or not records else records[-1].started_at,
    }


async def series(store: CallStore, window: str, now: float | None = None) -> dict[str, Any]:
    """Requests, errors and cost by model per bucket: five minutes over 1h, an hour over 24h, a UTC
    day over 7d. Days take their counts and cost from ``totals(by="day")`` (exact); the scanned
    calls split each day's cost by model, and what the scan did not reach is ``OTHER``."""
    since, now, step = window_bounds(window, now)
    records, complete = await scan(store, since)
    first = int(since // step) * step
    starts = list(range(first, int(now // step) * step + 1, step))
    index = {s: i for i, s in enumerate(starts)}
    requests = [0] * len(starts)
    errors = [0] * len(starts)
    cost = [Decimal(0)] * len(starts)
    by_model: dict[str, list[Decimal]] = {}
    for r in records:
        i = index.get(int(r.started_at // step) * step)
        if i is None:
            continue
        requests[i] += 1
        errors[i] += r.status not in NOT_ERRORS
        if r.cost_usd is not None:
            c = Decimal(r.cost_usd)
            cost[i] += c
            by_model.setdefault(r.model or "(none)", [Decimal(0)] * len(starts))[i] += c
    if step == 86_400:  # exact day totals; the scan only splits them by model
        for row in await store.totals(by="day", since=since):
            day = datetime.strptime(str(row["group"])[:10], "%Y-%m-%d").replace(tzinfo=UTC)
            i = index.get(int(day.timestamp()))
            if i is None:
                continue
            requests[i], errors[i], total = row["requests"], row["errors"], Decimal(row["cost_usd"])
            rest = total - cost[i]
            if rest > 0:
                by_model.setdefault(OTHER, [Decimal(0)] * len(starts))[i] += rest
            cost[i] = total
    models = sorted(by_model, key=lambda m: (m == OTHER, -sum(by_model[m]), m))
    return {
        "window": window,
        "since": since,
        "now": now,
        "step_s": step,
        "models": models,
        "buckets": [
            {
                "start": s,
                "requests": requests[i],
                "errors": errors[i],
                "error_rate": _rate(errors[i], requests[i]),
                "cost_usd": str(cost[i]),
                "cost_by_model": {m: str(by_model[m][i]) for m in models if by_model[m][i]},
            }
            for i, s in enumerate(starts)
        ],
        **_sample(records, complete),
    }


async def top(store: CallStore, window: str, limit: int = 10, now: float | None = None) -> dict[str, Any]:
    """The keys and end users that cost the most over the window (ties: the busiest first)."""
    since, now, _ = window_bounds(window, now)
    keys = await store.totals(by="key", since=since)
    users = await store.totals(by="user", since=since)
    return {
        "window": window,
        "since": since,
        "now": now,
        "keys": [_with_rate(r) for r in keys[:limit]],
        "users": [_with_rate(r) for r in users[:limit]],
    }


def call_line(r: CallRecord) -> dict[str, Any]:
    """One call of the recent list: no bodies, no attempts (``/dashboard/api/call`` has them)."""
    return {
        "id": r.id,
        "started_at": r.started_at,
        "api_format": r.api_format,
        "api_key_id": r.api_key_id,
        "end_user": r.end_user,
        "requested_model": r.requested_model,
        "model": r.model,
        "provider": r.provider,
        "stream": r.stream,
        "status": r.status,
        "error_message": r.error_message,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cost_usd": r.cost_usd,
        "latency_ms": r.latency_ms,
        "attempts": len(r.attempts),
        "fallback": r.fell_back,
        "cache_hit": cache_hit(r),
    }


# --- HTTP -------------------------------------------------------------------------------------------


def _load_page() -> tuple[str, str]:
    """The page and its Content-Security-Policy: only its own inline script and style may run."""
    page = files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")
    return page, _csp(page)


def _csp(page: str) -> str:
    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in found
        )

    scripts = hashes("script") or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {hashes('style')};"
        " connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none';"
        " base-uri 'none'"
    )


_LOGIN_STYLE = """
body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: #f6f7f9;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330 }
form { background: #fff; border: 1px solid #e4e7ec; border-radius: 10px; padding: 24px 28px; width: 340px }
h1 { font-size: 17px; margin: 0 0 4px } p { color: #667085; margin: 0 0 16px }
input { width: 100%; box-sizing: border-box; padding: 8px 10px; border: 1px solid #d0d5dd; border-radius: 6px;
  font: inherit; margin: 4px 0 14px }
button { width: 100%; padding: 8px; border: 0; border-radius: 6px; background: #3559e0; color: #fff;
  font: inherit; font-weight: 600; cursor: pointer }
.error { color: #b42318; background: #fef3f2; border: 1px solid #fecdca; border-radius: 6px; padding: 6px 10px }
"""

_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>llmrelay · sign in</title><link rel="icon" href="data:,"><style>{style}</style></head>
<body><form method="post" action="{action}">
<h1>llmrelay dashboard</h1><p>Sign in with the gateway's master key.</p>{error}
<label for="key">Master key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form></body></html>
"""


class Dashboard:
    """The ``/dashboard`` routes of one gateway (see ``routes``)."""

    def __init__(self, relay: Relay, authenticate: Authenticate | None = None) -> None:
        self.relay = relay
        self._master_key = relay.settings.server.master_key
        self._authenticate = authenticate
        self._page: tuple[str, str] | None = None

    def routes(self) -> dict[str, tuple[str, Handler]]:
        return {
            "/dashboard": ("GET", self._dashboard),
            "/dashboard/login": ("POST", self._login),
            "/dashboard/logout": ("POST", self._logout),
            "/dashboard/api/summary": ("GET", _reading(self._summary)),
            "/dashboard/api/series": ("GET", _reading(self._series)),
            "/dashboard/api/top": ("GET", _reading(self._top)),
            "/dashboard/api/recent": ("GET", _reading(self._recent)),
            "/dashboard/api/call": ("GET", _reading(self._call)),
        }

    # --- auth ---------------------------------------------------------------------------------

    def _session(self, expires: int) -> str:
        assert self._master_key is not None
        mac = hmac.new(
            self._master_key.encode(), f"llmrelay-dashboard:{expires}".encode(), hashlib.sha256
        ).hexdigest()
        return f"{expires}.{mac}"

    def _signed_in(self, headers: dict[str, str]) -> bool:
        if self._master_key is None:
            return True
        presented = presented_key(headers)
        if presented is not None:
            return hmac.compare_digest(presented.encode(), self._master_key.encode())
        token = _cookies(headers.get("cookie", "")).get(COOKIE, "")
        expires, _, _ = token.partition(".")
        # A forged cookie may hold anything: ASCII digits of a plausible length, or not signed in.
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12) or int(expires) < time.time():
            return False
        return hmac.compare_digest(token.encode(), self._session(int(expires)).encode())

    async def _require(self, scope: Scope) -> CallStore:
        """The store the caller may read: all of it for the master key (or a signed-in browser),
        only its own calls for a virtual key."""
        headers = request_headers(scope)
        if self._signed_in(headers):
            return self._store()
        if self._authenticate is not None and presented_key(headers):
            try:
                key = await self._authenticate(headers)
            except AuthenticationError:
                key = None
            if key is not None:
                return KeyScopedStore(self._store(), key.id)
        raise AuthenticationError(
            "The dashboard API needs the master key or an API key: send 'Authorization: Bearer <key>', "
            "or sign in at /dashboard."
        )

    def _store(self) -> CallStore:
        calllog = self.relay.calllog
        if calllog is None:
            raise NotFoundError(CALLLOG_OFF, code="calllog_off")
        return calllog.store

    # --- page and sign-in ---------------------------------------------------------------------

    async def _dashboard(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._signed_in(request_headers(scope)):
            await self._login_form(scope, send, 401)
            return
        if self._page is None:
            self._page = _load_page()
        page, csp = self._page
        await _send_html(send, 200, page, csp)

    async def _login_form(self, scope: Scope, send: Send, status: int, error: str = "") -> None:
        action = html.escape(scope.get("root_path", "") + "/dashboard/login")
        body = _LOGIN.format(
            style=_LOGIN_STYLE,
            action=action,
            error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
        )
        await _send_html(send, status, body, _csp(body))

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        form = parse_qs((await read_body(receive, headers, 4_096)).decode("utf-8", "replace"))
        if self._master_key is None:
            await _redirect(scope, send)
            return
        key = (form.get("key") or [""])[0]
        if not hmac.compare_digest(key.encode(), self._master_key.encode()):
            await self._login_form(scope, send, 401, "That is not the master key.")
            return
        expires = int(time.time()) + SESSION_S
        await _redirect(scope, send, _cookie(scope, self._session(expires), SESSION_S))

    async def _logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _redirect(scope, send, _cookie(scope, "", 0))

    # --- JSON API -----------------------------------------------------------------------------

    async def _summary(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = await self._require(scope)
        body = await summary(store, _param(scope, "since", DEFAULT_WINDOW))
        scoped = isinstance(store, KeyScopedStore)
        body["auth"] = "open" if self._master_key is None else "api_key" if scoped else "master_key"
        await _send_json(send, body)

    async def _series(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = await self._require(scope)
        await _send_json(send, await series(store, _param(scope, "since", DEFAULT_WINDOW)))

    async def _top(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = await self._require(scope)
        window = _param(scope, "since", DEFAULT_WINDOW)
        await _send_json(send, await top(store, window, _int_param(scope, "limit", 10, 100)))

    async def _recent(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The newest calls (``limit``, at most 200), optionally within a window (``since``) and of
        one ``model``, ``key`` (key id) or ``status`` ("error" matches every error)."""
        store = await self._require(scope)
        window = _param(scope, "since", "")
        records = await store.recent(
            limit=_int_param(scope, "limit", 50, 200),
            since=window_bounds(window)[0] if window else None,
            model=_param(scope, "model", "") or None,
            api_key_id=_param(scope, "key", "") or None,
            status=_status_param(scope),
        )
        await _send_json(send, {"calls": [call_line(r) for r in records]})

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One call as recorded, with its attempts (and its bodies, if the body policy kept them)."""
        store = await self._require(scope)
        call_id = _param(scope, "id", "")
        if not call_id:
            raise InvalidRequestError("Which call? Pass ?id=req_...", param="id")
        record = await store.get(call_id)
        if record is None:
            raise NotFoundError(f"No call {call_id!r} in the call log.", code="call_not_found")
        await _send_json(send, {**record.to_dict(), "cache_hit": cache_hit(record)})


# --- small HTTP helpers ---------------------------------------------------------------------------

_NO_STORE = [(b"cache-control", b"no-store")]


def _param(scope: Scope, name: str, default: str) -> str:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[-1] if values else default


def _reading(handler: Handler) -> Handler:
    """``handler`` with its store's database going away mid-read answered as a 503, not a 500."""

    @functools.wraps(handler)
    async def read(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await handler(scope, receive, send)
        except PostgresUnavailable as exc:
            raise StoreUnavailable(f"{UNAVAILABLE} ({exc})", code="calllog_unavailable") from exc

    return read


def _status_param(scope: Scope) -> str | None:
    raw = _param(scope, "status", "")
    try:
        return status_filter(raw) if raw else None
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="status") from None


def _int_param(scope: Scope, name: str, default: int, most: int) -> int:
    raw = _param(scope, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a whole number; got {raw!r}.", param=name) from None
    return max(1, min(value, most))


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return {name: value for name, _, value in pairs if name}


def _cookie(scope: Scope, value: str, max_age: int) -> tuple[bytes, bytes]:
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    path = scope.get("root_path", "") + "/dashboard"
    return (
        b"set-cookie",
        f"{COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}".encode(),
    )


async def _redirect(scope: Scope, send: Send, *headers: tuple[bytes, bytes]) -> None:
    location = (scope.get("root_path", "") + "/dashboard").encode()
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location), (b"content-length", b"0"), *_NO_STORE, *headers],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _send_json(send: Send, payload: Any) -> None:
    body = orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS)
    await send_json_bytes(send, 200, body, _NO_STORE)


async def _send_html(send: Send, status: int, page: str, csp: str) -> None:
    body = page.encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        *_NO_STORE,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["Dashboard", "call_line", "series", "summary", "top", "window_bounds"]
