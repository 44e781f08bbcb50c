"""benchmark_pipeline: time a RAG pipeline end to end, with correct percentiles.

``benchmark_pipeline(fn, inputs)`` calls ``fn(x)`` for each input, first ``warmup`` times
unmeasured (model load, JIT, connection set-up, caches of the framework), then ``runs``
measured passes over all inputs, one call at a time. Percentiles are exact and interpolated
(see :mod:`rag_optimize.tracing.percentiles` for why ``sorted(xs)[int(0.99 * n)]`` is wrong for
small samples).

With a ``tracker``, every measured call is a run of that tracker (``with tracker.run():``), so
components and adapter handlers that report into it attribute their stages to the call; the
result's ``stages`` then summarises, per stage, the time each call spent in it. Warm-up calls
are left out of ``stages`` (they still reach the tracker's own aggregate report).

An ``async def`` pipeline is awaited; from inside a running event loop use
``await abenchmark_pipeline(...)``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import IO, Any

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.tracing.percentiles import Summary, Window
from rag_optimize.tracing.tracker import Clock, LatencyReport, LatencyTracker
from rag_optimize.validation import check_int


@dataclass(frozen=True)
class BenchmarkResult:
    """Latencies (seconds) of the measured calls and their summary."""

    latencies: tuple[float, ...]
    summary: Summary
    stages: LatencyReport | None
    warmup: int
    runs: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": "seconds",
            "warmup": self.warmup,
            "runs": self.runs,
            "calls": len(self.latencies),
            "total": self.summary.as_dict(),
            "stages": None if self.stages is None else self.stages.as_dict()["stages"],
        }

    def to_json(self, **json_kwargs: Any) -> str:
        return json.dumps(self.as_dict(), **json_kwargs)

    def print(self, file: IO[str] | None = None) -> None:
        """A rich table: each stage per call, and the whole call as ``total``."""
        stages = dict(self.stages.stages) if self.stages is not None else {}
        stages["total"] = self.summary
        LatencyReport(stages=stages).print(file=file, title="benchmark_pipeline")


def _check(inputs: Sequence[Any], warmup: int, runs: int) -> None:
    if len(inputs) == 0:
        raise InvalidInputError("inputs must not be empty")
    check_int("warmup", warmup, 0)
    check_int("runs", runs, 1)


def _warmup_inputs(inputs: Sequence[Any], warmup: int) -> Iterator[Any]:
    """The first ``warmup`` inputs, cycling when there are fewer inputs than warm-up calls."""
    return itertools.islice(itertools.cycle(inputs), warmup)


def _measured_inputs(inputs: Sequence[Any], runs: int) -> Iterator[Any]:
    """``runs`` passes over all inputs, in order."""
    return itertools.chain.from_iterable(itertools.repeat(inputs, runs))


class _Collector:
    """Collects per-call latencies and, with a tracker, per-call stage sums."""

    def __init__(self, tracker: LatencyTracker | None, clock: Clock, window: int) -> None:
        self.tracker = tracker
        self.clock = clock
        self.latencies: list[float] = []
        self.stage_windows: dict[str, Window] = {}
        self.window = window

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Time the body as one call, inside a run of the tracker when there is one."""
        run: AbstractContextManager[str | None] = (
            self.tracker.run() if self.tracker is not None else nullcontext(None)
        )
        with run as run_id:
            start = self.clock()
            yield
        self.add(self.clock() - start, run_id)

    def add(self, seconds: float, run_id: str | None) -> None:
        self.latencies.append(seconds)
        if self.tracker is None or run_id is None:
            return
        record = self.tracker.run_report(run_id)
        if record is None:
            return
        for stage, value in record.stages.items():
            self.stage_windows.setdefault(stage, Window(self.window)).add(value)

    def result(self, warmup: int, runs: int) -> BenchmarkResult:
        total = Window(len(self.latencies))
        for value in self.latencies:
            total.add(value)
        stages = None
        if self.tracker is not None:
            from rag_optimize.tracing.stages import stage_sort_key

            names = sorted(self.stage_windows, key=stage_sort_key)
            stages = LatencyReport({n: self.stage_windows[n].summary() for n in names})
        return BenchmarkResult(tuple(self.latencies), total.summary(), stages, warmup, runs)


def benchmark_pipeline(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    warmup: int = 1,
    runs: int = 3,
    tracker: LatencyTracker | None = None,
    clock: Clock = time.perf_counter,
) -> BenchmarkResult:
    """Benchmark ``fn`` over ``inputs``: ``warmup`` unmeasured calls, ``runs`` measured passes."""
    _check(inputs, warmup, runs)
    if inspect.iscoroutinefunction(fn):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(abenchmark_pipeline(fn, inputs, warmup, runs, tracker, clock))
        raise ConfigurationError(
            "benchmark_pipeline got an async function inside a running event loop; "
            "use `await abenchmark_pipeline(...)`"
        )
    for x in _warmup_inputs(inputs, warmup):
        fn(x)
    collector = _Collector(tracker, clock, len(inputs) * runs)
    for x in _measured_inputs(inputs, runs):
        with collector.measure():
            fn(x)
    return collector.result(warmup, runs)


async def abenchmark_pipeline(
    fn: Callable[[Any], Awaitable[Any] | Any],
    inputs: Sequence[Any],
    warmup: int = 1,
    runs: int = 3,
    tracker: LatencyTracker | None = None,
    clock: Clock = time.perf_counter,
) -> BenchmarkResult:
    """Async twin of :func:`benchmark_pipeline`; ``fn`` may be sync or async."""
    _check(inputs, warmup, runs)

    async def call(x: Any) -> None:
        result = fn(x)
        if inspect.isawaitable(result):
            await result

    for x in _warmup_inputs(inputs, warmup):
        await call(x)
    collector = _Collector(tracker, clock, len(inputs) * runs)
    for x in _measured_inputs(inputs, runs):
        with collector.measure():
            await call(x)
    return collector.result(warmup, runs)
