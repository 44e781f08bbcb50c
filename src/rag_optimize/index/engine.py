"""The vector engine: row-addressed unit vectors with top-k search that picks its own method.

One engine serves the cache's per-scope tables (:class:`~rag_optimize.cache.VectorTable`)
and the retriever's :class:`~rag_optimize.index.DenseIndex`. Callers address vectors by row
number (they keep their own ids); rows can be added in bulk or one at a time, replaced and
removed, and a search can be restricted to an allowed-rows mask before the top k is taken.

Methods (``method=``; ``"auto"`` is the default and the user configures nothing):

* ``"exact"``: one matrix-vector product over the stored vectors. Fastest while the table is
  small (below ``exact_below`` live rows, measured crossover; see BENCHMARKS.md).
* ``"binary"``: one sign bit per dimension (of the vector minus a fixed centre, which
  spreads anisotropic embeddings over both signs) ranks rows by Hamming distance with
  faiss's popcount kernel (numpy when faiss is absent), then the best ``candidates`` rows
  are rescored exactly. 100k x 384 codes are 4.8 MB instead of 154 MB of float32. From
  :data:`COARSE_FROM` rows a shorter code goes first: 128 random-hyperplane sign bits
  (16 bytes a row, a third of the full code's memory traffic) pick the best
  ``8 x candidates`` (at least 1024) rows, their full codes pick
  ``candidates``, and those are rescored. A scan of 1M full codes is memory-bound (3 ms on
  a quiet machine); of the short ones 1 ms.
  ``"auto"`` switches to ``"binary"`` at ``exact_below`` rows.
* ``"int8"``: the first pass scores int8 codes (one scale per row), then rescoring.
* ``"hnsw"``: a usearch HNSW graph proposes the candidates (override; slower to fill and,
  measured, lower recall on near-duplicates than ``"binary"``).

A filtered search (``allowed``) scores every allowed row exactly, so it returns the true top
k of those rows, while their vectors are no more bytes than the codes an unfiltered search
scans (:data:`EXACT_FILTERED`: 1/32 of the rows for float32 vectors and sign codes); a larger
filter ranks the allowed rows' codes (a gathered copy up to 40% of the rows, above it the
unmasked scan over-fetching) and rescores the best. The codes give no bound that could
certify a stopping point (see BENCHMARKS.md, issue 17, fourth pass).

Updates are cheap and never rebuild: codes of a new or replaced row are computed for that
row only (the centre is fixed when the codes are first built), a removed row is marked dead
at once and is never returned (dead rows are filtered before the top k; freed rows are
reused by the caller). The engine is not thread-safe on its own: callers take a
:class:`SharedLock` (many searches at once, one writer), so searches run in parallel where
the kernels release the GIL (numpy's product, faiss's Hamming scan).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rag_optimize.embedding.vectors import unit_matrix, unit_vector
from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index import quantization as q
from rag_optimize.index._kernels import matvec
from rag_optimize.index.ann import AnnIndex, make_ann
from rag_optimize.index.row_blocks import RowBlocks

__all__ = [
    "BINARY_MIN_DIM",
    "COARSE_FROM",
    "EXACT_BELOW",
    "EXACT_FILTERED",
    "METHODS",
    "STORAGES",
    "Method",
    "SharedLock",
    "Storage",
    "VectorEngine",
]

Method = Literal["auto", "exact", "binary", "int8", "hnsw"]
Storage = Literal["float32", "int8"]
METHODS: tuple[str, ...] = ("auto", "exact", "binary", "int8", "hnsw")
STORAGES: tuple[str, ...] = ("float32", "int8")
#: Live rows from which ``"auto"`` leaves the exact scan for binary codes + rescoring.
EXACT_BELOW = 4_096
#: Below this dimension ``"auto"`` always scans exactly: a few dozen sign bits cannot rank
#: neighbours (recall@10 0.51 at 48 dims in the tests), and the float scan is small anyway.
BINARY_MIN_DIM = 128
#: Candidates rescored exactly: ``max(MIN_CANDIDATES, CANDIDATE_FACTOR * k)``.
MIN_CANDIDATES = {"binary": 128, "int8": 40, "hnsw": 64}
CANDIDATE_FACTOR = {"binary": 16, "int8": 4, "hnsw": 8}
#: Rows from which ``"binary"`` scans the short random-hyperplane codes first. Below it the
#: full codes alone: measured on WikiQA x5 (103,890 MiniLM rows, 873 real questions), the
#: retriever's recall@10 against exact was 0.993 with the full codes and 0.972 with the short
#: codes first (1,280 candidates), while near-duplicates were found either way; at 100k the
#: full-code scan takes 0.3-0.4 ms, at 1M 3 ms on a quiet machine and 55 ms under load.
COARSE_FROM = 262_144
# Candidates the short codes pass to the full codes: max(_COARSE_MIN, _COARSE_FACTOR * wanted).
# Measured at 1M random rows (load ~10, interleaved): 1,024 of them, p50 1.9 ms; 3,906 (one
# row in 256), 4.7 ms; near-duplicates 400/400 both.
_COARSE_MIN = 1_024
_COARSE_FACTOR = 8
#: A filtered search scores every row the filter keeps (the exact top k of the matching
#: rows) while those rows' stored vectors are at most this many times the bytes of the codes
#: an unfiltered search scans (the whole table's): the two then read about as much memory.
#: For float32 rows and sign codes that is 1/32 of the rows (384 dims: 1,536 vs 48 bytes a
#: row), against int8 codes 1/4. Above it, codes + rescoring (exact scores, approximate set).
#: Measured at 103,890 rows (BENCHMARKS.md, issue 17, fourth pass): an exact scan of a 10%
#: filter costs 2.2x an unfiltered search (1.4x in the hybrid), of 1% 0.74x.
EXACT_FILTERED = 1.0
# A filter keeping at most this fraction of the rows has just their codes ranked (a gathered
# copy, the unmasked kernel) and up to _FILTERED_EXTRA more candidates rescored; above it the
# unmasked scan over-fetches (see _hamming_candidates).
# Measured at 100k x 384 (load ~4-5, interleaved): kept 15% 0.72x an unfiltered search,
# 25% 0.89x, 35% 1.05x (over-fetching instead: 1.22x, 1.18x; the bitmap kernel ~1.5x).
_GATHER_CODES = 0.4
# A larger filter asks the unmasked scan for this many times the rows it expects to need.
_OVERFETCH = 1.5
# Up to this many dead rows are skipped by fetching that many more candidates; beyond it
# the scan is given a live-rows bitmap (slightly slower per lookup).
_DEAD_SLACK = 256
# A filter that ranks only its own rows' codes reads fewer code bytes than an unfiltered
# search; it spends them on rescoring more candidates: one extra float row for every
# _SCATTERED_READ row-sized stretch of code bytes saved, at least as many again as the usual
# candidates (up to _FILTERED_EXTRA), at most _FILTERED_MOST extra. A rescored (scattered)
# row cost 3 (MiniLM rows) to 7 (clustered synthetic rows) times the scan time of the code
# bytes a 10% filter saved at 100k, hence 8: the filtered search stays cheaper than an
# unfiltered one. Measured at 103,890 MiniLM rows (WikiQA x5), a 10% filter, all 873
# questions (filtered_depth.py, load 0.4-1.4): rescoring 320 rows gave the brute-force top
# 10 on 819, 512 on 850, 1,024 on 868, for 0.68, 0.76 and 1.00 ms (1.11 ms unfiltered).
_FILTERED_EXTRA = 256
_SCATTERED_READ = 8
_FILTERED_MOST = 1024
_FORMAT = 2  # 2: unpadded full codes, short codes and their hyperplanes saved too
_META = "engine.json"
Rows = npt.NDArray[np.intp]
Scores = npt.NDArray[np.float32]


class SharedLock:
    """A readers-writer lock: many readers at once, or one writer; writers go first.

    ``with lock.reading():`` for searches, ``with lock.writing():`` for changes.
    """

    def __init__(self) -> None:
        # The plain mutex is taken directly (a C-level ``with``); the condition over it is
        # only used to wait, and notified only when someone waits, so an uncontended hold
        # costs two lock round trips and no Python-level ``Condition`` call.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._waiting = 0  # threads in ``_cond.wait`` (readers and writers)
        self._read = _Held(self.acquire_read, self.release_read)
        self._write = _Held(self.acquire_write, self.release_write)

    def reading(self) -> _Held:
        """Hold the lock shared (searches)."""
        return self._read

    def writing(self) -> _Held:
        """Hold the lock exclusively (adds, removes)."""
        return self._write

    def acquire_read(self) -> None:
        """Take the lock shared; pair with :meth:`release_read` in a ``finally`` (what
        :meth:`reading` does, a call cheaper for a hot path)."""
        with self._mutex:
            if self._writing or self._writers_waiting:
                self._waiting += 1
                while self._writing or self._writers_waiting:
                    self._cond.wait()
                self._waiting -= 1
            self._readers += 1

    def release_read(self) -> None:
        """Give back a shared hold taken with :meth:`acquire_read`."""
        with self._mutex:
            self._readers -= 1
            if not self._readers and self._waiting:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        """Take the lock exclusively; pair with :meth:`release_write` in a ``finally``."""
        with self._mutex:
            if self._writing or self._readers:
                self._writers_waiting += 1
                self._waiting += 1
                while self._writing or self._readers:
                    self._cond.wait()
                self._waiting -= 1
                self._writers_waiting -= 1
            self._writing = True

    def release_write(self) -> None:
        """Give back an exclusive hold taken with :meth:`acquire_write`."""
        with self._mutex:
            self._writing = False
            if self._waiting:
                self._cond.notify_all()


class _Held:
    """A reusable context manager around an acquire/release pair (cheaper than a generator)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None]) -> None:
        self._acquire, self._release = acquire, release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc: object) -> None:
        self._release()


def _top_k(scores: npt.NDArray[Any], k: int) -> Rows:
    """Indices of the ``k`` largest ``scores``, largest first (stable on ties)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    negated = -scores
    if k < negated.shape[0]:
        top = negated.argpartition(k - 1)[:k]
        return top[negated[top].argsort(kind="stable")]
    return negated.argsort(kind="stable")


class VectorEngine:
    """Unit vectors by row number; ``search`` returns the top-k rows and cosine scores.

    Args:
        dim: vector dimension (fixed).
        method: ``"auto"`` (exact below ``exact_below`` live rows, binary codes + exact
            rescoring above), or one of ``"exact"``, ``"binary"``, ``"int8"``, ``"hnsw"``.
        storage: ``"float32"`` (exact scores) or ``"int8"`` (one byte per dimension plus a
            per-row scale: 3.9x less memory, scores within about 1e-3 of the float ones).
        candidates: rows rescored per search (default: by method, at least 16 per result).
        candidate_factor: rows rescored per result wanted instead of the method's default
            (``max(minimum, factor * k)``; ignored when ``candidates`` is given).
        exact_below: where ``"auto"`` switches from the exact scan to binary codes.
        center: binary codes are signs of ``vector - mean`` (mean of the rows present when
            the codes are first built, then fixed); ``False`` uses the raw signs.
        hnsw_options: options for usearch (``connectivity``, ``expansion_search``, ...).
    """

    def __init__(
        self,
        dim: int,
        *,
        method: str = "auto",
        storage: str = "float32",
        candidates: int | None = None,
        candidate_factor: int | None = None,
        exact_below: int = EXACT_BELOW,
        center: bool = True,
        hnsw_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ConfigurationError(f"dim must be a positive int, got {dim!r}")
        if method not in METHODS:
            raise ConfigurationError(
                f"unknown vector index method {method!r}: use one of {METHODS}"
            )
        if storage not in STORAGES:
            raise ConfigurationError(f"unknown vector storage {storage!r}: use one of {STORAGES}")
        if candidates is not None and (isinstance(candidates, bool) or candidates < 1):
            raise ConfigurationError(f"candidates must be a positive int, got {candidates!r}")
        if candidate_factor is not None and (
            isinstance(candidate_factor, bool)
            or not isinstance(candidate_factor, int)
            or candidate_factor < 1
        ):
            raise ConfigurationError(
                f"candidate_factor must be a positive int, got {candidate_factor!r}"
            )
        if isinstance(exact_below, bool) or exact_below < 0:
            raise ConfigurationError(f"exact_below must be >= 0, got {exact_below!r}")
        self.dim = dim
        self.method = method
        self.storage = storage
        self.candidates = candidates
        self.candidate_factor = candidate_factor
        self.exact_below = int(exact_below)
        self.center = bool(center)
        self.hnsw_options = dict(hnsw_options or {})
        # Whether a search may take the lean float32 scan when the table is small enough.
        self._scans_floats = method in ("auto", "exact") and storage == "float32"
        # The stored vectors (float32, or int8 codes): in blocks, so growth never copies them.
        self._store = RowBlocks(dim, np.int8 if storage == "int8" else np.float32)
        self._scale: npt.NDArray[np.float32] | None = (
            np.zeros(0, dtype=np.float32) if storage == "int8" else None
        )
        self._live = np.zeros(0, dtype=bool)
        self._high = 0  # rows [0, high) have been written at least once
        self._n_live = 0
        self._width = q.sign_code_bytes(dim)
        self._bits: q.BitMatrix | None = None  # binary codes, built when first needed
        self._coarse: q.BitMatrix | None = None  # short first-pass codes, built with them
        self._projection: npt.NDArray[np.float32] | None = None
        self._mean: npt.NDArray[np.float32] | None = None
        self._int8: q.Int8Matrix | None = None  # int8 first-pass codes (float32 storage)
        self._int8_scale: npt.NDArray[np.float32] | None = None
        self._hnsw: AnnIndex | None = None
        if method == "hnsw":
            self._hnsw = make_ann("usearch", dim, self.hnsw_options)

    # -- size and state -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n_live

    @property
    def high(self) -> int:
        """One past the highest row ever written (the length a full scan covers)."""
        return self._high

    def is_live(self, row: int) -> bool:
        """Whether ``row`` holds a vector."""
        return 0 <= row < self._high and bool(self._live[row])

    def live_rows(self) -> Rows:
        """The rows holding a vector, ascending."""
        return np.flatnonzero(self._live[: self._high]).astype(np.intp)

    def active_method(self) -> str:
        """The method a search uses right now (``"auto"`` resolved by size)."""
        if self.method != "auto":
            return self.method
        if self._n_live < self.exact_below or self.dim < BINARY_MIN_DIM:
            return "exact"
        return "binary"

    # -- writing ------------------------------------------------------------------------------

    def add(
        self, rows: npt.ArrayLike, vectors: npt.ArrayLike, *, normalized: bool = False
    ) -> None:
        """Store ``vectors`` (one per row) at ``rows``, replacing what those rows held.

        Vectors are checked (dimension, NaN/inf, zero) and L2-normalised, unless the caller
        passes ``normalized=True`` for a float32 matrix it already checked that way (the
        cache does, once per query). Rows must be distinct non-negative ints. Cost: the
        codes of these rows only (no rebuild).
        """
        if (
            normalized
            and type(rows) is int
            and 0 <= rows < self._store.capacity
            and rows < self._live.shape[0]
            and self._hnsw is None
            and type(vectors) is np.ndarray
            and vectors.shape == (self.dim,)
        ):
            self._add_one(rows, vectors)
            return
        at = self._check_rows(rows)
        if normalized and isinstance(vectors, np.ndarray) and vectors.dtype == np.float32:
            matrix = vectors.reshape(-1, self.dim) if vectors.ndim == 1 else vectors
        else:
            given = np.asarray(vectors)
            matrix = unit_matrix(given[None, :] if given.ndim == 1 else given, self.dim)
        if matrix.shape[0] != at.shape[0]:
            raise InvalidInputError(f"got {at.shape[0]} rows but {matrix.shape[0]} vectors")
        if at.shape[0] == 0:
            return
        if self._hnsw is not None:
            replaced = at[(at < self._high)]
            for row in replaced[self._live[replaced]].tolist():
                self._hnsw.remove(int(row))
        self._ensure_capacity(int(at.max()) + 1)
        if self._scale is not None:
            codes, scale = q.row_int8_encode(matrix)
            self._store.write(at, codes)
            self._scale[at] = scale
        else:
            self._store.write(at, matrix)
        self._n_live += int(at.shape[0] - np.count_nonzero(self._live[at]))
        self._live[at] = True
        self._high = max(self._high, int(at.max()) + 1)
        if self._bits is not None:
            self._bits[at] = q.sign_encode(matrix, self._mean, self._width)
        if self._coarse is not None:
            self._coarse[at] = q.coarse_encode(matrix, self._mean, self._coarse_hyperplanes())
        if self._int8 is not None and self._int8_scale is not None:
            self._int8[at], self._int8_scale[at] = q.row_int8_encode(matrix)
        if self._hnsw is not None:
            self._hnsw.add(at.astype(np.int64), matrix)
        self._build_codes_when_due()

    def _build_codes_when_due(self) -> None:
        """Build the binary codes in the write that makes them the method, and the short
        codes in the write that reaches :data:`COARSE_FROM` rows (not in a search)."""
        if self._bits is None:
            if self._n_live >= self.exact_below and self.active_method() == "binary":
                self._sign_codes()
        if self._bits is not None and self._coarse is None and self._high >= COARSE_FROM:
            self._coarse_codes()

    def _add_one(self, row: int, vector: npt.NDArray[np.float32]) -> None:
        """:meth:`add` of one checked unit vector into existing capacity (the cache's path)."""
        if self._scale is not None:
            codes, scale = q.row_int8_encode(vector[None, :])
            self._store.set(row, codes[0])
            self._scale[row] = scale[0]
        else:
            self._store.set(row, vector)
        if not self._live[row]:
            self._live[row] = True
            self._n_live += 1
        if row >= self._high:
            self._high = row + 1
        if self._bits is not None:
            self._bits[row] = q.sign_encode(vector[None, :], self._mean, self._width)[0]
        if self._coarse is not None:
            self._coarse[row] = q.coarse_encode(
                vector[None, :], self._mean, self._coarse_hyperplanes()
            )[0]
        elif self._high >= COARSE_FROM or (self._bits is None and self._n_live >= self.exact_below):
            self._build_codes_when_due()
        if self._int8 is not None and self._int8_scale is not None:
            codes, scale = q.row_int8_encode(vector[None, :])
            self._int8[row], self._int8_scale[row] = codes[0], scale[0]

    def append(self, vectors: npt.ArrayLike) -> Rows:
        """Store ``vectors`` at the next free rows past the end; returns those rows."""
        count = np.asarray(vectors).shape[0] if np.ndim(vectors) == 2 else -1
        if count < 0:
            unit_matrix(vectors, self.dim)  # raises the shape error
        rows = np.arange(self._high, self._high + count, dtype=np.intp)
        self.add(rows, vectors)
        return rows

    def remove(self, rows: npt.ArrayLike) -> int:
        """Mark ``rows`` empty at once (they are never returned again); returns how many held
        a vector. The row numbers may be reused by a later :meth:`add`."""
        at = self._check_rows(rows)
        at = at[at < self._high]
        at = at[self._live[at]]
        self._live[at] = False
        self._n_live -= int(at.shape[0])
        if self._hnsw is not None:
            for row in at.tolist():
                self._hnsw.remove(int(row))
        return int(at.shape[0])

    def vector(self, row: int) -> npt.NDArray[np.float32] | None:
        """A float32 copy of the vector at ``row``, or ``None`` if it is empty."""
        if not self.is_live(row):
            return None
        return self._decoded(np.array([row], dtype=np.intp))[0]

    def vectors_of(self, rows: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Float32 copies of the vectors at ``rows`` (all must hold one), one row each."""
        at = np.asarray(rows, dtype=np.intp).reshape(-1)
        inside = not at.size or (int(at.min()) >= 0 and int(at.max()) < self._high)
        if not inside or not self._live[at].all():
            raise InvalidInputError(f"rows {at.tolist()} include one that holds no vector")
        return self._decoded(at)

    def _decoded(self, rows: Rows) -> npt.NDArray[np.float32]:
        stored = self._store.gather(rows)
        if self._scale is None:
            return np.asarray(stored, dtype=np.float32)
        return (stored * self._scale[rows, None]).astype(np.float32)

    @classmethod
    def from_matrix(
        cls,
        matrix: npt.NDArray[np.float32],
        *,
        codes: Mapping[str, npt.NDArray[Any]] | None = None,
        **options: Any,
    ) -> VectorEngine:
        """An engine over the unit rows of ``matrix`` (rows ``0..n-1``) without copying it.

        For an already checked float32 matrix, e.g. memory-mapped from a saved index: it is
        only read (codes are built from it now if the method needs them; a later write
        copies it in). ``codes``: what :meth:`codes_of` returned for these rows when they
        were saved; they are adopted instead of rebuilt, so a memory-mapped matrix is not
        read at all (a saved 100k x 384 index: 4.8 MB of codes instead of 154 MB of vectors
        to read and encode). ``options`` are the constructor's; with ``method="hnsw"`` the
        graph starts empty (searches are exact) until :meth:`load_graph` reads the saved one.
        """
        if matrix.ndim != 2 or matrix.dtype != np.float32:
            raise InvalidInputError(
                f"from_matrix needs a float32 matrix, got {matrix.dtype} {matrix.shape}"
            )
        engine = cls(int(matrix.shape[1]), **options)
        if engine.storage != "float32":
            engine.add(np.arange(matrix.shape[0]), np.asarray(matrix), normalized=True)
            return engine
        n = int(matrix.shape[0])
        engine._store, engine._live = RowBlocks.adopt(matrix), np.ones(n, dtype=bool)
        engine._high = engine._n_live = n
        if codes:
            engine._adopt_codes(codes, n)
        engine._build_codes_when_due()
        return engine

    def codes_of(self, rows: npt.NDArray[np.intp]) -> dict[str, npt.NDArray[Any]]:
        """The first-pass codes built so far, of ``rows`` in that order, and their centre:
        what :meth:`from_matrix` takes back (``codes=``) for a matrix of those rows."""
        out: dict[str, npt.NDArray[Any]] = {}
        if self._bits is not None:
            out["codes"] = self._bits[rows]
            if self._mean is not None:
                out["center"] = self._mean
        if self._coarse is not None:
            out["coarse"] = self._coarse[rows]
        return out

    def _adopt_codes(self, codes: Mapping[str, npt.NDArray[Any]], n: int) -> None:
        """Take saved codes of rows ``0..n-1`` (shapes and dtypes checked, copied into RAM:
        later writes update them in place)."""
        expected = {
            "codes": ((n, self._width), np.uint8),
            "center": ((self.dim,), np.float32),
            "coarse": ((n, q.COARSE_BITS // 8), np.uint8),
        }
        for name, array in codes.items():
            shape, dtype = expected.get(name, (None, None))
            if shape is None or array.shape != shape or array.dtype != dtype:
                raise InvalidInputError(
                    f"saved codes {name!r} hold {array.dtype}{list(array.shape)}, expected "
                    f"{np.dtype(dtype) if dtype else 'nothing'}{list(shape or [])}"
                )
        if "codes" not in codes or ("center" in codes) != self.center:
            raise InvalidInputError(f"saved codes are incomplete: {sorted(codes)}")
        self._bits = np.array(codes["codes"])
        self._mean = np.array(codes["center"]) if "center" in codes else None
        if "coarse" in codes:
            self._coarse = np.array(codes["coarse"])

    def save_graph(self, path: str | Path) -> None:
        """Write the HNSW graph alone (method ``"hnsw"``) to the file ``path``."""
        if self._hnsw is None:
            raise ConfigurationError(f"this engine has no graph (method {self.method!r})")
        self._hnsw.save(Path(path))

    def load_graph(self, path: str | Path, *, view: bool = False) -> None:
        """Read a graph written by :meth:`save_graph` (``view=True`` maps it from disk)."""
        if self._hnsw is None:
            raise ConfigurationError(f"this engine has no graph (method {self.method!r})")
        graph = Path(path)
        if not graph.exists():
            raise InvalidInputError(f"{graph} is missing")
        try:
            self._hnsw.load(graph, view=view)
        except Exception as exc:  # usearch raises RuntimeError on a bad file
            raise InvalidInputError(f"{graph} is corrupt: {exc}") from exc

    def _check_rows(self, rows: npt.ArrayLike) -> Rows:
        if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0:
            return np.array([rows], dtype=np.intp)
        at = np.asarray(rows)
        if at.ndim == 0:
            at = at.reshape(1)
        if at.ndim != 1 or (at.size and not np.issubdtype(at.dtype, np.integer)):
            raise InvalidInputError(f"rows must be a 1-D sequence of ints, got {rows!r}")
        at = at.astype(np.intp)
        if at.size and int(at.min()) < 0:
            raise InvalidInputError(f"rows must be >= 0, got {int(at.min())}")
        if at.size > 1 and np.unique(at).shape[0] != at.shape[0]:
            raise InvalidInputError("rows must be distinct")
        return at

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows now (one allocation when the final size is known)."""
        self._store.reserve(rows)
        if rows > self._live.shape[0]:
            self._resize(rows)

    def _ensure_capacity(self, needed: int) -> None:
        self._store.reserve(needed)  # the vectors: block by block, never copied wholesale
        capacity = self._live.shape[0]
        if needed <= capacity:
            return
        # The per-row arrays (flags, codes: a few dozen bytes a row) grow by a quarter (at
        # least 64 rows): amortised O(1) per row, slack under 25% of their small size.
        self._resize(max(needed, capacity + max(capacity // 4, 64)))

    def _resize(self, new: int) -> None:
        """Grow the per-row arrays (not the vectors: :class:`RowBlocks` grows those)."""
        self._live = _grown(self._live, new)
        if self._scale is not None:
            self._scale = _grown(self._scale, new)
        if self._bits is not None:
            self._bits = _grown(self._bits, new)
        if self._coarse is not None:
            self._coarse = _grown(self._coarse, new)
        if self._int8 is not None and self._int8_scale is not None:
            self._int8 = _grown(self._int8, new)
            self._int8_scale = _grown(self._int8_scale, new)

    # -- searching ----------------------------------------------------------------------------

    def search(
        self,
        query: npt.ArrayLike,
        k: int,
        allowed: npt.NDArray[np.bool_] | None = None,
        *,
        normalized: bool = False,
    ) -> tuple[Rows, Scores]:
        """The ``k`` rows most similar to ``query`` and their cosine scores, best first.

        ``allowed`` (one bool per row; rows past its end count as not allowed) restricts the
        answer before the top k is taken, so up to ``k`` allowed rows always come back.
        Scores are exact with float32 storage (always rescored from the stored vectors).
        ``normalized=True`` promises ``query`` is a float32 unit vector of ``dim`` that the
        caller already checked (the cache checks each query once): it is not checked again,
        and a small float32 table searched without a mask takes the lean path (one product
        over the single block, the top k; nothing else is allocated).
        """
        if (
            normalized
            and allowed is None
            and type(k) is int
            and k > 0
            and self._n_live
            and self._scans_floats
            and len(self._store.blocks) == 1
            and (
                self.method == "exact"
                or self._n_live < self.exact_below
                or self.dim < BINARY_MIN_DIM
            )
        ):
            return self._scan_block(query, k)  # type: ignore[arg-type]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        vec = np.asarray(query, dtype=np.float32) if normalized else unit_vector(query, self.dim)
        valid = self._valid(allowed)
        n_valid = self._n_live if valid is None else int(np.count_nonzero(valid))
        if n_valid == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        method = self.active_method()
        wanted = min(n_valid, self._candidate_count(method, k))
        if (
            method == "exact"
            or wanted >= n_valid
            or (valid is not None and n_valid <= max(4 * wanted, self._exact_filtered_rows(method)))
        ):
            return self._exact(vec, k, valid, n_valid)  # the true top k of the allowed rows
        if method == "hnsw":
            found = self._hnsw_candidates(vec, wanted, valid, k)
            if found is None:  # the graph proposed too few allowed rows: be exact instead
                return self._exact(vec, k, valid, n_valid)
            return self._rescore(found, vec, k)
        if valid is not None and method == "binary" and n_valid <= self._high * _GATHER_CODES:
            # A filter keeping 40% or less: the code scan covers those rows only, so more
            # candidates are rescored for about the unfiltered cost (see _SCATTERED_READ);
            # the filtered top k lies deeper in the Hamming ranking (measured recall@10 at
            # 100k MiniLM rows, 10% kept: 0.973 with the usual 160 candidates, 0.993 with
            # 320; unfiltered 0.991). Capped: rescoring reads whole float rows.
            saved = (self._high - n_valid) * self._width // (self._row_bytes * _SCATTERED_READ)
            extra = min(_FILTERED_MOST, max(min(wanted, _FILTERED_EXTRA), saved))
            wanted = min(n_valid, wanted + extra)
        return self._rescore(self._code_candidates(method, vec, wanted, valid), vec, k)

    def _scan_block(self, query: npt.NDArray[np.float32], k: int) -> tuple[Rows, Scores]:
        """:meth:`search`'s exact scan of a table held in one block, no mask: the scores of
        ``[0, high)`` in one product, dead rows pushed below every live one, the top k."""
        high = self._high
        # ndarray methods, not the np.* functions: no array-function dispatch per call
        # (measured: argpartition 1.7 vs 2.3 us over 1,000 scores).
        scores: Scores = matvec(self._store.blocks[0][:high], query)
        if self._n_live < high:
            scores[~self._live[:high]] = -np.inf
        if k == 1:
            best: Rows = scores.argmax(axis=0, keepdims=True)
            return best, scores[best]
        k = min(k, self._n_live)
        negated = -scores  # _top_k, inline: the top k, best first, stable on ties
        if k < high:
            top = negated.argpartition(k - 1)[:k]
            order = top[negated[top].argsort(kind="stable")]
        else:
            order = negated.argsort(kind="stable")
        return order, scores[order]

    @property
    def _row_bytes(self) -> int:
        """Bytes of one stored vector (what rescoring or an exact scan reads per row)."""
        return self.dim * self._store.dtype.itemsize

    def _exact_filtered_rows(self, method: str) -> float:
        """Allowed rows up to which a filtered search scores them all (see EXACT_FILTERED)."""
        code_bytes = self.dim if method == "int8" else self._width
        return EXACT_FILTERED * self._high * code_bytes / self._row_bytes

    def _candidate_count(self, method: str, k: int) -> int:
        if self.candidates is not None:
            return max(self.candidates, k)
        factor = self.candidate_factor or CANDIDATE_FACTOR.get(method, 1)
        return max(MIN_CANDIDATES.get(method, 0), k * factor)

    def _valid(self, allowed: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.bool_] | None:
        """Live-and-allowed mask over ``[0, high)``, or ``None`` for "every live row"."""
        if allowed is None:
            return None
        mask = np.asarray(allowed)
        if mask.ndim != 1 or mask.dtype != np.bool_:
            raise InvalidInputError(
                f"allowed must be a 1-D bool mask over rows, got {mask.dtype} {mask.shape}"
            )
        out = np.zeros(self._high, dtype=bool)
        upto = min(self._high, mask.shape[0])
        np.logical_and(mask[:upto], self._live[:upto], out=out[:upto])
        return out

    def _scores(self, rows: Rows | None, query: npt.NDArray[np.float32]) -> Scores:
        """Scores of ``rows`` (ascending for memory-mapped reads), or of ``[0, high)``."""
        if rows is not None:
            pieces = self._store.pieces(rows) if self._scale is None else None
            if pieces is not None:  # float32 rows read where they lie, block by block
                if len(pieces) == 1:
                    return q.inner_products_at(pieces[0][2], pieces[0][3], query)
                out = np.empty(rows.shape[0], dtype=np.float32)
                for lo, hi, block, local in pieces:
                    out[lo:hi] = q.inner_products_at(block, local, query)
                return out
            stored = self._store.gather(rows)
            if self._scale is None:
                return matvec(stored, query)
            return q.row_int8_scores(stored, self._scale[rows], query)
        out = np.empty(self._high, dtype=np.float32)
        for start, view in self._store.views(self._high):
            stop = start + view.shape[0]
            if self._scale is None:
                matvec(view, query, out=out[start:stop])
            else:
                out[start:stop] = q.row_int8_scores(view, self._scale[start:stop], query)
        return out

    def _exact(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        valid: npt.NDArray[np.bool_] | None,
        n_valid: int,
    ) -> tuple[Rows, Scores]:
        if valid is not None and n_valid * 4 <= self._high:
            rows = np.flatnonzero(valid).astype(np.intp)  # few allowed rows: score just those
            scores = self._scores(rows, query)
            order = _top_k(scores, k)
            return rows[order], scores[order]
        scores = self._scores(None, query)
        mask = self._live[: self._high] if valid is None else valid
        if n_valid < self._high:
            scores = np.where(mask, scores, -np.inf).astype(np.float32)
        order = _top_k(scores, min(k, n_valid))
        return order, scores[order]

    def _code_candidates(
        self,
        method: str,
        query: npt.NDArray[np.float32],
        wanted: int,
        valid: npt.NDArray[np.bool_] | None,
    ) -> Rows:
        if method == "int8":
            if self._scale is not None:  # int8 storage: the stored rows are the codes
                scores = self._scores(None, query)
            else:
                codes, scale = self._int8_codes()
                scores = q.row_int8_scores(codes[: self._high], scale[: self._high], query)
            mask = self._live[: self._high] if valid is None else valid
            scores = np.where(mask, scores, -np.inf).astype(np.float32)
            return _top_k(scores, wanted)
        bits = self._sign_codes()[: self._high]
        query_code = q.sign_encode(query[None, :], self._mean, self._width)
        if self._high < COARSE_FROM:
            return self._hamming_candidates(bits, query_code, wanted, valid)
        coarse = self._coarse_codes()[: self._high]
        query_coarse = q.coarse_encode(query[None, :], self._mean, self._coarse_hyperplanes())
        first = max(_COARSE_MIN, _COARSE_FACTOR * wanted)
        found = self._hamming_candidates(coarse, query_coarse, first, valid)
        return found[q.hamming_rerank(bits[found], query_code, wanted)]

    def _hamming_candidates(
        self,
        codes: q.BitMatrix,
        query_code: q.BitMatrix,
        wanted: int,
        valid: npt.NDArray[np.bool_] | None,
    ) -> Rows:
        """The ``wanted`` live (and allowed) rows nearest by these codes."""
        dead = self._high - self._n_live
        if valid is None and dead <= _DEAD_SLACK:
            # At most ``dead`` of the best ``wanted + dead`` rows are dead: drop them after.
            found = q.hamming_nearest(codes, query_code, wanted + dead)
            return found[self._live[found]][:wanted]
        n_valid = -1 if valid is None else int(np.count_nonzero(valid))
        if valid is not None and n_valid <= self._high * _GATHER_CODES:
            # A filter that keeps few rows: rank just their codes (a gathered copy, 40% of
            # the rows or less) with the unmasked kernel, rather than checking a
            # bitmap at every row of the table. Same ranking; cheaper than no filter.
            rows = np.flatnonzero(valid).astype(np.intp)
            # np.take, not codes[rows]: 29 vs 117 us for 10k of 100k 48-byte codes.
            return rows[q.hamming_nearest(np.take(codes, rows, axis=0), query_code, wanted)]
        if valid is not None and _OVERFETCH > 0:
            # A filter that keeps many rows: the unmasked kernel asked for enough rows that
            # ``wanted`` allowed ones are expected among them (the bitmap kernel cost 2-3x
            # the unmasked scan at 100k: 0.81 vs 0.27 ms at half the rows). The allowed rows
            # of the nearest ``fetch`` are the nearest allowed rows (the same ranking).
            fetch = min(self._high, int(wanted * _OVERFETCH * self._high / n_valid) + 64)
            found = q.hamming_nearest(codes, query_code, fetch)  # nearest first
            found = found[valid[found]]
            if found.shape[0] >= wanted:  # the nearest of them (numpy's kernel is unordered)
                return found[q.hamming_rerank(codes[found], query_code, wanted)]
            # Fewer than expected (the allowed rows lie far from the query): the bitmap.
        mask = self._live[: self._high] if valid is None else valid
        return q.hamming_nearest(codes, query_code, wanted, mask)

    def _hnsw_candidates(
        self,
        query: npt.NDArray[np.float32],
        wanted: int,
        valid: npt.NDArray[np.bool_] | None,
        k: int,
    ) -> Rows | None:
        assert self._hnsw is not None
        fetch = wanted if valid is None else min(self._high, wanted * 4)
        found = self._hnsw.search(query, fetch)
        found = found[(found >= 0) & (found < self._high)]
        keep = self._live[found] if valid is None else valid[found]
        found = found[keep]
        if found.shape[0] < min(k, self._n_live if valid is None else int(valid.sum())):
            return None
        return found.astype(np.intp)

    def _rescore(self, rows: Rows, query: npt.NDArray[np.float32], k: int) -> tuple[Rows, Scores]:
        rows = np.sort(rows)  # ascending rows read a memory-mapped matrix sequentially
        scores = self._scores(rows, query)
        order = _top_k(scores, k)
        return rows[order], scores[order]

    def _sign_codes(self) -> q.BitMatrix:
        """The binary codes (full and short), built over every written row the first time
        they are needed; the centre is the mean of the live rows then, and stays fixed."""
        if self._bits is None:
            if self._mean is None and self.center and self._n_live:
                total = np.zeros(self.dim, dtype=np.float64)
                for start, stop in _chunks(self._high, self._store.block_rows):
                    block = self._float_rows(start, stop)
                    total += block[self._live[start:stop]].sum(axis=0)
                self._mean = (total / self._n_live).astype(np.float32)
            bits = np.zeros((self._live.shape[0], self._width), dtype=np.uint8)
            for start, stop in _chunks(self._high, self._store.block_rows):
                bits[start:stop] = q.sign_encode(
                    self._float_rows(start, stop), self._mean, self._width
                )
            self._bits = bits
        return self._bits

    def _coarse_codes(self) -> q.BitMatrix:
        """The short first-pass codes, built over every written row when first needed."""
        if self._coarse is None:
            self._sign_codes()  # fixes the centre
            hyperplanes = self._coarse_hyperplanes()
            coarse = np.zeros((self._live.shape[0], q.COARSE_BITS // 8), dtype=np.uint8)
            for start, stop in _chunks(self._high, self._store.block_rows):
                block = self._float_rows(start, stop)
                coarse[start:stop] = q.coarse_encode(block, self._mean, hyperplanes)
            self._coarse = coarse
        return self._coarse

    def _coarse_hyperplanes(self) -> npt.NDArray[np.float32]:
        if self._projection is None:
            self._projection = q.coarse_projection(self.dim)
        return self._projection

    def _int8_codes(self) -> tuple[q.Int8Matrix, npt.NDArray[np.float32]]:
        """int8 first-pass codes of float32 storage, built over every row when first needed."""
        if self._int8 is None or self._int8_scale is None:
            capacity = self._live.shape[0]
            self._int8 = np.zeros((capacity, self.dim), dtype=np.int8)
            self._int8_scale = np.ones(capacity, dtype=np.float32)
            for start, stop in _chunks(self._high, self._store.block_rows):
                codes, scale = q.row_int8_encode(self._float_rows(start, stop))
                self._int8[start:stop], self._int8_scale[start:stop] = codes, scale
        return self._int8, self._int8_scale

    def _float_rows(self, start: int = 0, stop: int | None = None) -> npt.NDArray[np.float32]:
        """Rows ``[start, stop)`` as float32 (a view when they lie in one float32 block)."""
        stop = self._high if stop is None else stop
        pieces = [view for _, view in self._store.views(stop, start)]
        block = pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else (
            np.zeros((0, self.dim), dtype=self._store.dtype)
        )
        if self._scale is None:
            return np.asarray(block, dtype=np.float32)
        return (block * self._scale[start:stop, None]).astype(np.float32)

    # -- memory and persistence ---------------------------------------------------------------

    def memory_usage(self) -> dict[str, Any]:
        """Bytes held, by part: ``vectors`` (rescoring), ``codes`` (first pass), ``graph``."""
        vectors = self._store.nbytes + (int(self._scale.nbytes) if self._scale is not None else 0)
        mapped = self._store.mapped
        codes = sum(
            int(a.nbytes)
            for a in (self._bits, self._coarse, self._int8, self._int8_scale)
            if a is not None
        )
        graph = self._hnsw.memory_bytes() if self._hnsw is not None else 0
        return {
            "vectors": vectors,
            "vectors_mmapped": mapped,
            "codes": codes,
            "graph": graph,
            "total_in_ram": (0 if mapped else vectors)
            + codes
            + graph
            + int(self._live.nbytes),
            "raw_float32": self._n_live * self.dim * 4,
        }

    def save(self, path: str | Path) -> None:
        """Write the engine to directory ``path`` (``.npy`` arrays + JSON; no pickle)."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        high = self._high
        stored = np.lib.format.open_memmap(
            directory / "vectors.npy", mode="w+", dtype=self._store.dtype, shape=(high, self.dim)
        )
        for start, view in self._store.views(high):  # block by block: no full-size temporary
            stored[start : start + view.shape[0]] = view
        stored.flush()
        del stored
        np.save(directory / "live.npy", self._live[:high], allow_pickle=False)
        if self._scale is not None:
            np.save(directory / "scale.npy", self._scale[:high], allow_pickle=False)
        if self._bits is not None:
            np.save(directory / "codes.npy", self._bits[:high], allow_pickle=False)
        if self._coarse is not None:
            np.save(directory / "coarse.npy", self._coarse[:high], allow_pickle=False)
            np.save(directory / "hyperplanes.npy", self._coarse_hyperplanes(), allow_pickle=False)
        if self._mean is not None:
            np.save(directory / "center.npy", self._mean, allow_pickle=False)
        if self._hnsw is not None:
            self.save_graph(directory / "hnsw.usearch")
        meta = {
            "format": _FORMAT,
            "dim": self.dim,
            "method": self.method,
            "storage": self.storage,
            "candidates": self.candidates,
            "candidate_factor": self.candidate_factor,
            "exact_below": self.exact_below,
            "center": self.center,
            "hnsw_options": self.hnsw_options,
            "rows": high,
            "live": self._n_live,
        }
        (directory / _META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> VectorEngine:
        """Read an engine written by :meth:`save`.

        ``mmap=True`` maps the stored vectors from disk read-only (only the codes live in
        RAM; rescoring reads the candidates' pages); the first later write copies them in.
        A missing, truncated or inconsistent file raises :class:`InvalidInputError` naming it.
        """
        directory = Path(path)
        meta = _read_json(directory / _META)
        try:
            engine = cls(
                int(meta["dim"]),
                method=str(meta["method"]),
                storage=str(meta["storage"]),
                candidates=meta["candidates"],
                candidate_factor=meta.get("candidate_factor"),
                exact_below=int(meta["exact_below"]),
                center=bool(meta["center"]),
                hnsw_options=meta["hnsw_options"],
            )
            rows, live_count = int(meta["rows"]), int(meta["live"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"{directory / _META} is corrupt: {exc}") from exc
        dtype = np.int8 if engine.storage == "int8" else np.float32
        vectors = _read_array(directory / "vectors.npy", (rows, engine.dim), dtype, mmap)
        live = _read_array(directory / "live.npy", (rows,), np.bool_, False)
        if int(np.count_nonzero(live)) != live_count:
            raise InvalidInputError(f"{directory / 'live.npy'} is corrupt: live count differs")
        engine._store, engine._live = RowBlocks.adopt(vectors), np.array(live)
        engine._high, engine._n_live = rows, live_count
        if engine.storage == "int8":
            engine._scale = np.array(
                _read_array(directory / "scale.npy", (rows,), np.float32, False)
            )
        if (directory / "codes.npy").exists():
            bits = _read_array(directory / "codes.npy", (rows, engine._width), np.uint8, False)
            engine._bits = np.array(bits)
        if (directory / "coarse.npy").exists():
            coarse = _read_array(
                directory / "coarse.npy", (rows, q.COARSE_BITS // 8), np.uint8, False
            )
            engine._projection = np.array(
                _read_array(
                    directory / "hyperplanes.npy", (engine.dim, q.COARSE_BITS), np.float32, False
                )
            )
            engine._coarse = np.array(coarse)
        if (directory / "center.npy").exists():
            engine._mean = np.array(
                _read_array(directory / "center.npy", (engine.dim,), np.float32, False)
            )
        if engine._hnsw is not None:
            engine.load_graph(directory / "hnsw.usearch", view=mmap)
        return engine


def _chunks(rows: int, size: int = 65_536) -> list[tuple[int, int]]:
    """``[start, stop)`` blocks covering ``rows`` (bounded temporaries when encoding)."""
    return [(start, min(rows, start + size)) for start in range(0, rows, size)]


def _grown(array: npt.NDArray[Any], rows: int) -> npt.NDArray[Any]:
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InvalidInputError(f"{path.parent} holds no saved vector engine ({path.name} missing)")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path} is corrupt: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise InvalidInputError(f"{path}: unsupported vector engine format {got!r}")
    return meta


def _read_array(
    path: Path, shape: tuple[int, ...], dtype: type[Any], mmap: bool
) -> npt.NDArray[Any]:
    """``np.load`` (never pickle) with the shape and dtype checked against the metadata."""
    if not path.exists():
        raise InvalidInputError(f"{path} is missing")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"{path} is corrupt: {exc}") from exc
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise InvalidInputError(
            f"{path} is corrupt: holds {array.dtype}{list(array.shape)}, "
            f"expected {np.dtype(dtype)}{list(shape)}"
        )
    return array
