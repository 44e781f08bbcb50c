"""VectorEngine: every method against brute force, deletes, masks, bulk vs one-at-a-time,
int8 storage, the two Hamming kernels, save/load (and corrupt files), bad input, locking."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rag_optimize.errors import ConfigurationError, InvalidInputError, InvalidVectorError
from rag_optimize.index import engine as engine_module
from rag_optimize.index import quantization as q
from rag_optimize.index.engine import METHODS, SharedLock, VectorEngine

DIM = 128
CODED = ("binary", "int8", "hnsw")


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def data(n: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, DIM)))


def near(x: np.ndarray, rows: np.ndarray, cosine: float, seed: int = 1) -> np.ndarray:
    """Queries at about ``cosine`` from the given stored rows."""
    noise = data(len(rows), seed)
    noise -= (noise * x[rows]).sum(axis=1, keepdims=True) * x[rows]
    noise = unit(noise)
    return unit(cosine * x[rows] + np.sqrt(1 - cosine**2) * noise)


def brute(x: np.ndarray, live: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = np.where(live, x @ query, -np.inf)
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k] if live[i]]


def engine(method: str, x: np.ndarray, **kw: object) -> VectorEngine:
    e = VectorEngine(DIM, method=method, exact_below=64, **kw)  # type: ignore[arg-type]
    e.add(np.arange(len(x)), x)
    return e


@pytest.mark.parametrize("method", METHODS)
def test_near_duplicates_are_found_by_every_method(method: str) -> None:
    x = data(3000)
    e = engine(method, x)
    targets = np.arange(0, 3000, 37)
    for row, query in zip(targets, near(x, targets, 0.95), strict=True):
        rows, scores = e.search(query, 4)
        assert int(rows[0]) == int(row)
        assert scores[0] == pytest.approx(float(x[row] @ query), abs=1e-5)
        assert list(scores) == sorted(scores, reverse=True)


@pytest.mark.parametrize("method", ("auto", "exact"))
def test_exact_methods_equal_brute_force(method: str) -> None:
    x = data(500)
    e = VectorEngine(DIM, method=method)
    e.add(np.arange(500), x)
    for query in data(5, seed=3):
        assert e.search(query, 7)[0].tolist() == brute(x, np.ones(500, bool), query, 7)
    assert e.active_method() == "exact"


def test_auto_switches_to_binary_codes_at_exact_below() -> None:
    e = VectorEngine(DIM, exact_below=100)
    x = data(150)
    e.add(np.arange(99), x[:99])
    assert e.active_method() == "exact"
    e.add(99, x[99])
    assert e.active_method() == "binary"
    e.add(np.arange(100, 150), x[100:])
    assert e.search(x[120], 1)[0].tolist() == [120]
    assert e.memory_usage()["codes"] > 0


@pytest.mark.parametrize("method", METHODS)
def test_removed_and_replaced_rows_are_never_served(method: str) -> None:
    x = data(1200)
    e = engine(method, x)
    dead = np.arange(0, 1200, 3)  # 400 dead rows: more than the engine's dead-row slack
    assert e.remove(dead) == 400
    assert e.remove(dead[:5]) == 0
    assert len(e) == 800
    for row in dead[:30]:
        rows, _ = e.search(x[row], 10)
        assert not set(rows.tolist()) & set(dead.tolist())
        assert len(rows) == 10
    fresh = data(1, seed=9)[0]
    e.add(4, fresh)  # row 4 (live) now holds another vector
    assert int(e.search(fresh, 1)[0][0]) == 4
    rows, scores = e.search(x[4], 10)
    for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
        if row == 4:  # row 4 is scored with its new vector, never the old one
            assert score == pytest.approx(float(fresh @ x[4]), abs=1e-5)
    e.add(3, x[3])  # a dead row comes back
    assert int(e.search(x[3], 1)[0][0]) == 3


@pytest.mark.parametrize("method", METHODS)
def test_allowed_mask_applies_before_the_top_k(method: str) -> None:
    x = data(2000)
    e = engine(method, x)
    e.remove(np.arange(0, 2000, 10))
    rng = np.random.default_rng(5)
    for share in (0.5, 0.01):
        allowed = rng.random(2500) < share  # longer than the table: the tail is ignored
        live = np.ones(2000, bool)
        live[::10] = False
        valid = allowed[:2000] & live
        for query in data(5, seed=6):
            rows, scores = e.search(query, 8, allowed=allowed)
            assert len(rows) == min(8, int(valid.sum()))
            assert all(valid[r] for r in rows)
            if method == "exact" or share == 0.01:  # few allowed rows: scored exactly
                assert rows.tolist() == brute(x, valid, query, 8)
        inside = np.flatnonzero(valid)[:20]
        for row, query in zip(inside, near(x, inside, 0.95, seed=8), strict=True):
            assert int(e.search(query, 3, allowed=allowed)[0][0]) == int(row)
    nothing = np.zeros(2000, bool)
    assert e.search(x[1], 5, allowed=nothing)[0].tolist() == []


@pytest.mark.parametrize("method", ("auto", "binary", "hnsw"))
def test_one_at_a_time_equals_bulk(method: str) -> None:
    x = data(800)
    # The codes' centre is fixed by the write that builds them (at 64 rows here, one at a
    # time): give the bulk engine the same first 64 rows, then the rest in one call.
    bulk = VectorEngine(DIM, method=method, exact_below=64)
    bulk.add(np.arange(64), x[:64])
    bulk.add(np.arange(64, 800), x[64:])
    single = VectorEngine(DIM, method=method, exact_below=64)
    for row in range(800):
        single.add(row, x[row])
    for query in data(10, seed=2):
        assert single.search(query, 5)[0].tolist() == bulk.search(query, 5)[0].tolist()


def test_short_codes_first_pass_keeps_near_duplicates_masks_and_deletes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(engine_module, "COARSE_FROM", 256)  # take the two-level path
    reranked: list[int] = []
    rerank = q.hamming_rerank
    monkeypatch.setattr(
        q, "hamming_rerank", lambda c, qc, n: reranked.append(len(c)) or rerank(c, qc, n)
    )
    x = data(3000)
    e = engine("binary", x[:2000])
    for row in range(2000, 3000):  # one at a time: their short codes are written too
        e.add(row, x[row])
    targets = np.arange(0, 3000, 31)
    for row, query in zip(targets, near(x, targets, 0.95), strict=True):
        assert int(e.search(query, 4)[0][0]) == int(row)
    assert reranked and all(n == 1024 for n in reranked)  # 1024 short-code candidates
    dead = np.arange(0, 3000, 2)
    e.remove(dead)
    allowed = np.zeros(3000, bool)
    allowed[1::4] = True
    for row in dead[:20]:
        assert not set(e.search(x[row], 10)[0].tolist()) & set(dead.tolist())
        assert all(allowed[r] for r in e.search(x[row], 10, allowed=allowed)[0])
    for row in np.flatnonzero(allowed)[:20]:
        assert int(e.search(x[row], 1, allowed=allowed)[0][0]) == int(row)
    e.save(tmp_path / "e")
    back = VectorEngine.load(tmp_path / "e")
    for query in data(5, seed=4):
        assert back.search(query, 5)[0].tolist() == e.search(query, 5)[0].tolist()


def test_append_returns_the_rows_it_filled() -> None:
    e = VectorEngine(DIM)
    assert e.append(data(3)).tolist() == [0, 1, 2]
    assert e.append(data(2, seed=4)).tolist() == [3, 4]
    assert e.high == 5 and len(e) == 5


def test_int8_storage_scores_close_to_float_and_smaller() -> None:
    x = data(1000)
    exact = engine("exact", x)
    small = engine("auto", x, storage="int8")
    for query in near(x, np.arange(0, 1000, 50), 0.97):
        rows, scores = small.search(query, 3)
        want_rows, want = exact.search(query, 3)
        assert rows[0] == want_rows[0]
        assert np.allclose(scores[0], want[0], atol=2e-3)
    assert small.memory_usage()["vectors"] < exact.memory_usage()["vectors"] / 3
    vector = small.vector(7)
    assert vector is not None and float(vector @ x[7]) > 0.999


def test_faiss_and_numpy_hamming_kernels_agree() -> None:
    pytest.importorskip("faiss")
    x = data(5000)
    codes = q.sign_encode(x, None, q.sign_code_bytes(DIM))
    valid = np.random.default_rng(1).random(5000) < 0.7
    for query in data(5, seed=3):
        code = q.sign_encode(query[None, :], None, codes.shape[1])
        dist = np.bitwise_count(codes ^ code).sum(axis=1)
        for mask in (None, valid):
            a = q._faiss_nearest(q._faiss(), codes, code, 50, mask)
            b = q._numpy_nearest(codes, code, 50, mask)
            assert len(a) == len(b) == 50
            assert sorted(dist[a]) == sorted(dist[b])
            if mask is not None:
                assert mask[a].all() and mask[b].all()


def test_two_stage_hamming_keeps_near_rows_masks_and_the_full_scan_is_exact() -> None:
    """The prefix-first ranking (local tables past PREFIX_FROM rows) finds near rows, never
    a masked one and always ``count`` rows; ``shortlist=0`` equals brute force."""
    rng = np.random.default_rng(4)
    n = q.PREFIX_FROM * 2
    x = rng.standard_normal((n, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    center = x.mean(axis=0)
    codes = q.sign_encode(x, center, q.sign_code_bytes(384))
    columns = np.ascontiguousarray(codes.view(np.uint64).T)  # the local tables' layout
    valid = rng.random(n) < 0.5
    near_of = rng.integers(0, n, 40)
    near = x[near_of] + 0.02 * rng.standard_normal((40, 384)).astype(np.float32)  # cos ~0.93
    for i, vector in enumerate(near):
        code = q.sign_encode(vector[None, :] / np.linalg.norm(vector), center, codes.shape[1])
        dist = np.bitwise_count(codes ^ code).sum(axis=1)
        two = q.hamming_nearest_columns(columns, code, 8)
        assert len(two) == 8 and near_of[i] in two.tolist()
        for mask in (None, valid):
            full = q.hamming_nearest_columns(columns, code, 8, mask, shortlist=0)
            brute = np.flatnonzero(mask if mask is not None else np.ones(n, bool))
            best = sorted(dist[brute].tolist())[:8]
            assert sorted(dist[full].tolist()) == best
            staged = q.hamming_nearest_columns(columns, code, 8, mask)
            assert len(staged) == 8
            if mask is not None:
                assert mask[full].all() and mask[staged].all()
                if mask[near_of[i]]:
                    assert near_of[i] in staged.tolist()


def _about_cases() -> list[tuple[str, np.ndarray]]:
    """Prefix distances (``uint8``, at most 128) of 100k rows, shaped so that each branch of
    ``_about_smallest`` runs: the sample judges well, too low (a few near rows on its
    stride, the others off it) or too high (every near row off its stride)."""
    rng = np.random.default_rng(7)
    n = 100_000
    step = n // 4_096
    random_rows = rng.binomial(128, 0.5, n).astype(np.uint8)
    off_stride = np.full(n, 90, dtype=np.uint8)
    off_stride[rng.choice(np.flatnonzero(np.arange(n) % step != 0), 60, replace=False)] = 10
    few_on = np.full(n, 90, dtype=np.uint8)
    few_on[np.arange(0, 3 * step, step)] = 1  # 3 rows on the stride: the first cut-off, 1
    few_on[np.arange(n)[np.arange(n) % step != 0][:40]] = 10
    few_on[::step][3:] = 60
    return [("random", random_rows), ("too high", off_stride), ("too low", few_on)]


@pytest.mark.parametrize(("name", "dist"), _about_cases(), ids=("random", "too-high", "too-low"))
def test_about_smallest_keeps_every_nearer_row_and_trims_like_the_histogram(
    name: str, dist: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shortlist's cut-off: at least ``count`` rows, none masked, every row nearer than
    the ``count``-th nearest among them; and whenever it cuts to ``count`` rows, the very
    rows a histogram of all distances (``_smallest``) gives. A cut-off set too low is read
    again from the sample, not from a histogram of every row."""
    rng = np.random.default_rng(8)
    read: list[int] = []
    smallest = q._smallest

    def spy(d: np.ndarray, count: int, valid: np.ndarray | None, worst: int) -> np.ndarray:
        read.append(d.shape[0])
        return smallest(d, count, valid, worst)

    monkeypatch.setattr(q, "_smallest", spy)
    q._about_smallest(dist.copy(), 20, None, 129)
    if name == "random":
        assert read == []
    elif name == "too high":  # every row within the cut-off: cut from all of them
        assert read == [dist.shape[0]]
    else:
        assert len(read) == 1 and read[0] < dist.shape[0] // 10
    read.clear()
    for count in (20, 640):
        for valid in (None, rng.random(dist.shape[0]) < 0.8):
            got = q._about_smallest(dist.copy(), count, valid, 129)
            want = smallest(dist.copy(), count, valid, 129)
            usable = np.ones(dist.shape[0], bool) if valid is None else valid
            assert got.shape[0] >= count and usable[got].all()
            kth = np.sort(dist[usable])[count - 1]
            assert set(np.flatnonzero(usable & (dist < kth)).tolist()) <= set(got.tolist())
            if got.shape[0] == count:
                assert sorted(got.tolist()) == sorted(want.tolist())
            if name != "random" and count == 20:  # misjudged: cut to count, like _smallest
                assert sorted(got.tolist()) == sorted(want.tolist())


def test_sign_code_width_is_whole_words() -> None:
    assert q.sign_code_bytes(384) == 48
    assert q.sign_code_bytes(48) == 8
    assert q.sign_code_bytes(128) == 16
    assert q.sign_code_bytes(1000) == 128


@pytest.mark.parametrize("method", ("auto", "binary", "hnsw"))
@pytest.mark.parametrize("mmap", (False, True))
def test_save_and_load_round_trip(tmp_path: Path, method: str, mmap: bool) -> None:
    x = data(600)
    e = engine(method, x)
    e.remove([5, 6, 7])
    e.search(x[0], 1)  # builds codes before saving
    e.save(tmp_path / "e")
    back = VectorEngine.load(tmp_path / "e", mmap=mmap)
    assert len(back) == 597 and back.method == method
    assert back.memory_usage()["vectors_mmapped"] is mmap
    for query in data(5, seed=7):
        assert back.search(query, 5)[0].tolist() == e.search(query, 5)[0].tolist()
    assert 5 not in back.search(x[5], 5)[0].tolist()
    back.add(5, x[5])  # a mapped engine copies itself in on the first write
    assert int(back.search(x[5], 1)[0][0]) == 5


def test_corrupt_saved_engine_fails_to_load_with_the_file_named(tmp_path: Path) -> None:
    e = engine("binary", data(300))
    e.search(data(1)[0], 1)
    e.save(tmp_path / "e")
    with pytest.raises(InvalidInputError, match="holds no saved vector engine"):
        VectorEngine.load(tmp_path / "missing")
    vectors = tmp_path / "e" / "vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:1000])  # truncated
    with pytest.raises(InvalidInputError, match="vectors.npy"):
        VectorEngine.load(tmp_path / "e")
    np.save(vectors, data(299))  # wrong row count
    with pytest.raises(InvalidInputError, match=r"vectors.npy is corrupt.*expected float32"):
        VectorEngine.load(tmp_path / "e")
    (tmp_path / "e" / "engine.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="engine.json is corrupt"):
        VectorEngine.load(tmp_path / "e")
    (tmp_path / "e" / "engine.json").write_text('{"format": 99}')
    with pytest.raises(InvalidInputError, match="format 99"):
        VectorEngine.load(tmp_path / "e")


def test_corrupt_graph_file_fails_to_load(tmp_path: Path) -> None:
    e = engine("hnsw", data(200))
    e.save(tmp_path / "e")
    (tmp_path / "e" / "hnsw.usearch").write_bytes(b"garbage" * 10)
    with pytest.raises(InvalidInputError, match="hnsw.usearch is corrupt"):
        VectorEngine.load(tmp_path / "e")


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.ones(DIM + 1), "dimension 129, expected 128"),
        (np.full(DIM, np.nan), "NaN"),
        (np.r_[np.inf, np.ones(DIM - 1)], "NaN or inf"),
        (np.zeros(DIM), "zero vector"),
    ],
)
def test_bad_vectors_raise_invalid_vector_error(vector: np.ndarray, message: str) -> None:
    e = VectorEngine(DIM)
    with pytest.raises(InvalidVectorError, match=message):
        e.add(0, vector[None, :])
    e.add(0, data(1))
    with pytest.raises(InvalidVectorError, match=message.replace("NaN or inf", "NaN")):
        e.search(vector, 1)


def test_bad_options_and_arguments_name_the_value() -> None:
    with pytest.raises(ConfigurationError, match="'fast'"):
        VectorEngine(DIM, method="fast")
    with pytest.raises(ConfigurationError, match="'f16'"):
        VectorEngine(DIM, storage="f16")
    with pytest.raises(ConfigurationError, match="dim must be a positive int, got 0"):
        VectorEngine(0)
    with pytest.raises(ConfigurationError, match="candidates"):
        VectorEngine(DIM, candidates=0)
    e = VectorEngine(DIM)
    e.add(0, data(1))
    with pytest.raises(InvalidInputError, match="k must be a positive integer, got 0"):
        e.search(data(1)[0], 0)
    with pytest.raises(InvalidInputError, match="rows must be >= 0, got -1"):
        e.add(-1, data(1))
    with pytest.raises(InvalidInputError, match="distinct"):
        e.add([1, 1], data(2))
    with pytest.raises(InvalidInputError, match="2 rows but 3 vectors"):
        e.add([1, 2], data(3))
    with pytest.raises(InvalidInputError, match="bool mask"):
        e.search(data(1)[0], 1, allowed=np.array([1, 0]))


def test_shared_lock_lets_readers_overlap_and_writers_wait() -> None:
    lock = SharedLock()
    both_inside = threading.Barrier(2, timeout=5)
    wrote: list[str] = []

    def reader() -> None:
        with lock.reading():
            both_inside.wait()  # only passes if two readers hold the lock at once

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert not both_inside.broken
    release = threading.Event()

    def slow_reader() -> None:
        with lock.reading():
            release.wait(5)
            wrote.append("reader done")

    def writer() -> None:
        with lock.writing():
            wrote.append("writer")

    r = threading.Thread(target=slow_reader)
    r.start()
    while not lock._readers:
        pass
    w = threading.Thread(target=writer)
    w.start()
    release.set()
    r.join()
    w.join()
    assert wrote == ["reader done", "writer"]


def test_shared_lock_wakes_readers_waiting_for_a_writer() -> None:
    """A reader that arrives while a writer holds the lock waits, and is woken when the
    writer leaves (the lock notifies only when someone waits)."""
    lock = SharedLock()
    order: list[str] = []
    lock.acquire_write()

    def reader() -> None:
        with lock.reading():
            order.append("reader")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    while lock._waiting < 3:
        time.sleep(0.001)
    order.append("writer done")
    lock.release_write()
    for t in threads:
        t.join(5)
    assert order == ["writer done", "reader", "reader", "reader"]
    assert not lock._waiting and not lock._readers and not lock._writing


def test_concurrent_searches_and_writes_never_return_a_dead_row() -> None:
    x = data(3000)
    e = engine("auto", x)
    lock = SharedLock()
    gone: set[int] = set()
    seen_dead: list[int] = []
    stop = threading.Event()

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            row = int(rng.integers(0, 3000))
            with lock.reading():
                rows, _ = e.search(x[row], 5)
                seen_dead.extend(r for r in rows.tolist() if not e.is_live(r))

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for row in range(0, 3000, 7):
        with lock.writing():
            e.remove([row])
            gone.add(row)
    stop.set()
    for t in threads:
        t.join()
    assert seen_dead == []
    assert not set(e.search(x[0], 50)[0].tolist()) & gone


def test_dense_index_default_is_the_engines_choice(tmp_path: Path) -> None:
    from rag_optimize.index import DenseIndex

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, DIM))
    x = unit(centres[rng.integers(0, 40, 5000)] + 0.9 * rng.standard_normal((5000, DIM)))
    queries = unit(x[rng.integers(0, 5000, 30)] + 0.04 * rng.standard_normal((30, DIM)))
    small, auto, exact = DenseIndex(), DenseIndex(), DenseIndex(quantization=None)
    small.add(x[:1000])
    auto.add(x)
    exact.add(x)
    assert small.memory_usage()["codes"] == 0  # below EXACT_BELOW: a plain exact scan
    assert auto.memory_usage()["scan"] < exact.memory_usage()["scan"] / 20
    allowed = rng.random(5000) < 0.5
    recall = []
    for query in queries:
        want = {h.id for h in exact.search(query, 10)}
        recall.append(len({h.id for h in auto.search(query, 10)} & want) / 10)
        got = auto.search(query, 10, allowed=allowed)
        assert len(got) == 10 and all(allowed[int(h.id)] for h in got)
    assert np.mean(recall) >= 0.95
    auto.save(tmp_path / "d")
    back = DenseIndex.load(tmp_path / "d", mmap=True)
    for query in queries[:5]:
        assert [h.id for h in back.search(query, 10)] == [h.id for h in auto.search(query, 10)]


def test_exact_scores_are_the_same_whatever_blas_threads():
    """One query's product does not go to a threaded BLAS gemv (it stalls on a busy
    machine, issue 17): its scores are bit for bit the same with BLAS at one thread as at
    all of them, and equal to a float64 product within float32 rounding."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers or max(c.num_threads for c in blas.lib_controllers) < 2:
        pytest.skip("BLAS runs one thread here: nothing to compare")
    n, dim = 20_778, 384
    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal((n, dim)))
    engine = VectorEngine(dim, method="exact")
    engine.add(np.arange(n), x)
    for query in unit(rng.standard_normal((4, dim))):
        rows, scores = engine.search(query, n)
        with blas.limit(limits=1):
            rows_one, scores_one = engine.search(query, n)
        assert np.array_equal(scores, scores_one) and np.array_equal(rows, rows_one)
        reference = x.astype(np.float64) @ query.astype(np.float64)
        assert np.abs(scores - reference[rows]).max() < 1e-6
