"""A tiny deterministic embedder for tests and offline examples.

It hashes words and word bigrams into a fixed number of dimensions. Texts that share most
of their words get a high cosine similarity, which is enough to exercise cache and retrieval
logic without a model. It knows nothing of meaning: use a real model for quality.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from rag_optimize.errors import ConfigurationError

__all__ = ["HashingEmbedder"]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the of to in on for and or is are was be do does did i my me you your it this that "
    "can could how what with".split()
)


class HashingEmbedder:
    """Bag of hashed words and bigrams, L2-normalised. Deterministic across processes."""

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise ConfigurationError(f"dim must be >= 8, got {dim}")
        self.dim = dim
        self.calls = 0

    def _features(self, text: str) -> list[str]:
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
        words = [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words]
        return words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]

    def _embed(self, text: str) -> list[float]:
        vec = np.zeros(self.dim, dtype=np.float32)
        feats = self._features(text) or [text.strip().lower() or "<empty>"]
        for feat in feats:
            digest = hashlib.blake2b(feat.encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            weight = 0.5 if "_" in feat else 1.0
            vec[h % self.dim] += weight if (h >> 63) & 1 else -weight
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            vec[0] = 1.0
            norm = 1.0
        return (vec / norm).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one text."""
        self.calls += 1
        return self._embed(text)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed several texts (one call, counted once)."""
        self.calls += 1
        return [self._embed(t) for t in texts]
