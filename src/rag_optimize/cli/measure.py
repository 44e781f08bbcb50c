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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_optimize.errors import InvalidInputError
from rag_optimize.tracing import stages as stage_names
from rag_optimize.tracing.percentiles import Summary, Window
from rag_optimize.tracing.tracker import Clock, LatencyReport, LatencyTracker, SpanRecord
from rag_optimize.validation import check_int

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
    """One measured call: its question, end-to-end seconds and tracker run id, the seconds
    it spent per stage, which pass over the questions it was (0: the first, cold one) and
    what the semantic cache said (``hit`` None: no lookup was seen; ``matched``: the stored
    question a hit came from, when the cache reported it)."""

    question: str
    seconds: float
    run_id: str
    stages: dict[str, float] = field(default_factory=dict)
    run: int = 0
    hit: bool | None = None
    matched: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question, "seconds": self.seconds, "run": self.run,
            "hit": self.hit, "matched": self.matched, "stages": dict(self.stages),
        }


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

    @property
    def lookups(self) -> int:
        """Calls that made a semantic-cache lookup the bench could see."""
        return sum(1 for c in self.per_call if c.hit is not None)

    @property
    def hits(self) -> int:
        return sum(1 for c in self.per_call if c.hit)

    @property
    def hit_rate(self) -> float | None:
        """Hits per lookup; None when no lookup was seen (no cache, or an unreported one)."""
        return self.hits / self.lookups if self.lookups else None

    def runs(self) -> int:
        return 1 + max((c.run for c in self.per_call), default=0)

    def only_run(self, run: int, label: str | None = None) -> PassResult:
        """The calls of pass ``run`` alone (0: the first, with the caches as the app built
        them; later passes meet caches the earlier ones filled)."""
        calls = [c for c in self.per_call if c.run == run]
        share = len(calls) / len(self.per_call) if self.per_call else 0.0
        return summarise(
            label or self.label, calls, self.wall_seconds * share, self.concurrency,
            dict(self.extra),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": "seconds",
            "calls": self.calls,
            "concurrency": self.concurrency,
            "wall_seconds": self.wall_seconds,
            "throughput_per_s": self.throughput,
            "cache_lookups": self.lookups,
            "cache_hits": self.hits,
            "cache_hit_rate": self.hit_rate,
            "stages": self.stages.as_dict()["stages"],
            **self.extra,
            "per_call": [c.as_dict() for c in self.per_call],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PassResult:
        """Inverse of :meth:`as_dict` (the summaries are recomputed from ``per_call``)."""
        calls = [
            CallRecord(
                str(c["question"]), float(c["seconds"]), "", dict(c.get("stages") or {}),
                int(c.get("run", 0)), c.get("hit"), c.get("matched"),
            )
            for c in data["per_call"]
        ]
        known = {"label", "unit", "calls", "concurrency", "wall_seconds", "throughput_per_s",
                 "cache_lookups", "cache_hits", "cache_hit_rate", "stages", "per_call"}
        extra = {k: v for k, v in data.items() if k not in known}
        return summarise(
            str(data["label"]), calls, float(data["wall_seconds"]), int(data["concurrency"]),
            extra,
        )


def summarise(
    label: str, calls: list[CallRecord], wall_seconds: float, concurrency: int,
    extra: dict[str, Any] | None = None,
) -> PassResult:
    """A :class:`PassResult` over ``calls`` (per-stage summaries from their stage times)."""
    if not calls:
        raise InvalidInputError(f"pass {label!r} has no calls to summarise")
    windows: dict[str, Window] = {}
    totals = Window(len(calls))
    for c in calls:
        totals.add(c.seconds)
        for stage, value in c.stages.items():
            windows.setdefault(stage, Window(len(calls))).add(value)
    summaries = {n: windows[n].summary() for n in sorted(windows, key=stage_names.stage_sort_key)}
    summaries[stage_names.TOTAL] = totals.summary()
    return PassResult(
        label, LatencyReport(summaries), len(calls), wall_seconds, concurrency,
        dict(extra or {}), list(calls),
    )


def check_pass_options(concurrency: int, runs: int, warmup: int) -> None:
    """Raise :class:`ConfigurationError` for a non-positive concurrency/runs or warmup < 0."""
    for name, value, low in (("concurrency", concurrency, 1), ("runs", runs, 1),
                             ("warmup", warmup, 0)):
        check_int(name, value, low)


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
    lookups: dict[str, tuple[bool, str | None]] = {}  # run id -> (hit, matched question)

    def on_sample(sample: SpanRecord) -> None:
        hit = sample.attributes.get("hit")
        if sample.stage == stage_names.CACHE and sample.run_id and isinstance(hit, bool):
            matched = sample.attributes.get("matched_query")
            before = lookups.get(sample.run_id)
            if before is None or (hit and not before[0]):
                lookups[sample.run_id] = (hit, matched if isinstance(matched, str) else None)

    async def one(index: int, question: str) -> None:
        async with limit:
            with tracker.run() as run_id:
                start = clock()
                await _guarded(call, question)
                seconds = clock() - start
            totals.add(seconds)
            record = tracker.run_report(run_id)
            spent = dict(record.stages) if record is not None else {}
            hit, matched = lookups.pop(run_id, (None, None))
            per_call[index] = CallRecord(
                question, seconds, run_id, spent, index // len(questions), hit, matched
            )
            for stage, value in spent.items():
                windows.setdefault(stage, Window(len(questions) * runs)).add(value)
            if progress is not None:
                progress(1)

    tracker.add_listener(on_sample)
    try:
        wall = await _passes(one, questions, runs, concurrency, clock)
    finally:
        tracker.remove_listener(on_sample)
    names = sorted(windows, key=stage_names.stage_sort_key)
    summaries = {name: windows[name].summary() for name in names}
    summaries[stage_names.TOTAL] = totals.summary()
    return PassResult(
        label, LatencyReport(summaries), totals.count, wall, concurrency,
        per_call=[per_call[i] for i in sorted(per_call)],
    )


async def _passes(
    one: Callable[[int, str], Coroutine[Any, Any, None]], questions: Sequence[str], runs: int,
    concurrency: int, clock: Clock,
) -> float:
    """Run every pass; returns the wall seconds."""
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
    return clock() - wall_start


async def _guarded(call: Call, question: str) -> None:
    try:
        await call(question)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise PipelineError(question, exc) from exc
