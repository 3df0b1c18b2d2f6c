"""The local model's runtimes: onnxruntime (a graph built from the weights) gives the numpy encoder's
vectors, caches the graph, and the numpy encoder takes over where onnxruntime is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydantic
import pytest

import llmrelay
from llmrelay.cache.semantic import EmbedderSettings, LocalEmbedder, SemanticSettings, build_embedder
from llmrelay.cache.semantic.bert import BertEncoder
from llmrelay.cache.semantic.embedders import default_model_dir
from llmrelay.cache.semantic.onnx_bert import OnnxBertEncoder

from .test_semantic import REFERENCE_HEAD, REFERENCE_TEXT

TEXTS = [
    REFERENCE_TEXT,
    "How can I reset my password?",
    "What is the capital of France?",
    "Why shouldn't I vote in the 2020 election?",
    "a much longer sentence that forces padding of the short ones in its batch, and then some more",
    "",  # [CLS] [SEP] only
    "Ünïcödé café 東京 🤗",
    "word " * 400,  # truncated at 256 tokens
    "x",
]


@pytest.fixture(scope="module")
def numpy_vectors() -> np.ndarray:
    return BertEncoder(default_model_dir()).encode(TEXTS)


@pytest.fixture(scope="module")
def onnx_embedder() -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder(encoder="onnx")
    yield embedder
    embedder._pool.shutdown()


def test_onnx_encoder_gives_the_numpy_vectors(
    onnx_embedder: LocalEmbedder, numpy_vectors: np.ndarray
) -> None:
    batched = onnx_embedder.encode_sync(TEXTS)  # padded batches
    single = np.stack([onnx_embedder.encode_sync([t])[0] for t in TEXTS])
    for vectors in (batched, single):
        assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
        assert np.abs(vectors - numpy_vectors).max() < 1e-5  # 2e-7 measured
    assert np.abs(batched[0, :8] - np.array(REFERENCE_HEAD, np.float32)).max() < 2e-6
    assert onnx_embedder.name == LocalEmbedder(encoder="numpy").name  # same vectors, same index


def test_auto_uses_onnxruntime_when_installed_and_numpy_on_request() -> None:
    auto = build_embedder(EmbedderSettings())
    numpy_ = build_embedder(EmbedderSettings(encoder="numpy"))
    try:
        assert isinstance(auto._encoder.result(), OnnxBertEncoder)  # type: ignore[attr-defined]
        assert isinstance(numpy_._encoder.result(), BertEncoder)  # type: ignore[attr-defined]
    finally:
        auto._pool.shutdown()  # type: ignore[attr-defined]
        numpy_._pool.shutdown()  # type: ignore[attr-defined]
    with pytest.raises(pydantic.ValidationError, match="encoder"):
        SemanticSettings.model_validate({"embedder": {"encoder": "gpu"}})


def test_the_built_graph_is_cached_by_the_weights_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, numpy_vectors: np.ndarray
) -> None:
    monkeypatch.setenv("LLMRELAY_CACHE_DIR", str(tmp_path))
    first = OnnxBertEncoder(default_model_dir())
    (built,) = (tmp_path / "onnx").iterdir()
    assert built == first.cached_path() and built.name.startswith("sentence-bert-53aa51172d142c89-")
    stamp = built.stat().st_mtime_ns
    second = OnnxBertEncoder(default_model_dir())  # loads the file, does not rebuild it
    assert built.stat().st_mtime_ns == stamp and [p.name for p in (tmp_path / "onnx").iterdir()] == [
        built.name
    ]
    assert np.abs(second.encode(TEXTS) - numpy_vectors).max() < 1e-5

    # A cache that cannot be written (its parent is a file): built in memory, same vectors.
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("LLMRELAY_CACHE_DIR", str(tmp_path / "not-a-dir" / "cache"))
    assert np.abs(OnnxBertEncoder(default_model_dir()).encode(TEXTS) - numpy_vectors).max() < 1e-5


def test_int8_is_a_separate_embedder_close_to_the_float_one(numpy_vectors: np.ndarray) -> None:
    embedder = LocalEmbedder(encoder="onnx-int8")
    try:
        assert embedder.name.endswith(":int8")  # never shares an index with float32 vectors
        batched = embedder.encode_sync(TEXTS)
        single = np.stack([embedder.encode_sync([t])[0] for t in TEXTS])
        assert np.array_equal(batched, single)  # a text's vector does not depend on its batch
        cosine = np.sum(batched * numpy_vectors, axis=1)
        assert cosine.min() > 0.97 and np.abs(batched - numpy_vectors).max() > 1e-4  # close, not equal
    finally:
        embedder._pool.shutdown()


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter on this llmrelay; asserts it exited cleanly (no crash)."""
    env = {**os.environ, "PYTHONPATH": str(Path(llmrelay.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_without_onnxruntime_auto_falls_back_to_numpy() -> None:
    # A process where importing onnxruntime fails, as on a platform without its wheel.
    script = (
        "import sys\n"
        "sys.modules['onnxruntime'] = None\n"
        "from llmrelay.cache.semantic import LocalEmbedder\n"
        "from llmrelay.errors import ConfigError\n"
        "e = LocalEmbedder()\n"
        "assert e.encoder == 'numpy', e.encoder\n"
        "print(repr(float(e.encode_sync(['How do I reset my password?'])[0][0])))\n"
        "try:\n"
        "    LocalEmbedder(encoder='onnx')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = run_python(script)
    first, message = done.stdout.splitlines()
    assert abs(float(first) - REFERENCE_HEAD[0]) < 2e-6
    assert "needs onnxruntime" in message and "pip install 'llmrelay[semantic]'" in message


def test_usearch_loaded_before_onnxruntime_does_not_crash_it() -> None:
    # usearch 2.26.2-2.26.6 loaded before onnxruntime made onnxruntime's import segfault (pyproject
    # excludes them): a process that loads the ANN index first, then embeds with onnx.
    script = (
        "import usearch.index\n"
        "from llmrelay.cache.semantic import LocalEmbedder\n"
        "e = LocalEmbedder(encoder='onnx')\n"
        "print(e.encoder, float(e.encode_sync(['How do I reset my password?'])[0][0]))\n"
    )
    done = run_python(script)
    encoder, head = done.stdout.split()
    assert encoder == "onnx" and abs(float(head) - REFERENCE_HEAD[0]) < 2e-6
