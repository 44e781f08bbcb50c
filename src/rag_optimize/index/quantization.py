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

import numpy as np
import numpy.typing as npt

Int8Matrix = npt.NDArray[np.int8]
BitMatrix = npt.NDArray[np.uint8]
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
        np.dot(block[:rows], scaled, out=out[start : start + rows])
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
