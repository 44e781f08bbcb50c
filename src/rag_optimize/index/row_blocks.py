"""Row storage in fixed-size blocks, so a growing table never copies what it already holds.

A single growing matrix has to be copied into a larger one to grow: with a 25% step every
row is copied about four times, and on the shared test machine each fresh page of the new
matrix costs a page fault; measured, growth took 7.3 of the 12.4 s of a 400k-row bulk fill.
Here rows live in blocks of ``block_rows`` (a power of two, about 64 MB); only the last
block grows (by copy, at most one block's worth), earlier ones stay where they are.

Blocks may be read-only views (e.g. of a memory-mapped saved matrix): a write into one
copies that block alone into RAM first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from rag_optimize.errors import ConfigurationError

__all__ = ["RowBlocks"]

_BLOCK_BYTES = 64 << 20
_MIN_ROWS = 64


class RowBlocks:
    """Rows ``0..capacity-1`` of ``dim`` values of ``dtype``, addressed by row number."""

    def __init__(self, dim: int, dtype: npt.DTypeLike, *, block_rows: int | None = None) -> None:
        self.dim = dim
        self.dtype = np.dtype(dtype)
        if block_rows is None:
            fit = max(1, _BLOCK_BYTES // max(1, dim * self.dtype.itemsize))
            block_rows = max(1024, 1 << (fit.bit_length() - 1))
        if block_rows & (block_rows - 1):
            raise ConfigurationError(f"block_rows must be a power of two, got {block_rows}")
        self.block_rows = block_rows
        self._shift = block_rows.bit_length() - 1
        self._mask = block_rows - 1
        self.blocks: list[npt.NDArray[Any]] = []
        self.capacity = 0  # rows held by the blocks (kept up to date: read on every write)

    @classmethod
    def adopt(cls, matrix: npt.NDArray[Any]) -> RowBlocks:
        """Blocks that are views of ``matrix`` (no copy; read-only if it is)."""
        store = cls(int(matrix.shape[1]), matrix.dtype)
        step = store.block_rows
        store.blocks = [matrix[start : start + step] for start in range(0, matrix.shape[0], step)]
        store.capacity = int(matrix.shape[0])
        return store

    @property
    def nbytes(self) -> int:
        return sum(int(b.nbytes) for b in self.blocks)

    @property
    def mapped(self) -> bool:
        """Whether any block is memory-mapped from a file."""
        return any(isinstance(b, np.memmap) for b in self.blocks)

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` rows: fills the last block up (at least doubling it, so
        one-at-a-time growth copies each block about once: with a quarter step it was four
        times, measured 33 us of a one-at-a-time ``set`` at 100k; the unused tail of a
        block is zero pages the OS maps only when written), then appends blocks."""
        if rows <= self.capacity:
            return
        if self.blocks and self.blocks[-1].shape[0] < self.block_rows:
            last = self.blocks[-1]
            in_block = rows - (len(self.blocks) - 1) * self.block_rows
            size = min(self.block_rows, max(in_block, 2 * last.shape[0]))
            grown = np.zeros((size, self.dim), dtype=self.dtype)
            grown[: last.shape[0]] = last
            self.blocks[-1] = grown
            self.capacity += size - last.shape[0]
        while self.capacity < rows:
            # A new block starts at what is needed (a bulk fill), or small (one at a time).
            size = min(self.block_rows, max(rows - self.capacity, _MIN_ROWS))
            self.blocks.append(np.zeros((size, self.dim), dtype=self.dtype))
            self.capacity += size

    def write(self, rows: npt.NDArray[np.intp], values: npt.NDArray[Any]) -> None:
        """Store ``values[i]`` at ``rows[i]`` (rows must be below :attr:`capacity`)."""
        if rows.shape[0] == 1:
            self.set(int(rows[0]), values[0])
            return
        first, last = int(rows[0]), int(rows[-1])
        if last - first == rows.shape[0] - 1 and bool((np.diff(rows) == 1).all()):
            for start, view in self.views(last + 1, first, writable=True):  # a run: slices
                view[:] = values[start - first : start - first + view.shape[0]]
            return
        which = rows >> self._shift
        if int(which[0]) == int(which[-1]) and (which == which[0]).all():
            self._writable(int(which[0]))[rows & self._mask] = values
            return
        order = np.argsort(which, kind="stable")
        which, rows, values = which[order], rows[order], values[order]
        cuts = np.flatnonzero(np.diff(which)) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), rows.shape[0]], strict=True):
            self._writable(int(which[lo]))[rows[lo:hi] & self._mask] = values[lo:hi]

    def set(self, row: int, value: npt.NDArray[Any]) -> None:
        """Store one row."""
        block = self.blocks[row >> self._shift]
        if not block.flags.writeable:
            block = self._writable(row >> self._shift)
        block[row & self._mask] = value

    def gather(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
        """A copy of ``rows`` (ascending rows read each block once, in order)."""
        if len(self.blocks) == 1 or rows.shape[0] == 0:
            return np.asarray(self.blocks[0][rows] if self.blocks else np.zeros((0, self.dim)))
        out = np.empty((rows.shape[0], self.dim), dtype=self.dtype)
        pieces = self.pieces(rows)
        if pieces is not None:
            for lo, hi, block, local in pieces:
                out[lo:hi] = block[local]
            return out
        which = rows >> self._shift
        for i, (b, offset) in enumerate(zip(which.tolist(), (rows & self._mask).tolist(),
                                            strict=True)):
            out[i] = self.blocks[b][offset]
        return out

    def pieces(
        self, rows: npt.NDArray[np.intp]
    ) -> list[tuple[int, int, npt.NDArray[Any], npt.NDArray[np.intp]]] | None:
        """``rows`` split by block: ``(lo, hi, block, rows[lo:hi] within block)``, so a
        kernel can read the rows where they lie; ``None`` unless the rows' blocks ascend
        (ascending rows always qualify)."""
        if not self.blocks or rows.shape[0] == 0:
            return []
        if len(self.blocks) == 1:
            return [(0, rows.shape[0], self.blocks[0], rows)]
        which = rows >> self._shift
        if int(which[0]) == int(which[-1]) and (which == which[0]).all():
            return [(0, rows.shape[0], self.blocks[int(which[0])], rows & self._mask)]
        if not bool((which[1:] >= which[:-1]).all()):
            return None
        cuts = np.flatnonzero(np.diff(which)) + 1
        bounds = zip([0, *cuts.tolist()], [*cuts.tolist(), rows.shape[0]], strict=True)
        return [
            (lo, hi, self.blocks[int(which[lo])], rows[lo:hi] & self._mask) for lo, hi in bounds
        ]

    def views(
        self, stop: int, start: int = 0, *, writable: bool = False
    ) -> Iterator[tuple[int, npt.NDArray[Any]]]:
        """``(first row, view)`` pieces covering rows ``[start, stop)``, block by block."""
        row = start
        while row < stop:
            b, offset = row >> self._shift, row & self._mask
            take = min(stop - row, self.block_rows - offset)
            block = self._writable(b) if writable else self.blocks[b]
            yield row, block[offset : offset + take]
            row += take

    def _writable(self, b: int) -> npt.NDArray[Any]:
        block = self.blocks[b]
        if not block.flags.writeable:  # a view of a read-only map: copy this block in
            block = self.blocks[b] = np.array(block)
        return block
