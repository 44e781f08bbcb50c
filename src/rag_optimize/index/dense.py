"""Dense (embedding) index: picks exact search or binary codes by size; int8 codes and ANN.

Vectors are L2-normalised float32 on entry, so similarity is a dot product.

* ``quantization="auto"`` (default): the vector engine's choice, the same as the cache's:
  exact below :data:`~rag_optimize.index.engine.EXACT_BELOW` documents, ``"binary"`` above.
* ``quantization=None``: exact search, one matrix-vector product over the float32 matrix.
* ``quantization="int8"``: the first pass scores 1-byte codes (4x less memory to scan), then
  the best ``k * rescore_factor`` candidates are rescored exactly with the float32 vectors.
* ``quantization="binary"``: the first pass ranks sign-bit codes (of the vector minus the
  corpus mean) by Hamming distance with the engine's kernel (faiss when installed), about
  24x less memory to scan, then the candidates are rescored exactly.
* ``ann="usearch"``: an HNSW graph (usearch) proposes the candidates instead of a full scan,
  for corpora where even the code scan is too slow; they are rescored exactly too.

The float32 vectors kept for rescoring are only touched for the few candidates; after
``save`` they can be memory-mapped with ``load(path, mmap=True)`` so only the codes have to
live in RAM (:meth:`DenseIndex.memory_usage` reports both).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag_optimize.embedding.vectors import unit_matrix, unit_vector
from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index import quantization as q
from rag_optimize.index.ann import ANN_BACKENDS, AnnIndex, make_ann
from rag_optimize.index.documents import (
    DocumentStore,
    Hit,
    check_k,
    check_mask,
    check_rows,
    loading,
    read_meta,
)
from rag_optimize.index.engine import (
    BINARY_MIN_DIM,
    CANDIDATE_FACTOR,
    EXACT_BELOW,
    MIN_CANDIDATES,
)

_META_FILE = "dense.json"
_FORMAT = 1
_QUANTIZATIONS = (None, "auto", "int8", "binary")
# Binary settings are the vector engine's (measured there): at least 128 candidates.
_DEFAULT_RESCORE = {None: 1, "auto": CANDIDATE_FACTOR["binary"], "int8": 4,
                    "binary": CANDIDATE_FACTOR["binary"]}
_MIN_CANDIDATES = {None: 0, "auto": MIN_CANDIDATES["binary"], "int8": 40,
                   "binary": MIN_CANDIDATES["binary"]}


def _top_k(scores: npt.NDArray[Any], k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` largest ``scores``, largest first (stable on ties)."""
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


class DenseIndex:
    """Nearest-neighbour search over normalised embeddings, with optional codes and ANN."""

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
        if dim is not None and (isinstance(dim, bool) or dim <= 0):
            raise ConfigurationError(f"dim must be a positive int, got {dim!r}")
        if rescore_factor is not None and rescore_factor < 1:
            raise ConfigurationError(f"rescore_factor must be >= 1, got {rescore_factor}")
        self.dim = dim
        self.quantization = quantization
        default_factor = 4 if ann is not None else _DEFAULT_RESCORE[quantization]
        self.rescore_factor = rescore_factor or default_factor
        self.ann_name = ann
        self.ann_options = dict(ann_options or {})
        self._ann: AnnIndex | None = None
        if ann is not None and dim is not None:
            self._ann = make_ann(ann, dim, self.ann_options)
        self.documents = DocumentStore()
        self._vectors: npt.NDArray[np.float32] = np.zeros((0, dim or 0), dtype=np.float32)
        self._codes: npt.NDArray[Any] | None = None
        self._scales: npt.NDArray[np.float32] | None = None
        self._center: npt.NDArray[np.float32] | None = None  # of the sign codes
        self._stale_codes = False
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.documents)

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
        with self._lock:
            if self.dim is None:
                self.dim = int(matrix.shape[1])
                self._vectors = np.zeros((0, self.dim), dtype=np.float32)
                if self.ann_name is not None:
                    self._ann = make_ann(self.ann_name, self.dim, self.ann_options)
            start = len(self.documents)
            new_ids = self.documents.extend(matrix.shape[0], ids, texts, metadatas)
            self._vectors = np.concatenate([self._vectors, matrix]) if start else matrix
            self._stale_codes = True
            if self._ann is not None:
                self._ann.add(np.arange(start, start + matrix.shape[0]), matrix)
        return new_ids

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id (all must exist); return how many were removed.

        The rows after them move up; codes are recomputed on the next search and an ANN
        graph is rebuilt from the remaining vectors (its keys are row numbers).
        """
        with self._lock:
            rows = self.documents.delete(ids)
            if not rows.size:
                return 0
            self._vectors = np.delete(np.asarray(self._vectors), rows, axis=0)
            self._stale_codes = True
            if self.ann_name is not None and self.dim is not None:
                self._ann = make_ann(self.ann_name, self.dim, self.ann_options)
                if len(self._vectors):
                    self._ann.add(np.arange(len(self._vectors)), self._vectors)
        return int(rows.size)

    def vectors(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """The stored (unit) vectors of ``ids``, one row each, for reuse or updates."""
        rows = [self.documents.position(str(i)) for i in ids]
        return np.asarray(self._vectors[rows], dtype=np.float32)

    def _method(self) -> str | None:
        """The first pass used now: ``"auto"`` is exact below the vector engine's
        ``EXACT_BELOW`` documents and binary codes from there (the cache's choice too)."""
        if self.quantization == "auto":
            small = len(self._vectors) < EXACT_BELOW or (self.dim or 0) < BINARY_MIN_DIM
            return None if small else "binary"
        return self.quantization

    def _ensure_codes(self) -> None:
        """(Re)compute the quantized codes after documents were added or deleted."""
        method = self._method()
        if not self._stale_codes or method is None or not len(self._vectors):
            return
        with self._lock:
            vectors = np.asarray(self._vectors)
            if method == "int8":
                # Scales come from the whole corpus, so codes are recomputed on growth.
                self._scales = q.int8_scales(vectors)
                self._codes = q.int8_encode(vectors, self._scales)
            else:  # the engine's codes: signs of (vector - corpus mean), padded for the kernel
                self._center = vectors.mean(axis=0).astype(np.float32)
                width = q.sign_code_bytes(vectors.shape[1])
                self._codes = np.concatenate(
                    [
                        q.sign_encode(vectors[i : i + 65_536], self._center, width)
                        for i in range(0, len(vectors), 65_536)
                    ]
                )
            self._stale_codes = False

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
        allowed documents (fewer only when fewer are allowed). A small allowed set is scanned
        exactly, which costs less than an unfiltered search; a large one goes through the
        usual codes or graph with the other rows masked out.
        """
        check_k(k)
        if not len(self.documents):
            raise InvalidInputError("dense index is empty: add documents before searching")
        query = unit_vector(vector, self.dim)
        n = len(self.documents)
        if allowed is not None:
            allowed = check_mask(allowed, n)
            kept = np.flatnonzero(allowed)
            if kept.size == 0:
                return []
            if kept.size < n:
                return self._search_allowed(query, k, allowed, kept)
        rows = self._candidates(query, k, n)
        if rows is None:
            scores = np.asarray(self._vectors @ query)
            order = _top_k(scores, k)
            return [self.documents.hit(int(i), float(scores[i])) for i in order]
        return self._rescore(query, rows, k)

    def _rescore(
        self, query: npt.NDArray[np.float32], rows: npt.NDArray[np.intp], k: int
    ) -> list[Hit]:
        """Exact scores of ``rows`` (ascending, so a memory map is read in order); best ``k``."""
        rows = np.sort(rows)
        exact = np.asarray(self._vectors[rows] @ query)
        order = _top_k(exact, k)
        return [self.documents.hit(int(rows[i]), float(exact[i])) for i in order]

    def _search_allowed(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        allowed: npt.NDArray[np.bool_],
        rows: npt.NDArray[np.intp],
    ) -> list[Hit]:
        n = len(self.documents)
        if self._method() is None and self._ann is None:
            if rows.size * 2 <= n:  # gathering the allowed rows reads less than a full scan
                return self._rescore(query, rows, k)
            scores = np.where(allowed, np.asarray(self._vectors @ query), -np.inf)
            order = _top_k(scores, min(k, rows.size))
            return [self.documents.hit(int(i), float(scores[i])) for i in order]
        if rows.size * 4 <= n:  # few enough to score them all exactly
            return self._rescore(query, rows, k)
        wanted = min(rows.size, max(k * self.rescore_factor, _MIN_CANDIDATES[self._method()], k))
        if self._ann is not None:
            # Ask the graph for enough neighbours that about `wanted` of them are allowed.
            found = self._ann.search(query, min(n, int(wanted * n / rows.size) + k))
            found = found[allowed[found]]
            if found.size < min(k, rows.size):
                return self._rescore(query, rows, k)
            return self._rescore(query, found[:wanted], k)
        return self._rescore(query, self._code_candidates(query, wanted, allowed), k)

    def _candidates(
        self, query: npt.NDArray[np.float32], k: int, n: int
    ) -> npt.NDArray[np.intp] | None:
        """Rows to rescore exactly, or ``None`` for a plain exact scan."""
        method = self._method()
        wanted = min(n, max(k * self.rescore_factor, _MIN_CANDIDATES[method], k))
        if self._ann is not None:
            return self._ann.search(query, wanted)
        if method is None:
            return None
        return self._code_candidates(query, wanted, None)

    def _code_candidates(
        self,
        query: npt.NDArray[np.float32],
        wanted: int,
        allowed: npt.NDArray[np.bool_] | None,
    ) -> npt.NDArray[np.intp]:
        """The ``wanted`` best rows (of the ``allowed`` ones) by the quantized codes."""
        self._ensure_codes()
        assert self._codes is not None
        if self._method() == "int8":
            assert self._scales is not None
            scores = np.asarray(q.int8_scores(self._codes, self._scales, query))
            return _top_k(scores if allowed is None else np.where(allowed, scores, -np.inf), wanted)
        code = q.sign_encode(query[None, :], self._center, self._codes.shape[1])
        return q.hamming_nearest(self._codes, code, wanted, allowed)

    def memory_usage(self) -> dict[str, Any]:
        """Bytes held: ``scan`` is what a search reads in full; ``rescore`` the float vectors.

        ``rescore_mmapped`` is True when the float vectors are memory-mapped from disk (only
        the candidates' pages are read). For an exact index ``scan`` is the float matrix.
        """
        self._ensure_codes()
        floats = int(self._vectors.nbytes)
        codes = int(self._codes.nbytes) if self._codes is not None else 0
        if self._scales is not None:
            codes += int(self._scales.nbytes)
        ann = self._ann.memory_bytes() if self._ann is not None else 0
        coded = self._method() is not None
        scan = codes if coded else (0 if ann else floats)
        return {
            "scan": scan + ann,
            "rescore": floats if (coded or ann) else 0,
            "rescore_mmapped": isinstance(self._vectors, np.memmap),
            "float32": floats,
            "codes": codes,
            "ann": ann,
        }

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> str:
        """Write the index to directory ``path`` (``.npy`` arrays + JSON, no pickle).

        Returns the sha1 of the saved documents (checked again by :meth:`load`).
        """
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self._ensure_codes()
        np.save(directory / "vectors.npy", np.asarray(self._vectors), allow_pickle=False)
        if self._codes is not None and self._method() == "int8":  # sign codes: rebuilt on load
            np.save(directory / "codes.npy", self._codes, allow_pickle=False)
        if self._scales is not None:
            np.save(directory / "scales.npy", self._scales, allow_pickle=False)
        if self._ann is not None:
            self._ann.save(directory / "ann.index")
        documents_sha1 = self.documents.save(directory)
        meta = {
            "format": _FORMAT,
            "dim": self.dim,
            "quantization": self.quantization,
            "rescore_factor": self.rescore_factor,
            "ann": self.ann_name,
            "ann_options": self.ann_options,
            "documents_sha1": documents_sha1,
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
                ann=None,
                ann_options=meta["ann_options"],
            )
            index.documents = (
                documents.copy()
                if documents is not None
                else DocumentStore.load(directory, meta.get("documents_sha1"))
            )
            n = len(index.documents)
            index._vectors = np.load(
                directory / "vectors.npy", mmap_mode="r" if mmap else None, allow_pickle=False
            )
            shape = index._vectors.shape
            if index._vectors.dtype != np.float32 or len(shape) != 2:
                raise InvalidInputError(f"vectors.npy holds {index._vectors.dtype} {shape}")
            check_rows("DenseIndex", "vectors.npy", shape[0], n)
            if n and meta["dim"] is not None and shape[1] != meta["dim"]:
                raise InvalidInputError(f"vectors.npy has dimension {shape[1]}, not {meta['dim']}")
            if (directory / "codes.npy").exists() and index.quantization == "int8":
                index._codes = np.load(directory / "codes.npy", allow_pickle=False)
                check_rows("DenseIndex", "codes.npy", index._codes.shape[0], n)
            if (directory / "scales.npy").exists():
                index._scales = np.load(directory / "scales.npy", allow_pickle=False)
            index._stale_codes = index.quantization is not None and index._codes is None
            if meta["ann"] is not None:
                index.ann_name = meta["ann"]
                index._ann = make_ann(meta["ann"], meta["dim"], meta["ann_options"])
                index._ann.load(directory / "ann.index", view=mmap)
        return index
