"""Filtered top-k with the default dense index (binary codes + rescoring): exact while small.

A filter that keeps at most ``EXACT_FILTERED`` x (code bytes / vector bytes) of the rows is
answered by scoring every matching row, so the result is the brute-force top k of the
matching rows; above it the codes pick candidates. These tests use adversarial data: groups
of near-duplicate vectors (identical sign codes, scores apart by ~1e-4), so a candidate pick
by Hamming distance cannot tell the best rows from the rest of their group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag_optimize.index import DenseIndex
from rag_optimize.index import engine as engine_module
from rag_optimize.index import quantization as q
from rag_optimize.index.engine import VectorEngine
from rag_optimize.index.row_blocks import RowBlocks

N, DIM, K = 48_000, 128, 10


def near_ties(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows in two groups of near-duplicates (noise 0.01 around each group's centre:
    nearly every row of a group has the same sign code), and queries near the centres: a
    filter keeps hundreds of rows of the query's group, all tied by Hamming distance."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 2, N)] + 0.01 * rng.standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = centres[rng.integers(0, 2, 12)] + 0.05 * rng.standard_normal((12, DIM))
    return x, (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray, DenseIndex]:
    x, queries = near_ties()
    index = DenseIndex()  # the default: quantization="auto" (binary codes at this size)
    index.add(x, ids=[f"d{i}" for i in range(N)])
    assert index.engine is not None and index.engine.active_method() == "binary"
    return x, queries, index


def exact_limit(index: DenseIndex) -> int:
    engine = index.engine
    assert engine is not None
    return int(engine._exact_filtered_rows("binary"))


def masks(rng: np.random.Generator, limit: int) -> list[np.ndarray]:
    """Filters keeping about 0.5%, 1.5%, 2.5% of the rows and just under the switch."""
    sizes = [N // 200, 3 * N // 200, N // 40, limit - 3]
    out = []
    for size in sizes:
        mask = np.zeros(N, dtype=bool)
        mask[rng.choice(N, size, replace=False)] = True
        out.append(mask)
    return out


def assert_brute_force(
    index: DenseIndex, x: np.ndarray, query: np.ndarray, allowed: np.ndarray
) -> None:
    rows = np.flatnonzero(allowed)
    want = np.sort(x[rows] @ query)[::-1][:K]
    hits = index.search(query, K, allowed=allowed)
    got_rows = [index.documents.position(h.id) for h in hits]
    assert len(hits) == min(K, rows.shape[0])  # never short
    assert all(allowed[r] for r in got_rows)  # never a filtered-out document
    # The brute-force top k's scores (ids may swap only between scores equal to 1e-6).
    np.testing.assert_allclose([h.score for h in hits], want, atol=1e-6)


def test_the_switch_lies_where_the_matching_vectors_equal_the_codes_bytes(
    corpus: tuple[np.ndarray, np.ndarray, DenseIndex],
) -> None:
    _, _, index = corpus
    engine = index.engine
    assert engine is not None
    # 128 dims: 16-byte sign codes, 512-byte float rows; 48,000 rows -> 1,500 rows.
    assert exact_limit(index) == N * 16 // 512
    # More than the old "four times the candidates" (640 at k=10): those filters used codes.
    assert exact_limit(index) > 4 * engine._candidate_count("binary", K)


def test_small_filters_give_the_brute_force_top_k_on_near_ties(
    corpus: tuple[np.ndarray, np.ndarray, DenseIndex],
) -> None:
    x, queries, index = corpus
    for mask in masks(np.random.default_rng(1), exact_limit(index)):
        for query in queries:
            assert_brute_force(index, x, query, mask)


def test_larger_filters_are_never_short_nor_leaky(
    corpus: tuple[np.ndarray, np.ndarray, DenseIndex],
) -> None:
    x, queries, index = corpus
    rng = np.random.default_rng(2)
    for fraction in (0.05, 0.1, 0.3, 0.7):
        mask = rng.random(N) < fraction
        for query in queries[:4]:
            hits = index.search(query, K, allowed=mask)
            assert len(hits) == K
            assert all(mask[index.documents.position(h.id)] for h in hits)
            # Scores are exact (rescored) and in order, whatever the candidates were.
            rows = [index.documents.position(h.id) for h in hits]
            np.testing.assert_allclose([h.score for h in hits], x[rows] @ query, atol=1e-6)
            assert all(a >= b for a, b in zip([h.score for h in hits], [h.score for h in hits][1:],
                                              strict=False))


def test_exact_after_deletes_and_after_an_mmap_load(tmp_path: Path) -> None:
    x, queries = near_ties(seed=3)
    ids = [f"d{i}" for i in range(N)]
    index = DenseIndex()
    index.add(x, ids=ids)
    rng = np.random.default_rng(4)
    gone = rng.choice(N, 900, replace=False)  # under the compaction threshold: rows go dead
    index.delete([ids[i] for i in gone])
    assert index.dead_rows == 900
    keep = np.ones(N, dtype=bool)
    keep[gone] = False
    live_x = x[keep]
    limit = exact_limit(index)
    for mask in masks(rng, min(limit, 1_400)):
        allowed = mask[: live_x.shape[0]]
        for query in queries[:6]:
            assert_brute_force(index, live_x, query, allowed)
    index.save(tmp_path / "dense")
    loaded = DenseIndex.load(tmp_path / "dense", mmap=True)
    assert loaded.engine is not None and loaded.engine._store.mapped
    for mask in masks(rng, exact_limit(loaded)):
        allowed = mask[: live_x.shape[0]]
        for query in queries[:6]:
            assert_brute_force(loaded, live_x, query, allowed)


def test_codes_alone_miss_the_top_k_of_these_filters(
    corpus: tuple[np.ndarray, np.ndarray, DenseIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data is adversarial: without the exact scan (the rule before), the codes' picks
    miss brute force on these filters (what the tests above would catch)."""
    x, queries, index = corpus
    filters = masks(np.random.default_rng(1), exact_limit(index))[1:]  # above 4 x candidates
    monkeypatch.setattr(engine_module, "EXACT_FILTERED", 0.0)
    misses = 0
    for mask in filters:
        rows = np.flatnonzero(mask)
        for query in queries:
            want = np.sort(x[rows] @ query)[::-1][:K]
            got = [h.score for h in index.search(query, K, allowed=mask)]
            misses += not np.allclose(got, want, atol=1e-6)
    assert misses > 0


@pytest.mark.parametrize("faiss", [True, False])
def test_rows_scored_in_place_equal_a_gathered_product(
    faiss: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not faiss:
        monkeypatch.setattr(q, "_faiss", lambda: None)
    elif q._faiss() is None:
        pytest.skip("faiss is not installed")
    rng = np.random.default_rng(5)
    store = RowBlocks(64, np.float32, block_rows=1024)
    store.reserve(5_000)
    matrix = rng.standard_normal((5_000, 64)).astype(np.float32)
    store.write(np.arange(5_000), matrix)
    query = rng.standard_normal(64).astype(np.float32)
    rows = np.sort(rng.choice(5_000, 3_000, replace=False)).astype(np.intp)
    pieces = store.pieces(rows)
    assert pieces is not None and len(pieces) == 5  # rows in five blocks
    got = np.concatenate([q.inner_products_at(block, at, query) for _, _, block, at in pieces])
    np.testing.assert_allclose(got, matrix[rows] @ query, rtol=1e-5, atol=1e-5)
    assert store.pieces(rows[::-1].copy()) is None  # blocks out of order: the caller gathers
    with pytest.raises(IndexError):  # a row outside the matrix is never read blindly
        q.inner_products_at(matrix[:100], np.arange(95, 700, dtype=np.intp), query)


def test_engine_scores_rows_in_any_block_order() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9_000, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    engine = VectorEngine(128)
    engine._store = RowBlocks(128, np.float32, block_rows=2048)
    engine.add(np.arange(9_000), x, normalized=True)
    query = x[17]
    rows = rng.permutation(9_000)[:2_500].astype(np.intp)  # blocks interleaved
    np.testing.assert_allclose(engine._scores(rows, query), x[rows] @ query, atol=1e-5)
    rows = np.sort(rows)
    np.testing.assert_allclose(engine._scores(rows, query), x[rows] @ query, atol=1e-5)


def test_a_large_filter_ranks_as_well_without_the_bitmap_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A filter keeping more than 40% of the rows over-fetches from the unmasked scan
    (the nearest allowed rows by code, as the bitmap scan finds them, up to ties at the
    cut-off), and falls back to the bitmap scan when the allowed rows lie far from the query
    (too few among the fetched)."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 40, 20_000)] + 0.9 * rng.standard_normal((20_000, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = DenseIndex()
    index.add(x, ids=[f"d{i}" for i in range(20_000)])
    queries = x[rng.integers(0, 20_000, 10)]
    near = [(rng.random(20_000) < f, query) for f in (0.5, 0.7, 0.9) for query in queries]
    far = [(np.isin(np.arange(20_000), np.argsort(x @ query)[:12_000]), query)
           for query in queries]  # the farthest 60% of the rows
    bitmap_scans = {"count": 0}
    nearest = q.hamming_nearest

    def counting(codes: object, code: object, count: int, valid: object = None) -> object:
        bitmap_scans["count"] += valid is not None
        return nearest(codes, code, count, valid)  # type: ignore[arg-type]

    monkeypatch.setattr(q, "hamming_nearest", counting)

    def found(cases: list[tuple[np.ndarray, np.ndarray]]) -> int:
        """Brute-force top-k rows found, over all cases; every result complete and allowed."""
        total = 0
        for mask, query in cases:
            rows = [index.documents.position(h.id) for h in index.search(query, K, allowed=mask)]
            assert len(rows) == K and all(mask[r] for r in rows)
            allowed = np.flatnonzero(mask)
            total += len(set(rows) & set(allowed[np.argsort(-(x[allowed] @ query))[:K]]))
        return total

    near_found = found(near)
    assert bitmap_scans["count"] == 0
    far_found = found(far)
    assert bitmap_scans["count"] > 0  # the fallback ran
    monkeypatch.setattr(engine_module, "_OVERFETCH", 0.0)
    assert near_found >= found(near) - 3 and far_found == found(far)


def test_a_filter_spends_the_code_bytes_it_saves_on_rescoring(
    corpus: tuple[np.ndarray, np.ndarray, DenseIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, queries, index = corpus
    engine = index.engine
    assert engine is not None
    rescored: list[int] = []
    real = engine._rescore

    def counting(rows: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rescored.append(int(rows.shape[0]))
        return real(rows, query, k)

    monkeypatch.setattr(engine, "_rescore", counting)
    mask = np.zeros(N, dtype=bool)
    mask[np.random.default_rng(3).choice(N, N // 10, replace=False)] = True  # 10%: codes
    row_bytes, code_bytes = DIM * 4, engine._width
    saved = (N - N // 10) * code_bytes // (row_bytes * engine_module._SCATTERED_READ)
    usual = engine._candidate_count("binary", K)
    assert saved > usual  # this table is big enough for the saved bytes to count
    hits = index.search(queries[0], K, allowed=mask)
    index.search(queries[0], K)
    assert rescored == [usual + saved, usual]  # the unfiltered search rescores as before
    rows = np.flatnonzero(mask)
    got = [index.documents.position(h.id) for h in hits]
    assert all(mask[got]) and len(got) == K
    # exact scores, best first, whichever rows the codes picked
    assert np.allclose([h.score for h in hits], x[got] @ queries[0], atol=1e-6)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert rows.shape[0] > usual + saved  # the rule did not fall back to an exact scan
