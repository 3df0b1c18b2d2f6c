"""The semantic cache engine with the real local model (all-MiniLM-L6-v2 run in numpy, ~1 s to load
once per module) and, for the endpoint embedder, the simulator's /v1/embeddings."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence

import numpy as np
import pytest

from llmrelay.cache.semantic import (
    DEFAULT_THRESHOLD,
    EmbedderSettings,
    HttpEmbedder,
    LocalEmbedder,
    LocalSemanticIndex,
    SemanticSettings,
    Verifier,
    build_semantic_index,
)
from llmrelay.cache.semantic.index import Entry, ScopedIndex
from llmrelay.errors import ConfigError

from .conftest import Server, free_port


class SharedEmbedder:
    """One loaded model for the whole module; the engines under test must not close it."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner = inner
        self.name = inner.name

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await self.inner.embed(texts)

    async def ready(self) -> None:
        await self.inner.ready()

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="module")
def minilm() -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder()
    embedder.encode_sync(["warm up"])
    yield embedder
    embedder._pool.shutdown()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def engine(minilm: LocalEmbedder, clock: Clock) -> AsyncIterator[LocalSemanticIndex]:
    index = LocalSemanticIndex(SharedEmbedder(minilm), verifier=Verifier(), max_entries=3, clock=clock)
    yield index
    await index.aclose()


# sentence-transformers' own vector for this sentence (first 8 of 384 components), computed once
# with sentence-transformers 5 + torch 2.13 from the same packaged weights.
REFERENCE_TEXT = "How do I reset my password?"
REFERENCE_HEAD = [0.006903, -0.063023, -0.072044, -0.032496, -0.042709, 0.070429, 0.009074, 0.015408]


def test_local_embedder_matches_sentence_transformers(minilm: LocalEmbedder) -> None:
    vector = minilm.encode_sync([REFERENCE_TEXT])[0]
    assert vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    assert np.abs(vector[:8] - np.array(REFERENCE_HEAD, np.float32)).max() < 2e-6
    # Batching and padding do not change a text's vector.
    batch = minilm.encode_sync(
        ["a much longer sentence that forces padding of the short one", REFERENCE_TEXT]
    )
    assert np.abs(batch[1] - vector).max() < 1e-5


async def test_paraphrase_hits_in_the_same_scope(engine: LocalSemanticIndex) -> None:
    await engine.add("scope-a", "How do I reset my password?", "entry-1", ttl_s=60)
    hit = await engine.search("scope-a", "How can I reset my password?", DEFAULT_THRESHOLD)
    assert hit is not None and hit[0] == "entry-1" and DEFAULT_THRESHOLD <= hit[1] <= 1.0
    assert await engine.search("scope-a", "What is the capital of France?", DEFAULT_THRESHOLD) is None


async def test_same_question_in_another_conversation_does_not_hit(engine: LocalSemanticIndex) -> None:
    # The stage hashes the earlier turns into the scope: "and in Python?" after a question about
    # sorting is not "and in Python?" after a question about HTTP requests.
    await engine.add("conversation-about-sorting", "And how do I do that in Python?", "entry-1", ttl_s=60)
    assert await engine.search("conversation-about-http", "And how do I do that in Python?", 0.5) is None
    assert await engine.search("conversation-about-sorting", "And how do I do that in Python?", 0.5)


@pytest.mark.parametrize(
    ("cached", "query", "reason"),
    [
        ("How do I delete my account?", "How do I not delete my account?", "negation"),
        ("Why should I vote for Trump?", "Why shouldn't I vote for Trump?", "negation"),
        (
            "What was the population of France in 2010?",
            "What was the population of France in 2020?",
            "number",
        ),
        ("Can I bring two bags on the plane?", "Can I bring three bags on the plane?", "number"),
        ("How do I install Python on Windows?", "How do I install Python on Ubuntu?", "name"),
    ],
)
async def test_near_misses_are_rejected_by_verification(
    minilm: LocalEmbedder, clock: Clock, cached: str, query: str, reason: str
) -> None:
    vectors = minilm.encode_sync([cached, query])
    similarity = float(vectors[0] @ vectors[1])
    assert similarity >= DEFAULT_THRESHOLD  # similarity alone would serve the wrong answer
    assert Verifier().reject(query, cached) == reason
    plain = LocalSemanticIndex(SharedEmbedder(minilm), verifier=None, clock=clock)
    checked = LocalSemanticIndex(SharedEmbedder(minilm), verifier=Verifier(), clock=clock)
    for index in (plain, checked):
        await index.add("s", cached, "entry-1", ttl_s=60)
    assert await plain.search("s", query, DEFAULT_THRESHOLD) is not None
    assert await checked.search("s", query, DEFAULT_THRESHOLD) is None
    assert checked.stats["rejected"] == 1


async def test_entries_expire_after_their_ttl(engine: LocalSemanticIndex, clock: Clock) -> None:
    await engine.add("s", "How do I reset my password?", "entry-1", ttl_s=30)
    clock.now += 29
    assert await engine.search("s", "How do I reset my password?", 0.9) is not None
    clock.now += 2
    assert await engine.search("s", "How do I reset my password?", 0.9) is None
    await engine.add("s", "What is the capital of France?", "entry-2", ttl_s=30)
    assert len(engine) == 1  # the expired one was swept on the next add


async def test_size_bound_evicts_the_least_recently_used(engine: LocalSemanticIndex) -> None:
    questions = [
        "How do I reset my password?",
        "What is the capital of France?",
        "How many legs does a spider have?",
        "What is the boiling point of water?",
    ]
    for i, q in enumerate(questions[:3]):
        await engine.add("s", q, f"entry-{i}", ttl_s=60)
    assert await engine.search("s", questions[0], 0.9) is not None  # entry-0 is now the most recent
    await engine.add("s", questions[3], "entry-3", ttl_s=60)
    assert len(engine) == 3
    assert await engine.search("s", questions[1], 0.9) is None  # the least recently used went
    for q in (questions[0], questions[2], questions[3]):
        assert await engine.search("s", q, 0.9) is not None


async def test_re_adding_an_entry_key_replaces_it(engine: LocalSemanticIndex) -> None:
    await engine.add("s", "How do I reset my password?", "entry-1", ttl_s=60)
    await engine.add("s", "How do I reset my password?", "entry-1", ttl_s=60)
    assert len(engine) == 1


def test_scope_partitions_switch_to_hnsw_and_keep_finding_neighbours() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((400, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ScopedIndex(32, max_entries=350, hnsw_from=64, clock=lambda: 0.0)
    for i, v in enumerate(vectors):
        index.add(Entry(i, "big" if i % 4 else "small", f"k{i}", f"q{i}", 100.0), v)
    assert len(index) == 350  # 50 evicted, oldest first
    sizes = index.scope_sizes()
    assert sizes == {"big": 263, "small": 87}
    assert index._partitions["big"].hnsw is not None
    for i in range(50, 400):
        (entry, similarity), *_ = index.candidates("big" if i % 4 else "small", vectors[i], 2, 0.5)
        assert entry.label == i and similarity > 0.97  # i8 quantisation costs a little
    for i in range(50, 400, 3):
        index.remove(i)
    assert len(index) == 350 - len(range(50, 400, 3))
    assert not index.candidates("big", vectors[53], 1, 0.99)


async def test_http_embedder_against_the_simulator(simulator: Server, clock: Clock) -> None:
    # The simulator's embeddings are a hash of the text: equal texts meet, different ones do not.
    embedder = HttpEmbedder(simulator.url + "/v1", "text-embedding-3-small", api_key="sk-x", dimensions=64)
    index = LocalSemanticIndex(embedder, verifier=Verifier(), clock=clock)
    try:
        await index.add("s", "How do I reset my password?", "entry-1", ttl_s=60)
        assert await index.search("s", "How do I reset my password?", 0.99) == ("entry-1", pytest.approx(1.0))
        assert await index.search("s", "Something else entirely", 0.5) is None
        vectors = await embedder.embed(["a", "b", "a"])
        assert vectors.shape == (3, 64) and np.allclose(vectors[0], vectors[2])
    finally:
        await index.aclose()


async def test_a_failing_embeddings_endpoint_is_a_miss_not_an_error(clock: Clock) -> None:
    embedder = HttpEmbedder(f"http://127.0.0.1:{free_port()}/v1", "text-embedding-3-small", timeout_s=1)
    index = LocalSemanticIndex(embedder, clock=clock)
    try:
        await index.add("s", "How do I reset my password?", "entry-1", ttl_s=60)
        assert await index.search("s", "How do I reset my password?", 0.5) is None
        assert index.stats["errors"] == 1 and len(index) == 0
    finally:
        await index.aclose()


def test_settings_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        build_semantic_index(SemanticSettings(embedder=EmbedderSettings(kind="http")))
    with pytest.raises(ConfigError, match="export EMB_KEY"):
        build_semantic_index(
            SemanticSettings(
                embedder=EmbedderSettings(
                    kind="http", base_url="http://x/v1", model="m", api_key_env="EMB_KEY"
                )
            ),
            env={},
        )
    with pytest.raises(ConfigError, match="redis_url"):
        build_semantic_index(
            SemanticSettings(
                backend="redis", embedder=EmbedderSettings(kind="http", base_url="http://x", model="m")
            )
        )


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("How do I reset my password?", "How can I reset my password?"),
        ("How do I learn Python?", "how do i learn python"),  # case alone is no new name
        ("What are Hugging Face Datasets?", "What is a hugging face dataset?"),  # plural
        ("Is it raining in Paris today?", "Paris: is it raining today?"),  # a name at a sentence start
        ("Which is better, GPT-4o or Claude?", "Which is better: Claude or GPT-4o?"),
    ],
)
def test_verification_lets_paraphrases_through(cached: str, query: str) -> None:
    assert Verifier().reject(query, cached) is None


def test_verification_of_a_long_text_is_linear() -> None:
    long = "This is a sentence about Paris. " * 5000  # 160 kB: a client may send anything
    started = time.perf_counter()
    assert Verifier().reject(long, long + " And Berlin.") == "name"
    assert time.perf_counter() - started < 1.0  # was quadratic: seconds
