"""Fusion maths against hand-computed examples."""

from __future__ import annotations

import pytest

from rag_optimize.errors import ConfigurationError
from rag_optimize.retrieval.fusion import get_fusion, relative_score, rrf, weighted

# branch a: raw scores like BM25; branch b: cosine-like. y is found by both.
RANKED = {
    "a": [("x", 10.0), ("y", 5.0), ("z", 0.0)],
    "b": [("y", 0.9), ("w", 0.5)],
}


def as_dict(fused: list[tuple[str, float]]) -> dict[str, float]:
    return dict(fused)


def test_rrf_by_hand() -> None:
    fused = rrf(RANKED)
    assert [d for d, _ in fused] == ["y", "x", "w", "z"]
    assert as_dict(fused) == pytest.approx(
        {"x": 1 / 61, "y": 1 / 62 + 1 / 61, "z": 1 / 63, "w": 1 / 62}
    )


def test_weighted_rrf_and_constant_by_hand() -> None:
    fused = rrf(RANKED, {"a": 2.0, "b": 1.0})
    assert [d for d, _ in fused] == ["y", "x", "z", "w"]
    assert as_dict(fused)["z"] == pytest.approx(2 / 63)
    assert as_dict(rrf(RANKED, c=0))["y"] == pytest.approx(1 / 2 + 1 / 1)


def test_relative_score_by_hand() -> None:
    fused = relative_score(RANKED)
    # a: (10, 5, 0) -> (1, .5, 0); b: (.9, .5) -> (1, 0)
    assert as_dict(fused) == pytest.approx({"x": 1.0, "y": 1.5, "z": 0.0, "w": 0.0})
    assert [d for d, _ in fused] == ["y", "x", "z", "w"]  # z/w tie: first seen first
    assert as_dict(relative_score(RANKED, {"a": 0.25, "b": 1.0}))["x"] == pytest.approx(0.25)


def test_weighted_distribution_by_hand() -> None:
    fused = weighted(RANKED)
    std_a = (50 / 3) ** 0.5  # population std of (10, 5, 0)
    low_a = 5 - 3 * std_a
    expect = {
        "x": (10 - low_a) / (6 * std_a),
        "y": (5 - low_a) / (6 * std_a) + (0.9 - 0.1) / 1.2,  # b: mean .7, std .2
        "z": (0 - low_a) / (6 * std_a),
        "w": (0.5 - 0.1) / 1.2,
    }
    assert as_dict(fused) == pytest.approx(expect)
    assert [d for d, _ in fused] == ["y", "x", "w", "z"]


def test_single_score_and_equal_scores_give_one() -> None:
    one = {"a": [("only", 3.0)]}
    assert relative_score(one) == [("only", 1.0)]
    assert weighted(one) == [("only", 1.0)]
    assert as_dict(weighted({"a": [("p", 2.0), ("q", 2.0)]})) == {"p": 1.0, "q": 1.0}


def test_empty_branch_contributes_nothing() -> None:
    assert rrf({"a": [], "b": [("y", 1.0)]}) == [("y", pytest.approx(1 / 61))]


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="unknown fusion 'borda'"):
        get_fusion("borda")
    with pytest.raises(ConfigurationError, match="unknown branch"):
        rrf(RANKED, {"a": 1.0, "c": 1.0})
    with pytest.raises(ConfigurationError, match=">= 0"):
        rrf(RANKED, {"a": -1.0})
    with pytest.raises(ConfigurationError, match="> 0"):
        relative_score(RANKED, {"a": 0.0, "b": 0.0})
