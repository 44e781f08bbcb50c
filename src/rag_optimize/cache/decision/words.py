"""The stored query's word vectors, kept with its cache entry so a cold candidate costs no
forward pass.

The token alignment signal (:mod:`~rag_optimize.cache.decision.alignment`) needs the word
vectors of both questions. The new question's come free with its embedding; the stored
question's were computed when it was embedded at write time, and an entry read from Redis
(written by another replica, or before a restart) or one that left the process's word LRU
would need one more forward pass of the model per candidate (75.6 ms measured at load 12.7).
So the cache stores them with the entry: :class:`QueryWords`, the words and one int8 row per
word with its scale (``len(words) * (dim + 4)`` bytes, about 4 KB for a ten-word question),
taken from the forward pass that embedded the query (no extra model call). A lookup hands a
candidate's stored words to the process (:func:`offer_words`) before the decision runs, and
alignment finds them there.

Entries without them (written before this existed, by ``set_many``, whose batch keeps no word
vectors, or with a query of more than :data:`MAX_WORDS` words) fall back to one forward
pass, whose result the process keeps in a bounded LRU (2048 texts). Word vectors are tied
to the model that computed them: each record names its token model and is used only under
that name.

In Redis the record is two hash fields, ``wm`` (JSON: model name and words) and ``wv``
(bytes: ``n`` little-endian float32 scales, then ``n * dim`` int8 codes), validated on read
(:meth:`QueryWords.from_fields`); a record that does not decode is treated as absent, never
as a corrupt entry: the answer is still good, only the shortcut is lost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_WORDS", "QueryWords", "offer_words", "stored_words", "uses_word_vectors"]

MAX_WORDS = 64
"""Queries with more words than this store none (a long prompt's rows would outweigh the
entry; alignment recomputes them when it needs them)."""

_MAX_MODEL_NAME = 200
_MAX_WORD_CHARS = 100


class WordsCorrupt(ValueError):
    """A stored word-vector record that does not decode (internal: the record is dropped)."""


@dataclass(frozen=True, slots=True, eq=False)
class QueryWords:
    """A question's words and their word vectors, int8 per row (``codes[i] * scales[i]`` is
    word ``i``'s unit vector, to about 1e-2 per component), under the token model ``model``."""

    model: str
    words: tuple[str, ...]
    codes: npt.NDArray[np.int8]
    scales: npt.NDArray[np.float32]

    @classmethod
    def pack(cls, model: str, words: tuple[str, ...], vectors: Any) -> QueryWords | None:
        """Quantise ``vectors`` (one row per word) to int8 rows with per-row scales; ``None``
        when there are more than :data:`MAX_WORDS` words or no words."""
        matrix = np.asarray(vectors, dtype=np.float32)
        if not words or len(words) > MAX_WORDS or matrix.shape[0] != len(words):
            return None
        peak = np.abs(matrix).max(axis=1)
        scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        codes = np.rint(matrix / scales[:, None]).astype(np.int8)
        return cls(model, tuple(words), codes, scales)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryWords):
            return NotImplemented
        return (
            self.model == other.model
            and self.words == other.words
            and np.array_equal(self.codes, other.codes)
            and np.array_equal(self.scales, other.scales)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def nbytes(self) -> int:
        """The bytes its vectors take (codes and scales)."""
        return int(self.codes.nbytes + self.scales.nbytes)

    def vectors(self) -> npt.NDArray[np.float32]:
        """The word vectors as float32 unit rows (what alignment compares)."""
        rows = self.codes.astype(np.float32) * self.scales[:, None]
        rows /= np.clip(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9, None)
        return rows

    def to_fields(self) -> tuple[bytes, bytes]:
        """``(wm, wv)``: the JSON header and the vector bytes, as stored in Redis."""
        header = json.dumps(
            {"m": self.model, "w": list(self.words), "d": int(self.codes.shape[1])},
            ensure_ascii=False,
        ).encode()
        blob = self.scales.astype("<f4").tobytes() + self.codes.tobytes()
        return header, blob

    @classmethod
    def from_fields(cls, header: bytes, blob: bytes) -> QueryWords:
        """Decode :meth:`to_fields` output read back from a store (untrusted bytes); raises
        :class:`WordsCorrupt` naming what is wrong."""
        try:
            parsed = json.loads(header.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise WordsCorrupt(f"word header is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise WordsCorrupt("word header is not a JSON object")
        model, words, dim = parsed.get("m"), parsed.get("w"), parsed.get("d")
        if not isinstance(model, str) or not 0 < len(model) <= _MAX_MODEL_NAME:
            raise WordsCorrupt(f"word model name {model!r} is not a short string")
        if (
            not isinstance(words, list)
            or not 0 < len(words) <= MAX_WORDS
            or not all(isinstance(w, str) and 0 < len(w) <= _MAX_WORD_CHARS for w in words)
        ):
            raise WordsCorrupt("words are not a list of 1 to 64 short strings")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= 4096:
            raise WordsCorrupt(f"word vector dimension {dim!r} is not in 1..4096")
        n = len(words)
        if len(blob) != n * (4 + dim):
            raise WordsCorrupt(f"word vectors have {len(blob)} bytes, {n * (4 + dim)} expected")
        scales = np.frombuffer(blob[: 4 * n], dtype="<f4").astype(np.float32)
        if not all(math.isfinite(s) and s > 0 for s in scales.tolist()):
            raise WordsCorrupt("a word vector scale is not a positive finite number")
        codes = np.frombuffer(blob[4 * n :], dtype=np.int8).reshape(n, dim).copy()
        if not np.abs(codes.astype(np.int16)).max(axis=1).all():
            raise WordsCorrupt("a word vector is zero")
        return cls(model, tuple(words), codes, scales)


def _alignment_signals(verifier: object, seen: int = 0) -> Iterator[object]:
    if verifier is None or seen > 8:
        return
    for signal in getattr(verifier, "signals", ()) or ():
        if getattr(signal, "name", None) == "alignment":
            yield signal
    for inner in getattr(verifier, "verifiers", ()) or ():
        yield from _alignment_signals(inner, seen + 1)


def uses_word_vectors(verifier: object) -> bool:
    """Whether ``verifier`` (a :class:`~rag_optimize.cache.decision.pipeline.DecisionPipeline`,
    or an :class:`~rag_optimize.cache.decision.verifiers.AllOf` holding one) runs token
    alignment, so entries are worth storing word vectors for."""
    return any(True for _ in _alignment_signals(verifier))


def stored_words(text: str) -> QueryWords | None:
    """The word vectors of ``text`` this process already holds (it was just embedded with
    :meth:`~rag_optimize.embedding.local.LocalEmbedder.embed_query`, or aligned), packed for
    an entry; ``None`` when it holds none (never runs a model)."""
    from rag_optimize.embedding.local import known_token_vectors

    found = known_token_vectors(text)
    if found is None:
        return None
    model, tokens = found
    return QueryWords.pack(model, tuple(tokens.words), tokens.vectors)


def offer_words(text: str, words: QueryWords) -> None:
    """Hand a candidate's stored word vectors to the process's word LRU under their model's
    name (a text it already holds is left alone), where alignment will find them."""
    from rag_optimize.embedding.local import TokenVectors, remember_token_vectors

    remember_token_vectors(words.model, text, lambda: TokenVectors(words.words, words.vectors()))
