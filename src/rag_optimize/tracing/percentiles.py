"""Exact percentiles over a bounded window of samples.

Why not the usual one-liner
---------------------------
A common way to get p99 is ``sorted(xs)[int(len(xs) * 0.99)]``. For small samples that is not
p99 at all: with 10 runs the index is ``int(9.9) = 9`` (the maximum), with 50 runs ``49`` (the
maximum again), and with 100 runs ``99`` (still the maximum). So every benchmark of fewer than
~100 runs reports its single worst run as "p99", and p95 of 20 runs is also the maximum. It is
also biased one position high for p50 of an even count (``sorted([1, 2, 3, 4])[2] == 3``).

Here a percentile is the linear interpolation between the two closest ranks, the definition
numpy uses by default (``numpy.percentile(xs, q, method="linear")``): for ``n`` sorted values
and fraction ``q`` the position is ``h = (n - 1) * q`` and the result is
``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. p0 is the minimum, p100 the
maximum, and p50 of ``[1, 2, 3, 4]`` is 2.5.

Memory stays bounded: :class:`Window` keeps only the last ``size`` samples (a ring buffer);
the lifetime count is kept separately so a report can say how many samples it is based on.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rag_optimize.errors import ConfigurationError, InvalidInputError

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (``0 <= q <= 1``) of already sorted values, linear interpolation.

    Raises :class:`InvalidInputError` for an empty sequence or ``q`` outside ``[0, 1]``.
    """
    if not 0.0 <= q <= 1.0 or math.isnan(q):
        raise InvalidInputError(f"quantile must be within [0, 1], got {q!r}")
    n = len(sorted_values)
    if n == 0:
        raise InvalidInputError("cannot take a percentile of no samples")
    h = (n - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    frac = h - lo
    low = float(sorted_values[lo])
    return low + frac * (float(sorted_values[hi]) - low)


def percentiles(
    values: Iterable[float], quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> list[float]:
    """Several quantiles of unsorted ``values`` with one sort."""
    ordered = sorted(values)
    return [percentile(ordered, q) for q in quantiles]


@dataclass(frozen=True)
class Summary:
    """Statistics of one stage, in seconds.

    ``count`` is every sample ever recorded; ``samples`` is how many of them (the most recent)
    are in the window that ``mean``, the percentiles and ``max`` are computed from.
    """

    count: int
    samples: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "samples": self.samples,
            "mean": self.mean,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
        }


class Window:
    """The last ``size`` samples of one series plus its lifetime count (not thread-safe)."""

    __slots__ = ("_samples", "count")

    def __init__(self, size: int = 10_000) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigurationError(f"window size must be a positive int, got {size!r}")
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, value: float) -> None:
        self._samples.append(value)
        self.count += 1

    def __len__(self) -> int:
        return len(self._samples)

    def values(self) -> list[float]:
        return list(self._samples)

    def summary(self) -> Summary:
        """Summary of the window; raises :class:`InvalidInputError` when it is empty."""
        ordered = sorted(self._samples)
        if not ordered:
            raise InvalidInputError("no samples recorded")
        p50, p95, p99 = (percentile(ordered, q) for q in DEFAULT_QUANTILES)
        return Summary(
            count=self.count,
            samples=len(ordered),
            mean=math.fsum(ordered) / len(ordered),
            p50=p50,
            p95=p95,
            p99=p99,
            max=ordered[-1],
        )
