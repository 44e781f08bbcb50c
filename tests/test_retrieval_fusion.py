"""Fusion maths against hand-computed examples."""

from __future__ import annotations

import pytest

from rag_optimize.errors import ConfigurationError
from rag_optimize.retrieval.fusion import auto, get_fusion, relative_score, rrf, weighted

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


def test_auto_by_hand() -> None:
    ranked = {"a": [("x", 3.0), ("y", 1.0)], "b": [("y", 0.9), ("z", 0.5), ("w", 0.1)]}
    # a: mean 2, std 1 -> z x=1, y=-1; confidence = mean z of its top 10 = 0.
    # b: mean 0.5, std 0.3266 -> z y=1.2247, z=0, w=-1.2247; confidence 0.
    # Both lists are short enough that "top 10" is the whole list: no evidence either way.
    assert {d for d, _ in auto(ranked)} == {"x", "y", "z", "w"}
    assert all(score == pytest.approx(0.0) for _, score in auto(ranked))
    # With depth 1 the confidence is the top z: a 1.0, b 1.2247.
    fused = as_dict(auto(ranked, depth=1))
    za, zb = {"x": 1.0, "y": -1.0}, {"y": 1.2247449, "z": 0.0, "w": -1.2247449}
    for doc in ("x", "y", "z", "w"):
        want = 1.0 * za.get(doc, -1.0) + 1.2247449 * zb.get(doc, -1.2247449)
        assert fused[doc] == pytest.approx(want, rel=1e-6)
    assert [d for d, _ in auto(ranked, depth=1)] == ["y", "x", "z", "w"]


def test_auto_trusts_the_branch_whose_top_stands_out() -> None:
    # "sure": ten candidates far above the other forty (confidence: mean top-10 z = 2.0).
    # "unsure": fifty evenly spaced scores, a ramp with no clear top (about 1.39), and it
    # ranks the sure branch's ten at the bottom. The fused top ten follow the sure branch.
    top = [f"t{i}" for i in range(10)]
    rest = [f"r{i}" for i in range(40)]
    sure = [(d, 10.0) for d in top] + [(d, 1.0) for d in rest]
    unsure = [(d, 100.0 - i) for i, d in enumerate(rest + top)]
    fused = [d for d, _ in auto({"sure": sure, "unsure": unsure})]
    assert sorted(fused[:10]) == sorted(top)
    # RRF, blind to the evidence, lets the unsure branch's first documents in.
    assert set([d for d, _ in rrf({"sure": sure, "unsure": unsure})][:10]) != set(top)
    # Weights still scale a branch: switching the sure branch off follows the other one.
    off = [d for d, _ in auto({"sure": sure, "unsure": unsure}, {"sure": 0.0, "unsure": 1.0})]
    assert off[:3] == ["r0", "r1", "r2"]


def test_auto_single_hits_and_empty_branches() -> None:
    assert auto({"a": [], "b": [("y", 1.0)]}) == [("y", pytest.approx(1.0))]
    fused = auto({"a": [("only", 7.0)], "b": [("u", 0.9), ("v", 0.5), ("only", 0.1)]})
    assert {d for d, _ in fused} == {"only", "u", "v"}
    assert get_fusion("auto") is auto
