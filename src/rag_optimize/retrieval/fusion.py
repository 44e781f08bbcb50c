"""Fusion: merge the ranked lists of several retrieval branches into one.

Each function takes ``{branch name: [(doc id, score), ...] best first}`` and optional
``{branch name: weight}`` (default 1 each) and returns ``[(doc id, fused score), ...]`` best
first. A document missing from a branch gets nothing from that branch. Ties keep the order in
which documents were first seen (first branch first), so results are deterministic.

* :func:`rrf`: reciprocal rank fusion, ``sum_b w_b / (c + rank_b)`` with 1-based ranks and
  ``c = 60`` (Cormack et al., 2009). Uses ranks only, so score scales never matter.
* :func:`relative_score`: each branch's scores min-max scaled to [0, 1] (a branch whose scores
  are all equal gives 1.0), then ``sum_b w_b * scaled_b``. Keeps how far apart scores are.
* :func:`weighted`: each branch's scores standardised by their mean and standard deviation,
  mapped as ``(s - (mean - 3 std)) / (6 std)`` (a branch with one score or zero spread gives
  1.0), then ``sum_b w_b * scaled_b``. Less sensitive than min-max to one outlier score.
* :func:`auto` (the default of :class:`~rag_optimize.retrieval.FusionRetriever` over other
  branches): each branch's scores as z-scores within its own candidate list,
  weighted per query by how clearly that branch's best candidates stand out of its list (the
  mean z-score of its top ``depth``). A branch whose top is no better than the rest of its
  candidates (a keyword branch matching only a common topic word, say) counts for less on
  that query; where both branches are sure, both count. See :func:`auto` for the rule.

* :func:`consistency`: z-scores of **complete** score vectors (both scores of every candidate
  of the union: the BM25 score of a document only dense found, the cosine of one only BM25
  found), each branch weighted by a corpus-level reliability reading that
  :class:`ConsistencyEstimate` keeps from the stream of served queries, without labels:
  a branch's *cross-space self-consistency* (do the documents it scores high lie near its own
  best documents in the *other* branch's space?). Until the estimate has a reading it fuses
  as :func:`auto`. Only :class:`~rag_optimize.retrieval.HybridRetriever` can feed it (it needs
  our indexes to score the other branch's candidates), and there it is the default; see
  :func:`consistency`.

No per-query rule of this kind tells, without labels, a corpus where one branch is much
weaker than the other (BM25 on WikiQA's question-to-sentence data, where every fixed
weighting short of dense alone ranks below dense alone) from one where both help (SciFact):
with two branches their reliabilities are not identifiable from their scores and agreement
alone. :func:`consistency`'s corpus-level reading does tell those two apart (WikiQA's BM25
reads about 0, SciFact's about 0.2), but it is a proxy: it also reads the other branch's
space, and with a weak *dense* model it still gives dense a large share. It is
:class:`~rag_optimize.retrieval.HybridRetriever`'s default all the same: on both shared BEIR
sets it is level with the better of ``auto`` and the best single branch, where ``auto`` falls
far below dense on WikiQA (see BENCHMARKS.md). With a few judged queries,
:func:`rag_optimize.retrieval.calibrate_fusion` sets the weights instead.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.validation import check_int

Ranked = Mapping[str, Sequence[tuple[str, float]]]
Fused = list[tuple[str, float]]
DEFAULT_RRF_K = 60.0


def check_weights(branches: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Weights for ``branches`` (1.0 each when ``None``), checked for unknown names and sign."""
    if weights is None:
        return {name: 1.0 for name in branches}
    unknown = set(weights) - set(branches)
    if unknown:
        raise ConfigurationError(
            f"weights name unknown branch(es) {sorted(unknown)}; branches are {list(branches)}"
        )
    out = {name: float(weights.get(name, 0.0)) for name in branches}
    if any(not math.isfinite(w) or w < 0 for w in out.values()):
        raise ConfigurationError(f"weights must be finite and >= 0, got {dict(weights)}")
    if not any(out.values()):
        raise ConfigurationError("at least one branch weight must be > 0")
    return out


def _combine(
    ranked: Ranked,
    weights: Mapping[str, float] | None,
    scale: Callable[[Sequence[tuple[str, float]]], list[float]],
) -> Fused:
    w = check_weights(list(ranked), weights)
    totals: dict[str, float] = {}
    for name, hits in ranked.items():
        for (doc_id, _), value in zip(hits, scale(hits), strict=True):
            totals[doc_id] = totals.get(doc_id, 0.0) + w[name] * value
    # sorted() is stable and dicts keep insertion order: ties keep first-seen order.
    return sorted(totals.items(), key=lambda item: -item[1])


def rrf(
    ranked: Ranked, weights: Mapping[str, float] | None = None, *, c: float = DEFAULT_RRF_K
) -> Fused:
    """Reciprocal rank fusion: ``sum_b w_b / (c + rank_b)``."""
    if c < 0:
        raise ConfigurationError(f"rrf constant c must be >= 0, got {c}")
    return _combine(ranked, weights, lambda hits: [1.0 / (c + r) for r in range(1, len(hits) + 1)])


def _min_max(hits: Sequence[tuple[str, float]]) -> list[float]:
    scores = [s for _, s in hits]
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    return [1.0 if hi == lo else (s - lo) / (hi - lo) for s in scores]


def relative_score(ranked: Ranked, weights: Mapping[str, float] | None = None) -> Fused:
    """Min-max scaled scores, weighted and summed."""
    return _combine(ranked, weights, _min_max)


def _distribution(hits: Sequence[tuple[str, float]]) -> list[float]:
    scores = [s for _, s in hits]
    if not scores:
        return []
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std == 0.0:
        return [1.0] * len(scores)
    low = mean - 3 * std
    return [(s - low) / (6 * std) for s in scores]


def weighted(ranked: Ranked, weights: Mapping[str, float] | None = None) -> Fused:
    """Scores standardised per branch (mean +- 3 std to [0, 1]), weighted and summed."""
    return _combine(ranked, weights, _distribution)


AUTO_DEPTH = 10


def _evidence(hits: Sequence[tuple[str, float]], depth: int) -> tuple[list[float], float, float]:
    """z-scores of a branch's list, its confidence, and the z a missing document gets."""
    scores = [s for _, s in hits]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std <= 1e-12 * max(1.0, abs(mean)):  # one hit, or all equal: no spread to read
        return [1.0] * len(scores), 1.0, 0.0
    z = [(s - mean) / std for s in scores]
    top = z[: min(depth, len(z))]
    return z, max(0.0, sum(top) / len(top)), min(z)


def auto(
    ranked: Ranked, weights: Mapping[str, float] | None = None, *, depth: int = AUTO_DEPTH
) -> Fused:
    """Evidence-weighted score fusion, adapted per query to how sure each branch is.

    For each branch: ``z = (s - mean) / std`` over its own candidate list (so BM25's
    unbounded scores and cosine similarities meet on one scale, as in :func:`weighted`), and
    ``confidence = mean(z of its top depth)``: large when the branch's best candidates stand
    far above the rest of its list, near 0 when its ranking is flat (no candidate is
    clearly better). Fused score: ``sum_b w_b * confidence_b * z_b``; a document a branch
    did not return gets that branch's lowest z (it ranked below the whole list). Nothing is
    fitted to a data set: ``depth`` is the cut-off nDCG@10 looks at.
    """
    w = check_weights(list(ranked), weights)
    totals: dict[str, float] = {}
    parts = []
    for name, hits in ranked.items():
        if not hits:
            continue
        z, confidence, floor = _evidence(hits, depth)
        parts.append((w[name] * confidence, dict(zip([d for d, _ in hits], z, strict=True)), floor))
        for doc_id, _ in hits:
            totals.setdefault(doc_id, 0.0)
    for weight, zs, floor in parts:
        for doc_id in totals:
            totals[doc_id] += weight * zs.get(doc_id, floor)
    return sorted(totals.items(), key=lambda item: -item[1])


def self_consistency(scores: npt.ArrayLike, view: npt.ArrayLike) -> float | None:
    """Pearson correlation of a branch's ``scores`` with a cross-space ``view`` of the same
    candidates, or ``None`` when either is constant (nothing to read on this query).

    For BM25 the view is each candidate's cosine to the centroid of BM25's top 5 documents;
    for dense, each candidate's BM25 score against the words of dense's top 5 documents. A
    branch whose ranking is driven by what the documents are about scores high the
    documents that resemble its own best ones in the other space too; one whose high
    scores come from chance term matches (or noise) does not.
    """
    a = np.asarray(scores, dtype=np.float64)
    b = np.asarray(view, dtype=np.float64)
    if a.shape != b.shape or a.size < 3:
        return None
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    if not norm > 1e-12 or not math.isfinite(norm):
        return None
    return float(a @ b) / norm


CONSISTENCY_WARMUP = 1
CONSISTENCY_SAMPLE_FIRST = 200
CONSISTENCY_SAMPLE_EVERY = 10
CONSISTENCY_MEMORY = 1000
#: A branch is weighed only once its mean reading is credibly above zero: more than
#: ``CONSISTENCY_Z`` standard errors. The spread of one query's reading is taken as
#: ``CONSISTENCY_PRIOR_SD`` until the queries show their own (a pseudo-observation, so the
#: first readings cannot claim certainty): measured per query on the two shared BEIR sets,
#: BM25's reading spreads 0.19-0.20, dense's 0.10-0.12.
CONSISTENCY_Z = 1.0
CONSISTENCY_PRIOR_SD = 0.2
_ESTIMATE_FORMAT = 2
_READS_FORMATS = (1, 2)  # 1: before the spreads were kept (read as the prior's)


class ConsistencyEstimate:
    """A running, label-free reading of each branch's reliability on *this* corpus and query
    stream: the mean of its per-query :func:`self_consistency` (thread-safe, cheap).

    * ``warmup``: below this many observed queries :meth:`weights` is ``None`` and
      :func:`consistency` fuses as :func:`auto`. The default, 1, means no other rule: the
      first query is read before it is fused and weighs the branches by its own reading,
      the next ones by the running mean. The corpus mean settles early (on SciFact the BM25
      weight read from the first 10 queries is 0.41, from 127 it is 0.36; on WikiQA 0 from
      the first 10), while every query served by ``auto`` where one branch is weak costs
      (WikiQA: ``auto`` 0.61 against dense 0.70 nDCG@10). On the study harness, online,
      warm-ups of 1 / 2 / 5 gave WikiQA 0.7061 / 0.7053 / 0.7053 (dense 0.7061), SciFact
      0.7987 for all three, and the eleven sets within 0.0021 of each other otherwise;
      through :class:`~rag_optimize.retrieval.HybridRetriever` 1 gave WikiQA 0.7055 and
      SciFact 0.7987, 5 gave 0.7053 and 0.7985 (BENCHMARKS.md, "Consistency fusion"), and
      with the credibility gate below 1 gives WikiQA 0.7061 and SciFact 0.7987.
    * Sampling: the cross-space views cost one extra BM25 pass over the words of five
      documents and a few dozen vector products per query, so only a sample of queries is
      observed: every one of the first ``sample_first`` served, then one in ``sample_every``
      (a corpus-level mean needs no more, and the later samples keep it following a drifting
      corpus or query mix).
    * ``memory``: after this many observations the mean becomes an exponential moving
      average over about that many (an old corpus's readings fade out).

    :meth:`weights` gives each branch ``max(0, mean)``: a branch whose scores do not agree
    with its own best documents' neighbourhood in the other space counts for nothing. A
    branch counts only while its mean is credibly positive (above :data:`CONSISTENCY_Z`
    standard errors, see :data:`CONSISTENCY_PRIOR_SD`); if no branch is, every branch with a
    positive mean counts. This is what keeps one query's chance reading from steering the
    first fusions: on WikiQA the first query's BM25 reading was 0.04 (the corpus mean is
    below 0), which weighed BM25 at a tenth of dense and lost that query 0.64 nDCG@10; gated,
    the cold stream equals dense alone (0.7061) and SciFact is unchanged (0.7987).
    The state is JSON (:meth:`to_dict` / :meth:`from_dict`); HybridRetriever saves it.
    """

    def __init__(
        self,
        branches: Sequence[str] = ("bm25", "dense"),
        *,
        warmup: int = CONSISTENCY_WARMUP,
        sample_first: int = CONSISTENCY_SAMPLE_FIRST,
        sample_every: int = CONSISTENCY_SAMPLE_EVERY,
        memory: int = CONSISTENCY_MEMORY,
    ) -> None:
        for label, value, least in (
            ("warmup", warmup, 0),
            ("sample_first", sample_first, 0),
            ("sample_every", sample_every, 1),
            ("memory", memory, 1),
        ):
            check_int(label, value, least)
        if isinstance(branches, str) or len(set(branches)) != len(branches) or not branches:
            raise ConfigurationError(f"branches must be distinct names, got {branches!r}")
        self.branches = tuple(str(b) for b in branches)
        self.warmup, self.sample_first, self.sample_every = warmup, sample_first, sample_every
        self.memory = memory
        self._lock = threading.Lock()
        self._served = 0
        self._observed = 0
        self._means = {b: 0.0 for b in self.branches}
        self._variances = {b: 0.0 for b in self.branches}  # of one query's reading

    @property
    def observed(self) -> int:
        """How many queries the estimate has read so far."""
        return self._observed

    def should_sample(self) -> bool:
        """Count one served query; ``True`` when its cross-space views should be observed."""
        with self._lock:
            self._served += 1
            n = self._served
        return n <= self.sample_first or (n - self.sample_first) % self.sample_every == 0

    def observe(self, kappas: Mapping[str, float]) -> None:
        """Fold in one query's self-consistency per branch (every branch, finite)."""
        values = {b: float(kappas[b]) for b in self.branches if b in kappas}
        if len(values) != len(self.branches) or not all(map(math.isfinite, values.values())):
            raise InvalidInputError(
                f"observe needs a finite value for each of {list(self.branches)}, got {kappas!r}"
            )
        with self._lock:
            self._observed += 1
            step = 1.0 / min(self._observed, self.memory)
            for b, v in values.items():
                delta = v - self._means[b]
                self._means[b] += step * delta
                # the same (exponentially weighted, past ``memory``) running variance
                self._variances[b] = (1.0 - step) * (self._variances[b] + step * delta * delta)

    def means(self) -> dict[str, float]:
        """The current mean self-consistency per branch (0 before any observation)."""
        with self._lock:
            return dict(self._means)

    def weights(self) -> dict[str, float] | None:
        """Per-branch reliability weights, or ``None`` while warming up (or all are 0)."""
        with self._lock:
            if self._observed < max(1, self.warmup):
                return None
            out = {b: max(0.0, m) for b, m in self._means.items()}
            n = min(self._observed, self.memory)
            credible = {
                b: m > CONSISTENCY_Z * math.sqrt(self._spread(self._variances[b], n) / n)
                for b, m in self._means.items()
            }
        if any(credible.values()):
            out = {b: w if credible[b] else 0.0 for b, w in out.items()}
        return out if any(out.values()) else None

    @staticmethod
    def _spread(variance: float, n: int) -> float:
        """One reading's variance from ``n`` readings and the prior pseudo-observation."""
        return (CONSISTENCY_PRIOR_SD**2 + n * variance) / n

    def to_dict(self) -> dict[str, Any]:
        """The estimate and its settings as JSON-ready data."""
        with self._lock:
            return {
                "format": _ESTIMATE_FORMAT,
                "branches": list(self.branches),
                "warmup": self.warmup,
                "sample_first": self.sample_first,
                "sample_every": self.sample_every,
                "memory": self.memory,
                "served": self._served,
                "observed": self._observed,
                "means": dict(self._means),
                "variances": dict(self._variances),
            }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsistencyEstimate:
        """An estimate from :meth:`to_dict`'s data; damaged data raises InvalidInputError."""
        try:
            if data.get("format") not in _READS_FORMATS:
                raise ValueError(f"format {data.get('format')!r}")
            estimate = cls(
                data["branches"],
                warmup=data["warmup"],
                sample_first=data["sample_first"],
                sample_every=data["sample_every"],
                memory=data["memory"],
            )
            served, observed = data["served"], data["observed"]
            means = {b: float(data["means"][b]) for b in estimate.branches}
            if not all(isinstance(v, int) and v >= 0 for v in (served, observed)):
                raise ValueError("negative or non-integer counts")
            if not all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in means.values()):
                raise ValueError(f"means out of [-1, 1]: {means}")
            saved = data.get("variances") if data["format"] >= 2 else None
            variances = {
                b: CONSISTENCY_PRIOR_SD**2 if saved is None else float(saved[b])
                for b in estimate.branches
            }
            if not all(math.isfinite(v) and 0.0 <= v <= 4.0 for v in variances.values()):
                raise ValueError(f"variances out of [0, 4]: {variances}")
        except (KeyError, TypeError, ValueError, AttributeError, ConfigurationError) as exc:
            raise InvalidInputError(f"not a saved consistency estimate: {exc}") from None
        estimate._served, estimate._observed, estimate._means = served, observed, means
        estimate._variances = variances
        return estimate


def _z(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    std = float(values.std())
    return (values - values.mean()) / std if std > 1e-12 else np.zeros_like(values)


def consistency(
    ranked: Ranked,
    weights: Mapping[str, float] | None = None,
    *,
    complete: tuple[Sequence[str], Mapping[str, npt.ArrayLike]] | None = None,
    reliability: Mapping[str, float] | None = None,
) -> Fused:
    """Reliability-weighted fusion of complete score vectors.

    ``complete`` is ``(ids, {branch: scores})``: every candidate of the union with every
    branch's score for it (without it, a document a branch did not return gets that
    branch's lowest listed score). ``reliability`` is :meth:`ConsistencyEstimate.weights`.
    Fused score: ``sum_b w_b * reliability_b * z_b`` with ``z_b`` the branch's scores
    z-scored over the union. Without a reliability reading (warming up), or when it gives
    every branch 0, this is :func:`auto`.
    """
    w = check_weights(list(ranked), weights)
    if reliability is None:
        return auto(ranked, weights)
    mix = {name: w[name] * max(0.0, float(reliability.get(name, 0.0))) for name in ranked}
    if not any(mix.values()):
        return auto(ranked, weights)
    if complete is None:
        order = list(dict.fromkeys(d for hits in ranked.values() for d, _ in hits))
        columns: dict[str, npt.ArrayLike] = {}
        for name, hits in ranked.items():
            listed = dict(hits)
            floor = min(listed.values(), default=0.0)
            columns[name] = [listed.get(d, floor) for d in order]
        complete = (order, columns)
    ids, scores = complete
    total = np.zeros(len(ids), dtype=np.float64)
    for name, weight in mix.items():
        if weight:
            total += weight * _z(np.asarray(scores[name], dtype=np.float64))
    order_ = np.argsort(-total, kind="stable")  # ties keep first-seen order
    return [(ids[i], float(total[i])) for i in order_.tolist()]


FUSIONS: dict[str, Callable[..., Fused]] = {
    "auto": auto,
    "consistency": consistency,
    "rrf": rrf,
    "relative_score": relative_score,
    "weighted": weighted,
}


def get_fusion(name: str) -> Callable[..., Fused]:
    """The fusion function called ``name``, or a :class:`ConfigurationError` listing them."""
    try:
        return FUSIONS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown fusion {name!r}: use one of {', '.join(FUSIONS)}"
        ) from None
