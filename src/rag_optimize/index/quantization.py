"""Vector codes for :class:`~rag_optimize.index.dense.DenseIndex`: int8 scalar and binary.

Both work on L2-normalised float32 rows.

* int8: each dimension is scaled by the largest absolute value it takes in the corpus and
  rounded to [-127, 127] (1 byte instead of 4). Queries stay float32 and are multiplied by the
  per-dimension scale, so a score is ``codes @ (query * scale)``: an asymmetric estimate of the
  dot product that keeps the query's full precision.
* binary: one sign bit per dimension (32x smaller); the distance is the Hamming distance
  between bit strings, computed with XOR and popcount on 64-bit words.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from rag_optimize.index._kernels import matvec

Int8Matrix = npt.NDArray[np.int8]
BitMatrix = npt.NDArray[np.uint8]
_SCAN_ROWS = 16_384  # rows a numpy Hamming scan takes at a time (temporaries ~0.1 MB)
_CHUNK_ROWS = 2_048  # rows dequantised at a time: a 3 MB float32 block stays in cache


def int8_scales(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per-dimension scale: max |value| of that dimension, never 0."""
    scale = np.abs(vectors).max(axis=0).astype(np.float32)
    scale[scale == 0] = 1.0
    return scale


def int8_encode(vectors: npt.NDArray[np.float32], scales: npt.NDArray[np.float32]) -> Int8Matrix:
    """Round ``vectors / scales`` to int8 codes in [-127, 127]."""
    codes = np.rint(vectors / scales * 127.0)
    return np.clip(codes, -127, 127).astype(np.int8)


def int8_scores(
    codes: Int8Matrix, scales: npt.NDArray[np.float32], query: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Estimated dot products of ``query`` with every coded row (chunked, float32)."""
    scaled = (query * scales / 127.0).astype(np.float32)
    out = np.empty(codes.shape[0], dtype=np.float32)
    # One reused block: a fresh multi-MB temporary per chunk costs page faults every time.
    block = np.empty((min(_CHUNK_ROWS, codes.shape[0]), codes.shape[1]), dtype=np.float32)
    for start in range(0, codes.shape[0], _CHUNK_ROWS):
        rows = min(_CHUNK_ROWS, codes.shape[0] - start)
        block[:rows] = codes[start : start + rows]
        matvec(block[:rows], scaled, out=out[start : start + rows])
    return out


def binary_encode(vectors: npt.NDArray[np.float32]) -> BitMatrix:
    """Sign bits of each row, packed 8 per byte and padded to a multiple of 8 bytes."""
    bits = np.packbits(vectors > 0, axis=1)
    pad = (-bits.shape[1]) % 8
    if pad:
        bits = np.pad(bits, ((0, 0), (0, pad)))
    return np.ascontiguousarray(bits)


def hamming_distances(codes: BitMatrix, query_bits: BitMatrix) -> npt.NDArray[np.int64]:
    """Hamming distance from the one-row ``query_bits`` to every row of ``codes``."""
    words = codes.view(np.uint64)
    q = query_bits.view(np.uint64)
    dist = np.zeros(codes.shape[0], dtype=np.int64)
    for start in range(0, codes.shape[0], _CHUNK_ROWS * 4):
        block = np.bitwise_count(words[start : start + _CHUNK_ROWS * 4] ^ q)
        dist[start : start + block.shape[0]] = block.sum(axis=1)
    return dist


# -- codes the vector engine keeps up to date one row at a time ------------------------------
#
# The engine cannot use corpus-wide scales (a new row would change every code), so its int8
# codes carry one scale per row, and its sign bits are padded to a width the Hamming kernel
# has a specialised loop for.

#: Bits of the short first-pass code (random-hyperplane signs) a large table scans first.
COARSE_BITS = 128


def row_int8_encode(
    vectors: npt.NDArray[np.float32],
) -> tuple[Int8Matrix, npt.NDArray[np.float32]]:
    """int8 codes with one scale per row: ``row ~= codes * scale``.

    Codes are ``round(127 * x / max |x|)``; the scale then makes the decoded row a unit
    vector again, which halves the score error of the plain ``max |x| / 127`` scale.
    """
    peak = np.abs(vectors).max(axis=1).astype(np.float32)
    peak[peak == 0] = 1.0
    codes = np.clip(np.rint(vectors * (127.0 / peak)[:, None]), -127, 127).astype(np.int8)
    norms = np.linalg.norm(codes.astype(np.float32), axis=1)
    norms[norms == 0] = 1.0
    return codes, (1.0 / norms).astype(np.float32)


def row_int8_scores(
    codes: Int8Matrix, scale: npt.NDArray[np.float32], query: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Dot products of ``query`` with the rows ``codes * scale`` (chunked, float32)."""
    out = np.empty(codes.shape[0], dtype=np.float32)
    block = np.empty((min(_CHUNK_ROWS, codes.shape[0]), codes.shape[1]), dtype=np.float32)
    for start in range(0, codes.shape[0], _CHUNK_ROWS):
        rows = min(_CHUNK_ROWS, codes.shape[0] - start)
        block[:rows] = codes[start : start + rows]
        matvec(block[:rows], query, out=out[start : start + rows])
    out *= scale
    return out


def sign_code_bytes(dim: int) -> int:
    """Bytes per sign-bit code of ``dim`` bits, rounded up to whole 64-bit words.

    Measured with faiss 1.15 (one thread, load 2-6): a 1M x 48-byte scan took 3.1 ms, the
    same codes zero padded to 64 bytes 9.7 ms: at that size the scan is memory-bound, so
    padding for the kernel's unrolled loop costs more than it saves.
    """
    return -(-dim // 64) * 8


def coarse_projection(dim: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """``dim x COARSE_BITS`` Gaussian hyperplanes for the short first-pass codes.

    The sign of a random projection is a locality-sensitive hash of the angle (the chance
    that two vectors differ in one bit is their angle / pi), so 128 such bits rank
    neighbours well enough to pick a few hundred candidates from a million rows.
    """
    return np.random.default_rng(seed).standard_normal((dim, COARSE_BITS)).astype(np.float32)


def coarse_encode(
    vectors: npt.NDArray[np.float32],
    center: npt.NDArray[np.float32] | None,
    projection: npt.NDArray[np.float32],
) -> BitMatrix:
    """Signs of ``(vectors - center) @ projection``, packed 8 per byte (computed as
    ``vectors @ projection > center @ projection``: no centred copy of the rows)."""
    offset = np.float32(0.0) if center is None else center @ projection
    return np.packbits((vectors @ projection) > offset, axis=1)


def hamming_rerank(
    codes: BitMatrix, query_code: BitMatrix, count: int
) -> npt.NDArray[np.intp]:
    """Positions of the ``count`` rows of ``codes`` nearest ``query_code`` (numpy; for a
    few thousand gathered candidates, where a call into faiss costs more than the work)."""
    words = codes.view(np.uint64)
    q = query_code.reshape(-1).view(np.uint64)
    dist = np.bitwise_count(words ^ q).sum(axis=1, dtype=np.int32)
    if count >= dist.shape[0]:
        return np.argsort(dist, kind="stable").astype(np.intp)
    return np.argpartition(dist, count - 1)[:count].astype(np.intp)


def sign_encode(
    vectors: npt.NDArray[np.float32], center: npt.NDArray[np.float32] | None, width: int
) -> BitMatrix:
    """Sign bits of ``vectors - center``, packed 8 per byte and zero padded to ``width``."""
    bits = np.packbits(vectors > (np.float32(0.0) if center is None else center), axis=1)
    if bits.shape[1] == width:
        return bits
    out = np.zeros((bits.shape[0], width), dtype=np.uint8)
    out[:, : bits.shape[1]] = bits
    return out


@functools.cache
def _faiss() -> object | None:
    """faiss if installed (imported on first use: it costs ~0.2 s), else ``None``."""
    if importlib.util.find_spec("faiss") is None:
        return None
    import_onnxruntime_first()
    return importlib.import_module("faiss")


def import_onnxruntime_first() -> None:
    """Load onnxruntime (if installed) before a compiled vector library (usearch, faiss).

    Measured with usearch 2.26 and onnxruntime 1.32: when usearch's extension is loaded
    first, creating any onnxruntime session afterwards (e.g. the local MiniLM embedder)
    crashes the process with a segmentation fault; loaded the other way round both work.
    """
    if importlib.util.find_spec("onnxruntime") is not None:
        importlib.import_module("onnxruntime")


#: From this many rows :func:`inner_products_at` reads them in place with faiss; below it a
#: gathered copy and one product cost as little (measured 37 vs 48 us at 1,000 x 384).
BY_INDEX_FROM = 512


def inner_products_at(
    matrix: npt.NDArray[np.float32], rows: npt.NDArray[np.intp], query: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """``matrix[rows] @ query`` without gathering the rows into a copy first.

    Scoring the rows a filter keeps is a scattered read: a gathered copy (``np.take``) writes
    and then reads every row again. faiss's ``fvec_inner_products_by_idx`` reads each row
    where it lies (one thread, GIL released): measured at 10,000 of 100,000 x 384 rows,
    0.58 ms against 1.47 ms for ``np.take`` + the product. Without faiss, the copy.
    """
    faiss: Any = _faiss() if rows.shape[0] >= BY_INDEX_FROM else None
    if (
        faiss is None
        or matrix.dtype != np.float32
        or not matrix.flags.c_contiguous
        or query.dtype != np.float32
        or not 0 <= int(rows.min()) <= int(rows.max()) < matrix.shape[0]  # never read outside
    ):
        return matvec(np.take(matrix, rows, axis=0), query)
    ids = np.ascontiguousarray(rows, dtype=np.int64)
    vec = np.ascontiguousarray(query)
    out = np.empty(ids.shape[0], dtype=np.float32)
    threads = faiss.omp_get_max_threads()  # one query: never wake an OpenMP team (see below)
    faiss.omp_set_num_threads(1)
    try:
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(out), faiss.swig_ptr(vec), faiss.swig_ptr(matrix),
            faiss.swig_ptr(ids), matrix.shape[1], 1, ids.shape[0],
        )
    finally:
        faiss.omp_set_num_threads(threads)
    return out


def hamming_nearest(
    codes: BitMatrix,
    query_code: BitMatrix,
    count: int,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    load_faiss: bool = True,
) -> npt.NDArray[np.intp]:
    """Rows of ``codes`` with the ``count`` smallest Hamming distances to ``query_code``.

    ``valid`` (one bool per row) restricts the answer to rows marked True, before the top
    ``count`` is taken. Uses faiss's popcount kernel (``hammings_knn_hc``, run on our own
    buffer without copying, GIL released; ``hammings_knn_mc`` without a mask) when faiss is
    installed, else numpy; both return
    the same set up to ties. ``load_faiss=False``: faiss only if the process has already
    imported it (importing it costs about 50 MB of RSS; numpy is ~3x slower at 100k rows).
    """
    n = codes.shape[0]
    count = min(count, n if valid is None else int(np.count_nonzero(valid)))
    if count <= 0:
        return np.zeros(0, dtype=np.intp)
    faiss = _faiss() if load_faiss or "faiss" in sys.modules else None
    if faiss is not None and codes.flags.c_contiguous:
        return _faiss_nearest(faiss, codes, query_code, count, valid)
    return _numpy_nearest(codes, query_code, count, valid)


def _faiss_nearest(
    faiss: object,
    codes: BitMatrix,
    query_code: BitMatrix,
    count: int,
    valid: npt.NDArray[np.bool_] | None,
) -> npt.NDArray[np.intp]:
    f: Any = faiss
    dist = np.empty((1, count), dtype=np.int32)
    ids = np.full((1, count), -1, dtype=np.int64)
    query = np.ascontiguousarray(query_code.reshape(1, -1))
    n, width = codes.shape
    # faiss opens an OpenMP region per 64k-row block even for one query; on a loaded machine
    # waking the team cost 138 ms instead of 9 ms per 100k scan (measured). The thread
    # count is a per-thread OpenMP setting: pin this thread to 1 and restore it after.
    threads = f.omp_get_max_threads()
    f.omp_set_num_threads(1)
    try:
        if valid is None:
            # Counting selection (distances are small ints) instead of a heap: measured on
            # 1M x 16-byte codes, 1.2 ms for the best 1024 instead of 1.5 ms (0.16 vs 0.42
            # ms at 100k).
            f.hammings_knn_mc(
                f.swig_ptr(query), f.swig_ptr(codes), 1, n, count, width,
                f.swig_ptr(dist), f.swig_ptr(ids),
            )
        else:
            heap = f.int_maxheap_array_t()
            heap.k, heap.nh = count, 1
            heap.ids, heap.val = f.swig_ptr(ids), f.swig_ptr(dist)
            bitmap = np.packbits(valid, bitorder="little")
            selector = f.IDSelectorBitmap(n, f.swig_ptr(bitmap))
            f.hammings_knn_hc(
                heap, f.swig_ptr(query), f.swig_ptr(codes), n, width, 0, f.EXACT_TOPK, selector
            )
    finally:
        f.omp_set_num_threads(threads)
    out = ids[0]
    return out[out >= 0].astype(np.intp)


def _numpy_nearest(
    codes: BitMatrix,
    query_code: BitMatrix,
    count: int,
    valid: npt.NDArray[np.bool_] | None,
) -> npt.NDArray[np.intp]:
    words = codes.view(np.uint64)
    q = query_code.reshape(1, -1).view(np.uint64)
    # in blocks: the temporaries stay under half a MB whatever the table's size (a whole-column
    # pass held ~2 MB per 100k rows, which the allocator then kept)
    dist = np.empty(codes.shape[0], dtype=np.uint16)
    for start in range(0, codes.shape[0], _SCAN_ROWS):
        rows = words[start : start + _SCAN_ROWS]
        out = dist[start : start + rows.shape[0]]
        out[:] = np.bitwise_count(rows[:, 0] ^ q[0, 0])
        for j in range(1, words.shape[1]):
            out += np.bitwise_count(rows[:, j] ^ q[0, j])
    return _smallest(dist, count, valid, words.shape[1] * 64 + 1)


#: From this many rows :func:`hamming_nearest_columns` ranks in two stages (see there).
PREFIX_FROM = 32_768
#: 64-bit words of the first stage's prefix distance.
PREFIX_WORDS = 2
#: Rows the first stage keeps for the second (at least 32 per row asked).
PREFIX_SHORTLIST = 512


def hamming_nearest_columns(
    columns: npt.NDArray[np.uint64],
    query_code: BitMatrix,
    count: int,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    shortlist: int | None = None,
) -> npt.NDArray[np.intp]:
    """:func:`hamming_nearest` for codes stored by column, without faiss: ``columns[j]``
    holds 64-bit word ``j`` of every row (shape ``(words, rows)``). Each pass then reads one
    contiguous array instead of striding over the rows (0.41 vs 0.79 ms at 100k rows of 48
    bytes, selection included, numpy, one thread).

    From :data:`PREFIX_FROM` rows (and codes of 4 words or more) the ranking has two stages:
    the distance over the first :data:`PREFIX_WORDS` words of every row, the ``shortlist``
    rows nearest by it (default :data:`PREFIX_SHORTLIST`), then their full distance. That
    reads a third of a 384-bit code per row (measured, caches cold between calls: 1.36 vs
    2.26 ms at 100k rows, 1.86 vs 4.18 at 200k, even at 32k) and is an approximation: a row
    whose prefix is far but whose full code is near can be missed. Measured on MiniLM rows
    (BENCHMARKS.md, issue 14): of the true nearest rows at cosine >= 0.8, none was missed
    (2,228 MRPC paraphrases among 87k rows, 189 WikiQA questions among 83k); at lower
    similarity 14 of 3,674 and 2 of 873 more than the full scan; with a hashing embedder 1
    of 599 at cosine >= 0.8. ``shortlist=0`` always scans
    the full codes, which returns the same set as :func:`hamming_nearest` up to ties."""
    words, n = columns.shape
    usable = n if valid is None else int(np.count_nonzero(valid))
    count = min(count, usable)
    if count <= 0 or words == 0:
        return np.zeros(0, dtype=np.intp)
    q = np.ascontiguousarray(query_code.reshape(-1)).view(np.uint64)
    keep = max(PREFIX_SHORTLIST if shortlist is None else shortlist, 32 * count)
    # never more than the usable rows: every row kept then has a real (unmasked) distance
    if shortlist != 0 and n >= PREFIX_FROM and words >= 2 * PREFIX_WORDS and keep < usable // 4:
        near = _column_distances(columns, q, PREFIX_WORDS, np.uint8)
        rows = _about_smallest(near, keep, valid, PREFIX_WORDS * 64 + 1)
        full = np.bitwise_count(columns[:, rows] ^ q[:, None]).sum(axis=0, dtype=np.uint16)
        return rows[_smallest(full, count, None, words * 64 + 1)]
    dist = _column_distances(columns, q, words, np.uint16)
    return _smallest(dist, count, valid, words * 64 + 1)


def _column_distances(
    columns: npt.NDArray[np.uint64],
    q: npt.NDArray[np.uint64],
    words: int,
    dtype: type[np.unsignedinteger[Any]],
) -> npt.NDArray[Any]:
    """Hamming distances over the first ``words`` columns, in blocks (temporaries stay small:
    whole-column passes held ~2 MB per 100k rows, which the allocator then kept; blocks of
    16k rows measured 0.86 vs 1.39 ms at 100k against 64k)."""
    n = columns.shape[1]
    dist = np.empty(n, dtype=dtype)
    block = min(n, _SCAN_ROWS)
    xor, bits = np.empty(block, dtype=np.uint64), np.empty(block, dtype=np.uint8)
    for start in range(0, n, block):
        stop = min(n, start + block)
        scratch, counted, out = xor[: stop - start], bits[: stop - start], dist[start:stop]
        np.bitwise_count(np.bitwise_xor(columns[0, start:stop], q[0], out=scratch), out=out)
        for j in range(1, words):
            np.bitwise_count(np.bitwise_xor(columns[j, start:stop], q[j], out=scratch), out=counted)
            out += counted
    return dist


def _about_smallest(
    dist: npt.NDArray[np.unsignedinteger[Any]],
    count: int,
    valid: npt.NDArray[np.bool_] | None,
    worst: int,
) -> npt.NDArray[np.intp]:
    """About ``count`` rows of smallest distance, at least ``count`` (and never a row where
    ``valid`` is False, given at least ``count`` valid rows): the cut-off is read from a
    sorted sample of 4,096 distances instead of a histogram of all of them (measured at 100k
    rows: 0.14 vs 0.29 ms; the sample's cut-off by ``np.partition``, 7 vs 28 us for a full
    sort of it). When the sample misjudges, the cut-off is read once more, higher in the
    sample, and the rows within it are cut to ``count`` as :func:`_smallest` would cut all
    of them (the same rows, read from a few thousand; 100k random 384-bit codes: p90 0.37
    vs 0.44 ms a scan, p50 1.6% less); only if that fails too does it read all."""
    if valid is not None:
        dist[~valid] = worst
    n = dist.shape[0]
    sample = dist[:: max(1, n // 4_096)]
    at = min(sample.shape[0] - 1, count * sample.shape[0] // n)
    cut = np.partition(sample, at)[at]
    rows = np.flatnonzero(dist <= cut) if cut < worst else None
    if rows is not None and count <= rows.shape[0] <= 8 * count:
        return rows.astype(np.intp)
    if rows is not None and rows.shape[0] < count:  # cut-off set too low: once more, higher
        higher = min(sample.shape[0] - 1, 4 * at + 8)
        cut = np.partition(sample, higher)[higher]
        rows = np.flatnonzero(dist <= cut) if cut < worst else None
    if rows is not None and rows.shape[0] >= count:
        # every row nearer than the cut-off is among them, in row order: the rows a
        # histogram of all distances gives, read from these few thousand only
        return rows[_smallest(dist[rows], count, None, worst)].astype(np.intp)
    return _smallest(dist, count, None, worst)


def _smallest(
    dist: npt.NDArray[np.unsignedinteger[Any]],
    count: int,
    valid: npt.NDArray[np.bool_] | None,
    worst: int,
) -> npt.NDArray[np.intp]:
    """The ``count`` rows of smallest distance (rows where ``valid`` is False excluded)."""
    if valid is not None:
        dist[~valid] = worst
    # Distances are small integers: a histogram finds the cut-off in O(n) without sorting.
    cumulative = np.cumsum(np.bincount(dist, minlength=worst + 1))
    cut = int(np.searchsorted(cumulative, count))
    inside = np.flatnonzero(dist < cut)
    ties = np.flatnonzero(dist == cut)[: count - inside.shape[0]]
    return np.concatenate([inside, ties]).astype(np.intp)
