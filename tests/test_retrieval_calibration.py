"""calibrate_fusion: branch weights from judged queries, checked on queries it did not see."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rag_optimize import HashingEmbedder
from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index import Hit
from rag_optimize.retrieval import (
    CallableBranch,
    FusionRetriever,
    HybridRetriever,
    calibrate_fusion,
)
from tests.retrieval_corpus import TEXTS

DOCS = [f"d{i}" for i in range(60)]


def _informed(query: str, k: int) -> list[Hit]:
    """A good branch: the query's own document first (query "q7" -> "d7"), then the rest."""
    target = "d" + query[1:]
    rest = [d for d in DOCS if d != target]
    random.Random(query).shuffle(rest)
    ranked = [target, *rest][:k]
    return [Hit(d, 1.0 - 0.01 * i, d, {}, None) for i, d in enumerate(ranked)]


def _noise(query: str, k: int) -> list[Hit]:
    """A confident but uninformed branch: a few documents far above the rest, at random."""
    order = list(DOCS)
    random.Random("noise" + query).shuffle(order)
    order = order[:k]
    scores = [10.0 - i if i < 3 else 1.0 / (i + 1) for i in range(len(order))]
    return [Hit(d, s, d, {}, None) for d, s in zip(order, scores, strict=True)]


def _retriever() -> FusionRetriever:
    return FusionRetriever(
        [CallableBranch("noise", _noise), CallableBranch("informed", _informed)],
        k=10,
        candidates=30,
    )


def _mean_ndcg_at_1(retriever: FusionRetriever, queries: list[str]) -> float:
    return sum(retriever.retrieve(q).ids[0] == "d" + q[1:] for q in queries) / len(queries)


def test_calibration_finds_the_informed_branch_and_helps_unseen_queries() -> None:
    retriever = _retriever()
    seen = [f"q{i}" for i in range(0, 30)]
    unseen = [f"q{i}" for i in range(30, 60)]
    before = _mean_ndcg_at_1(retriever, unseen)
    assert before < 0.5  # equal weights: the confident noise wins most queries
    result = calibrate_fusion(retriever, seen, [{"d" + q[1:]} for q in seen])
    assert result.weights["informed"] > result.weights["noise"]
    assert result.ndcg > result.before
    assert result.queries == 30 and result.k == 10
    assert result.table[0] == (result.weights, result.ndcg)
    assert retriever.weights == result.weights  # applied
    after = _mean_ndcg_at_1(retriever, unseen)
    assert after == 1.0 and after > before


def test_without_evidence_the_weights_stay() -> None:
    """Two copies of one branch: every weighting ranks alike, so the current one is kept."""
    retriever = FusionRetriever(
        [CallableBranch("a", _informed), CallableBranch("b", _informed)],
        weights={"a": 3.0, "b": 1.0},
    )
    result = calibrate_fusion(retriever, ["q1", "q2"], [{"d1"}, {"d2"}], apply=False)
    assert result.weights == {"a": 0.75, "b": 0.25}
    assert retriever.weights == {"a": 3.0, "b": 1.0}  # apply=False changes nothing


def test_calibrated_weights_are_saved(tmp_path: Path) -> None:
    retriever = HybridRetriever.from_texts(TEXTS, HashingEmbedder(dim=64), k=3)
    result = calibrate_fusion(
        retriever, ["capital of France", "powerhouse of the cell"], [{"0"}, {"4"}], steps=4
    )
    retriever.save(tmp_path / "h")
    loaded = HybridRetriever.load(tmp_path / "h", HashingEmbedder(dim=64))
    assert loaded.weights == result.weights == retriever.weights
    assert sum(result.weights.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("queries", "relevant", "error", "match"),
    [
        ([], [], InvalidInputError, "non-empty"),
        ("q1", [{"d1"}], InvalidInputError, "sequence of strings"),
        (["q1", "q2"], [{"d1"}], InvalidInputError, "1 entries for 2 queries"),
        (["q1"], [set()], InvalidInputError, r"relevant\[0\]"),
        (["q1"], ["d1"], InvalidInputError, r"relevant\[0\]"),
    ],
)
def test_bad_input(queries: object, relevant: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        calibrate_fusion(_retriever(), queries, relevant)  # type: ignore[arg-type]


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="steps"):
        calibrate_fusion(_retriever(), ["q1"], [{"d1"}], steps=0)
    with pytest.raises(ConfigurationError, match="k must"):
        calibrate_fusion(_retriever(), ["q1"], [{"d1"}], k=0)
