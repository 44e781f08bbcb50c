"""One measured pass of a question stream through a pipeline, per-stage and end to end.

Used by ``rag-optimize bench`` and ``rag-optimize demo``: every question is one run of a
:class:`~rag_optimize.tracing.LatencyTracker` (``with tracker.run():``), so framework handlers
and our components that report into that tracker attribute their stages to it; a pass keeps,
per stage, the time each call spent in it (warm-up calls excluded), plus the end-to-end
latency of each call as the ``total`` row. ``concurrency`` calls run at once (asyncio tasks;
each task has its own current run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.tracing import stages as stage_names
from rag_optimize.tracing.percentiles import Summary, Window
from rag_optimize.tracing.tracker import Clock, LatencyReport, LatencyTracker

Call = Callable[[str], Awaitable[Any]]
Progress = Callable[[int], None]


class PipelineError(RuntimeError):
    """The measured pipeline raised on a question (the cause is chained)."""

    def __init__(self, question: str, cause: BaseException) -> None:
        super().__init__(
            f"the pipeline raised {type(cause).__name__} on question {question!r}: {cause}"
        )
        self.question = question


@dataclass(frozen=True)
class CallRecord:
    """One measured call: its question, end-to-end seconds and tracker run id."""

    question: str
    seconds: float
    run_id: str


@dataclass
class PassResult:
    """The outcome of one measured pass (seconds)."""

    label: str
    stages: LatencyReport
    calls: int
    wall_seconds: float
    concurrency: int
    extra: dict[str, Any] = field(default_factory=dict)
    per_call: list[CallRecord] = field(default_factory=list)
    """Every measured call, in the order of the questions (run after run)."""

    @property
    def total(self) -> Summary:
        return self.stages[stage_names.TOTAL]

    @property
    def throughput(self) -> float:
        """Calls per second of wall time."""
        return self.calls / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": "seconds",
            "calls": self.calls,
            "concurrency": self.concurrency,
            "wall_seconds": self.wall_seconds,
            "throughput_per_s": self.throughput,
            "stages": self.stages.as_dict()["stages"],
            **self.extra,
        }


def check_pass_options(concurrency: int, runs: int, warmup: int) -> None:
    """Raise :class:`ConfigurationError` for a non-positive concurrency/runs or warmup < 0."""
    for name, value, low in (("concurrency", concurrency, 1), ("runs", runs, 1),
                             ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigurationError(f"{name} must be an int >= {low}, got {value!r}")


async def measure_pass(
    label: str,
    call: Call,
    questions: Sequence[str],
    tracker: LatencyTracker,
    *,
    concurrency: int = 1,
    runs: int = 1,
    warmup: int = 0,
    progress: Progress | None = None,
    clock: Clock = time.perf_counter,
) -> PassResult:
    """Run ``warmup`` unmeasured calls, then ``runs`` passes over ``questions``.

    Raises :class:`PipelineError` on the first call that raises (the pass stops).
    """
    if not questions:
        raise InvalidInputError("there are no questions to run")
    check_pass_options(concurrency, runs, warmup)
    for i in range(warmup):
        await _guarded(call, questions[i % len(questions)])
    windows: dict[str, Window] = {}
    totals = Window(len(questions) * runs)
    per_call: dict[int, CallRecord] = {}
    limit = asyncio.Semaphore(concurrency)

    async def one(index: int, question: str) -> None:
        async with limit:
            with tracker.run() as run_id:
                start = clock()
                await _guarded(call, question)
                seconds = clock() - start
            totals.add(seconds)
            per_call[index] = CallRecord(question, seconds, run_id)
            record = tracker.run_report(run_id)
            for stage, value in (record.stages if record is not None else {}).items():
                windows.setdefault(stage, Window(len(questions) * runs)).add(value)
            if progress is not None:
                progress(1)

    wall_start = clock()
    for r in range(runs):
        base = r * len(questions)
        if concurrency == 1:
            for i, question in enumerate(questions):
                await one(base + i, question)
        else:
            tasks = [asyncio.create_task(one(base + i, q)) for i, q in enumerate(questions)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
    wall = clock() - wall_start
    names = sorted(windows, key=stage_names.stage_sort_key)
    summaries = {name: windows[name].summary() for name in names}
    summaries[stage_names.TOTAL] = totals.summary()
    return PassResult(
        label, LatencyReport(summaries), totals.count, wall, concurrency,
        per_call=[per_call[i] for i in sorted(per_call)],
    )


async def _guarded(call: Call, question: str) -> None:
    try:
        await call(question)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise PipelineError(question, exc) from exc
