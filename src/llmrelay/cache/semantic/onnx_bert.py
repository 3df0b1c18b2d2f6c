"""The BERT sentence encoder run by onnxruntime, from a graph built here out of the same weights.

No ONNX file ships with the model and none is downloaded: ``build_graph`` writes the forward pass
of ``bert.BertEncoder`` with the ``onnx`` package's helper API, from the tensors of
``model.safetensors``. The built file is cached in ``cache_dir()/onnx``, named by the weights'
sha256, this builder's version and the precision, so a machine builds it once (a few seconds);
when the directory is not writable the graph is built in memory at each start instead.

The graph uses onnxruntime's fused CPU operators (``com.microsoft`` Attention,
SkipLayerNormalization, BiasGelu) directly, rather than standard operators for its optimiser to
pattern-match: the fusions are then certain, not a guess about how an exporter spelled BERT. It runs
on the calling thread (``intra_op_num_threads=1``; ``embedders.LocalEmbedder`` says why one).

``int8`` quantises the dense and attention weights per output channel, and the activations per
call (``onnxruntime.quantization.quantize_dynamic``): several times faster, but the vectors move
(cosine to the float32 vector >= 0.98, bench/README.md), so it is a separate embedder with its own
threshold.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .bert import LayerWeights, SentenceEncoder

# Part of the cached file's name: bump it whenever build_graph's output changes.
BUILDER_VERSION = 1
Precision = Literal["fp32", "int8"]
_MS = "com.microsoft"


def cache_dir() -> Path:
    """``$LLMRELAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/llmrelay``, else ``~/.cache/llmrelay``."""
    explicit = os.environ.get("LLMRELAY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "llmrelay"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Graph:
    """Collects nodes and initialisers; each helper returns the name of its output."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        out = f"{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], out, domain=domain, **attrs))
        return out

    def skip_norm(self, x: str, residual: str, gamma: str, beta: str, bias: str, eps: float) -> str:
        """LayerNorm(x + bias + residual), one fused operator."""
        return self.op("SkipLayerNormalization", x, residual, gamma, beta, bias, domain=_MS, epsilon=eps)


def build_graph(encoder: SentenceEncoder, t: dict[str, np.ndarray]) -> Any:
    """``encoder``'s network as an ONNX model: (input_ids, attention_mask) -> last layer's states."""
    from onnx import TensorProto, helper

    g = _Graph()
    # Embeddings: word + position (the first `length` rows) + token type 0, then LayerNorm.
    words = g.op("Gather", g.const("word", t["embeddings.word_embeddings.weight"]), "input_ids")
    length = g.op("Shape", "input_ids", start=1, end=2)
    zero = g.const("zero", np.array([0], np.int64))
    positions = g.op(
        "Slice", g.const("position", t["embeddings.position_embeddings.weight"]), zero, length, zero
    )
    token_type = g.const("token_type_0", t["embeddings.token_type_embeddings.weight"][0])
    x = g.op(
        "LayerNormalization",
        g.op("Add", g.op("Add", words, positions), token_type),
        g.const("ln_w", t["embeddings.LayerNorm.weight"]),
        g.const("ln_b", t["embeddings.LayerNorm.bias"]),
        axis=-1,
        epsilon=encoder.eps,
    )
    mask = g.op("Cast", "attention_mask", to=TensorProto.INT32)  # padding keys get no attention

    # The numpy encoder's layer weights: Q, K and V concatenated, each matrix stored (in, out).
    for i in range(encoder.n_layers):
        layer = LayerWeights(t, f"encoder.layer.{i}")
        w = {k: g.const(f"layer{i}.{k}", getattr(layer, k)) for k in LayerWeights.__slots__}
        context = g.op("Attention", x, w["w_qkv"], w["b_qkv"], mask, domain=_MS, num_heads=encoder.heads)
        attended = g.op("MatMul", context, w["w_o"])
        x = g.skip_norm(attended, x, w["ln1_w"], w["ln1_b"], w["b_o"], encoder.eps)
        hidden = g.op("BiasGelu", g.op("MatMul", x, w["w_in"]), w["b_in"], domain=_MS)  # exact erf GELU
        x = g.skip_norm(
            g.op("MatMul", hidden, w["w_out"]), x, w["ln2_w"], w["ln2_b"], w["b_out"], encoder.eps
        )
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], "output"))

    graph = helper.make_graph(
        g.nodes,
        "sentence_bert",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "length"]),
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "length", encoder.dim]
            )
        ],
        g.initializers,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)]  # 17: LayerNormalization
    model = helper.make_model(graph, opset_imports=opsets, producer_name="llmrelay")
    model.ir_version = 8  # loadable by onnxruntime 1.14 and later
    return model


def quantize_int8(model: bytes) -> bytes:
    """Dynamic int8: weights per output channel (cosine to float32 0.989 vs 0.93 per tensor)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
        source.write_bytes(model)
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            # Shape inference cannot type the com.microsoft operators' outputs: they are float.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
        return target.read_bytes()


class OnnxBertEncoder(SentenceEncoder):
    """``bert.BertEncoder``'s vectors (``fp32``: within 1e-6), computed by onnxruntime."""

    def __init__(self, model_dir: str | Path, precision: Precision = "fp32") -> None:
        import onnxruntime as ort

        super().__init__(model_dir)
        self.precision = precision
        if precision == "int8":
            # Activations are quantised with one scale per call: in a batch, a text's vector would
            # depend on its batch mates (2.7e-2 measured). One text per call keeps it a function.
            self.batch_size = 1
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(self._model(), options, providers=["CPUExecutionProvider"])

    def cached_path(self) -> Path:
        digest = file_sha256(self.model_dir / "model.safetensors")[:16]
        return cache_dir() / "onnx" / f"sentence-bert-{digest}-v{BUILDER_VERSION}-{self.precision}.onnx"

    def _model(self) -> str | bytes:
        """The cached file's path, or the built model's bytes when it could not be cached."""
        path = self.cached_path()
        if path.exists():
            return str(path)
        model = build_graph(self, self.weights()).SerializeToString()
        if self.precision == "int8":
            model = quantize_int8(model)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside, then renamed: a process starting meanwhile never reads half a file.
            fd, part = tempfile.mkstemp(dir=path.parent, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(model)
                os.replace(part, path)
            except BaseException:
                os.unlink(part)
                raise
        except OSError:
            return model  # a read-only or full cache: run from memory, build again next start
        return str(path)

    def _forward(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": tokens, "attention_mask": mask.astype(np.int64)}
        return self.session.run(["last_hidden_state"], feeds)[0]
