"""LatencyTracker: per-stage latency of RAG runs, safe under concurrency, bounded in memory.

What it records
---------------
A *sample* is one timed stage (``"embedding"`` took 12 ms). Every sample goes into the
aggregate window of its stage (for :meth:`LatencyTracker.report`: count, mean, p50, p95, p99,
max) and, when it belongs to a *run* (one user request), into that run's breakdown
(:meth:`LatencyTracker.run_report`). Runs are keyed by a run id, so samples of concurrent runs
never mix, whatever thread or task records them.

How components report into a tracker (the hook)
-----------------------------------------------
Any component that is given a tracker wraps its work in a span::

    with tracker.span("embedding"):          # or stages.EMBEDDING
        vectors = model.encode(texts)

or, when it measured the time itself, ``tracker.record("retrieval.dense", seconds)``.
A component whose tracker is optional writes ``with optional_span(self.tracker, "cache"):``.

``span`` / ``record`` without ``run_id`` attribute the sample to the *current run*: a
:mod:`contextvars` variable set by ``with tracker.run():`` (and by the LangChain / LlamaIndex
adapters when a top-level chain or query starts). Context variables follow ``await`` and are
copied into new asyncio tasks, so nested components need no extra argument. Work handed to
another thread (a batching worker, ``run_in_executor`` without context copy) does not see the
variable: capture ``LatencyTracker.current_run()`` at the call site and pass it as
``run_id=...``. Every method is thread-safe.

Time comes from the injected ``clock`` (seconds, monotonic; ``time.perf_counter`` by default),
so tests drive it by hand instead of sleeping.

Memory is bounded: each stage keeps the last ``window`` samples (exact percentiles over that
window, lifetime count kept), at most ``max_runs`` finished runs are kept for
:meth:`run_report`, and at most ``max_runs`` runs may be open at once (the oldest open run is
dropped when a leaking caller never finishes its runs; :attr:`dropped_runs` counts them).

Spans nest: every sample gets a ``span_id`` and the ``parent_id`` of the span that was open
around it in the same context (a second :mod:`contextvars` variable, set by ``span``), so an
exporter can rebuild the tree (a retrieval with its sparse, dense and fusion children). Code
that records after the fact or in another thread passes ``parent_id=`` itself, for example
``tracker.record(stages.DENSE, seconds, parent_id=retrieval_span_id)`` with an id from
:meth:`LatencyTracker.new_span_id` or from ``span(...).span_id``. A sample with no parent in its
run is a child of the run's root (the ``total`` sample).

Listeners (exporters) get every sample as a :class:`SpanRecord` after it is stored; a failing
listener is logged and never breaks the traced application.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.tracing import stages as _stages
from rag_optimize.tracing.percentiles import Summary, Window

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

_CURRENT_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rag_optimize_current_run", default=None
)
_CURRENT_SPAN: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "rag_optimize_current_span", default=None
)
_SPAN_IDS = itertools.count(1)  # next() on a count is atomic under the GIL
# Spans made current and not yet ended. A framework may end a span in another context than
# the one it started in (LangChain runs callbacks in worker threads), which leaves the span id
# in the caller's context: such a stale id is no parent, as a stale run is joined by no one.
# Bounded: an id whose span never ends (a span object never entered, a framework event that
# never arrives) is forgotten oldest first, which only means it is no longer taken as a parent.
# Single dict operations are atomic under the GIL, so the hot path (one insert when a span
# opens, one pop when it ends) takes no lock; only trimming does.
# Each open span maps to (its stage, the tracker it will be recorded in), so a component can
# ask whether the span around it already stands for its own operation (a LangChain retriever
# run around our hybrid retrieval) and nest under it instead of recording that operation twice.
_OPEN_SPANS: dict[int, tuple[str | None, object]] = {}
_OPEN_SPANS_LOCK = threading.Lock()
_MAX_OPEN_SPANS = 100_000
# Attributes added to open spans by code running inside them (annotate_span), merged into the
# span's sample when it is recorded. Only spans that were annotated have an entry.
_SPAN_EXTRAS: dict[int, dict[str, Any]] = {}


def _open_span(span_id: int | None, stage: str | None = None, owner: object = None) -> None:
    if span_id is not None:
        _OPEN_SPANS[span_id] = (stage, owner)
        if len(_OPEN_SPANS) > _MAX_OPEN_SPANS:
            _trim_open_spans()


def _trim_open_spans() -> None:
    with _OPEN_SPANS_LOCK:
        while len(_OPEN_SPANS) > _MAX_OPEN_SPANS:
            dropped = next(iter(_OPEN_SPANS))
            _OPEN_SPANS.pop(dropped, None)
            _SPAN_EXTRAS.pop(dropped, None)


def _close_span(span_id: int) -> dict[str, Any] | None:
    """Mark ``span_id`` ended; returns the attributes annotated onto it, if any."""
    _OPEN_SPANS.pop(span_id, None)
    return _SPAN_EXTRAS.pop(span_id, None) if _SPAN_EXTRAS else None


def _live_span(span_id: int | None) -> int | None:
    return span_id if span_id is not None and span_id in _OPEN_SPANS else None


@dataclass(frozen=True)
class SpanRecord:
    """One recorded sample, as listeners (exporters) receive it.

    ``start`` and ``end`` are readings of the tracker's clock; ``attributes`` carries optional
    details such as the model name (``{"model": "gpt-4o-mini"}``). ``span_id`` identifies the
    sample (unique in the process) and ``parent_id`` the span it ran inside (None: directly
    under its run's root, or a root itself outside any run).
    """

    stage: str
    seconds: float
    run_id: str | None
    start: float
    end: float
    attributes: Mapping[str, Any] = field(default_factory=dict)
    span_id: int | None = None
    parent_id: int | None = None


@dataclass
class RunRecord:
    """The breakdown of one run: summed seconds and sample count per stage."""

    run_id: str
    started: float
    ended: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    first_token_seen: bool = False

    @property
    def total(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "total": self.total,
            "stages": dict(self.stages),
            "counts": dict(self.counts),
        }


@dataclass(frozen=True)
class LatencyReport:
    """Per-stage summaries (seconds), rows in pipeline order; see :class:`Summary`."""

    stages: Mapping[str, Summary]

    def __getitem__(self, stage: str) -> Summary:
        return self.stages[stage]

    def __contains__(self, stage: object) -> bool:
        return stage in self.stages

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": "seconds",
            "stages": {name: s.as_dict() for name, s in self.stages.items()},
        }

    def to_json(self, **json_kwargs: Any) -> str:
        return json.dumps(self.as_dict(), **json_kwargs)

    def print(self, file: IO[str] | None = None, title: str = "RAG latency") -> None:
        """Print a terminal table (milliseconds) with rich; ``file`` defaults to stdout."""
        from rag_optimize.tracing.exporters import require

        console: Any = require("rich.console", "print_report", "tracing")
        table: Any = require("rich.table", "print_report", "tracing").Table(title=title)
        table.add_column("stage")
        for name in ("count", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms"):
            table.add_column(name, justify="right")
        for name, s in self.stages.items():
            nested = _stages.parent_stage(name) in self.stages
            label = f"  {name.rpartition('.')[2]}" if nested else name
            table.add_row(
                label,
                str(s.count),
                *(f"{v * 1000:.2f}" for v in (s.mean, s.p50, s.p95, s.p99, s.max)),
            )
        console.Console(file=file).print(table)


class _Span:
    """Context manager returned by :meth:`LatencyTracker.span` (sync and async).

    While it is open it is the current span of its context, so spans opened inside it (also in
    asyncio tasks created meanwhile) become its children. ``span_id`` is known from creation,
    so work handed to another thread can pass it as ``parent_id=``.
    """

    __slots__ = ("_tracker", "_stage", "_run_id", "_attributes", "_start", "span_id",
                 "parent_id", "_token")  # fmt: skip

    def __init__(
        self,
        tracker: LatencyTracker,
        stage: str,
        run_id: str | None,
        attributes: Mapping[str, Any] | None,
        parent_id: int | None,
    ) -> None:
        self._tracker = tracker
        self._stage = stage
        self._run_id = run_id
        self._attributes = attributes
        self._start = 0.0
        self.span_id = next(_SPAN_IDS)  # open (a valid parent) from __enter__ on
        self.parent_id = parent_id
        self._token: contextvars.Token[int | None] | None = None

    def __enter__(self) -> _Span:
        if self._run_id is None:
            self._run_id = _CURRENT_RUN.get()
        if self.parent_id is None:  # _live_span and _open_span inlined: the hot path
            current = _CURRENT_SPAN.get()
            self.parent_id = current if current in _OPEN_SPANS else None
        _OPEN_SPANS[self.span_id] = (self._stage, self._tracker)
        if len(_OPEN_SPANS) > _MAX_OPEN_SPANS:
            _trim_open_spans()
        self._token = _CURRENT_SPAN.set(self.span_id)
        self._start = self._tracker.clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = self._tracker.clock()
        if self._token is not None:
            try:
                _CURRENT_SPAN.reset(self._token)
            except ValueError:  # exited in another context than it was entered in
                _CURRENT_SPAN.set(self.parent_id)
            self._token = None
        attributes = self._attributes
        if exc_type is not None:
            attributes = {**(attributes or {}), "error": exc_type.__name__}
        self._tracker._store(
            self._stage, self._start, end, self._run_id, attributes, self.span_id, self.parent_id
        )

    async def __aenter__(self) -> _Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class LatencyTracker:
    """Records stage latencies per run and summarises them (see the module docstring)."""

    def __init__(
        self, clock: Clock = time.perf_counter, window: int = 10_000, max_runs: int = 1_000
    ) -> None:
        if not callable(clock):
            raise ConfigurationError(f"clock must be callable, got {clock!r}")
        if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs <= 0:
            raise ConfigurationError(f"max_runs must be a positive int, got {max_runs!r}")
        Window(window)  # validates the size once, with a clear message
        self.clock = clock
        self.window = window
        self.max_runs = max_runs
        self.dropped_runs = 0
        self._lock = threading.Lock()
        self._windows: dict[str, Window] = {}
        self._open: OrderedDict[str, RunRecord] = OrderedDict()
        self._finished: OrderedDict[str, RunRecord] = OrderedDict()
        self._listeners: list[Callable[[SpanRecord], None]] = []

    # ----------------------------------------------------------------- current run
    @staticmethod
    def current_run() -> str | None:
        """The run id active in this context (set by :meth:`run` or an adapter), or None."""
        return _CURRENT_RUN.get()

    @staticmethod
    def set_current_run(run_id: str | None) -> contextvars.Token[str | None]:
        """Make ``run_id`` the current run of this context; returns a token for ``reset``."""
        return _CURRENT_RUN.set(run_id)

    @staticmethod
    def reset_current_run(token: contextvars.Token[str | None]) -> None:
        """Undo :meth:`set_current_run` with the token it returned."""
        _CURRENT_RUN.reset(token)

    @staticmethod
    def current_span() -> int | None:
        """The id of the span open around the caller in this context (see :meth:`span`);
        None when there is none, or when the span current here has already ended elsewhere."""
        return _live_span(_CURRENT_SPAN.get())

    @staticmethod
    def set_current_span(span_id: int | None) -> contextvars.Token[int | None]:
        """Make ``span_id`` the parent of spans opened next in this context (adapters whose
        framework reports start and end events use this); returns a token for ``reset``.
        A span id from :meth:`new_span_id` is open until it is recorded or :meth:`end_span`
        is called; an id that has ended is never taken as a parent."""
        return _CURRENT_SPAN.set(span_id)

    @staticmethod
    def reset_current_span(token: contextvars.Token[int | None]) -> None:
        """Undo :meth:`set_current_span` with the token it returned."""
        _CURRENT_SPAN.reset(token)

    @staticmethod
    def end_span(span_id: int | None) -> dict[str, Any] | None:
        """Mark ``span_id`` ended without recording it (recording a span ends it too): from
        now on no context takes it as the parent of new spans. Returns the attributes
        :meth:`annotate_span` added to it (None if none), for the caller to record."""
        if span_id is None:
            return None
        return _close_span(span_id)

    @staticmethod
    def new_span_id(stage: str | None = None, owner: LatencyTracker | None = None) -> int:
        """A fresh span id, for a span recorded later with ``record(..., span_id=...)`` whose
        children are recorded first (or elsewhere) with ``parent_id=`` it. The span is open
        (a valid parent) until it is recorded or :meth:`end_span` is called. ``stage`` and
        ``owner`` (the tracker it will be recorded in) let :meth:`enclosing_span` find it."""
        span_id = next(_SPAN_IDS)
        _open_span(span_id, stage, owner)
        return span_id

    def enclosing_span(self, stage: str) -> int | None:
        """The current span of this context if it is an open ``stage`` span of this tracker.

        A component that records ``stage`` itself calls this first: when the caller (a
        framework adapter's retriever run, or ``with tracker.span("retrieval"):``) already
        times the same operation, the component nests its parts under that span and adds its
        attributes with :meth:`annotate_span`, so one operation is one span and one sample.
        """
        span_id = _CURRENT_SPAN.get()
        entry = _OPEN_SPANS.get(span_id) if span_id is not None else None
        if entry is not None and entry[0] == stage and entry[1] is self:
            return span_id
        return None

    @staticmethod
    def annotate_span(span_id: int, attributes: Mapping[str, Any]) -> bool:
        """Add ``attributes`` to the open span ``span_id``; they are merged into its sample
        when it is recorded (attributes given at recording time win). False when the span is
        not open (already recorded or ended): nothing is added."""
        if span_id not in _OPEN_SPANS:
            return False
        _SPAN_EXTRAS.setdefault(span_id, {}).update(attributes)
        return True

    # ----------------------------------------------------------------- runs
    def start_run(self, run_id: str | None = None, start: float | None = None) -> str:
        """Open a run (a new uuid4 hex when ``run_id`` is None) and return its id."""
        if run_id is None:
            run_id = uuid.uuid4().hex
        elif not isinstance(run_id, str) or not run_id:
            raise InvalidInputError(f"run_id must be a non-empty string, got {run_id!r}")
        started = self.clock() if start is None else start
        with self._lock:
            if run_id not in self._open:
                self._open[run_id] = RunRecord(run_id=run_id, started=started)
                self._trim_open()
        return run_id

    def finish_run(self, run_id: str, end: float | None = None) -> RunRecord | None:
        """Close a run: record its ``total`` stage and keep its breakdown for run_report.

        Returns the finished record, or None when the run is unknown (already finished or
        dropped), in which case nothing is recorded.
        """
        end = self.clock() if end is None else end
        with self._lock:
            record = self._open.pop(run_id, None)
        if record is None:
            return None
        self.record_interval(_stages.TOTAL, record.started, end, run_id, None)
        with self._lock:
            record.ended = end
            self._finished[run_id] = record
            while len(self._finished) > self.max_runs:
                self._finished.popitem(last=False)
        return record

    def run(self, run_id: str | None = None) -> AbstractContextManager[str]:
        """``with tracker.run() as run_id:`` opens a run, makes it current, records ``total``."""
        return self._run_context(run_id)

    @contextmanager
    def _run_context(self, run_id: str | None) -> Iterator[str]:
        run_id = self.start_run(run_id)
        token = _CURRENT_RUN.set(run_id)
        try:
            yield run_id
        finally:
            _CURRENT_RUN.reset(token)
            self.finish_run(run_id)

    def run_report(self, run_id: str) -> RunRecord | None:
        """A copy of the breakdown of a finished or still open run, None if unknown."""
        with self._lock:
            record = self._finished.get(run_id) or self._open.get(run_id)
            if record is None:
                return None
            return RunRecord(
                run_id=record.run_id,
                started=record.started,
                ended=record.ended,
                stages=dict(record.stages),
                counts=dict(record.counts),
                first_token_seen=record.first_token_seen,
            )

    def is_open(self, run_id: str) -> bool:
        """Whether ``run_id`` is a started run that has not finished yet."""
        with self._lock:
            return run_id in self._open

    def open_runs(self) -> list[str]:
        with self._lock:
            return list(self._open)

    # ----------------------------------------------------------------- samples
    def span(
        self,
        stage: str,
        run_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        *,
        parent_id: int | None = None,
    ) -> _Span:
        """Context manager (``with`` or ``async with``) timing one stage of a run.

        Its parent is ``parent_id`` or else the span open around it in this context.
        """
        return _Span(self, _stages.check_stage(stage), run_id, attributes, parent_id)

    def record(
        self,
        stage: str,
        seconds: float,
        run_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        *,
        end: float | None = None,
        span_id: int | None = None,
        parent_id: int | None = None,
    ) -> int:
        """Record a stage that was timed elsewhere (``seconds`` >= 0, finite); returns its id.

        It ended now, or at ``end`` (a reading of :attr:`clock`). ``span_id`` is an id from
        :meth:`new_span_id` when children already point at it; the parent is ``parent_id`` or
        else the span open in this context.
        """
        _stages.check_stage(stage)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise InvalidInputError(f"seconds must be a number, got {seconds!r}")
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidInputError(f"seconds must be finite and >= 0, got {seconds!r}")
        end = self.clock() if end is None else end
        if run_id is None:
            run_id = _CURRENT_RUN.get()
        if parent_id is None:
            parent_id = _live_span(_CURRENT_SPAN.get())
        return self._store(stage, end - seconds, end, run_id, attributes, span_id, parent_id)

    def first_token(self, run_id: str | None = None, now: float | None = None) -> float | None:
        """Record ``ttft`` for the run (time since the run started) on its first token only.

        Returns the recorded seconds, or None when the run is unknown or already had one.
        """
        run_id = _CURRENT_RUN.get() if run_id is None else run_id
        if run_id is None:
            return None
        now = self.clock() if now is None else now
        with self._lock:
            record = self._open.get(run_id)
            if record is None or record.first_token_seen:
                return None
            record.first_token_seen = True
            started = record.started
        self.record_interval(_stages.TTFT, started, now, run_id, None)
        return now - started

    def record_interval(
        self,
        stage: str,
        start: float,
        end: float,
        run_id: str | None,
        attributes: Mapping[str, Any] | None = None,
        *,
        span_id: int | None = None,
        parent_id: int | None = None,
    ) -> int:
        """Record a stage that ran from ``start`` to ``end`` (readings of :attr:`clock`).

        The primitive under :meth:`span`, :meth:`record` and the adapters' event timeline;
        ``run_id`` None means "no run" and ``parent_id`` None "no parent" here (no context
        lookup). A sample for a run that is not open (never started, or finished) counts in
        the aggregate report only. Returns the sample's span id (``span_id`` or a new one).
        """
        return self._store(stage, start, end, run_id, attributes, span_id, parent_id)

    def _store(
        self,
        stage: str,
        start: float,
        end: float,
        run_id: str | None,
        attributes: Mapping[str, Any] | None,
        span_id: int | None,
        parent_id: int | None,
    ) -> int:
        """:meth:`record_interval` with positional arguments (the hot path of every span)."""
        if span_id is None:
            span_id = next(_SPAN_IDS)
        else:
            _OPEN_SPANS.pop(span_id, None)  # recorded: ended
            if _SPAN_EXTRAS:
                extra = _SPAN_EXTRAS.pop(span_id, None)
                if extra:
                    attributes = {**extra, **(attributes or {})}
        seconds = max(0.0, end - start)
        with self._lock:
            window = self._windows.get(stage)
            if window is None:
                window = self._windows[stage] = Window(self.window)
            window.add(seconds)
            if run_id is not None and stage != _stages.TOTAL:
                record = self._open.get(run_id)
                if record is not None:
                    record.stages[stage] = record.stages.get(stage, 0.0) + seconds
                    record.counts[stage] = record.counts.get(stage, 0) + 1
            listeners = self._listeners
        if listeners:
            sample = SpanRecord(
                stage, seconds, run_id, start, end, attributes or {}, span_id, parent_id
            )
            for listener in listeners:
                try:
                    listener(sample)
                except Exception:  # a broken exporter must not break the traced app
                    logger.exception("latency listener %r failed", listener)
        return span_id

    def _trim_open(self) -> None:
        while len(self._open) > self.max_runs:
            self._open.popitem(last=False)
            self.dropped_runs += 1

    # ----------------------------------------------------------------- listeners
    def add_listener(self, listener: Callable[[SpanRecord], None]) -> None:
        """Call ``listener(SpanRecord)`` for every sample recorded from now on."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Callable[[SpanRecord], None]) -> None:
        with self._lock:
            self._listeners = [x for x in self._listeners if x != listener]

    # ----------------------------------------------------------------- reporting
    def report(self) -> LatencyReport:
        """Summaries of every stage that has samples, in pipeline order."""
        with self._lock:
            items = [(name, w.summary()) for name, w in self._windows.items() if len(w)]
        items.sort(key=lambda item: _stages.stage_sort_key(item[0]))
        return LatencyReport(stages=dict(items))

    def samples(self, stage: str) -> list[float]:
        """The windowed samples of one stage (seconds, oldest first)."""
        with self._lock:
            window = self._windows.get(stage)
            return window.values() if window else []

    def to_json(self, **json_kwargs: Any) -> str:
        return self.report().to_json(**json_kwargs)

    def print_report(self, file: IO[str] | None = None, title: str = "RAG latency") -> None:
        self.report().print(file=file, title=title)

    def reset(self) -> None:
        """Forget every sample and run (listeners stay attached)."""
        with self._lock:
            self._windows.clear()
            self._open.clear()
            self._finished.clear()
            self.dropped_runs = 0


def optional_span(
    tracker: LatencyTracker | None,
    stage: str,
    run_id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent_id: int | None = None,
) -> AbstractContextManager[object]:
    """``tracker.span(...)`` when a tracker is given, else a no-op context manager."""
    if tracker is None:
        return nullcontext()
    return tracker.span(stage, run_id=run_id, attributes=attributes, parent_id=parent_id)
