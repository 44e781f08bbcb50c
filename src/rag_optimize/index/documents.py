"""The documents an index holds: ids, texts and metadata, and the hit type searches return.

Both indexes keep their documents the same way, so a hit from either one carries the text
and metadata the caller needs without a second lookup. The store is append-only (indexes are
rebuilt rather than edited) and is saved as UTF-8 and JSON blobs (never pickled) that a load
maps without building an object per document: a hit decodes its own row. Documents can be
deleted by id (the rows after them move up, so row numbers stay dense and match the
indexes' arrays).

For filtering, :meth:`DocumentStore.column` turns one metadata field into numpy arrays
(:class:`MetadataColumn`), built once per change of the store, so a filter over 100k documents
is a few vectorised comparisons rather than 100k dictionary lookups.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from rag_optimize.errors import InvalidInputError

Mask = npt.NDArray[np.bool_]
Scalar = str | int | float | bool
_MISSING = object()
T = TypeVar("T")

DOCUMENTS_FILE = "documents.json"
_OLD_DOCUMENTS_FILE = "documents.jsonl"  # format 1, still read
TEXTS_FILE = "texts.npy"
OFFSETS_FILE = "text_offsets.npy"
IDS_FILE = "ids.npy"  # ids as one UTF-8 blob, like the texts
ID_OFFSETS_FILE = "id_offsets.npy"
METADATA_FILE = "metadata.npy"  # the metadata as one JSON array, one element per row
METADATA_OFFSETS_FILE = "metadata_offsets.npy"


def _digest(data: bytes, *arrays: npt.NDArray[Any]) -> str:
    h = hashlib.sha1(data)
    for array in arrays:
        h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


class Hit(NamedTuple):
    """One search result: document id, score (higher is better), text and metadata.

    ``payload`` carries an original framework object (a LangChain ``Document``, a LlamaIndex
    node) when a retrieval branch wraps a framework retriever; indexes leave it ``None``.
    """

    id: str
    score: float
    text: str
    metadata: Mapping[str, Any]
    payload: Any = None


def check_k(k: int) -> int:
    """Return ``k`` if it is a positive int, else raise :class:`InvalidInputError`."""
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    return k


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, refusing a lone string (a common slip that would add characters)."""
    if isinstance(texts, str):
        raise InvalidInputError("texts must be a sequence of strings, not one string")
    return list(texts)


def read_meta(
    directory: Path, filename: str, kind: str, version: int | Sequence[int]
) -> dict[str, Any]:
    """The JSON settings file of a saved index, checked for presence and format version."""
    path = directory / filename
    if not path.exists():
        raise InvalidInputError(f"{directory} holds no {kind} ({filename} missing)")
    versions = [version] if isinstance(version, int) else list(version)
    with loading(kind, directory):
        meta: dict[str, Any] = json.loads(path.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"{filename} is not a JSON object")
    if meta.get("format") not in versions:
        raise InvalidInputError(f"unsupported {kind} format {meta.get('format')!r}")
    return meta


@contextmanager
def loading(kind: str, directory: Path) -> Iterator[None]:
    """Turn any failure to read a saved index into one clear :class:`InvalidInputError`.

    A truncated ``.npy``, broken JSON, a missing file or arrays that disagree with each
    other all mean the same to the caller: this directory does not hold a usable index.
    """
    try:
        yield
    except InvalidInputError as exc:
        if str(exc).startswith("cannot load"):
            raise
        raise InvalidInputError(f"cannot load {kind} from {directory}: {exc}") from exc
    except (OSError, ValueError, KeyError, TypeError, EOFError, IndexError) as exc:
        raise InvalidInputError(
            f"cannot load {kind} from {directory}: corrupt or incomplete ({exc})"
        ) from exc


def check_rows(kind: str, what: str, rows: int, expected: int) -> None:
    """Raise if a loaded array's row count disagrees with the number of documents."""
    if rows != expected:
        raise InvalidInputError(f"{kind}: {what} has {rows} rows for {expected} documents")


def check_mask(allowed: object, n: int) -> Mask:
    """``allowed`` as a boolean row mask of length ``n``, or :class:`InvalidInputError`."""
    mask = np.asarray(allowed)
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise InvalidInputError(
            f"allowed must be a boolean array of shape ({n},), got {mask.dtype} {mask.shape}"
        )
    return mask


class MetadataColumn:
    """One metadata field of every row as numpy arrays, for vectorised filters.

    Numbers (int, float) go to a float64 array (NaN where absent), booleans to an int8 array
    (-1 where absent), strings to int32 codes into a sorted vocabulary (-1 where absent; the
    sorted order makes string ranges, such as ISO dates, a range of codes). A list, tuple or
    set value is spread into :attr:`elements`, whose matches count for the row that owns them
    (a list value matches when any element does). Other values (None, dicts) never match.
    """

    def __init__(self, values: Sequence[Any]) -> None:
        n = len(values)
        self.size = n
        self.numbers = np.full(n, np.nan)
        self.bools = np.full(n, -1, dtype=np.int8)
        self.present = np.zeros(n, dtype=np.bool_)
        str_rows: list[int] = []
        str_values: list[str] = []
        items: list[Any] = []
        owners: list[int] = []
        for row, value in enumerate(values):
            if value is _MISSING:
                continue
            self.present[row] = True
            if isinstance(value, bool):
                self.bools[row] = int(value)
            elif isinstance(value, (int, float)):
                self.numbers[row] = float(value)
            elif isinstance(value, str):
                str_rows.append(row)
                str_values.append(value)
            elif isinstance(value, (list, tuple, set, frozenset)):
                items.extend(value)
                owners.extend([row] * len(value))
        self.vocabulary = sorted(set(str_values))
        code = {v: i for i, v in enumerate(self.vocabulary)}
        self.codes = np.full(n, -1, dtype=np.int32)
        self.codes[str_rows] = [code[v] for v in str_values]
        self.elements = MetadataColumn(items) if items else None
        self.owners = np.asarray(owners, dtype=np.intp)

    def _code(self, value: str) -> int:
        i = int(np.searchsorted(np.asarray(self.vocabulary, dtype=object), value))
        return i if i < len(self.vocabulary) and self.vocabulary[i] == value else -2

    def _with_elements(self, mask: Mask, test: Callable[[MetadataColumn], Mask]) -> Mask:
        if self.elements is not None:
            mask[self.owners[test(self.elements)]] = True
        return mask

    def equal(self, value: Scalar) -> Mask:
        """Rows whose value (or one of whose list elements) equals ``value``."""
        return self.isin([value])

    def isin(self, values: Iterable[Scalar]) -> Mask:
        """Rows whose value (or a list element) equals one of ``values``."""
        values = list(values)
        mask = np.zeros(self.size, dtype=np.bool_)
        bools = [int(v) for v in values if isinstance(v, bool)]
        numbers = [
            float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        codes = [self._code(v) for v in values if isinstance(v, str)]
        if bools:
            mask |= np.isin(self.bools, bools)
        if numbers:
            mask |= np.isin(self.numbers, numbers)
        if codes:
            mask |= np.isin(self.codes, codes)
        return self._with_elements(mask, lambda col: col.isin(values))

    def between(
        self, low: Scalar | None, low_inclusive: bool, high: Scalar | None, high_inclusive: bool
    ) -> Mask:
        """Rows whose number (or string, for string bounds) lies within the bounds."""
        bound = low if low is not None else high
        if isinstance(bound, str):
            codes = np.asarray(self.vocabulary, dtype=object)
            lo = (
                0
                if low is None
                else int(np.searchsorted(codes, low, side="left" if low_inclusive else "right"))
            )
            hi = (
                len(codes)
                if high is None
                else int(np.searchsorted(codes, high, side="right" if high_inclusive else "left"))
            )
            mask = (self.codes >= lo) & (self.codes < hi) & (self.codes >= 0)
        else:
            with np.errstate(invalid="ignore"):
                mask = ~np.isnan(self.numbers)
                if low is not None:
                    mask &= self.numbers >= low if low_inclusive else self.numbers > low
                if high is not None:
                    mask &= self.numbers <= high if high_inclusive else self.numbers < high
        return self._with_elements(
            mask, lambda col: col.between(low, low_inclusive, high, high_inclusive)
        )


class _MappedRows(Sequence[T]):
    """Rows of a memory-mapped byte blob (row ``i`` is ``blob[starts[i]:ends[i]]``), each
    decoded only when asked for: opening a saved index then costs nothing per row."""

    def __init__(
        self,
        blob: npt.NDArray[np.uint8],
        starts: npt.NDArray[np.int64],
        ends: npt.NDArray[np.int64],
    ) -> None:
        self._blob, self._starts, self._ends = blob, starts, ends

    def _decode(self, raw: bytes) -> T:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self._starts.shape[0])

    def _one(self, i: int) -> T:
        return self._decode(bytes(self._blob[int(self._starts[i]) : int(self._ends[i])]))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._one(i) for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(index)
        return self._one(i)

    def __iter__(self) -> Iterator[T]:
        return (self._one(i) for i in range(len(self)))


class MappedTexts(_MappedRows[str]):
    """Strings (document texts, ids) read from a memory-mapped UTF-8 blob, decoded only when
    asked for: a search decodes its hits' rows. Read-only: a store holding one copies the
    rows into a list before it changes."""

    def __init__(self, blob: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> None:
        super().__init__(blob, offsets[:-1], offsets[1:])
        self._offsets = offsets
        self._all: tuple[str, ...] | None = None

    def _decode(self, raw: bytes) -> str:
        return raw.decode("utf-8")

    def all(self) -> list[str]:
        """Every row, from one copy of the blob: what a pass over all rows needs (the id
        map of a loaded store). Row by row through the memory map cost 13 us each (1.3 s
        for 100k ids, paid by the first query of a loaded hybrid index); this is about
        0.2 us a row. Decoded once (the rows are read-only); each call returns a new list,
        so stores sharing these rows (a loaded hybrid's two indexes) never share a list
        that one of them then changes."""
        return list(self._rows())

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows())

    def _rows(self) -> tuple[str, ...]:
        """Every row, decoded the first time from one copy of the blob, then kept."""
        if self._all is None:
            raw = bytes(self._blob)
            offsets = self._offsets.tolist()
            pairs = zip(offsets[:-1], offsets[1:], strict=True)
            self._all = tuple(raw[a:b].decode("utf-8") for a, b in pairs)
        return self._all

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MappedTexts):
            return other is self or (
                np.array_equal(self._offsets, other._offsets)
                and np.array_equal(self._blob, other._blob)
            )
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(
                a == b for a, b in zip(self, other, strict=True)
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class MappedMetadata(_MappedRows[dict[str, Any]]):
    """Document metadata read from a memory-mapped JSON array, parsed only when asked for.

    ``lengths`` are the cumulative byte lengths of the array's elements (joined by ``,``
    inside ``[...]``): a hit parses its own row (a fresh dict each time); :meth:`all` parses
    the whole array in one call (what a filter's first column needs). Read-only.
    """

    def __init__(self, blob: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64]) -> None:
        n = int(lengths.shape[0]) - 1
        starts = lengths[:-1] + np.arange(1, n + 1, dtype=np.int64)  # after "[" and i commas
        super().__init__(blob, starts, starts + np.diff(lengths))

    def _decode(self, raw: bytes) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(raw)
        return value

    def all(self) -> list[dict[str, Any]]:
        """Every row's metadata, parsed in one ``json.loads``."""
        values: list[dict[str, Any]] = json.loads(bytes(self._blob))
        return values


#: Deleting more documents than this at once rebuilds the lists in one pass instead of
#: removing rows one by one (each removal moves the rows after it).
_DELETE_ONE_BY_ONE = 64


class DocumentStore:
    """List of (id, text, metadata) with lookup by id, deletion and metadata columns.

    Each id maps to a stable sequence number; a row's number is its rank among the
    sequence numbers still present (a binary search), so a delete moves the rows after it
    up without renumbering every id: O(k log n) plus moving list items in C.
    """

    def __init__(self) -> None:
        # A loaded store maps its ids, texts and metadata from the saved files (decoded per
        # row when asked for); they become lists at the first change.
        self.ids: list[str] | MappedTexts = []
        self.texts: list[str] | MappedTexts = []
        self.metadatas: list[dict[str, Any]] | MappedMetadata = []
        # id -> sequence number (== row until a delete); built on first use after a load.
        self._index: dict[str, int] | None = {}
        # The sequence number of each row, ascending; None while it is the row itself.
        self._sequence: npt.NDArray[np.int64] | None = None
        self._next = 0  # the next sequence number
        self._columns: dict[str, MetadataColumn] = {}
        self._fields: frozenset[str] | None = None
        self._memo: dict[Any, Any] = {}
        self._memo_lock = threading.Lock()  # concurrent searches may filter at once

    @property
    def _positions(self) -> dict[str, int]:
        """id -> sequence number, built from the ids the first time a loaded store needs it
        (a lookup by id, an add or a delete; a search does not)."""
        index = self._index
        if index is None:
            # mapped ids iterate their one-pass decoded rows (MappedTexts.__iter__)
            index = dict(zip(self.ids, range(len(self.ids)), strict=True))
            if len(index) != len(self.ids):
                raise InvalidInputError("duplicate document ids in the saved documents")
            self._index = index
        return index

    def _editable(self) -> None:
        """Lists instead of mapped rows, before a change."""
        if isinstance(self.ids, MappedTexts):
            self.ids = self.ids.all()
        if isinstance(self.texts, MappedTexts):
            self.texts = self.texts.all()
        if not isinstance(self.metadatas, list):
            self.metadatas = self.metadatas.all()

    def _all_metadata(self) -> Sequence[dict[str, Any]]:
        """Every row's metadata for a pass over all of them (parsed once, then kept)."""
        if isinstance(self.metadatas, MappedMetadata):
            self.metadatas = self.metadatas.all()
        return self.metadatas

    def same_ids(self, other: DocumentStore) -> bool:
        """Whether ``other`` holds the same ids in the same order."""
        return self.ids is other.ids or self.ids == other.ids

    def _changed(self) -> None:
        with self._memo_lock:
            self._columns.clear()
            self._fields = None
            self._memo.clear()

    def fields(self) -> frozenset[str]:
        """Every metadata key at least one document has."""
        if self._fields is None:
            self._fields = frozenset(key for meta in self._all_metadata() for key in meta)
        return self._fields

    def column(self, field: str) -> MetadataColumn:
        """``field`` of every row as a :class:`MetadataColumn` (cached until the next change)."""
        with self._memo_lock:
            col = self._columns.get(field)
            if col is None:
                metas = self._all_metadata()
                col = MetadataColumn([meta.get(field, _MISSING) for meta in metas])
                self._columns[field] = col
            return col

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` cached under ``key`` until the store changes (filter masks)."""
        with self._memo_lock:
            if key in self._memo:
                return self._memo[key]
        value = compute()  # outside the lock: it may build columns (which take the lock)
        with self._memo_lock:
            if len(self._memo) >= 64:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = value
        return value

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._positions

    def position(self, doc_id: str) -> int:
        """Row number of ``doc_id`` (raises :class:`InvalidInputError` naming an unknown id)."""
        try:
            number = self._positions[doc_id]
        except (KeyError, TypeError):
            raise InvalidInputError(f"unknown document id {doc_id!r}") from None
        if self._sequence is None:
            return number
        return int(np.searchsorted(self._sequence, number))

    def hit(self, position: int, score: float) -> Hit:
        """The :class:`Hit` for row ``position`` with ``score``."""
        return Hit(self.ids[position], float(score), self.texts[position], self.metadatas[position])

    def extend(
        self,
        count: int,
        ids: Sequence[str] | None,
        texts: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
    ) -> list[str]:
        """Append ``count`` documents after checking every argument; return their ids.

        Missing ids become ``"0", "1", ...`` continuing the current count; missing texts become
        empty strings. Nothing is appended if any check fails.
        """
        start = len(self.ids)
        new_ids = [str(start + i) for i in range(count)] if ids is None else [str(i) for i in ids]
        new_texts = [""] * count if texts is None else list(texts)
        new_meta = (
            [dict(m or {}) for m in metadatas]
            if metadatas is not None
            else [{} for _ in range(count)]
        )
        for name, seq in (("ids", new_ids), ("texts", new_texts), ("metadatas", new_meta)):
            if len(seq) != count:
                raise InvalidInputError(f"got {count} documents but {len(seq)} {name}")
        for text in new_texts:
            if not isinstance(text, str):
                raise InvalidInputError(f"document texts must be str, got {type(text).__name__}")
        seen = set(self._positions)
        for doc_id in new_ids:
            if doc_id in seen:
                raise InvalidInputError(f"duplicate document id {doc_id!r}")
            seen.add(doc_id)
        self._editable()
        first = self._next
        positions = self._positions
        for offset, doc_id in enumerate(new_ids):
            positions[doc_id] = first + offset
        if self._sequence is not None:
            self._sequence = np.concatenate(
                [self._sequence, np.arange(first, first + count, dtype=np.int64)]
            )
        self._next = first + count
        assert isinstance(self.ids, list) and isinstance(self.texts, list)
        assert isinstance(self.metadatas, list)
        self.ids.extend(new_ids)
        self.texts.extend(new_texts)
        self.metadatas.extend(new_meta)
        self._changed()
        return new_ids

    def check_known(self, ids: Iterable[str]) -> list[str]:
        """``ids`` as strings, all of them present, without repeats (else a clear error)."""
        wanted = [str(i) for i in ids]
        missing = [i for i in wanted if i not in self._positions]
        if missing:
            raise InvalidInputError(f"unknown document id(s) {missing[:5]}")
        if len(set(wanted)) != len(wanted):
            raise InvalidInputError("the same document id is given more than once")
        return wanted

    def delete(self, ids: Iterable[str]) -> npt.NDArray[np.intp]:
        """Remove documents by id; return their former rows (ascending) for the indexes."""
        wanted = self.check_known(ids)
        numbers = np.asarray([self._positions[i] for i in wanted], dtype=np.int64)
        sequence = self._sequence
        rows = np.sort(
            (numbers if sequence is None else np.searchsorted(sequence, numbers)).astype(np.intp)
        )
        if not rows.size:
            return rows
        self._editable()
        assert isinstance(self.ids, list) and isinstance(self.metadatas, list)
        if rows.size > _DELETE_ONE_BY_ONE:
            gone = set(rows.tolist())
            keep = [r for r in range(len(self.ids)) if r not in gone]
            self.ids = [self.ids[r] for r in keep]
            self.texts = [self.texts[r] for r in keep]
            self.metadatas = [self.metadatas[r] for r in keep]
            self._index = {doc_id: row for row, doc_id in enumerate(self.ids)}
            self._sequence, self._next = None, len(self.ids)
        else:
            assert isinstance(self.texts, list)
            for row in rows[::-1].tolist():  # each a C-level move of the items after it
                del self.ids[row], self.texts[row], self.metadatas[row]
            for doc_id in wanted:
                del self._positions[doc_id]
            if sequence is None:
                sequence = np.arange(self._next, dtype=np.int64)
            self._sequence = np.delete(sequence, rows)
        self._changed()
        return rows

    def __iter__(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        return iter(zip(self.ids, self.texts, self.metadatas, strict=True))

    def copy(self) -> DocumentStore:
        """An independent store with the same documents (lists copied, dicts shared)."""
        store = DocumentStore()
        # Mapped rows are read-only: shared as they are (each store lists them on change).
        store.ids = self.ids if isinstance(self.ids, MappedTexts) else list(self.ids)
        store.texts = self.texts if isinstance(self.texts, MappedTexts) else list(self.texts)
        store.metadatas = (
            self.metadatas if isinstance(self.metadatas, MappedMetadata) else list(self.metadatas)
        )
        store._index = None if self._index is None else dict(self._index)
        store._sequence, store._next = self._sequence, self._next  # never changed in place
        return store

    def save(self, directory: Path) -> str:
        """Write ids, texts and metadata as blobs a load maps without parsing; return a sha1.

        Files: ``ids.npy`` / ``id_offsets.npy`` and ``texts.npy`` / ``text_offsets.npy``
        (UTF-8 strings one after another), ``metadata.npy`` / ``metadata_offsets.npy`` (one
        JSON array, each row's element located by the offsets; must be JSON-serialisable)
        and ``documents.json`` naming them; nothing is pickled. Loading maps the files and
        builds no per-document object: a hit decodes its own row. The digest, kept in the
        index's settings, lets :meth:`load` detect damaged files and lets two indexes over
        the same documents share one loaded copy.
        """
        try:
            parts = [json.dumps(m, ensure_ascii=False).encode("utf-8") for m in self.metadatas]
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"document metadata must be JSON-serialisable: {exc}") from exc
        arrays: list[npt.NDArray[Any]] = []
        for strings, blob_file, offsets_file in (
            ([i.encode("utf-8") for i in self.ids], IDS_FILE, ID_OFFSETS_FILE),
            ([t.encode("utf-8") for t in self.texts], TEXTS_FILE, OFFSETS_FILE),
            (parts, METADATA_FILE, METADATA_OFFSETS_FILE),
        ):
            joined = b"[" + b",".join(strings) + b"]" if blob_file == METADATA_FILE else (
                b"".join(strings)
            )
            blob = np.frombuffer(joined, dtype=np.uint8)
            offsets = np.zeros(len(strings) + 1, dtype=np.int64)
            np.cumsum([len(e) for e in strings], out=offsets[1:])
            np.save(directory / blob_file, blob, allow_pickle=False)
            np.save(directory / offsets_file, offsets, allow_pickle=False)
            arrays += [blob, offsets]
        payload = {"ids": IDS_FILE, "metadatas": METADATA_FILE, "texts": TEXTS_FILE}
        data = json.dumps(payload).encode("utf-8")
        (directory / DOCUMENTS_FILE).write_bytes(data)
        return _digest(data, *arrays)

    @classmethod
    def load(cls, directory: Path, sha1: str | None = None) -> DocumentStore:
        """Read documents written by :meth:`save` (or by its older forms: ids and metadata
        inline in ``documents.json``, or the JSON-lines file).

        ``sha1`` (from the index's settings) is checked when given. The files' contents are
        checked as a whole (lengths, offsets, unique ids) rather than one document at a time;
        without a digest, every row is decoded and checked now.
        """
        path = directory / DOCUMENTS_FILE
        if not path.exists():
            return cls._load_lines(directory)
        data = path.read_bytes()
        doc = json.loads(data)
        ids, metas, texts = doc["ids"], doc["metadatas"], doc["texts"]
        arrays: list[npt.NDArray[Any]] = []

        def mapped(
            blob_file: str, offsets_file: str, json_array: bool = False
        ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
            blob = np.load(directory / blob_file, mmap_mode="r", allow_pickle=False)
            offsets = np.load(directory / offsets_file, allow_pickle=False)
            ok = offsets.ndim == 1 and offsets.shape[0] >= 1 and offsets[0] == 0
            size = int(offsets[-1]) if ok else -1
            if ok and json_array:  # "[", "]" and a comma between elements
                size += 2 + max(0, offsets.shape[0] - 2)
            if not ok or size != blob.shape[0] or (np.diff(offsets) < 0).any():
                raise InvalidInputError(f"{directory}: {offsets_file} does not fit {blob_file}")
            return blob, offsets

        if isinstance(ids, str):  # the current form: ids, texts and metadata all mapped
            id_arrays = mapped(IDS_FILE, ID_OFFSETS_FILE)
            text_arrays = mapped(TEXTS_FILE, OFFSETS_FILE)
            meta_arrays = mapped(METADATA_FILE, METADATA_OFFSETS_FILE, json_array=True)
            arrays = [*id_arrays, *text_arrays, *meta_arrays]  # in save()'s digest order
            ids, texts = MappedTexts(*id_arrays), MappedTexts(*text_arrays)
            metas = MappedMetadata(*meta_arrays)
        elif isinstance(texts, str):  # the previous form: texts mapped, the rest inline
            text_arrays = mapped(TEXTS_FILE, OFFSETS_FILE)
            arrays = [*text_arrays]
            texts = MappedTexts(*text_arrays)
        if arrays:
            if sha1 is not None and _digest(data, *arrays) != sha1:
                raise InvalidInputError(f"{directory}: documents do not match their digest")
        elif sha1 is not None and hashlib.sha1(data).hexdigest() != sha1:
            raise InvalidInputError(f"{path} does not match the digest saved with the index")
        if not (isinstance(ids, (list, MappedTexts)) and isinstance(metas, (list, MappedMetadata))):
            raise InvalidInputError(f"{path}: ids and metadatas must be lists")
        if not len(ids) == len(texts) == len(metas):
            raise InvalidInputError(
                f"{path}: {len(ids)} ids, {len(texts)} texts, {len(metas)} metadatas"
            )
        store = cls()
        store.ids, store.texts, store.metadatas = ids, texts, metas
        store._next = len(ids)
        store._index = None  # built from the ids when first needed
        if sha1 is None:  # with a matching digest the files are what save() wrote
            store._editable()
            if not all(isinstance(i, str) for i in store.ids) or not all(
                isinstance(t, str) for t in store.texts
            ):
                raise InvalidInputError(f"{path}: ids and texts must be strings")
            if not all(isinstance(m, dict) for m in store.metadatas):
                raise InvalidInputError(f"{path}: document metadata must be JSON objects")
        if sha1 is None or isinstance(store.ids, list):
            try:
                store._positions  # noqa: B018  (built now: duplicates are refused at load)
            except InvalidInputError:
                raise InvalidInputError(f"{path}: duplicate document ids") from None
        return store

    @classmethod
    def _load_lines(cls, directory: Path) -> DocumentStore:
        store = cls()
        ids, texts, metas = [], [], []
        with open(directory / _OLD_DOCUMENTS_FILE, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                ids.append(row["id"])
                texts.append(row["text"])
                metas.append(row["metadata"])
        store.extend(len(ids), ids, texts, metas)
        return store
