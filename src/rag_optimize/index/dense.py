"""Dense (embedding) index: a :class:`~rag_optimize.index.engine.VectorEngine` with documents.

Vectors are L2-normalised float32 on entry, so similarity is a dot product. The search
itself is the vector engine's, the same one that serves the semantic cache's tables:

* ``quantization="auto"`` (default): the engine's choice, the same as the cache's: exact
  below :data:`~rag_optimize.index.engine.EXACT_BELOW` documents, binary codes above.
* ``quantization=None``: exact search, one matrix-vector product over the float32 matrix.
* ``quantization="int8"``: the first pass scores 1-byte codes (4x less memory to scan), then
  the best candidates are rescored exactly with the float32 vectors.
* ``quantization="binary"``: the first pass ranks sign-bit codes (of the vector minus the
  corpus mean) by Hamming distance (faiss when installed), about 32x less memory to scan;
  from 262,144 documents a shorter random-hyperplane code goes first. Candidates are rescored
  exactly.
* ``ann="usearch"``: an HNSW graph (usearch) proposes the candidates instead of a full scan;
  they are rescored exactly too.

Deletes mark the documents' engine rows dead (a search never returns them, from the moment
``delete`` returns) and rebuild nothing; the engine is compacted once dead rows pass
:data:`COMPACT_FRACTION` of its rows, and a save writes the live rows only.

The float32 vectors kept for rescoring are only touched for the few candidates; after
``save`` they can be memory-mapped with ``load(path, mmap=True)`` so only the codes have to
live in RAM (:meth:`DenseIndex.memory_usage` reports both).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag_optimize.embedding.vectors import unit_matrix, unit_vector
from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index.ann import ANN_BACKENDS
from rag_optimize.index.documents import (
    DocumentStore,
    Hit,
    check_k,
    check_mask,
    check_rows,
    loading,
    read_meta,
)
from rag_optimize.index.engine import SharedLock, VectorEngine

_META_FILE = "dense.json"
_CODES_PREFIX = "engine_"  # engine_codes.npy, engine_center.npy, engine_coarse.npy
#: Deleted documents' engine rows are compacted away once they are this fraction of the
#: engine's rows (and at least :data:`COMPACT_MIN`): until then a search skips them (the
#: engine's live mask), which costs less than a rebuild per delete.
COMPACT_FRACTION = 0.25
COMPACT_MIN = 1_024
_FORMAT = 1
_QUANTIZATIONS = (None, "auto", "int8", "binary")
_METHOD = {None: "exact", "auto": "auto", "int8": "int8", "binary": "binary"}


class DenseIndex:
    """Nearest-neighbour search over normalised embeddings, with optional codes and ANN.

    ``rescore_factor``: candidates rescored exactly per result wanted (default: the
    engine's, by method).
    """

    def __init__(
        self,
        dim: int | None = None,
        *,
        quantization: str | None = "auto",
        rescore_factor: int | None = None,
        ann: str | None = None,
        ann_options: Mapping[str, Any] | None = None,
    ) -> None:
        if quantization not in _QUANTIZATIONS:
            raise ConfigurationError(
                f"unknown quantization {quantization!r}: use 'auto', None, 'int8' or 'binary'"
            )
        if ann is not None and ann not in ANN_BACKENDS:
            raise ConfigurationError(f"unknown ann backend {ann!r}: use None or {ANN_BACKENDS}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
            raise ConfigurationError(f"dim must be a positive int, got {dim!r}")
        if rescore_factor is not None and (
            isinstance(rescore_factor, bool)
            or not isinstance(rescore_factor, int)
            or rescore_factor < 1
        ):
            raise ConfigurationError(f"rescore_factor must be an int >= 1, got {rescore_factor!r}")
        self.dim = dim
        self.quantization = quantization
        self.rescore_factor = rescore_factor
        self.ann_name = ann
        self.ann_options = dict(ann_options or {})
        self.documents = DocumentStore()
        self._engine: VectorEngine | None = self._new_engine(dim) if dim is not None else None
        # The engine row of each document row, ascending (documents keep their order). Until
        # a delete it is 0..n-1 and ``None`` stands for that; a delete only marks the
        # engine rows dead, so the engine's rows and the documents' rows part ways until
        # the next compaction.
        self._slots: npt.NDArray[np.intp] | None = None
        self._lock = SharedLock()  # searches share it; add, delete and compaction write

    def __len__(self) -> int:
        return len(self.documents)

    def _options(self) -> dict[str, Any]:
        """The engine's settings for this index's quantization / ANN choice."""
        return {
            "method": "hnsw" if self.ann_name is not None else _METHOD[self.quantization],
            "candidate_factor": self.rescore_factor,
            "hnsw_options": self.ann_options,
        }

    def _new_engine(self, dim: int) -> VectorEngine:
        return VectorEngine(dim, **self._options())

    @property
    def engine(self) -> VectorEngine | None:
        """The vector engine holding the vectors (``None`` until the dimension is known).

        Its rows are the documents' rows until a :meth:`delete`; after one, deleted rows stay
        in the engine, dead, until the next compaction (or a save and load)."""
        return self._engine

    @property
    def _vectors(self) -> npt.NDArray[np.float32]:
        """All stored vectors, one row per document (read-only use; kept for callers that
        reuse an index's vectors)."""
        if self._engine is None:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return self._engine.vectors_of(self._engine_rows(np.arange(len(self.documents))))

    def _engine_rows(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """The engine rows of document ``rows``."""
        return rows if self._slots is None else self._slots[rows]

    def _document_rows(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """The document rows of live engine ``rows`` (a binary search in the ascending slots)."""
        if self._slots is None:
            return rows
        return np.searchsorted(self._slots, rows).astype(np.intp)

    @property
    def dead_rows(self) -> int:
        """Engine rows of deleted documents not yet compacted away (never searched)."""
        return 0 if self._engine is None else self._engine.high - len(self._engine)

    # -- building ---------------------------------------------------------------------------

    def add(
        self,
        vectors: Sequence[Sequence[float]] | npt.ArrayLike,
        ids: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Add embeddings (one row per document) with optional ids, texts and metadata."""
        matrix = unit_matrix(vectors, self.dim)
        with self._lock.writing():
            if self._engine is None:
                self.dim = int(matrix.shape[1])
                self._engine = self._new_engine(self.dim)
            new_ids = self.documents.extend(matrix.shape[0], ids, texts, metadatas)
            high = self._engine.high  # new documents go after every engine row, in order
            rows = np.arange(high, high + matrix.shape[0], dtype=np.intp)
            self._engine.add(rows, matrix, normalized=True)
            if self._slots is not None:
                self._slots = np.concatenate([self._slots, rows])
        return new_ids

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id (all must exist); return how many were removed.

        Their vectors are marked dead in the engine at once (never returned again, not even
        by a search already holding the mask: searches and deletes take the same lock) and
        nothing is rebuilt; the document rows after them move up. Once dead rows pass
        :data:`COMPACT_FRACTION` of the engine's rows (and :data:`COMPACT_MIN`), the engine
        is rebuilt from the live vectors: O(n) once per O(n) deletes, O(1) amortised.
        """
        with self._lock.writing():
            rows = self.documents.delete(ids)
            if not rows.size or self._engine is None:
                return int(rows.size)
            slots = (
                np.arange(self._engine.high, dtype=np.intp) if self._slots is None else self._slots
            )
            self._engine.remove(slots[rows])
            self._slots = np.delete(slots, rows)
            dead = self._engine.high - len(self._engine)
            if dead >= COMPACT_MIN and dead >= COMPACT_FRACTION * self._engine.high:
                self._compact()
        return int(rows.size)

    def _compact(self) -> None:
        """Rebuild the engine from the live vectors, in document order (lock held)."""
        assert self._engine is not None and self.dim is not None
        live = self._engine.vectors_of(self._engine_rows(np.arange(len(self.documents))))
        self._engine = self._new_engine(self.dim)
        if live.shape[0]:
            self._engine.add(np.arange(live.shape[0]), live, normalized=True)
        self._slots = None

    def vectors(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """The stored (unit) vectors of ``ids``, one row each, for reuse or updates."""
        rows = np.asarray([self.documents.position(str(i)) for i in ids], dtype=np.intp)
        if self._engine is None:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return self._engine.vectors_of(self._engine_rows(rows))

    # -- searching --------------------------------------------------------------------------

    def search(
        self,
        vector: Sequence[float] | npt.ArrayLike,
        k: int = 10,
        *,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> list[Hit]:
        """The ``k`` documents most similar to ``vector`` (cosine), best first.

        ``allowed`` (a boolean mask over the rows, e.g. from a metadata filter) restricts the
        search to those rows before the top-k is taken, so the result is the top-k of the
        allowed documents (fewer only when fewer are allowed). A small allowed set is scored
        exactly, row by row (the true top k; with the default codes up to 1/32 of the rows,
        about the cost of an unfiltered search); a larger one goes through the usual codes
        or graph restricted to the allowed rows, then exact rescoring.
        """
        check_k(k)
        if not len(self.documents) or self._engine is None:
            raise InvalidInputError("dense index is empty: add documents before searching")
        query = unit_vector(vector, self.dim)
        with self._lock.reading():  # a concurrent delete waits: no half-deleted state is read
            engine, slots = self._engine, self._slots
            if allowed is not None:
                allowed = check_mask(allowed, len(self.documents))
                if not allowed.any():
                    return []
                if allowed.all():
                    allowed = None
            if allowed is not None and slots is not None:
                mask = np.zeros(engine.high, dtype=bool)
                mask[slots[allowed]] = True
                allowed = mask
            rows, scores = engine.search(query, k, allowed)
            rows = self._document_rows(rows)
            return [
                self.documents.hit(row, score)
                for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
            ]

    def memory_usage(self) -> dict[str, Any]:
        """Bytes held: ``scan`` is what a search reads in full; ``rescore`` the float vectors.

        ``rescore_mmapped`` is True when the float vectors are memory-mapped from disk (only
        the candidates' pages are read). For an exact index ``scan`` is the float matrix.
        """
        if self._engine is None:
            return {"scan": 0, "rescore": 0, "rescore_mmapped": False, "float32": 0,
                    "codes": 0, "ann": 0}
        used = self._engine.memory_usage()
        floats, codes, ann = int(used["vectors"]), int(used["codes"]), int(used["graph"])
        coded = self._engine.active_method() in ("binary", "int8")
        scan = codes if coded else (0 if ann else floats)
        return {
            "scan": scan + ann,
            "rescore": floats if (coded or ann) else 0,
            "rescore_mmapped": bool(used["vectors_mmapped"]),
            "float32": floats,
            "codes": codes,
            "ann": ann,
        }

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> str:
        """Write the index to directory ``path`` (``.npy`` arrays + JSON, no pickle).

        The engine's codes are saved with the vectors (a load adopts them; older saves
        without them rebuild them from the vectors). Returns the sha1 of the saved documents
        (checked again by :meth:`load`).
        """
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        if self._slots is not None and self.ann_name is not None:
            with self._lock.writing():  # the graph is keyed by engine row: make those dense
                self._compact()
        codes: dict[str, npt.NDArray[Any]] = {}
        with self._lock.reading():
            vectors = self._vectors  # document order: deleted documents' rows are not saved
            np.save(directory / "vectors.npy", vectors, allow_pickle=False)
            if self._engine is not None:
                # The codes too (a few % of the vectors' bytes): a load adopts them instead
                # of reading every vector to rebuild them.
                codes = self._engine.codes_of(self._engine_rows(np.arange(len(self.documents))))
                for name, array in codes.items():
                    np.save(directory / f"{_CODES_PREFIX}{name}.npy", array, allow_pickle=False)
                if self.ann_name is not None:
                    self._engine.save_graph(directory / "ann.index")
        documents_sha1 = self.documents.save(directory)
        meta = {
            "format": _FORMAT,
            "dim": self.dim,
            "quantization": self.quantization,
            "rescore_factor": self.rescore_factor,
            "ann": self.ann_name,
            "ann_options": self.ann_options,
            "documents_sha1": documents_sha1,
            "codes": sorted(codes),
        }
        (directory / _META_FILE).write_text(json.dumps(meta))
        return documents_sha1

    @classmethod
    def load(
        cls, path: str | Path, *, mmap: bool = False, documents: DocumentStore | None = None
    ) -> DenseIndex:
        """Read an index written by :meth:`save`; ``mmap=True`` maps the float vectors.

        With codes or ANN the float vectors are only read for rescoring, so mapping them keeps
        just the codes in RAM. A mapped index is read-only until :meth:`add` copies it.
        ``documents``: an already loaded copy of the same documents (a hybrid index shares
        one between its two indexes). Files
        that are truncated, unreadable or disagree with each other (row counts, dimension)
        raise :class:`InvalidInputError` naming the directory; nothing is unpickled.
        """
        directory = Path(path)
        meta = read_meta(directory, _META_FILE, "DenseIndex", _FORMAT)
        with loading("DenseIndex", directory):
            index = cls(
                meta["dim"],
                quantization=meta["quantization"],
                rescore_factor=meta["rescore_factor"],
                ann=meta["ann"],
                ann_options=meta["ann_options"],
            )
            index.documents = (
                documents.copy()
                if documents is not None
                else DocumentStore.load(directory, meta.get("documents_sha1"))
            )
            n = len(index.documents)
            vectors = np.load(
                directory / "vectors.npy", mmap_mode="r" if mmap else None, allow_pickle=False
            )
            shape = vectors.shape
            if vectors.dtype != np.float32 or len(shape) != 2:
                raise InvalidInputError(f"vectors.npy holds {vectors.dtype} {shape}")
            check_rows("DenseIndex", "vectors.npy", shape[0], n)
            if n and meta["dim"] is not None and shape[1] != meta["dim"]:
                raise InvalidInputError(f"vectors.npy has dimension {shape[1]}, not {meta['dim']}")
            if meta["dim"] is not None:
                codes = {
                    str(name): np.load(
                        directory / f"{_CODES_PREFIX}{name}.npy", allow_pickle=False
                    )
                    for name in meta.get("codes") or ()
                }
                index._engine = VectorEngine.from_matrix(
                    vectors, codes=codes, **index._options()
                )
                if meta["ann"] is not None:
                    index._engine.load_graph(directory / "ann.index", view=mmap)
        return index
