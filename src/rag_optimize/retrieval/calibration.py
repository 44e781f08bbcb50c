"""Fusion weights from a few judged queries: ``calibrate_fusion``.

No label-free rule tells, from two branches' scores alone, which of them a corpus rewards:
with two branches the reliability of each is not identifiable from their agreement (both
agree on the easy queries; on the others either may be the one that is right), and on a
corpus where one branch is much weaker (BM25 on question-to-sentence data such as WikiQA)
every equal-weight fusion, ``auto`` included, ranks below the strong branch alone. A handful
of judged queries settles it: :func:`calibrate_fusion` runs each branch once per query,
re-fuses the same candidates under every weighting on a grid (the branches are not run again),
and keeps the weighting with the best mean nDCG@k.

It fits one number per branch, so tens of queries are enough, and fits it on *your*
queries: measure on others (the benchmark calibrates on one half of a set's queries and
reports the other half). The weights are saved with :meth:`HybridRetriever.save`. The
reranker, if any, is not part of the calibration (it reorders the fused list afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index.documents import check_k

if TYPE_CHECKING:
    from rag_optimize.retrieval.hybrid import FusionRetriever

__all__ = ["CalibrationOptions", "FusionCalibration", "calibrate_fusion"]


class CalibrationOptions(TypedDict, total=False):
    """The keyword options of :func:`calibrate_fusion` (each described there), as one type:
    the adapters' ``calibrate_fusion`` methods take exactly these and refuse any other with
    :class:`~rag_optimize.errors.UnknownOptionError` naming it."""

    k: int
    steps: int
    apply: bool


@dataclass(frozen=True)
class FusionCalibration:
    """What :func:`calibrate_fusion` found.

    ``weights``: the best weighting (per branch name, summing to 1); ``ndcg``: its mean
    nDCG@``k`` on the calibration queries; ``before``: the same with the weights the
    retriever had; ``table``: every weighting tried with its nDCG, best first; ``queries``:
    how many queries were used.
    """

    weights: dict[str, float]
    ndcg: float
    before: float
    table: tuple[tuple[dict[str, float], float], ...]
    queries: int
    k: int


def _grid(names: Sequence[str], steps: int) -> Iterator[dict[str, float]]:
    """Every weighting whose parts are multiples of ``1 / steps`` and sum to 1."""

    def parts(n: int, total: int) -> Iterator[tuple[int, ...]]:
        if n == 1:
            yield (total,)
            return
        for first in range(total, -1, -1):
            for rest in parts(n - 1, total - first):
                yield (first, *rest)

    for combo in parts(len(names), steps):
        yield {name: c / steps for name, c in zip(names, combo, strict=True)}


def _ndcg(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal


def _distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return sum(abs(a[n] - b[n]) for n in a)


def calibrate_fusion(
    retriever: FusionRetriever,
    queries: Sequence[str],
    relevant: Sequence[Collection[str]],
    *,
    k: int = 10,
    steps: int = 20,
    apply: bool = True,
) -> FusionCalibration:
    """Choose ``retriever``'s branch weights from judged queries (see the module docstring).

    ``relevant[i]`` holds the ids of the documents relevant to ``queries[i]``; each
    weighting is scored by the mean nDCG@``k`` of the fused lists. Weightings
    are tried on a grid of step ``1 / steps``; among equally good ones the one closest to the
    retriever's current weights wins (so nothing changes without evidence). With ``apply``
    the retriever's weights are set to the result; the fusion method stays the one it has.
    """
    if isinstance(queries, str) or not isinstance(queries, Sequence) or not queries:
        raise InvalidInputError("queries must be a non-empty sequence of strings")
    if isinstance(relevant, str) or not isinstance(relevant, Sequence):
        raise InvalidInputError("relevant must be a sequence of collections of document ids")
    if len(relevant) != len(queries):
        raise InvalidInputError(
            f"relevant has {len(relevant)} entries for {len(queries)} queries: give one each"
        )
    for i, ids in enumerate(relevant):
        if isinstance(ids, str) or not isinstance(ids, Collection) or not ids:
            raise InvalidInputError(
                f"relevant[{i}] must be a non-empty collection of document ids, got {ids!r}"
            )
    try:
        k = check_k(k)
    except InvalidInputError:
        raise ConfigurationError(f"k must be a positive integer, got {k!r}") from None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigurationError(f"steps must be a positive integer, got {steps!r}")

    names = [b.name for b in retriever.branches]
    runs = []
    for query in queries:
        request = retriever._request(query, k, None)
        outcomes, _ = retriever._run_sync(request)
        runs.append((request.query, outcomes))
    total = sum(retriever.weights.values())
    current = {n: retriever.weights[n] / total for n in names}

    def score(weights: Mapping[str, float]) -> float:
        values = []
        for (query, outcomes), ids in zip(runs, relevant, strict=True):
            docs, _ = retriever._fuse_outcomes(outcomes, k, weights, query=query)
            values.append(_ndcg([d.id for d in docs], set(ids), k))
        return sum(values) / len(values)

    table = [(w, score(w)) for w in _grid(names, steps)]
    table.sort(key=lambda item: (-round(item[1], 12), _distance(item[0], current)))
    best, best_ndcg = table[0]
    before = score(retriever.weights)
    if apply:
        retriever.weights = dict(best)
    return FusionCalibration(
        weights=dict(best),
        ndcg=best_ndcg,
        before=before,
        table=tuple(table),
        queries=len(queries),
        k=k,
    )
