"""A growable table of unit vectors with id-addressed insert, delete and top-k search.

The vectors live in a :class:`~rag_optimize.index.engine.VectorEngine` (one per cache
scope), which picks its method by size: an exact scan while the table is small, sign-bit
codes with exact rescoring above (measured: at 100k x 384 about 0.5 ms instead of 17 ms
per lookup, see BENCHMARKS.md). Inserts and deletes are O(1) amortised: freed rows are
reused, a new row's codes are computed for that row alone, a deleted row is never returned.
The table is thread-safe; searches hold a shared lock, so several run at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from rag_optimize.embedding.vectors import FloatVector, unit_matrix
from rag_optimize.errors import ConfigurationError, InvalidInputError, InvalidVectorError
from rag_optimize.index.engine import SharedLock, Storage, VectorEngine

__all__ = ["INDEX_KINDS", "IndexKind", "VectorTable"]

#: ``"auto"`` (default) lets the engine choose by size; the others force a method.
#: ``"ann"`` is the older name of ``"hnsw"`` (usearch graph).
IndexKind = Literal["auto", "exact", "binary", "int8", "hnsw", "ann"]
INDEX_KINDS: tuple[str, ...] = ("auto", "exact", "binary", "int8", "hnsw", "ann")


def check_index(index: object) -> IndexKind:
    """Return ``index`` if it names an index kind, else raise :class:`ConfigurationError`."""
    if index not in INDEX_KINDS:
        raise ConfigurationError(f"index must be one of {INDEX_KINDS}, got {index!r}")
    return index  # type: ignore[return-value]


class VectorTable:
    """Vectors addressed by string id; search returns ``(id, cosine)`` best first.

    ``storage="int8"`` keeps one byte per dimension (plus a scale per row) instead of four:
    scores are then within about 1e-3 of the float32 ones.
    """

    def __init__(
        self,
        dim: int,
        index: IndexKind = "auto",
        capacity: int = 64,
        storage: Storage = "float32",
    ) -> None:
        check_index(index)
        self.dim = dim
        self.index_kind: IndexKind = index
        self.storage: Storage = storage
        self._engine = VectorEngine(
            dim, method="hnsw" if index == "ann" else index, storage=storage
        )
        self._ids: list[str | None] = []
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._lock = SharedLock()
        if capacity > 64:  # a caller that knows the size (e.g. a mirror snapshot) sizes once
            self._engine.reserve(capacity)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._slot_of

    @property
    def method(self) -> str:
        """The search method in use now (``"auto"`` resolved by size)."""
        return self._engine.active_method()

    def add(self, entry_id: str, vector: FloatVector) -> None:
        """Insert (or replace) ``entry_id``. ``vector`` should be a unit float32 vector (the
        cache's are); any other is checked and normalised, and a wrong dimension, NaN/inf or
        zero vector raises :class:`InvalidVectorError` naming it."""
        if not _is_unit(vector, self.dim):
            self.add_many([entry_id], [vector])  # checks, normalises or reports it
            return
        lock = self._lock
        lock.acquire_write()
        try:
            self._engine.add(self._slot(entry_id), vector, normalized=True)
        finally:
            lock.release_write()

    def _slot(self, entry_id: str) -> int:
        """The row of ``entry_id``, assigned (a freed one first) if it is new."""
        slot = self._slot_of.get(entry_id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self._ids)
                self._ids.append(None)
            self._ids[slot] = entry_id
            self._slot_of[entry_id] = slot
        return slot

    def add_many(self, entry_ids: Sequence[str], vectors: Sequence[FloatVector]) -> None:
        """Insert (or replace) several entries in one engine update (a repeated id keeps its
        last vector). Vectors are checked as in :meth:`add`; a bad one changes nothing."""
        if len(entry_ids) != len(vectors):
            raise InvalidInputError(f"got {len(entry_ids)} ids but {len(vectors)} vectors")
        last = {entry_id: i for i, entry_id in enumerate(entry_ids)}
        if not last:
            return
        matrix = _stack([vectors[i] for i in last.values()], self.dim)
        squares = np.einsum("ij,ij->i", matrix, matrix)  # squared norms, no temporary
        unit = bool(np.all(np.abs(squares - 1.0) <= 2 * _UNIT_TOLERANCE))  # False for NaN/inf
        if not unit:
            matrix = unit_matrix(matrix, self.dim)  # raises on NaN/inf/zero, naming the row
        with self._lock.writing():
            slots = np.fromiter((self._slot(e) for e in last), dtype=np.intp, count=len(last))
            self._engine.add(slots, matrix, normalized=True)

    def remove(self, entry_id: str) -> bool:
        """Delete ``entry_id``; returns whether it was present."""
        with self._lock.writing():
            slot = self._slot_of.pop(entry_id, None)
            if slot is None:
                return False
            self._engine.remove(slot)
            self._ids[slot] = None
            self._free.append(slot)
            return True

    def ids(self) -> list[str]:
        """The ids held, in no particular order."""
        with self._lock.reading():
            return list(self._slot_of)

    def vector(self, entry_id: str) -> FloatVector | None:
        """A copy of the stored vector of ``entry_id``, or ``None``."""
        with self._lock.reading():
            slot = self._slot_of.get(entry_id)
            return None if slot is None else self._engine.vector(slot)

    def search(self, query: FloatVector, k: int = 1) -> list[tuple[str, float]]:
        """The ``k`` most similar stored vectors to ``query`` (a unit vector), best first."""
        lock = self._lock
        lock.acquire_read()
        try:
            if not self._slot_of:
                return []
            # A cache query is already a checked unit vector: the engine need not check it
            # (``_is_unit`` with the query tolerance, inline on this hot path).
            unit = (
                type(query) is np.ndarray
                and query.dtype is _FLOAT32
                and query.shape == (self.dim,)
                and abs(float(query.dot(query)) - 1.0) <= _QUERY_TOLERANCE
            )
            rows, scores = self._engine.search(query, k, normalized=unit)
            ids = self._ids
            return [
                (entry_id, score)
                for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
                if (entry_id := ids[row]) is not None
            ]
        finally:
            lock.release_read()

    def clear(self) -> None:
        """Remove everything (keeps the dimension, index kind and storage)."""
        with self._lock.writing():
            self._engine = VectorEngine(
                self.dim,
                method="hnsw" if self.index_kind == "ann" else self.index_kind,
                storage=self.storage,
            )
            self._ids, self._slot_of, self._free = [], {}, []

    @property
    def nbytes(self) -> int:
        """Bytes held in RAM by the vectors, their codes and any graph."""
        return int(self._engine.memory_usage()["total_in_ram"])


_UNIT_TOLERANCE = 1e-3  # |norm - 1| up to which a float32 vector is taken as unit
# (checked on the squared norm: |norm^2 - 1| <= 2e-3 is |norm - 1| <= ~1e-3)


_FLOAT32 = np.dtype(np.float32)
_QUERY_TOLERANCE = 1e-5  # |norm^2 - 1| up to which a query is searched as given: float32
# rounding of a normalised vector (about 1e-7), so its scores match a renormalised one's


def _is_unit(vector: object, dim: int, tolerance: float = 2 * _UNIT_TOLERANCE) -> bool:
    """Whether ``vector`` is a finite float32 unit vector of ``dim`` (the cache's fast path)."""
    if type(vector) is not np.ndarray or vector.dtype is not _FLOAT32 or vector.shape != (dim,):
        return False  # (``is``: builtin dtypes are singletons; any other takes the checked path)
    return abs(float(vector.dot(vector)) - 1.0) <= tolerance  # False for NaN/inf


def _stack(vectors: Sequence[FloatVector], dim: int) -> np.ndarray:
    """The vectors as one float32 matrix; a ragged or non-numeric batch, or a wrong
    dimension, raises :class:`InvalidVectorError`."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise InvalidVectorError(
            f"vectors are not a numeric batch of dimension {dim}: {exc}"
        ) from exc
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        got = matrix.shape[1] if matrix.ndim == 2 else tuple(matrix.shape)
        raise InvalidVectorError(f"vector has dimension {got}, table holds {dim}")
    return matrix
