"""``fusion="consistency"``: the online reliability estimate, its fusion, save/load, threads."""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index import BM25Index, DenseIndex
from rag_optimize.retrieval import (
    CallableBranch,
    FusionRetriever,
    HybridRetriever,
    calibrate_fusion,
)
from rag_optimize.retrieval.fusion import (
    ConsistencyEstimate,
    auto,
    consistency,
    self_consistency,
)

sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from retrieval_corpus import TEXTS  # noqa: E402


def topical_corpus(seed: int = 0) -> tuple[list[str], list[str]]:
    """400 documents in 20 topics (8 topic words each, plus common filler), and 60 queries
    of two topic words and one filler word: both branches can tell the topics apart."""
    rng = random.Random(seed)
    topics = [[f"t{j}w{i}" for i in range(8)] for j in range(20)]
    filler = [f"c{i}" for i in range(30)]
    texts = [
        " ".join(rng.choices(topics[d % 20], k=6) + rng.choices(filler, k=6)) for d in range(400)
    ]
    queries = [
        " ".join(rng.choices(topics[rng.randrange(20)], k=2) + rng.choices(filler, k=1))
        for _ in range(60)
    ]
    return texts, queries


def retriever(**options: object) -> tuple[HybridRetriever, list[str]]:
    texts, queries = topical_corpus()
    built = HybridRetriever.from_texts(
        texts, HashingEmbedder(dim=64), fusion="consistency", candidates=50, **options
    )
    return built, queries


# -- the estimator ---------------------------------------------------------------------------


def test_a_branch_whose_consistency_is_noise_gets_weight_about_zero() -> None:
    rng = np.random.default_rng(0)
    estimate = ConsistencyEstimate(warmup=20)
    for _ in range(300):  # bm25's readings: noise around 0; dense's: clearly positive
        estimate.observe(
            {"bm25": float(rng.normal(0.0, 0.2)), "dense": float(rng.normal(0.5, 0.2))}
        )
    weights = estimate.weights()
    assert weights is not None
    assert weights["bm25"] < 0.05 and weights["dense"] == pytest.approx(0.5, abs=0.05)
    assert estimate.observed == 300


def test_no_weights_while_warming_up_or_when_every_branch_reads_zero() -> None:
    estimate = ConsistencyEstimate(warmup=3)
    for _ in range(2):
        estimate.observe({"bm25": 0.3, "dense": 0.4})
    assert estimate.weights() is None  # 2 < warmup
    estimate.observe({"bm25": 0.3, "dense": 0.4})
    assert estimate.weights() == pytest.approx({"bm25": 0.3, "dense": 0.4})
    negative = ConsistencyEstimate(warmup=1)
    negative.observe({"bm25": -0.2, "dense": -0.1})
    assert negative.weights() is None  # nothing to weight by: consistency fuses as auto


def test_a_branch_counts_only_once_its_reading_is_credibly_positive() -> None:
    estimate = ConsistencyEstimate(warmup=1)
    estimate.observe({"bm25": 0.04, "dense": 0.42})  # one chance reading (WikiQA's first)
    assert estimate.weights() == {"bm25": 0.0, "dense": pytest.approx(0.42)}
    # Readings that keep agreeing become credible: after 10 at 0.15 (spread 0.05) it counts.
    for i in range(10):
        estimate.observe({"bm25": 0.15 + (0.05 if i % 2 else -0.05), "dense": 0.42})
    weights = estimate.weights()
    assert weights is not None and 0.1 < weights["bm25"] < 0.15
    # Nothing credible yet anywhere: every positive mean counts (not auto, not nothing).
    unsure = ConsistencyEstimate(warmup=1)
    unsure.observe({"bm25": 0.1, "dense": 0.15})
    assert unsure.weights() == pytest.approx({"bm25": 0.1, "dense": 0.15})


def test_the_gate_reads_the_spread_of_the_readings() -> None:
    steady, noisy = ConsistencyEstimate(), ConsistencyEstimate()
    for i in range(8):  # the same mean (0.1), spread 0.01 against 0.5
        steady.observe({"bm25": 0.1 + (0.01 if i % 2 else -0.01), "dense": 0.6})
        noisy.observe({"bm25": 0.1 + (0.5 if i % 2 else -0.5), "dense": 0.6})
    steady_weights, noisy_weights = steady.weights(), noisy.weights()
    assert steady_weights is not None and noisy_weights is not None
    assert steady_weights["bm25"] == pytest.approx(0.1) and noisy_weights["bm25"] == 0.0


def test_sampling_reads_the_first_queries_then_one_in_n() -> None:
    estimate = ConsistencyEstimate(sample_first=5, sample_every=10)
    picked = [i for i in range(1, 41) if estimate.should_sample()]
    assert picked == [1, 2, 3, 4, 5, 15, 25, 35]


def test_memory_turns_the_mean_into_a_moving_average() -> None:
    estimate = ConsistencyEstimate(memory=10, warmup=1)
    for _ in range(200):
        estimate.observe({"bm25": 0.8, "dense": 0.1})
    for _ in range(100):  # the corpus changed: bm25 stops agreeing
        estimate.observe({"bm25": 0.0, "dense": 0.1})
    assert estimate.means()["bm25"] < 0.01


def test_estimator_bad_input() -> None:
    estimate = ConsistencyEstimate()
    with pytest.raises(InvalidInputError, match="finite value for each"):
        estimate.observe({"bm25": 0.1})
    with pytest.raises(InvalidInputError, match="finite value for each"):
        estimate.observe({"bm25": float("nan"), "dense": 0.1})
    with pytest.raises(ConfigurationError, match="sample_every"):
        ConsistencyEstimate(sample_every=0)
    with pytest.raises(InvalidInputError, match="not a saved consistency estimate"):
        ConsistencyEstimate.from_dict({"format": 1, "branches": ["bm25", "dense"]})
    saved = ConsistencyEstimate().to_dict()
    saved["means"] = {"bm25": 7.0, "dense": 0.1}
    with pytest.raises(InvalidInputError, match="out of"):
        ConsistencyEstimate.from_dict(saved)
    saved = ConsistencyEstimate().to_dict()
    saved["variances"] = {"bm25": float("nan"), "dense": 0.1}
    with pytest.raises(InvalidInputError, match="variances out of"):
        ConsistencyEstimate.from_dict(saved)


def test_an_estimate_saved_before_the_spreads_were_kept_still_loads() -> None:
    estimate = ConsistencyEstimate()
    for _ in range(50):
        estimate.observe({"bm25": 0.05, "dense": 0.5})
    saved = estimate.to_dict()
    assert saved["format"] == 2 and saved["variances"]["bm25"] == pytest.approx(0.0)
    old = {k: v for k, v in saved.items() if k != "variances"} | {"format": 1}
    loaded = ConsistencyEstimate.from_dict(old)
    # read with the prior's spread: 50 readings at 0.05 are still credible (se 0.028)
    assert loaded.weights() == pytest.approx({"bm25": 0.05, "dense": 0.5})
    assert ConsistencyEstimate.from_dict(saved).to_dict() == saved


def test_self_consistency_is_a_correlation_and_none_without_spread() -> None:
    assert self_consistency([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert self_consistency([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert self_consistency([1, 1, 1, 1], [1, 2, 3, 4]) is None
    assert self_consistency([1, 2], [1, 2]) is None  # too few candidates to read


# -- the fusion rule -------------------------------------------------------------------------

RANKED = {"bm25": [("x", 10.0), ("y", 5.0)], "dense": [("y", 0.9), ("w", 0.5)]}


def test_consistency_fuses_complete_scores_by_hand() -> None:
    ids = ["x", "y", "w"]
    complete = (ids, {"bm25": [10.0, 5.0, 0.0], "dense": [0.1, 0.9, 0.5]})
    fused = consistency(RANKED, complete=complete, reliability={"bm25": 0.5, "dense": 1.0})

    def z(v: list[float]) -> np.ndarray:
        a = np.asarray(v)
        return (a - a.mean()) / a.std()

    expect = 0.5 * z([10.0, 5.0, 0.0]) + 1.0 * z([0.1, 0.9, 0.5])
    assert dict(fused) == pytest.approx(dict(zip(ids, expect.tolist(), strict=True)))
    assert [d for d, _ in fused] == [ids[i] for i in np.argsort(-expect, kind="stable")]
    # a user weight multiplies the reliability: bm25 x0 leaves the dense order
    only_dense = consistency(
        RANKED,
        {"bm25": 0.0, "dense": 1.0},
        complete=complete,
        reliability={"bm25": 0.5, "dense": 1.0},
    )
    assert [d for d, _ in only_dense] == ["y", "w", "x"]


def test_consistency_without_a_reading_is_auto() -> None:
    assert consistency(RANKED) == auto(RANKED)
    assert consistency(RANKED, reliability={"bm25": 0.0, "dense": 0.0}) == auto(RANKED)


# -- through HybridRetriever -----------------------------------------------------------------


def test_the_retriever_learns_from_what_it_serves_and_starts_as_auto() -> None:
    learning, queries = retriever()
    assert learning.consistency.warmup == 1  # the default: the first query reads itself
    learning.retrieve(queries[0])
    assert learning.consistency.observed == 1 and learning.consistency.weights() is not None
    learning, queries = retriever()
    learning.consistency = ConsistencyEstimate(("bm25", "dense"), warmup=3)
    plain = HybridRetriever(
        learning.sparse, learning.dense, learning.embedder, fusion="auto", candidates=50
    )
    warmup = learning.consistency.warmup
    for query in queries[: warmup - 1]:  # cold, below the warm-up: exactly auto
        assert learning.retrieve(query).ids == plain.retrieve(query).ids
    for query in queries[warmup - 1 :]:
        learning.retrieve(query)
    weights = learning.consistency.weights()
    assert learning.consistency.observed == len(queries)
    assert weights is not None and weights["bm25"] > 0.1 and weights["dense"] > 0.1
    assert any(learning.retrieve(q).ids != plain.retrieve(q).ids for q in queries)


def test_estimate_survives_save_and_load(tmp_path: Path) -> None:
    learning, queries = retriever()
    for query in queries:
        learning.retrieve(query)
    learning.save(tmp_path / "hybrid")
    loaded = HybridRetriever.load(tmp_path / "hybrid", HashingEmbedder(dim=64))
    assert loaded.fusion == "consistency"
    assert loaded.consistency.to_dict() == learning.consistency.to_dict()
    assert loaded.consistency.weights() is not None
    probe = ["t3w1 t3w2", "t7w0 c4", "c1 c2 t11w5"]
    assert [loaded.retrieve(q).ids for q in probe] == [learning.retrieve(q).ids for q in probe]


def test_observe_queries_seeds_the_estimate_without_serving() -> None:
    seeded, queries = retriever()
    weights = seeded.observe_queries(queries[:30])
    assert seeded.consistency.observed == 30 and weights is not None
    with pytest.raises(InvalidInputError, match="sequence of strings"):
        seeded.observe_queries("one query")


def test_concurrent_retrievals_count_every_observation() -> None:
    sequential, queries = retriever()
    for query in queries * 2:
        sequential.retrieve(query)
    shared, _ = retriever()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def serve(part: list[str]) -> None:
        try:
            barrier.wait()
            for query in part:
                shared.retrieve(query)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    stream = queries * 2
    threads = [threading.Thread(target=serve, args=(stream[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Below ``memory`` the estimate is a plain mean, so the order of the threads does not
    # change it: the same readings as the sequential run, every one of them counted.
    assert shared.consistency.observed == sequential.consistency.observed == len(stream)
    assert shared.consistency.means() == pytest.approx(sequential.consistency.means())


def test_calibration_does_not_feed_the_estimate() -> None:
    learning, queries = retriever()
    calibrate_fusion(learning, queries[:5], [{"0"}] * 5, steps=2)
    assert learning.consistency.observed == 0


def test_a_failing_score_completion_fails_open() -> None:
    class BrokenScores(BM25Index):
        def score(self, query: str, ids: object) -> np.ndarray:
            raise ConnectionError("scores unavailable")

    texts, queries = topical_corpus()
    sparse = BrokenScores()
    broken = HybridRetriever(
        sparse, DenseIndex(), HashingEmbedder(dim=64), fusion="consistency", candidates=50
    )
    broken.add_texts(texts)
    plain = HybridRetriever(sparse, broken.dense, broken.embedder, fusion="auto", candidates=50)
    for query in queries[:3]:
        result = broken.retrieve(query)
        assert not result.degraded and result.ids == plain.retrieve(query).ids
    assert broken.consistency.observed == 0


def test_consistency_needs_our_indexes() -> None:
    branch = CallableBranch("r0", lambda q, k: [])
    with pytest.raises(ConfigurationError, match="only HybridRetriever"):
        FusionRetriever([branch], fusion="consistency")


def test_single_index_consistency_is_that_index(hashing_embedder: HashingEmbedder) -> None:
    sparse = BM25Index()
    sparse.add(TEXTS)
    only = HybridRetriever(sparse, None, fusion="consistency")
    assert only.retrieve("capital of Germany").ids == [
        h.id for h in sparse.search("capital of Germany", 10)
    ]


def test_views_read_bm25s_texts_when_the_dense_index_holds_none() -> None:
    texts, queries = topical_corpus()
    embedder = HashingEmbedder(dim=64)
    ids = [f"d{i}" for i in range(len(texts))]
    sparse = BM25Index()
    sparse.add(texts, ids=ids)
    dense = DenseIndex()
    dense.add(embedder.embed_documents(texts), ids=ids)  # vectors only, no texts
    built = HybridRetriever(sparse, dense, embedder, fusion="consistency", candidates=50)
    for query in queries[:30]:
        built.retrieve(query)
    assert built.consistency.observed == 30
    reference, _ = retriever()
    for query in queries[:30]:
        reference.retrieve(query)
    assert built.consistency.means() == pytest.approx(reference.consistency.means())


def test_bm25_score_matches_search_for_any_document_and_a_repeated_long_query() -> None:
    texts, queries = topical_corpus()
    index = BM25Index()
    index.add(texts, ids=[f"d{i}" for i in range(len(texts))])
    index.delete(["d3", "d10"])  # rows left out of the built matrix, as search leaves them
    for query in [*queries[:10], " ".join(texts[:5])]:  # the last: five documents' words
        hits = index.search(query, 500)
        got = index.score(query, [h.id for h in hits])
        assert got == pytest.approx([h.score for h in hits], rel=1e-5)
        missing = sorted({f"d{i}" for i in range(400)} - {"d3", "d10"} - {h.id for h in hits})
        assert not index.score(query, missing).any()  # no term in common: 0
    assert index.score("zzz unknown words", ["d0"]).tolist() == [0.0]
    with pytest.raises(InvalidInputError, match="unknown document id"):
        index.score(queries[0], ["d3"])


def test_the_default_fusion_is_the_documented_one() -> None:
    sparse = BM25Index()
    sparse.add(TEXTS)
    assert HybridRetriever(sparse, None).fusion == "consistency"
    assert HybridRetriever(sparse, None, fusion="auto").fusion == "auto"
    assert FusionRetriever([CallableBranch("r0", lambda q, k: [])]).fusion == "auto"
    assert '``"auto"`` (default here' in (FusionRetriever.__doc__ or "")
    assert '``fusion="consistency"`` (the default here)' in (HybridRetriever.__doc__ or "")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "The default of `HybridRetriever` (and of both adapters' index mode),\n" in readme
    assert '`fusion="consistency"`, learns' in readme
