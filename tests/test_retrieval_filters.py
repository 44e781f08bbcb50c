"""Metadata filters: parsing, column semantics, and exact filtered top-k in every index."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError
from rag_optimize.index import BM25Index, DenseIndex
from rag_optimize.index.documents import DocumentStore
from rag_optimize.retrieval import (
    And,
    CallableBranch,
    Eq,
    FusionRetriever,
    HybridRetriever,
    In,
    Ne,
    Not,
    NotIn,
    Or,
    Range,
    parse_filter,
)
from rag_optimize.retrieval.filters import filter_mask

META = [
    {"tenant": "a", "year": 2019, "tags": ["x", "y"], "ok": True, "day": "2024-01-05"},
    {"tenant": "b", "year": 2021, "tags": ["y"], "ok": False, "day": "2024-02-10"},
    {"tenant": "a", "year": 2023.5, "tags": [], "ok": True},
    {"tenant": "c", "year": 2020, "ok": 1},
    {"year": 2022, "tags": ["z", 3]},
]


def store() -> DocumentStore:
    docs = DocumentStore()
    docs.extend(len(META), None, None, META)
    return docs


def rows(spec: object) -> list[int]:
    parsed = parse_filter(spec)  # type: ignore[arg-type]
    assert parsed is not None
    return np.flatnonzero(filter_mask(parsed, store())).tolist()


def test_equality_in_and_ranges() -> None:
    assert rows({"tenant": "a"}) == [0, 2]
    assert rows(Eq("tenant", "a")) == [0, 2]
    assert rows({"tenant": {"$in": ["a", "c"]}}) == [0, 2, 3]
    assert rows({"tenant": {"$nin": ["a"]}}) == [1, 3, 4]  # no tenant field matches $nin
    assert rows({"tenant": {"$ne": "a"}}) == [1, 3, 4]
    assert rows({"year": {"$gte": 2020, "$lt": 2023}}) == [1, 3, 4]
    assert rows(Range("year", gt=2021)) == [2, 4]
    assert rows({"year": 2023.5}) == [2]
    assert rows({"day": {"$gte": "2024-02-01"}}) == [1]  # ISO dates compare as strings
    assert rows(Range("day", lt="2024-02-10")) == [0]
    assert rows(Range("day", lte="2024-02-10")) == [0, 1]


def test_lists_booleans_and_combinations() -> None:
    assert rows({"tags": "y"}) == [0, 1]  # a list matches when an element does
    assert rows({"tags": 3}) == [4]
    assert rows({"ok": True}) == [0, 2]  # True is not the number 1
    assert rows({"ok": 1}) == [3]
    assert rows({"$or": [{"tenant": "b"}, {"tags": "z"}]}) == [1, 4]
    assert rows({"tenant": "a", "ok": True}) == [0, 2]
    assert rows({"$and": [{"tenant": "a"}, {"year": {"$lt": 2020}}]}) == [0]
    assert rows({"$not": {"tenant": "a"}}) == [1, 3, 4]
    assert rows((Eq("tenant", "a") | Eq("tenant", "b")) & ~Eq("ok", False)) == [0, 2]
    assert rows(And((In("tenant", ["a", "b"]), NotIn("year", [2019])))) == [1, 2]
    assert rows(Or((Ne("tenant", "a"), Not(Eq("ok", True))))) == [1, 3, 4]
    assert rows({"tenant": "nobody"}) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tenant": {"$like": "a"}}, "unknown filter operator '\\$like' on 'tenant'"),
        ({"$nor": [{"tenant": "a"}]}, "unknown filter operator '\\$nor'"),
        ({"tenant": {"$in": "a"}}, "needs a list"),
        ({"year": {"$gte": "2020", "$lt": 2030}}, "mix strings and numbers"),
        ({"tenant": {"$eq": {"x": 1}}}, "must be a string, number or boolean"),
        ({"tenant": None}, "must be a string, number or boolean"),
        ({"$or": []}, "needs a non-empty list"),
        ({}, "non-empty dict"),
        ("tenant=a", "non-empty dict"),
    ],
)
def test_bad_filters_name_the_problem(spec: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_filter(spec)  # type: ignore[arg-type]


def test_unknown_field_is_named() -> None:
    with pytest.raises(ConfigurationError, match="unknown filter field\\(s\\) \\['tenat'\\]"):
        rows({"tenat": "a"})


# -- exact filtered top-k, checked against brute force ---------------------------------------

N, DIM = 600, 16


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, list[dict[str, object]]]:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metas: list[dict[str, object]] = [
        {"tenant": f"t{i % 10}", "year": 2000 + i % 25} for i in range(N)
    ]
    return vectors, metas


def brute_force(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> list[str]:
    rows = np.flatnonzero(allowed)
    scores = vectors[rows] @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [str(rows[i]) for i in order]


@pytest.mark.parametrize("quantization", [None, "int8", "binary"])
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    tenants=st.sets(st.integers(0, 9), min_size=1, max_size=10),
    k=st.integers(1, 80),
)
def test_dense_filtered_search_is_the_top_k_of_the_matches(
    corpus: tuple[np.ndarray, list[dict[str, object]]],
    quantization: str | None,
    seed: int,
    tenants: set[int],
    k: int,
) -> None:
    vectors, metas = corpus
    index = DenseIndex(quantization=quantization)
    index.add(vectors, texts=[""] * N, metadatas=metas)
    spec = In("tenant", [f"t{t}" for t in sorted(tenants)])
    allowed = filter_mask(spec, index.documents)
    query = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    hits = index.search(query, k, allowed=allowed)
    got = [h.id for h in hits]
    want = brute_force(vectors, query, allowed, k)
    assert len(got) == min(k, int(allowed.sum()))
    assert all(allowed[int(i)] for i in got)  # nothing filtered out leaks back
    exact = [float(vectors[int(h.id)] @ query) for h in hits]
    assert [h.score for h in hits] == pytest.approx(exact, abs=1e-5)  # rescored exactly
    # Best first, up to float32 rounding: the index scores rows in one matrix product, the
    # check above one row at a time, and the two can differ in the last bit on near ties.
    assert all(a >= b - 1e-6 for a, b in zip(exact, exact[1:], strict=False))
    if quantization is None or allowed.sum() * 4 <= N:
        assert got == want  # exact: the subset is scanned exactly
    elif quantization == "int8":  # binary codes of 16 dimensions are too coarse for recall
        assert len(set(got) & set(want)) >= 0.8 * len(want)


def test_dense_ann_filtered_search_stays_inside_the_filter(
    corpus: tuple[np.ndarray, list[dict[str, object]]],
) -> None:
    vectors, metas = corpus
    index = DenseIndex(ann="usearch")
    index.add(vectors, metadatas=metas)
    for spec in (Eq("tenant", "t3"), Range("year", gte=2005), NotIn("tenant", ["t1"])):
        allowed = filter_mask(spec, index.documents)
        hits = index.search(vectors[5], 20, allowed=allowed)
        assert len(hits) == 20 and all(allowed[int(h.id)] for h in hits)
        want = brute_force(vectors, vectors[5], allowed, 20)
        assert len({h.id for h in hits} & set(want)) >= 16


def test_bm25_filter_never_leaks_zero_score_documents() -> None:
    # The case LlamaIndex's BM25 retriever gets wrong: top_k above the number of matches.
    index = BM25Index()
    index.add(
        ["red apple pie", "green apple", "red car", "blue sky", "apple tree"],
        metadatas=[{"kind": "food"}, {"kind": "food"}, {"kind": "car"}, {}, {"kind": "plant"}],
    )
    allowed = filter_mask(Eq("kind", "food"), index.documents)
    hits = index.search("red apple", k=10, allowed=allowed)
    assert [h.id for h in hits] == ["0", "1"] and all(h.score > 0 for h in hits)
    only_car = filter_mask(Eq("kind", "car"), index.documents)
    assert [h.id for h in index.search("apple", k=10, allowed=only_car)] == []
    none = np.zeros(5, dtype=bool)
    assert index.search("apple", k=3, allowed=none) == []


sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from retrieval_corpus import TEXTS  # noqa: E402

TOPICS = ["geo", "geo", "geo", "bio", "bio", "geo"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_hybrid_filter_applies_inside_both_branches(
    mode: str, hashing_embedder: HashingEmbedder
) -> None:
    retriever = HybridRetriever.from_texts(
        TEXTS,
        hashing_embedder,
        ids=[f"d{i}" for i in range(len(TEXTS))],
        metadatas=[{"topic": t, "n": i} for i, t in enumerate(TOPICS)],
        k=5,
    )

    def run(**kw: object) -> list[str]:
        if mode == "sync":
            return retriever.retrieve("capital of France", **kw).ids  # type: ignore[arg-type]
        return asyncio.run(retriever.aretrieve("capital of France", **kw)).ids  # type: ignore[arg-type]

    assert sorted(run(filter={"topic": "bio"})) == ["d3", "d4"]  # all matches, nothing else
    assert run(filter={"topic": "geo", "n": {"$gte": 1}})[0] == "d2"
    assert run(filter=Eq("topic", "none")) == []
    with pytest.raises(ConfigurationError, match="unknown filter field"):
        run(filter={"subject": "bio"})
    default = HybridRetriever(
        retriever.sparse, retriever.dense, hashing_embedder, filter={"topic": "bio"}, k=5
    )
    assert sorted(default.retrieve("capital of France").ids) == ["d3", "d4"]
    assert len(default.retrieve("capital of France", filter={"n": {"$lt": 3}})) == 3


def test_wrapped_branches_refuse_a_filter() -> None:
    branch = CallableBranch("framework", lambda q, k: [])
    retriever = FusionRetriever([branch])
    with pytest.raises(ConfigurationError, match="branch 'framework' cannot apply"):
        retriever.retrieve("anything", filter={"topic": "a"})


def test_concurrent_filtered_searches_agree_with_serial_ones(
    hashing_embedder: HashingEmbedder,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    retriever = HybridRetriever.from_texts(
        TEXTS * 20,
        hashing_embedder,
        metadatas=[{"topic": t, "n": i} for i, t in enumerate(TOPICS * 20)],
        k=5,
    )
    specs = [{"topic": "bio"}, {"n": {"$lt": 30}}, {"topic": "geo", "n": {"$gte": 60}}] * 20
    serial = [retriever.retrieve("capital energy", filter=s).ids for s in specs]
    retriever.sparse.documents._changed()  # type: ignore[union-attr]  # drop cached masks
    retriever.dense.documents._changed()  # type: ignore[union-attr]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(
            pool.map(lambda s: retriever.retrieve("capital energy", filter=s).ids, specs)
        )
    assert parallel == serial
