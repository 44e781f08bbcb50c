"""Percentile maths against hand-computed values and numpy's default method."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.tracing.percentiles import Window, percentile, percentiles


def test_hand_computed_values() -> None:
    xs = [1.0, 2.0, 3.0, 4.0]
    # h = (n-1) q: p50 -> 1.5 -> 2 + 0.5*(3-2)
    assert percentile(xs, 0.5) == pytest.approx(2.5)
    # p95 -> h = 2.85 -> 3 + 0.85*(4-3)
    assert percentile(xs, 0.95) == pytest.approx(3.85)
    # p99 -> h = 2.97 -> 3.97
    assert percentile(xs, 0.99) == pytest.approx(3.97)
    assert percentile(xs, 0.0) == 1.0
    assert percentile(xs, 1.0) == 4.0


def test_ten_samples_p99_is_not_the_maximum() -> None:
    xs = [float(i) for i in range(1, 11)]  # 1..10
    # The index-based p99 (sorted(xs)[int(0.99 * 10)]) is xs[9] == 10, the maximum.
    assert sorted(xs)[int(0.99 * len(xs))] == 10.0
    # Interpolated: h = 9 * 0.99 = 8.91 -> 9 + 0.91 * (10 - 9) = 9.91
    assert percentile(xs, 0.99) == pytest.approx(9.91)
    assert percentile(xs, 0.95) == pytest.approx(9.55)
    assert percentile(xs, 0.5) == pytest.approx(5.5)


def test_single_sample() -> None:
    assert percentiles([0.3], (0.5, 0.99)) == [0.3, 0.3]


@given(
    st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=200),
    st.floats(0, 1),
)
def test_matches_numpy_linear(xs: list[float], q: float) -> None:
    expected = float(np.percentile(np.array(xs), q * 100))
    assert percentile(sorted(xs), q) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="no samples"):
        percentile([], 0.5)
    with pytest.raises(InvalidInputError, match="quantile"):
        percentile([1.0], 1.5)
    with pytest.raises(InvalidInputError, match="quantile"):
        percentile([1.0], float("nan"))
    with pytest.raises(ConfigurationError, match="window size"):
        Window(0)


def test_window_is_bounded_and_counts_lifetime() -> None:
    w = Window(size=5)
    for i in range(1, 101):
        w.add(float(i))
    assert len(w) == 5
    s = w.summary()
    assert s.count == 100
    assert s.samples == 5
    assert s.max == 100.0
    assert s.mean == pytest.approx(98.0)  # mean of 96..100
    assert s.p50 == pytest.approx(98.0)
    assert s.p99 == pytest.approx(96 + 4 * 0.99)
