"""DenseIndex: exact search, int8/binary recall against exact, ANN, memory, save/load, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError, InvalidInputError, InvalidVectorError
from rag_optimize.index import DenseIndex


def clustered(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 50 centres, and 40 queries near random corpus rows."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.8 * rng.standard_normal((n, dim))
    queries = x[rng.integers(0, n, 40)] + 0.5 * rng.standard_normal((40, dim))
    return x.astype(np.float32), queries.astype(np.float32)


def recall_at(index: DenseIndex, exact: DenseIndex, queries: np.ndarray, k: int) -> float:
    found = [
        len({h.id for h in index.search(q, k)} & {h.id for h in exact.search(q, k)}) / k
        for q in queries
    ]
    return float(np.mean(found))


def test_exact_search_matches_brute_force() -> None:
    x, queries = clustered(500, 32, 0)
    index = DenseIndex()
    index.add(x)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for q in queries[:5]:
        want = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:5]
        hits = index.search(q, 5)
        assert [h.id for h in hits] == [str(i) for i in want]
        assert hits[0].score >= hits[-1].score


@pytest.mark.parametrize(("quantization", "floor"), [("int8", 0.99), ("binary", 0.95)])
def test_quantized_recall_against_exact_on_random_vectors(quantization: str, floor: float) -> None:
    x, queries = clustered(4000, 128, 1)
    exact, quant = DenseIndex(), DenseIndex(quantization=quantization)
    exact.add(x)
    quant.add(x)
    assert recall_at(quant, exact, queries, 10) >= floor
    memory = quant.memory_usage()
    # int8: one byte a dimension and a float32 scale a row; binary: one bit a dimension.
    per_row = 128 + 4 if quantization == "int8" else 128 // 8
    assert memory["scan"] <= 4000 * per_row < exact.memory_usage()["scan"] / 3.8


def test_quantized_recall_on_hashing_embedder_texts(hashing_embedder: HashingEmbedder) -> None:
    words = "cat dog fish bird tree river stone cloud music paper road light".split()
    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(words, 6)) for _ in range(800)]
    vectors = hashing_embedder.embed_documents(texts)
    exact, int8 = DenseIndex(), DenseIndex(quantization="int8")
    exact.add(vectors, texts=texts)
    int8.add(vectors, texts=texts)
    queries = [hashing_embedder.embed_query(" ".join(rng.choice(words, 3))) for _ in range(20)]
    # Ties are common with hashed bag-of-words, so compare scores, not ids.
    for q in queries:
        assert [h.score for h in int8.search(q, 10)] == pytest.approx(
            [h.score for h in exact.search(q, 10)], abs=1e-6
        )


def test_ann_candidates_are_rescored_exactly() -> None:
    x, queries = clustered(3000, 64, 3)
    exact, ann = DenseIndex(), DenseIndex(ann="usearch", rescore_factor=10)
    exact.add(x)
    ann.add(x)
    assert recall_at(ann, exact, queries, 10) >= 0.9
    hit = ann.search(queries[0], 1)[0]
    row = x[int(hit.id)]
    q = queries[0]
    assert hit.score == pytest.approx(float(row @ q / np.linalg.norm(row) / np.linalg.norm(q)))
    assert ann.memory_usage()["ann"] > 0


@pytest.mark.parametrize(
    "options", [{}, {"quantization": "int8"}, {"quantization": "binary"}, {"ann": "usearch"}]
)
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path: Path, options: dict, mmap: bool) -> None:
    x, queries = clustered(300, 16, 4)
    index = DenseIndex(**options)
    index.add(x, texts=[f"doc {i}" for i in range(300)], metadatas=[{"i": i} for i in range(300)])
    index.save(tmp_path / "dense")
    loaded = DenseIndex.load(tmp_path / "dense", mmap=mmap)
    for q in queries[:5]:
        assert loaded.search(q, 5) == index.search(q, 5)
    assert loaded.memory_usage()["rescore_mmapped"] is mmap
    loaded.add(x[:1] * -1, ids=["flipped"])
    assert loaded.search(-x[0], 1)[0].id == "flipped"


def test_bad_input() -> None:
    index = DenseIndex(dim=4)
    with pytest.raises(InvalidInputError, match="empty"):
        index.search([1, 0, 0, 0], 3)
    index.add([[1, 0, 0, 0], [0, 1, 0, 0]])
    with pytest.raises(InvalidInputError, match="k must be"):
        index.search([1, 0, 0, 0], 0)
    with pytest.raises(InvalidVectorError, match="dimension 3, expected 4"):
        index.search([1, 0, 0], 1)
    with pytest.raises(InvalidVectorError, match="NaN"):
        index.add([[float("nan"), 0, 0, 0]])
    with pytest.raises(InvalidInputError, match="2 documents but 1 ids"):
        index.add([[1, 1, 0, 0], [0, 1, 1, 0]], ids=["x"])
    with pytest.raises(ConfigurationError, match="quantization"):
        DenseIndex(quantization="int4")
    with pytest.raises(ConfigurationError, match="ann backend"):
        DenseIndex(ann="annoy")
    assert len(index) == 2  # failed adds left nothing behind


@pytest.mark.slow
def test_quantized_recall_on_real_minilm_vectors() -> None:
    from rag_optimize.embedding.local import default_embedder

    rng = np.random.default_rng(5)
    subjects = "the river|a small dog|my old laptop|the city council|a jazz band|the new vaccine"
    verbs = "crossed|repaired|praised|delayed|recorded|tested|described|sold"
    objects = "the bridge|a report|the engine|an album|the schedule|a contract|the results"
    parts = [p.split("|") for p in (subjects, verbs, objects)]
    texts = sorted(
        {
            " ".join(rng.choice(p) for p in parts) + f" in {y}"
            for y in range(1990, 2000)
            for _ in range(40)
        }
    )
    vectors = default_embedder().encode(texts)
    queries = vectors[rng.integers(0, len(texts), 30)] + 0.05 * rng.standard_normal((30, 384))
    exact = DenseIndex()
    exact.add(vectors)
    for quantization, floor in (("int8", 0.99), ("binary", 0.95)):
        index = DenseIndex(quantization=quantization)
        index.add(vectors)
        assert recall_at(index, exact, queries.astype(np.float32), 10) >= floor, quantization


@pytest.mark.slow
def test_usearch_then_local_onnx_model_does_not_crash() -> None:
    # usearch's extension loaded before onnxruntime made the first ONNX session segfault;
    # run in a subprocess so a regression fails this test instead of killing the suite.
    code = (
        "from rag_optimize.index import DenseIndex\n"
        "DenseIndex(dim=4, ann='usearch')\n"
        "from rag_optimize.embedding.local import LocalEmbedder\n"
        "print(LocalEmbedder(backend='onnx').encode(['hello world']).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(1, 384)" in done.stdout
