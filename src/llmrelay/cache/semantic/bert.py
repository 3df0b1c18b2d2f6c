"""A sentence-transformers BERT encoder (all-MiniLM-L6-v2 and kin) without torch.

``SentenceEncoder`` does what any runtime shares: tokenising (HF ``tokenizers`` reading
``tokenizer.json``), batching by length, padding, mean pooling over real tokens, L2 norm.
``BertEncoder`` runs the network in numpy: the 6-layer BERT of HF ``transformers`` written out
(embeddings -> N x (self-attention + feed-forward, post-LayerNorm)), which is what
sentence-transformers' Transformer + Pooling(mean) + Normalize modules compute; ``onnx_bert`` runs
the same network on onnxruntime, faster. Weights are read from the model directory's
``model.safetensors``. Nothing is downloaded. ``bench/semantic_cache.py check`` compares the
vectors with sentence-transformers' (max abs diff).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# Abramowitz & Stegun 7.1.26 (max error 1.5e-7, below float32 noise): numpy has no erf, and BERT's
# "gelu" is the exact erf form, not the tanh approximation.
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x: np.ndarray) -> np.ndarray:
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + _P * x)
    poly = t * (_A[0] + t * (_A[1] + t * (_A[2] + t * (_A[3] + t * _A[4]))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


class LayerWeights:
    """One encoder layer's tensors as both runtimes use them: Q, K, V in one matrix, all (in, out)."""

    __slots__ = (
        "ln1_b",
        "ln1_w",
        "ln2_b",
        "ln2_w",
        "w_in",
        "b_in",
        "w_out",
        "b_out",
        "w_o",
        "b_o",
        "w_qkv",
        "b_qkv",
    )

    def __init__(self, t: dict[str, np.ndarray], p: str) -> None:
        a = f"{p}.attention"
        # Q, K and V as one matmul; weights stored transposed (in, out) so the forward is x @ W.
        self.w_qkv = np.ascontiguousarray(
            np.concatenate([t[f"{a}.self.{n}.weight"] for n in ("query", "key", "value")]).T
        )
        self.b_qkv = np.concatenate([t[f"{a}.self.{n}.bias"] for n in ("query", "key", "value")])
        self.w_o, self.b_o = (
            np.ascontiguousarray(t[f"{a}.output.dense.weight"].T),
            t[f"{a}.output.dense.bias"],
        )
        self.ln1_w, self.ln1_b = t[f"{a}.output.LayerNorm.weight"], t[f"{a}.output.LayerNorm.bias"]
        self.w_in = np.ascontiguousarray(t[f"{p}.intermediate.dense.weight"].T)
        self.b_in = t[f"{p}.intermediate.dense.bias"]
        self.w_out = np.ascontiguousarray(t[f"{p}.output.dense.weight"].T)
        self.b_out = t[f"{p}.output.dense.bias"]
        self.ln2_w, self.ln2_b = t[f"{p}.output.LayerNorm.weight"], t[f"{p}.output.LayerNorm.bias"]


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence vectors from a BERT sentence-transformers directory.

    Owns what every runtime shares (config checks, tokenising, batching by length, padding,
    pooling); a subclass runs the network: ``_forward(tokens, mask)`` -> last layer's states.
    """

    batch_size = 32  # texts per forward pass, sorted by length so padding wastes little

    def __init__(self, model_dir: str | Path) -> None:
        from tokenizers import Tokenizer

        self.model_dir = model_dir = Path(model_dir)
        self.config = config = json.loads((model_dir / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{model_dir} is not a BERT model with GELU activations")
        st_config = _read_json(model_dir / "sentence_bert_config.json")
        pooling = _read_json(model_dir / "1_Pooling" / "config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{model_dir} does not use mean pooling")
        self.max_tokens = int(st_config.get("max_seq_length", 256))
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.n_layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # padding is done here, per batch, to its longest text
        self.tokenizer.enable_truncation(self.max_tokens)

    def weights(self) -> dict[str, np.ndarray]:
        """The checkpoint's tensors as float32, keyed without the ``bert.`` prefix."""
        from safetensors.numpy import load_file

        raw = load_file(str(self.model_dir / "model.safetensors"))
        return {k.removeprefix("bert."): v.astype(np.float32) for k, v in raw.items()}

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, shape (len(texts), dim), float32."""
        ids = self.token_ids(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        # Texts of similar length batched together waste little on padding.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            rows = [ids[i] for i in chunk]
            tokens = np.zeros((len(rows), max(len(x) for x in rows)), np.int64)
            mask = np.zeros(tokens.shape, np.float32)
            for i, row in enumerate(rows):
                tokens[i, : len(row)] = row
                mask[i, : len(row)] = 1.0
            states = self._forward(tokens, mask)
            pooled = (states * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
            out[chunk] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out

    def _forward(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The last layer's token states (batch, length, dim) for padded ``tokens`` and their mask."""
        raise NotImplementedError


class BertEncoder(SentenceEncoder):
    """The forward pass in numpy (the fallback: no runtime beyond numpy)."""

    def __init__(self, model_dir: str | Path) -> None:
        super().__init__(model_dir)
        t = self.weights()
        self.word = t["embeddings.word_embeddings.weight"]
        self.position = t["embeddings.position_embeddings.weight"]
        self.token_type = t["embeddings.token_type_embeddings.weight"][0]
        self.ln_w, self.ln_b = t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"]
        self.layers = [LayerWeights(t, f"encoder.layer.{i}") for i in range(self.n_layers)]

    def _forward(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, length = tokens.shape
        # Dense layers run on (batch * length, dim) matrices: numpy hands 2-D products to BLAS
        # whole, while a 3-D @ 2-D product is several times slower.
        x = self.word[tokens.ravel()] + np.tile(self.position[:length], (batch, 1)) + self.token_type
        x = _layer_norm(x, self.ln_w, self.ln_b, self.eps)
        # Padding keys get -inf-like scores so no real token attends to them.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        head = self.dim // self.heads
        scale = np.float32(1.0 / np.sqrt(head))
        for layer in self.layers:
            qkv = (x @ layer.w_qkv + layer.b_qkv).reshape(batch, length, 3, self.heads, head)
            q, k, v = np.ascontiguousarray(qkv.transpose(2, 0, 3, 1, 4))  # each (b, h, n, head)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            weights = np.exp(scores)
            weights /= weights.sum(-1, keepdims=True)
            context = (weights @ v).transpose(0, 2, 1, 3).reshape(batch * length, self.dim)
            x = _layer_norm(context @ layer.w_o + layer.b_o + x, layer.ln1_w, layer.ln1_b, self.eps)
            hidden = _gelu(x @ layer.w_in + layer.b_in)
            x = _layer_norm(hidden @ layer.w_out + layer.b_out + x, layer.ln2_w, layer.ln2_b, self.eps)
        return x.reshape(batch, length, self.dim)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}
