"""The shared semantic index against the machine's real Redis: several replicas, one cache.

Skipped when Redis is absent, except under LLMRELAY_REQUIRE_SERVICES=1 (then it fails)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from llmrelay.cache.semantic import LocalEmbedder, RedisSemanticIndex, Verifier

from .conftest import REDIS_URL, redis_prefix_that_expires
from .test_semantic import SharedEmbedder, minilm  # noqa: F401  (the module-scoped model fixture)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    with redis_prefix_that_expires("semantic") as prefix:
        yield prefix


@pytest.fixture
async def replicas(
    redis_prefix: str,
    minilm: LocalEmbedder,  # noqa: F811
) -> AsyncIterator[Callable[..., RedisSemanticIndex]]:
    started: list[RedisSemanticIndex] = []

    def replica(**kw: int) -> RedisSemanticIndex:
        index = RedisSemanticIndex(
            SharedEmbedder(minilm), REDIS_URL, prefix=redis_prefix, verifier=Verifier(), **kw
        )
        started.append(index)
        return index

    yield replica
    await asyncio.gather(*(index.aclose() for index in started))


async def eventually(check: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[misc]
        assert asyncio.get_running_loop().time() < deadline, "replicas did not converge"
        await asyncio.sleep(0.02)


async def test_an_answer_cached_by_one_replica_is_found_by_the_others(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas(), replicas()
    await a.start()
    await b.start()
    await a.add("scope", "How do I reset my password?", "entry-1", ttl_s=30)
    assert await a.search("scope", "How can I reset my password?", 0.86) == (
        "entry-1",
        pytest.approx(0.99, abs=0.01),
    )
    await eventually(lambda: b.search("scope", "How can I reset my password?", 0.86))
    # A replica started later loads what is already there.
    c = replicas()
    assert (await c.search("scope", "How can I reset my password?", 0.86))[0] == "entry-1"  # type: ignore[index]
    # Scopes and verification hold across replicas too.
    assert await c.search("other-scope", "How can I reset my password?", 0.86) is None
    assert await c.search("scope", "How do I not reset my password?", 0.8) is None


async def test_a_confirm_check_has_the_last_word_on_a_shared_match(replicas) -> None:  # type: ignore[no-untyped-def]
    """The route's model check (``confirm``) reaches the Redis index's search as the local one's."""
    a = replicas()
    await a.start()
    await a.add("scope", "How do I reset my password?", "entry-1", ttl_s=30)
    asked: list[tuple[str, str]] = []

    def say(answer: bool):  # type: ignore[no-untyped-def]
        async def confirm(query: str, cached: str) -> bool:
            asked.append((query, cached))
            return answer

        return confirm

    query = "How can I reset my password?"
    assert await a.search("scope", query, 0.86, say(False)) is None
    assert asked == [(query, "How do I reset my password?")]
    assert (await a.search("scope", query, 0.86, say(True)))[0] == "entry-1"  # type: ignore[index]


async def test_ttl_is_honoured_in_redis_and_in_every_mirror(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas(), replicas()
    await b.start()
    await a.add("scope", "What is the capital of France?", "entry-1", ttl_s=0.4)
    await eventually(lambda: b.search("scope", "What is the capital of France?", 0.9))
    await asyncio.sleep(0.5)
    for replica in (a, b, replicas()):
        assert await replica.search("scope", "What is the capital of France?", 0.9) is None


async def test_the_size_bound_is_shared_and_evictions_reach_every_replica(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas(max_entries=2), replicas(max_entries=2)
    await b.start()
    questions = [
        "How do I reset my password?",
        "What is the capital of France?",
        "How many legs does a spider have?",
    ]
    for i, q in enumerate(questions):
        await a.add("scope", q, f"entry-{i}", ttl_s=30 + i)  # entry-0 expires first: it goes first
    await eventually(lambda: b.search("scope", questions[2], 0.9))
    await eventually(lambda: _is_none(b.search("scope", questions[0], 0.9)))
    assert await a.search("scope", questions[0], 0.9) is None
    assert len(a) == len(b) == 2


async def _is_none(awaitable) -> bool:  # type: ignore[no-untyped-def]
    return await awaitable is None


async def test_without_redis_the_replica_keeps_working_alone(minilm: LocalEmbedder) -> None:  # noqa: F811
    # No Redis at all (nothing listens on that port): adds stay local, lookups still work, and
    # nothing raises into the request path.
    from .conftest import free_port

    index = RedisSemanticIndex(
        SharedEmbedder(minilm), f"redis://127.0.0.1:{free_port()}/0", verifier=Verifier()
    )
    try:
        await index.add("scope", "How do I reset my password?", "entry-1", ttl_s=30)
        assert (await index.search("scope", "How can I reset my password?", 0.84))[0] == "entry-1"  # type: ignore[index]
        assert index.stats["errors"] == 1
    finally:
        await index.aclose()
