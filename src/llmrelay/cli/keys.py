"""``llmrelay keys create|list|rotate|revoke``: virtual API keys, straight in the key store (the
call log's database, found through ``--config`` like ``llmrelay logs``).

A running gateway notices a rotation or revocation made here within ``server.key_cache_ttl_s``
(the admin API of the gateway itself acts at once on that gateway).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from ..config import KeyFields, Settings
from ..errors import ConfigError, first_problem
from ..guardrails.policy import label, problem
from ..keys.service import KeyService
from ..keys.store import KeyRecord, open_key_store
from ..tables import table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create, list, rotate and revoke virtual API keys")
    common = argparse.ArgumentParser(add_help=False)  # accepted before or after the action
    # SUPPRESS: an option not given after the action keeps the value given before it.
    common.add_argument("--config", default=argparse.SUPPRESS, help="the gateway's config file")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    actions = p.add_subparsers(dest="action", required=True)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=text, parents=[common])

    create = action("create", "a new key; its secret is printed this once")
    create.add_argument("--owner", required=True, help="who the key is for (a team, an app)")
    create.add_argument("--models", default="", help="comma-separated models it may use (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--budget-daily", help="USD per UTC day, e.g. 5.00")
    create.add_argument("--budget-monthly", help="USD per UTC month")
    create.add_argument("--priority", type=int, default=0, help="default priority (higher first)")
    create.add_argument("--meta", action="append", default=[], metavar="K=V", help="metadata (repeatable)")
    create.add_argument(
        "--guardrails",
        metavar="POLICY",
        help="a policy name under guardrail_policies, or inline JSON overrides, e.g. "
        '\'{"injection": {"mode": "block"}}\' (it only tightens a route\'s policy)',
    )
    listing = action("list", "the keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    for name, text in (
        ("rotate", "a new secret for a key (the old one stops working)"),
        ("revoke", "revoke a key"),
    ):
        action(name, text).add_argument("id", help="the key's id (key_...)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    settings = Settings.load(args.config)
    store = open_key_store(settings.calllog.store, Path(settings.calllog.directory).expanduser())
    service = KeyService(settings, store)
    await store.open()
    try:
        if args.action == "create":
            fields = _fields(args)
            unknown = [
                m for m in fields.models if settings.models and m not in {x.name for x in settings.models}
            ]
            if unknown:
                raise ConfigError(f"keys create: unknown model(s) in this config: {', '.join(unknown)}")
            if fields.guardrails is not None and (found := problem(settings, fields.guardrails)):
                raise ConfigError(f"keys create: --guardrails: {found}")
            record, secret = await service.create(fields)
            _show([record], args.json, secret=secret)
            if not args.json:
                print(f"\nsecret (shown this once, store it now): {secret}")
        elif args.action == "list":
            _show(await store.list_keys(include_revoked=args.all), args.json)
        elif args.action == "rotate":
            rotated = await service.rotate(args.id)
            if rotated is None:
                raise SystemExit(f"llmrelay: no active key {args.id!r}")
            _show([rotated[0]], args.json, secret=rotated[1])
            if not args.json:
                print(f"\nnew secret (shown this once): {rotated[1]}")
        else:
            record = await service.revoke(args.id)
            if record is None:
                raise SystemExit(f"llmrelay: no key {args.id!r}")
            _show([record], args.json)
    finally:
        await store.close()
    return 0


def _fields(args: argparse.Namespace) -> KeyFields:
    metadata = {}
    for item in args.meta:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"llmrelay: --meta takes K=V, not {item!r}")
        metadata[name] = value
    try:
        return KeyFields(
            owner=args.owner,
            models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
            rpm=args.rpm,
            tpm=args.tpm,
            budget_daily_usd=args.budget_daily,
            budget_monthly_usd=args.budget_monthly,
            priority=args.priority,
            metadata=metadata,
            guardrails=_policy(args.guardrails),
        )
    except ValidationError as exc:
        raise ConfigError(f"keys create: {first_problem(exc)}") from None


def _policy(text: str | None) -> Any:
    """``--guardrails``: inline JSON overrides when it is an object, else a policy's name."""
    if text is None or not text.lstrip().startswith("{"):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"keys create: --guardrails is not valid JSON: {exc}") from None


def _show(records: list[KeyRecord], as_json: bool, secret: str | None = None) -> None:
    if as_json:
        for r in records:
            extra: dict[str, Any] = {"key": secret} if secret else {}
            print(orjson.dumps({**r.public(), **extra}).decode())
        return
    rows = [
        [
            r.key.id,
            r.key.owner,
            r.hint,
            ",".join(r.key.models) or "(all)",
            f"{r.key.limits.rpm or '-'}/{r.key.limits.tpm or '-'}",
            f"{_usd(r.key.budget_daily_usd)}/{_usd(r.key.budget_monthly_usd)}",
            "-" if r.key.guardrails is None else label(r.key.guardrails),
            "revoked " + _when(r.revoked_at) if r.revoked_at else "active",
        ]
        for r in records
    ]
    print(
        table(rows, ["id", "owner", "secret", "models", "rpm/tpm", "budget day/month", "guardrails", "state"])
        if rows
        else "(no keys)"
    )


def _usd(value: object) -> str:
    return "-" if value is None else f"${value}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
