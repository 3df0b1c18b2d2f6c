"""``/admin/keys``: the admin API of virtual keys (master key only), OpenAI-style JSON.

POST   /admin/keys                 create: {owner, models, rpm, tpm, budget_daily_usd,
                                   budget_monthly_usd, priority, metadata, guardrails} -> 201, with
                                   "key" (the secret, shown this once); guardrails: a policy name
                                   under guardrail_policies, or inline overrides
GET    /admin/keys[?all=true]      list (active keys; all=true adds revoked ones)
GET    /admin/keys/{id}            one key, with its spend today and this month (UTC)
POST   /admin/keys/{id}/rotate     a new secret, same id: the old secret stops working
POST   /admin/keys/{id}/revoke     (or DELETE /admin/keys/{id}) revoke
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from pydantic import ValidationError

from ..asgi import Receive, Scope, Send, read_body, request_headers, send_json
from ..config import KeyFields
from ..errors import InvalidRequestError, MethodNotAllowedError, NotFoundError, invalid_request_from
from ..guardrails.policy import problem
from .spend import from_pico, periods
from .store import KeyRecord

if TYPE_CHECKING:
    from ..relay import Relay

PREFIX = "/admin/keys"
_BODY_LIMIT = 64 * 1024


class KeysAdmin:
    def __init__(self, relay: Relay, require_admin: Callable[[dict[str, str]], Awaitable[object]]) -> None:
        self.relay = relay
        self.require_admin = require_admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        await self.require_admin(headers)
        method = scope["method"]
        parts = scope["path"][len(PREFIX) :].strip("/").split("/")
        key_id, action = (parts + [""])[:2] if parts != [""] else ("", "")
        if not key_id:
            if method == "GET":
                return await self._list(scope, send)
            if method == "POST":
                return await self._create(receive, headers, send)
            raise MethodNotAllowedError(f"{method} is not allowed on {PREFIX}; use GET or POST.")
        routes: dict[tuple[str, str], Callable[[str, Send], Awaitable[None]]] = {
            ("GET", ""): self._get,
            ("DELETE", ""): self._revoke,
            ("POST", "revoke"): self._revoke,
            ("POST", "rotate"): self._rotate,
        }
        handler = routes.get((method, action))
        allowed = [m for m, a in routes if a == action] if handler is None else []
        if allowed and len(parts) <= 2:  # a route, not with this method
            raise MethodNotAllowedError(
                f"{method} is not allowed on {scope['path']}; use {' or '.join(allowed)}."
            )
        if handler is None or len(parts) > 2:
            raise NotFoundError(
                f"{method} {scope['path']} is not an admin key route: GET or DELETE {PREFIX}/<id>, "
                f"POST {PREFIX}/<id>/rotate or /revoke."
            )
        await handler(key_id, send)

    async def _create(self, receive: Receive, headers: dict[str, str], send: Send) -> None:
        body = await read_body(receive, headers, _BODY_LIMIT)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequestError("The body is not valid JSON.") from None
        if not isinstance(payload, dict):
            raise InvalidRequestError('The body must be a JSON object, e.g. {"owner": "team-search"}.')
        try:
            fields = KeyFields.model_validate(payload)
        except ValidationError as exc:
            raise invalid_request_from(exc) from None
        known = {entry.name for entry in self.relay.catalog}
        unknown = [m for m in fields.models if m not in known]
        if unknown:
            raise InvalidRequestError(
                f"Unknown model(s) {', '.join(map(repr, unknown))}: GET /v1/models lists the models served.",
                param="models",
            )
        if fields.guardrails is not None:
            found = problem(self.relay.settings, fields.guardrails)
            if found is not None:
                raise InvalidRequestError(f"Invalid guardrails: {found}.", param="guardrails")
        record, secret = await self.relay.keys.create(fields)
        await send_json(send, 201, {**record.public(), "key": secret})

    async def _list(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        include = (query.get("all") or ["false"])[-1].lower() in ("1", "true", "yes")
        store = await self.relay.keys.opened_store()
        records = await store.list_keys(include_revoked=include)
        await send_json(send, 200, {"object": "list", "data": [r.public() for r in records]})

    async def _get(self, key_id: str, send: Send) -> None:
        store = await self.relay.keys.opened_store()
        record = _found(await store.get(key_id), key_id)
        await send_json(send, 200, {**record.public(), "spend": await self._spend(key_id)})

    async def _rotate(self, key_id: str, send: Send) -> None:
        rotated = await self.relay.keys.rotate(key_id)
        if rotated is None:
            record = _found(await self.relay.keys.store.get(key_id), key_id)  # opened by rotate
            raise InvalidRequestError(f"Key {record.key.id} is revoked; a revoked key cannot be rotated.")
        record, secret = rotated
        await send_json(send, 200, {**record.public(), "key": secret})

    async def _revoke(self, key_id: str, send: Send) -> None:
        record = _found(await self.relay.keys.revoke(key_id), key_id)
        await send_json(send, 200, record.public())

    async def _spend(self, key_id: str) -> dict[str, Any]:
        day, month = periods()
        ledger = self.relay.keys.ledger
        scope = f"key:{key_id}"
        if ledger is not None:
            daily, monthly = await ledger.spent(scope, day), await ledger.spent(scope, month)
        else:  # no budget stage here: what the store has
            saved = await self.relay.keys.store.spend([day, month])
            daily, monthly = (from_pico(saved.get((scope, p), 0)) for p in (day, month))
        return {"day": day[2:], "daily_usd": str(daily), "month": month[2:], "monthly_usd": str(monthly)}


def _found(record: KeyRecord | None, key_id: str) -> KeyRecord:
    if record is None:
        raise NotFoundError(f"No API key with id {key_id!r}.", code="key_not_found")
    return record
