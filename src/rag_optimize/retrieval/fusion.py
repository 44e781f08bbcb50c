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
* :func:`auto` (the default): each branch's scores as z-scores within its own candidate list,
  weighted per query by how clearly that branch's best candidates stand out of its list (the
  mean z-score of its top ``depth``). A branch whose top is no better than the rest of its
  candidates (a keyword branch matching only a common topic word, say) counts for less on
  that query; where both branches are sure, both count. See :func:`auto` for the rule.

No rule of this kind tells, without labels, a corpus where one branch is much weaker than
the other (BM25 on WikiQA's question-to-sentence data, where every fixed weighting short of
dense alone ranks below dense alone) from one where both help (SciFact): with two branches
their reliabilities are not identifiable from their scores and agreement alone. For such data
:func:`rag_optimize.retrieval.calibrate_fusion` sets the weights from a few judged queries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from rag_optimize.errors import ConfigurationError

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


FUSIONS: dict[str, Callable[..., Fused]] = {
    "auto": auto,
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
