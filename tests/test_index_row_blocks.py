"""RowBlocks: rows written one at a time, in runs and scattered, across block boundaries,
read back the same; growth keeps what was written; a read-only adopted block is copied in
on the first write to it alone."""

from __future__ import annotations

import numpy as np
import pytest

from rag_optimize.errors import ConfigurationError
from rag_optimize.index.row_blocks import RowBlocks


def test_writes_of_every_shape_read_back_across_blocks() -> None:
    rng = np.random.default_rng(0)
    want = rng.standard_normal((5000, 8)).astype(np.float32)
    store = RowBlocks(8, np.float32, block_rows=1024)
    for row in range(100):  # one at a time: the first block grows by copying
        store.reserve(row + 1)
        store.set(row, want[row])
    store.reserve(3000)
    store.write(np.arange(100, 3000), want[100:3000])  # a run crossing two boundaries
    scattered = rng.permutation(np.arange(3000, 5000))
    store.reserve(5000)
    store.write(scattered, want[scattered])
    assert store.capacity >= 5000 and len(store.blocks) == 5
    assert all(b.shape[0] == 1024 for b in store.blocks[:-1])
    rows = rng.integers(0, 5000, 300)
    np.testing.assert_array_equal(store.gather(rows), want[rows])  # unsorted
    np.testing.assert_array_equal(store.gather(np.sort(rows)), want[np.sort(rows)])
    pieces = list(store.views(4500, 1000))
    assert [start for start, _ in pieces] == [1000, 1024, 2048, 3072, 4096]
    np.testing.assert_array_equal(np.concatenate([v for _, v in pieces]), want[1000:4500])


def test_adopted_read_only_blocks_are_copied_in_one_at_a_time() -> None:
    matrix = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
    matrix.flags.writeable = False
    store = RowBlocks.adopt(matrix)
    small = RowBlocks(4, np.float32, block_rows=1024)
    small.blocks = [matrix[i : i + 1024] for i in range(0, 3000, 1024)]
    small.set(5, np.ones(4, np.float32))
    assert small.blocks[0].flags.writeable and not small.blocks[1].flags.writeable
    assert small.gather(np.array([5]))[0].tolist() == [1, 1, 1, 1]
    assert matrix[5].tolist() == [20, 21, 22, 23]  # the source is untouched
    small.reserve(3100)  # the partial last block grows into RAM, the middle one stays mapped
    small.write(np.arange(3000, 3100), np.zeros((100, 4), np.float32))
    assert not small.blocks[1].flags.writeable
    np.testing.assert_array_equal(small.gather(np.arange(2040, 2050)), matrix[2040:2050])
    np.testing.assert_array_equal(store.gather(np.arange(10)), matrix[:10])


def test_block_rows_must_be_a_power_of_two() -> None:
    with pytest.raises(ConfigurationError, match="power of two, got 1000"):
        RowBlocks(4, np.float32, block_rows=1000)
