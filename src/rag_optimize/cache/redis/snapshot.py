"""A namespace's index fields read in packed pages, kept as columns until the mirror swaps them in.

A snapshot load used to read seven hash fields per entry (pipelined ``HMGET``) and decode each
entry into its own objects: at 100k entries that was 20-30 s of reply parsing in Python, the
time a new replica's semantic lookups had to wait. The ``snapshot_page`` script
(:mod:`~rag_optimize.cache.redis.scripts`) now reads a page of about a thousand entries on the
server and answers with a few packed values (the ids concatenated, the vector bytes, the
distinct scopes of the page once, the expiries and thresholds as one short text). This
module copies a page's vector bytes straight into one matrix, checks the page's vectors at
once (finite, unit length) and keeps, per entry, only its id, its (scope, partition) slot,
expiry and threshold.

Everything is still untrusted input: an entry that fails a check (the script's: format,
namespace, vector size, numbers' characters; this module's: finite unit vector, UTF-8 scope,
finite numbers, hex id) is reported to ``on_corrupt`` and left out, never half-kept.
"""

from __future__ import annotations

import mmap
import re
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from rag_optimize.cache.redis.codec import CorruptEntry, optional_float

__all__ = ["Snapshot"]

_ID_CHARS = 32
_HEX_IDS = re.compile(rb"[0-9a-f]*")
_UNIT_TOLERANCE = 1e-3  # as codec.decode_vector: |norm - 1| above this is not a cache vector

OnCorrupt = Callable[[str, Exception], None]


class Snapshot:
    """The entries of one snapshot, column by column (row ``i`` is ``ids[i]``).

    ``rows`` sizes the vector matrix once (the entry count read with the snapshot's head, plus
    slack); entries added while the scan runs can exceed it, and the matrix then grows once by
    half. The matrix is an anonymous ``mmap`` rather than a ``malloc`` block, so it is returned
    to the OS in one piece when the mirror has copied it (a big block in the loader thread's
    malloc arena would stay as RSS).
    """

    def __init__(self, rows: int, width: int | None) -> None:
        self.width = width
        self.ids: list[str] = []
        self.slots: list[tuple[str, str]] = []  # distinct (scope, partition) pairs
        self.slot_of_row: list[int] = []
        self.expires: list[float | None] = []
        self.thresholds: list[float | None] = []
        self._row_of: dict[str, int] = {}  # a ZSCAN may return a member twice
        self._slot_index: dict[tuple[str, str], int] = {}
        self._pending_rows: list[int] = []  # the rows of the page being decoded
        self._capacity = max(1, rows)
        self._pages: mmap.mmap | None = None
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def matrix(self) -> np.ndarray:
        """The vectors, one row per id (float32, unit length)."""
        if self._matrix is None:
            return np.zeros((0, self.width or 0), dtype=np.float32)
        return self._matrix[: len(self.ids)]

    def release(self) -> None:
        """Drop the columns and the matrix (the mirror has copied what it keeps)."""
        self.ids, self.slot_of_row, self.expires, self.thresholds = [], [], [], []
        self._row_of, self._matrix = {}, None
        self._pages = None  # unmapped once no view of it is left

    # ------------------------------------------------------------------- pages
    def add_page(self, reply: list[Any], on_corrupt: OnCorrupt) -> Any:
        """Decode one ``snapshot_page`` reply into the columns; returns the next cursor."""
        cursor, width_raw, id_blob, vec_parts, keys, rows_blob, bad = reply
        for i in range(0, len(bad) - 1, 2):
            on_corrupt(_text(bad[i]), CorruptEntry(_text(bad[i + 1])))
        if not id_blob:
            return cursor
        width = int(width_raw)
        if self.width is None:
            self.width = width
        n = len(id_blob) // _ID_CHARS
        rows = rows_blob.split(b";")
        if width != self.width or len(id_blob) != n * _ID_CHARS or len(rows) != n:
            raise CorruptEntry("a snapshot page does not add up")  # never half-applied: reload
        if len(vec_parts) != n:
            raise CorruptEntry("a snapshot page does not add up")
        start = len(self.ids)  # the page's vectors land in the rows from here
        vectors = self._land(vec_parts, width)
        ids = id_blob.decode("ascii", "replace")
        good = _vector_check(vectors)
        slots = self._page_slots(keys)
        hex_ok = _HEX_IDS.fullmatch(id_blob) is not None
        if hex_ok and self._add_plain_page(ids, n, rows_blob, slots, good, start):
            return cursor
        keep: list[int] = []
        for i, row in enumerate(rows):
            hid = ids[i * _ID_CHARS : (i + 1) * _ID_CHARS]
            try:
                if not hex_ok and not _HEX_IDS.fullmatch(hid.encode()):
                    raise CorruptEntry("not an entry id")
                if not good[i]:
                    raise CorruptEntry("vector contains NaN or inf, or is not unit length")
                slot_raw, ex_raw, thr_raw = row.split(b" ")
                slot = slots[int(slot_raw)]
                if slot is None:
                    raise CorruptEntry("field 'scope' or 'pt' is not UTF-8")
                expires, threshold = _number(ex_raw, "ex"), _number(thr_raw, "thr")
            except CorruptEntry as exc:
                on_corrupt(hid, exc)
                continue
            except (ValueError, IndexError) as exc:
                on_corrupt(hid, CorruptEntry(f"snapshot row {row!r} does not parse: {exc}"))
                continue
            self._keep(hid, slot, expires, threshold)
            keep.append(i)
        if keep:
            self._store_rows(vectors, keep, start)
        return cursor

    def _add_plain_page(
        self, ids: str, n: int, rows_blob: bytes, slots: list[int | None], good: np.ndarray,
        start: int,
    ) -> bool:
        """The usual page in a few bulk steps instead of a loop per entry: every vector good,
        no entry with an expiry or its own threshold, every id new to this scan (then the
        landed rows are already in place). Returns False, changing nothing, for any other
        page (the per-entry path then decides each row)."""
        if rows_blob.count(b" - -") != n or not bool(good.all()):
            return False  # (each row is "<slot> - -" exactly when this count is n)
        try:
            numbers = [int(row[:-4]) for row in rows_blob.split(b";")]
            page_slots = [slots[number] for number in numbers]
        except (ValueError, IndexError):
            return False
        if None in page_slots or min(numbers) < 0:
            return False
        hids = [ids[i * _ID_CHARS : (i + 1) * _ID_CHARS] for i in range(n)]
        if len(set(hids)) != n or not self._row_of.keys().isdisjoint(hids):
            return False
        self._row_of.update(zip(hids, range(start, start + n), strict=True))
        self.ids.extend(hids)
        self.slot_of_row.extend(page_slots)  # type: ignore[arg-type]  # (no None: checked)
        self.expires.extend([None] * n)
        self.thresholds.extend([None] * n)
        return True

    def _page_slots(self, keys: list[bytes]) -> list[int | None]:
        """Slot numbers of the page's distinct (scope, partition) pairs (``None``: not
        UTF-8)."""
        out: list[int | None] = []
        for i in range(0, len(keys) - 1, 2):
            try:
                pair = (keys[i].decode("utf-8"), keys[i + 1].decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
                continue
            slot = self._slot_index.get(pair)
            if slot is None:
                slot = self._slot_index[pair] = len(self.slots)
                self.slots.append(pair)
            out.append(slot)
        return out

    def _keep(self, hid: str, slot: int, expires: float | None, threshold: float | None) -> None:
        row = self._row_of.get(hid)
        if row is not None:  # seen earlier in this scan: the later read wins, in its row
            self._pending_rows.append(row)
            self.slot_of_row[row], self.expires[row], self.thresholds[row] = (
                slot, expires, threshold
            )
            return
        row = self._row_of[hid] = len(self.ids)
        self._pending_rows.append(row)
        self.ids.append(hid)
        self.slot_of_row.append(slot)
        self.expires.append(expires)
        self.thresholds.append(threshold)

    def _land(self, parts: list[bytes], width: int) -> np.ndarray:
        """Copy a page's vector bytes straight into the matrix rows after the kept ones (a
        view of them is returned): no joined copy of the page, no malloc'd temporary (freed
        megabyte blocks raise glibc's mmap threshold, and later allocations then stay in the
        heap as RSS: measured +5.7 MB at 10k float32 with a joined page buffer)."""
        start, size = len(self.ids), width * 4
        self._reserve(start + len(parts))
        assert self._matrix is not None
        landing = self._matrix[start : start + len(parts)]
        raw = landing.data.cast("B")  # the rows are C-contiguous: a flat byte view
        for i, part in enumerate(parts):
            if len(part) != size:
                raise CorruptEntry("a snapshot page does not add up")
            raw[i * size : (i + 1) * size] = part
        if sys.byteorder == "big":  # the stored bytes are little-endian float32
            landing.byteswap(inplace=True)
        return landing

    def _store_rows(self, vectors: np.ndarray, keep: list[int], start: int) -> None:
        """Put the kept rows of the page (``vectors``, landed by :meth:`_land`) in their rows:
        usually already there; else (bad rows dropped, an id read twice) moved or copied."""
        rows, self._pending_rows = self._pending_rows, []
        assert self._matrix is not None
        if len(keep) == len(vectors) and rows == list(range(start, start + len(vectors))):
            return  # the usual case: every row new, good and in order, landed where it belongs
        chosen = vectors[keep]  # a copy: the targets may overlap the landing rows
        self._matrix[np.asarray(rows, dtype=np.intp)] = chosen

    def _reserve(self, rows: int) -> None:
        width = self.width or 1
        if self._matrix is not None and rows <= self._matrix.shape[0]:
            return
        capacity = max(rows, self._capacity if self._matrix is None else rows + rows // 2)
        pages = mmap.mmap(-1, capacity * width * 4)
        matrix = np.frombuffer(pages, dtype=np.float32).reshape(capacity, width)
        if self._matrix is not None:
            used = min(len(self._matrix), rows)
            matrix[:used] = self._matrix[:used]
        self._pages, self._matrix = pages, matrix


def _vector_check(vectors: np.ndarray) -> np.ndarray:
    """Per row: finite and unit length (one pass over the page, no per-row work)."""
    squares = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    return np.abs(np.sqrt(squares) - 1.0) <= _UNIT_TOLERANCE  # False for NaN / inf


def _number(raw: bytes, field: str) -> float | None:
    return optional_float(None if raw == b"-" else raw, field)  # "-": the script's "absent"


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
