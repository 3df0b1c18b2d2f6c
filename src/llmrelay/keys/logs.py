"""What a virtual key may read of the call log: its own calls, and nothing else.

``KeyScopedStore`` wraps a ``CallStore`` for the dashboard's API when a virtual key (not the master
key) is the caller: every read is narrowed to the key's id, whatever filter the caller asks for, and
a call of another key is "not found" (not "forbidden": a key learns nothing about others' ids).
"""

from __future__ import annotations

from typing import Any

from ..observability.records import CallRecord, CallStore


class KeyScopedStore:
    """The reads of ``CallStore`` (``recent``, ``get``, ``totals``), limited to one key's calls."""

    def __init__(self, store: CallStore, api_key_id: str) -> None:
        self.store = store
        self.api_key_id = api_key_id

    async def recent(
        self,
        *,
        limit: int = 50,
        since: float | None = None,
        model: str | None = None,
        api_key_id: str | None = None,
        status: str | None = None,
    ) -> list[CallRecord]:
        if api_key_id is not None and api_key_id != self.api_key_id:
            return []  # asked for another key's calls: there are none it may see
        return await self.store.recent(
            limit=limit, since=since, model=model, api_key_id=self.api_key_id, status=status
        )

    async def get(self, call_id: str) -> CallRecord | None:
        record = await self.store.get(call_id)
        return record if record is not None and record.api_key_id == self.api_key_id else None

    async def totals(
        self, *, by: str, since: float | None = None, api_key_id: str | None = None
    ) -> list[dict[str, Any]]:
        if api_key_id is not None and api_key_id != self.api_key_id:
            return []
        return await self.store.totals(by=by, since=since, api_key_id=self.api_key_id)
