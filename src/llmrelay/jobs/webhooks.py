"""Webhook deliveries: signing, the address check, and one delivery attempt.

Each delivery is a POST of the event's JSON body with these headers::

    x-llmrelay-timestamp: 1717171717                  (unix seconds, when this attempt was signed)
    x-llmrelay-signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    idempotency-key: <the job's idempotency key>     (the same on every attempt and every worker)
    x-llmrelay-job-id, x-llmrelay-delivery-attempt

Secrets: one per API key, ``whsec_`` + HMAC-SHA256(root, key id), so the store keeps none and every
replica that shares the root signs alike; a gateway without keys signs with the root itself.

Targets: the host is resolved and every address it resolves to must be public, unless its range
(loopback, private, link-local) is allowed in ``jobs.webhooks.allow``. The check runs when a job is
submitted (a 400 at once) and again inside the connection's resolver at every attempt, on the very
addresses the connection then uses: a name that resolved to a public address at submission and to an
internal one later (DNS rebinding) is refused. Redirects are not followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import random
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from ..errors import InvalidRequestError

SIGNATURE = "x-llmrelay-signature"
TIMESTAMP = "x-llmrelay-timestamp"
IDEMPOTENCY = "idempotency-key"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- secrets and signatures ------------------------------------------------------------------------


def root_secret(configured: str | None, directory: Path) -> str:
    """The configured root, else one generated once into ``directory/webhook.secret`` (mode 0600;
    several processes starting together agree on the first one written)."""
    if configured:
        return configured
    path = Path(directory).expanduser() / "webhook.secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("whsec_" + os.urandom(32).hex())
    for _ in range(50):  # another process may be between its create and its write
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty")


def key_secret(root: str, owner_key_id: str | None) -> str:
    """The signing secret of a key's webhooks (the root itself when there are no keys)."""
    if owner_key_id is None:
        return root
    return "whsec_" + hmac.new(root.encode(), owner_key_id.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# -- where a webhook may go ------------------------------------------------------------------------


def address_range(address: IpAddress) -> str | None:
    """None for a public address, else the name ``jobs.webhooks.allow`` knows it by."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:  # 0.0.0.0 and :: reach this host
        return "loopback"
    if address.is_link_local:  # cloud metadata services live here
        return "link_local"
    if not address.is_global or address.is_multicast:
        return "private"
    return None


def check_address(address: str, allow: tuple[str, ...]) -> None:
    refused = address_range(ipaddress.ip_address(address.split("%")[0]))
    if refused is not None and refused not in allow:
        raise WebhookRefused(
            f"The webhook target resolves to a {refused.replace('_', '-')} address, which this gateway "
            f"does not deliver to (jobs.webhooks.allow)."
        )


class WebhookRefused(InvalidRequestError):
    def __init__(self, message: str) -> None:
        super().__init__(message, param="webhook.url", code="webhook_target_refused")


def parse_target(url: Any) -> tuple[str, int]:
    """Host and port of a webhook URL, or a 400 naming what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("webhook.url must be an http(s) URL.", param="webhook.url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequestError("webhook.url is not a valid URL.", param="webhook.url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError("webhook.url must be an http(s) URL with a host.", param="webhook.url")
    if parts.username or parts.password:
        raise InvalidRequestError("webhook.url must not carry credentials.", param="webhook.url")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_target(url: str, allow: tuple[str, ...]) -> None:
    """Resolve the URL's host and refuse it unless every address is allowed (submission time)."""
    host, port = parse_target(url)
    for info in await _GuardedResolver(allow).resolve(host, port, socket.AF_UNSPEC):
        check_address(info["host"], allow)


class _GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses the host if any address is not allowed:
    the connection can only use addresses that passed."""

    def __init__(self, allow: tuple[str, ...]) -> None:
        self.allow = allow
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            try:
                found = await self._inner.resolve(host, port, family)
            except OSError as exc:
                raise InvalidRequestError(
                    f"The webhook host {host!r} does not resolve: {exc.strerror or exc}.", param="webhook.url"
                ) from None
        else:
            found = [{"hostname": host, "host": host, "port": port, "family": family, "proto": 0, "flags": 0}]
        for info in found:
            check_address(info["host"], self.allow)
        return found

    async def close(self) -> None:
        await self._inner.close()


# -- delivering ------------------------------------------------------------------------------------


class Delivery:
    """What one attempt did: ``status`` is the receiver's HTTP status, or None when none came."""

    __slots__ = ("error", "status")

    def __init__(self, status: int | None, error: str | None) -> None:
        self.status = status
        self.error = error

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    """POSTs signed bodies through a session whose resolver checks every address."""

    def __init__(self, allow: tuple[str, ...], timeout_s: float) -> None:
        self.allow = allow
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=_GuardedResolver(self.allow), use_dns_cache=False),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
        return self._session

    async def post(self, url: str, body: bytes, secret: str, headers: dict[str, str]) -> Delivery:
        host, _ = parse_target(url)
        try:
            with contextlib.suppress(ValueError):  # an address literal: aiohttp skips the resolver
                check_address(str(ipaddress.ip_address(host.strip("[]"))), self.allow)
            timestamp = str(int(time.time()))
            signed = {
                "content-type": "application/json",
                "user-agent": "llmrelay-webhooks",
                TIMESTAMP: timestamp,
                SIGNATURE: sign(secret, timestamp, body),
                **headers,
            }
            async with self._client().post(url, data=body, headers=signed, allow_redirects=False) as response:
                await response.read()
                return Delivery(response.status, None if response.status < 300 else f"HTTP {response.status}")
        except InvalidRequestError as exc:  # refused: its address is (now) not allowed
            return Delivery(None, exc.message)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Delivery(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential, with jitter in [half, all] of the step: receivers coming back up are not hit by
    every waiting delivery at the same instant, and no wait collapses to nothing."""
    return min(max_s, base_s * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.0)


__all__ = [
    "IDEMPOTENCY",
    "SIGNATURE",
    "TIMESTAMP",
    "Delivery",
    "Sender",
    "WebhookRefused",
    "address_range",
    "backoff_s",
    "check_target",
    "key_secret",
    "parse_target",
    "root_secret",
    "sign",
]
