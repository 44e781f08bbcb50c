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


# -- deletes: dead at once, never served, compacted now and then (issue 15) -----------------


def _brute_top(vectors: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    ids = list(vectors)
    matrix = np.asarray([vectors[i] for i in ids], dtype=np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    q = query / np.linalg.norm(query)
    scores = matrix @ q
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def _check_served(
    index: DenseIndex, live: dict[str, np.ndarray], gone: set[str], probes: list[np.ndarray]
) -> None:
    """Each probe (deleted vectors asked for themselves, and live ones) finds only live
    documents, filtered searches too; exact indexes return the brute-force top 10 of the
    live (and allowed) documents."""
    allowed = np.asarray([int(i[1:]) % 3 == 0 for i in index.documents.ids])
    kept = {i: v for i, v in live.items() if int(i[1:]) % 3 == 0}
    for query in probes + list(live.values())[:10]:
        hits = index.search(query, 10)
        assert len(hits) == 10 and not {h.id for h in hits} & gone
        filtered = index.search(query, 10, allowed=allowed)
        assert not {h.id for h in filtered} & gone
        assert all(int(h.id[1:]) % 3 == 0 for h in filtered)
        if index.quantization is None:
            assert [h.id for h in hits] == _brute_top(live, query, 10)
            assert [h.id for h in filtered] == _brute_top(kept, query, 10)


@pytest.mark.parametrize("quantization", [None, "auto"])
def test_deleted_documents_never_come_back(tmp_path: Path, quantization: str | None) -> None:
    """Deleted documents are never returned: at once (no compaction yet), after save and
    load (mmap), and after the compaction that drops their rows (``auto`` at 6,000 rows
    searches binary codes with exact rescoring)."""
    rng = np.random.default_rng(5)
    n, dim = 6_000, 128
    x = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"d{i}" for i in range(n)]
    index = DenseIndex(quantization=quantization)
    index.add(x, ids=ids)
    live = dict(zip(ids, x, strict=True))
    gone: set[str] = set()
    probes: list[np.ndarray] = []
    for batch in (["d0"], ["d17", "d4242", "d5999"], [f"d{i}" for i in range(100, 140)]):
        index.delete(batch)
        gone.update(batch)
        probes.extend(live.pop(i) for i in batch)
    assert index.dead_rows == 44  # marked dead, not rebuilt
    _check_served(index, live, gone, probes)

    index.save(tmp_path / "saved")
    loaded = DenseIndex.load(tmp_path / "saved", mmap=True)
    assert loaded.dead_rows == 0 and loaded.documents.ids == index.documents.ids
    _check_served(loaded, live, gone, probes)
    more = [f"d{i}" for i in range(1_000, 2_600)]  # past a quarter of the rows: compaction
    for target in (index, loaded):
        target.delete(more)
        assert target.dead_rows == 0
    gone.update(more)
    probes.extend(live.pop(i) for i in more[:20])
    for i in more[20:]:
        live.pop(i)
    _check_served(index, live, gone, probes)
    _check_served(loaded, live, gone, probes)


class _CountingEngine:
    """Counts how many vector engines DenseIndex builds (a rebuild is one more)."""

    built = 0


def test_deletes_in_a_loop_do_not_rebuild_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_optimize.index import dense as dense_module

    original = dense_module.VectorEngine

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            _CountingEngine.built += 1
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dense_module, "VectorEngine", Counting)
    rng = np.random.default_rng(6)
    n = 5_000
    index = DenseIndex(quantization=None)
    index.add(rng.standard_normal((n, 32)).astype(np.float32), ids=[f"d{i}" for i in range(n)])
    _CountingEngine.built = 0
    due = max(dense_module.COMPACT_MIN, int(np.ceil(dense_module.COMPACT_FRACTION * n)))
    for i in range(due - 1):  # one at a time, with a search after each
        index.delete([f"d{i}"])
        index.search(rng.standard_normal(32), 3)
    assert _CountingEngine.built == 0
    assert index.dead_rows == due - 1 and len(index) == n - due + 1
    index.delete([f"d{due - 1}"])  # the delete that reaches the fraction compacts, once
    assert _CountingEngine.built == 1 and index.dead_rows == 0
    assert index.engine is not None and index.engine.high == n - due


def test_document_rows_stay_right_through_deletes_and_adds() -> None:
    """DocumentStore numbers rows by rank of a stable sequence number (no renumbering per
    delete): after any mix of single, small and large deletes and adds, every id's row,
    text and metadata are those of a plain list, also in a copy."""
    from rag_optimize.index.documents import DocumentStore

    rng = np.random.default_rng(8)
    store, reference = DocumentStore(), []
    serial = 0
    for step in range(60):
        new = [f"id{serial + i}" for i in range(int(rng.integers(1, 40)))]
        serial += len(new)
        store.extend(len(new), new, [f"text {i}" for i in new], [{"of": i} for i in new])
        reference.extend(new)
        if reference and step % 3:
            size = [1, 5, 100][step % 3 if step % 7 else 2]
            gone = list(rng.choice(reference, min(size, len(reference)), replace=False))
            store.delete(gone)
            reference = [i for i in reference if i not in set(gone)]
        for target in (store, store.copy()):
            assert target.ids == reference and len(target) == len(reference)
            for row, doc_id in enumerate(reference):
                assert target.position(doc_id) == row
                assert target.hit(row, 0.0).text == f"text {doc_id}"
                assert target.metadatas[row] == {"of": doc_id}
    with pytest.raises(InvalidInputError, match="unknown document id"):
        store.position("id0" if "id0" not in reference else "nope")
