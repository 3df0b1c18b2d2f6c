"""The batch store on both drivers (SQLite, and PostgreSQL for several replicas): owners kept apart,
a request stored twice counted once, one finalizer, OpenAI's pagination order."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from llmrelay.batch.store import BatchRecord, BatchStore, FileRecord

from .test_postgres_store import database, query, with_query  # noqa: F401  (a fresh database)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request) -> str:
    return "sqlite:///calls.db" if request.param == "sqlite" else request.getfixturevalue("database")


@pytest.fixture
async def store(url: str, tmp_path: Path):
    s = BatchStore.beside_calllog(url, tmp_path)
    await s.open()
    yield s
    await s.close()


def batch(batch_id: str, owner: str = "key_a", total: int = 3) -> BatchRecord:
    now = time.time()
    return BatchRecord(
        id=batch_id, owner=owner, status="in_progress", mode="local", endpoint="/v1/chat/completions",
        input_file_id="file-1", completion_window="24h", model="m", metadata={"team": "x"}, total=total,
        created_at=now, expires_at=now + 60,
    )  # fmt: skip


async def test_files_belong_to_their_owner(store: BatchStore) -> None:
    f = f"file-{uuid.uuid4().hex}"
    await store.add_file(FileRecord(f, "key_a", "batch", "a.jsonl", 3, time.time()), b"abc")
    assert await store.file_content("key_a", f) == b"abc"
    assert await store.file_content("key_b", f) is None
    assert await store.get_file("key_b", f) is None
    assert not await store.delete_file("key_b", f)
    assert await store.delete_file("key_a", f)


async def test_outcomes_count_once_and_one_finalizer_wins(store: BatchStore) -> None:
    b1 = f"batch_{uuid.uuid4().hex}"
    await store.add_batch(batch(b1))
    await store.add_items([(b1, 0, 1, "a", "0.5"), (b1, 1, 0, "b", None)])
    assert await store.claim_finalize(b1, require_done=True) is None  # one request to go
    await store.add_items([(b1, 0, 1, "again", "0.5"), (b1, 2, -1, "c", None)])  # a re-run job
    record = await store.get_batch(b1, "key_a")
    assert (record.completed, record.failed, record.skipped) == (1, 1, 1)
    assert [line for _, _, line, _ in await store.items(b1)] == ["a", "b", "c"]
    claimed = await store.claim_finalize(b1, require_done=True)
    assert claimed is not None and claimed.status == "finalizing"
    assert await store.claim_finalize(b1, require_done=True) is None
    assert await store.get_batch(b1, "key_b") is None


async def test_list_newest_first_after_a_cursor(store: BatchStore) -> None:
    owner, other = f"key_{uuid.uuid4().hex}", f"key_{uuid.uuid4().hex}"
    for n in range(5):
        await store.add_batch(batch(f"batch_{owner}_{n}", owner=owner))
    await store.add_batch(batch(f"batch_{owner}_9", owner=other))
    page, more = await store.list_batches(owner, after=None, limit=2)
    assert [b.id[-1] for b in page] == ["4", "3"] and more
    page, more = await store.list_batches(owner, after=page[-1].id, limit=10)
    assert [b.id[-1] for b in page] == ["2", "1", "0"] and not more
