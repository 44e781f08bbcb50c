"""A growable table of unit vectors with id-addressed insert, delete and top-k search.

Exact mode keeps one contiguous float32 matrix: a lookup is a single matrix-vector product,
inserts and deletes are O(1) amortised (freed rows are reused). ANN mode adds a usearch HNSW
graph over the same vectors for large tables, where a full product no longer fits in cache
(at 100k x 384 the exact product reads 150 MB per lookup).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from rag_optimize.embedding.vectors import FloatVector
from rag_optimize.errors import ConfigurationError
from rag_optimize.index.ann import AnnIndex, make_ann

IndexKind = Literal["exact", "ann"]


class VectorTable:
    """Vectors addressed by string id; search returns ``(id, cosine)`` best first."""

    def __init__(self, dim: int, index: IndexKind = "exact", capacity: int = 64) -> None:
        if index not in ("exact", "ann"):
            raise ConfigurationError(f"index must be 'exact' or 'ann', got {index!r}")
        self.dim = dim
        self.index_kind: IndexKind = index
        self._matrix = np.zeros((max(capacity, 1), dim), dtype=np.float32)
        self._ids: list[str | None] = [None] * self._matrix.shape[0]
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._high = 0
        self._ann: AnnIndex | None = make_ann("usearch", dim, {}) if index == "ann" else None

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._slot_of

    def add(self, entry_id: str, vector: FloatVector) -> None:
        """Insert (or replace) ``entry_id``; ``vector`` must be a unit float32 vector."""
        if entry_id in self._slot_of:
            self.remove(entry_id)
        if self._free:
            slot = self._free.pop()
        else:
            if self._high == self._matrix.shape[0]:
                self._grow()
            slot = self._high
            self._high += 1
        self._matrix[slot] = vector
        self._ids[slot] = entry_id
        self._slot_of[entry_id] = slot
        if self._ann is not None:
            self._ann.add(np.array([slot], dtype=np.int64), vector[None, :])

    def remove(self, entry_id: str) -> bool:
        """Delete ``entry_id``; returns whether it was present."""
        slot = self._slot_of.pop(entry_id, None)
        if slot is None:
            return False
        self._matrix[slot] = 0.0
        self._ids[slot] = None
        self._free.append(slot)
        if self._ann is not None:
            self._ann.remove(slot)
        return True

    def ids(self) -> list[str]:
        """The ids held, in no particular order."""
        return list(self._slot_of)

    def vector(self, entry_id: str) -> FloatVector | None:
        """A copy of the stored vector of ``entry_id``, or ``None``."""
        slot = self._slot_of.get(entry_id)
        return None if slot is None else self._matrix[slot].copy()

    def search(self, query: FloatVector, k: int = 1) -> list[tuple[str, float]]:
        """The ``k`` most similar stored vectors to ``query`` (a unit vector), best first."""
        if not self._slot_of:
            return []
        if self._ann is not None:
            return self._search_ann(self._ann, query, k)
        sims = self._matrix[: self._high] @ query
        if k == 1:
            order = np.array([int(np.argmax(sims))])
        else:
            take = min(k + len(self._free), sims.shape[0])
            top = np.argpartition(-sims, take - 1)[:take]
            order = top[np.argsort(-sims[top])]
        out: list[tuple[str, float]] = []
        for slot in order:
            entry_id = self._ids[int(slot)]
            if entry_id is not None:
                out.append((entry_id, float(sims[slot])))
                if len(out) == k:
                    break
        return out

    def _search_ann(self, ann: AnnIndex, query: FloatVector, k: int) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for slot in ann.search(query, k).tolist():
            entry_id = self._ids[int(slot)]
            if entry_id is not None:
                out.append((entry_id, float(self._matrix[int(slot)] @ query)))
        out.sort(key=lambda pair: -pair[1])
        return out

    def clear(self) -> None:
        """Remove everything (keeps the dimension and index kind)."""
        self.__init__(self.dim, self.index_kind)  # type: ignore[misc]

    def _grow(self) -> None:
        old = self._matrix
        self._matrix = np.zeros((old.shape[0] * 2, self.dim), dtype=np.float32)
        self._matrix[: old.shape[0]] = old
        self._ids.extend([None] * old.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the vector matrix (the ANN graph, if any, not included)."""
        return int(self._matrix.nbytes)

