"""The matrix-vector product of one query against stored rows, without a threaded BLAS.

A search scores one query vector against many rows: a matrix-vector product, memory-bound
(a 2,101 x 384 float32 table is 3 MB read once). numpy sends ``matrix @ vector`` to BLAS's
gemv, and OpenBLAS splits a gemv above a small size over all its threads. For one query that
buys nothing on a quiet machine and costs a lot on a busy one: the product waits for its
slowest worker thread, and on a loaded 2-core machine a worker thread waits for a core.
Measured at 5,183 x 384 (OpenBLAS 0.3.31 with 2 threads, load 3-9): ``np.dot`` p50
5.9-10.5 ms, :func:`matvec` 0.15-0.26 ms (BENCHMARKS.md, issue 17, third pass).

:func:`matvec` takes numpy's ``vecdot`` ufunc above :data:`BLAS_MATVEC_MAX` elements: one
inner product per row (numpy's dot loop, not threaded), in a C loop that releases the GIL. It
needs no process-wide setting: a thread-count limit (threadpoolctl) is a global of the BLAS
library, so concurrent searches would restore each other's limits and slow the caller's own
numpy work meanwhile. Small products stay on ``np.dot`` (no stall measured up to 1,000 x 384,
and a few microseconds faster than ``vecdot`` there). Scores agree with the gemv ones
to within a float32 rounding (about 6e-8 for unit vectors) and, unlike them, do not depend
on how many threads BLAS has.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

#: Products of at most this many elements (rows x dimension) go to ``np.dot``: below it
#: ``np.dot`` was as fast and showed no threading stalls (measured up to 1,000 x 384 at
#: load 7-8; from 2,000 x 384 its p95 was 20+ ms).
BLAS_MATVEC_MAX = 1 << 19

_vecdot: Any = getattr(np, "vecdot", None)  # numpy >= 2.0


def matvec(
    matrix: npt.NDArray[Any],
    vector: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """``matrix @ vector`` (float32 rows, one float32 vector), into ``out`` when given."""
    if matrix.shape[0] * matrix.shape[1] <= BLAS_MATVEC_MAX:
        return np.dot(matrix, vector, out=out)
    if _vecdot is not None:
        return _vecdot(matrix, vector, out=out)
    # numpy 1.x: einsum's own loop (no BLAS), about half vecdot's speed, never threaded.
    return np.einsum("ij,j->i", matrix, vector, out=out)
