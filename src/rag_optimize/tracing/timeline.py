"""EventTimeline: turns framework start/end events with parent ids into tracker samples.

LangChain callbacks (``run_id`` / ``parent_run_id``), LlamaIndex instrumentation (span ids and
parent span ids) and LlamaIndex's legacy callback manager (``event_id`` / ``parent_id``) all
describe a tree of nested operations by start and end events. The adapters only translate
their framework's events into these calls, and this class holds the logic once:

* ``start(node_id, stage, parent_id)`` when an operation begins. ``stage`` is a stage name
  (``"retrieval"``, ``"generation"``, ...) or None for a structural node (a chain step or a
  framework span that is not a stage of its own). A node inherits the run of its parent. A
  node without a parent run joins the tracker's current run (``with tracker.run():`` around
  the call) if there is one and it is still open (a run this timeline opened itself only with
  ``join_own_runs`` or while it is held); otherwise, if ``opens_run`` is true, it *opens* a run (id
  ``run_id`` or ``str(node_id)``), else it belongs to no run (its stage still counts in the
  aggregate report; used for embedding calls made while building an index, for instance).
* ``claim(node_id)`` turns an open node without a run into the root of a new run (LlamaIndex
  announces a query by an event inside an already open span).
* ``end(node_id)`` when it finishes: the node's stage is recorded for its run. A run ends when
  its root has ended *and* no node of the run is still open, so a streamed answer that is
  consumed after the framework's query call returned still counts in ``total``.
* ``token(node_id)`` for each streamed token: the first token of a run records ``ttft``, and
  the first token of the node itself gives its sample a ``time_to_first_chunk`` attribute
  (seconds from the node's start: what the GenAI conventions call time to first chunk).

Every node is a span of the tracker (:attr:`SpanRecord.span_id`): its parent is its parent
node, or for a node without one the tracker's current span when it started, so exporters see
the framework's tree (a chain, its retriever, the LLM) and our own spans inside it.

A node that opens a run also makes it the tracker's current run in this context (cleared when
the run ends; with ``track_current`` every node start does, so work that a framework runs in
worker threads or tasks, each with a copy of the context, finds its own run). So our own
components (cache, batching embedder) called inside the chain attribute their spans to it
(with ``track_current`` a timed node also becomes the current span, so those spans nest under it;
a structural node leaves the current span as it is),
and so do operations the framework starts later in the same context without a parent
(LlamaIndex calls the LLM of a streamed answer only when the caller iterates the stream,
outside the query's span). ``hold(run_id)`` keeps a run open for such a late operation;
``release(run_id)`` lets it end.

Open nodes are bounded (``max_open``): nodes whose end never arrives are dropped oldest first.
Thread-safe; one instance serves any number of concurrent runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rag_optimize.errors import ConfigurationError
from rag_optimize.tracing.tracker import LatencyTracker

_current_run = LatencyTracker.current_run
_set_current_run = LatencyTracker.set_current_run
_current_span = LatencyTracker.current_span
_set_current_span = LatencyTracker.set_current_span


@dataclass(slots=True)
class _Node:
    stage: str | None
    run_id: str | None
    started: float
    attributes: Mapping[str, Any] | None
    owns_run: bool = False
    span_id: int = 0
    parent_span: int | None = None
    first_chunk: float | None = None
    outer: int | None = None  # the current span this node replaced (track_current)


@dataclass(slots=True)
class _RunState:
    open_nodes: int = 0
    root_ended: bool = False
    last_end: float = field(default=0.0)


class EventTimeline:
    """Pairs start/end events of a tree of operations into stage samples of a tracker."""

    def __init__(
        self,
        tracker: LatencyTracker,
        max_open: int = 100_000,
        join_own_runs: bool = True,
        track_current: bool = False,
    ) -> None:
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open <= 0:
            raise ConfigurationError(f"max_open must be a positive int, got {max_open!r}")
        self.tracker = tracker
        self.max_open = max_open
        self.join_own_runs = join_own_runs
        self.track_current = track_current
        self._nodes: OrderedDict[Hashable, _Node] = OrderedDict()
        self._runs: dict[str, _RunState] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(
        self,
        node_id: Hashable,
        stage: str | None,
        parent_id: Hashable | None = None,
        attributes: Mapping[str, Any] | None = None,
        opens_run: bool = True,
        run_id: str | None = None,
    ) -> str | None:
        """Register the start of an operation; returns the run id it belongs to (or None)."""
        now = self.tracker.clock()
        span_id = LatencyTracker.new_span_id(stage, self.tracker)
        with self._lock:
            parent = self._nodes.get(parent_id) if parent_id is not None else None
            if parent is not None and parent.run_id is not None:
                node = _Node(stage, parent.run_id, now, attributes, False, span_id, parent.span_id)
                self._add(node_id, node)
        if parent is not None and parent.run_id is not None:
            if self.track_current:
                _set_current_run(parent.run_id)
                self._make_current(node)
            return parent.run_id
        parent_span = parent.span_id if parent is not None else _current_span()
        current = self._joinable_current()
        if current is not None:
            node = _Node(stage, current, now, attributes, False, span_id, parent_span)
            if self.track_current:
                _set_current_run(current)
        elif opens_run:
            # The root of a new run hangs under the run's root span, never under a current span
            # a sibling left in this context (chain.batch starts its roots one after another).
            new_run = self.tracker.start_run(run_id or str(node_id), start=now)
            node = _Node(stage, new_run, now, attributes, True, span_id, None)
            _set_current_run(new_run)
        else:
            node = _Node(stage, None, now, attributes, False, span_id, parent_span)
        if self.track_current:
            self._make_current(node)
        with self._lock:
            if node.owns_run and node.run_id is not None:
                self._runs[node.run_id] = _RunState()
            self._add(node_id, node)
        return node.run_id

    @staticmethod
    def _make_current(node: _Node) -> None:
        """Make a timed node the current span of this context (``track_current``).

        A structural node (a chain step, one of the many methods LlamaIndex wraps in a span)
        leaves the current span as it is, so code inside it sees the nearest *timed*
        operation around it: our own spans nest under that, and a tracked component finds
        the framework's span for its own operation (:meth:`LatencyTracker.enclosing_span`:
        a HybridRetriever under LlamaIndex's ``retrieve`` span and its ``_retrieve`` method
        span) instead of recording that operation a second time. A run's root replaces no
        span (it never hangs under a span a sibling left in this context).
        """
        if node.stage is None:
            return
        node.outer = None if node.owns_run else _current_span()
        _set_current_span(node.span_id)

    def _joinable_current(self) -> str | None:
        """The current run if a parentless node should join it, else None.

        A run that is no longer open is never joined (a stale context value). A run opened
        by this timeline is joined only with ``join_own_runs`` or while it is held: LangChain
        starts the roots of ``chain.batch`` one after another in the caller's context, and
        those are siblings, not nested calls (LangChain links nested calls by parent id).
        """
        current = _current_run()
        if current is None or not self.tracker.is_open(current):
            return None
        if self.join_own_runs:
            return current
        with self._lock:
            own = current in self._runs
            held = self._held.get(current, 0) > 0
        return current if (not own or held) else None

    def claim(self, node_id: Hashable, run_id: str | None = None) -> str | None:
        """Make an open node that has no run the root of a new run; returns the node's run."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or node.run_id is not None:
                return None if node is None else node.run_id
        current = self._joinable_current()
        if current is not None:
            new_run: str = current
            owns = False
        else:
            new_run = self.tracker.start_run(run_id or str(node_id), start=node.started)
            owns = True
            _set_current_run(new_run)
        with self._lock:
            node.run_id = new_run
            node.owns_run = owns
            if owns:
                self._runs[new_run] = _RunState(open_nodes=1)
            elif new_run in self._runs:
                self._runs[new_run].open_nodes += 1
        return new_run

    def end(
        self,
        node_id: Hashable,
        error: BaseException | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Register the end of an operation (``error`` when it failed); ``attributes`` known
        only at the end (a cache lookup's ``hit``) are added to those given at the start."""
        extra = attributes
        now = self.tracker.clock()
        with self._lock:
            node = self._nodes.pop(node_id, None)
            if node is None:
                return
            finish = False
            state = self._runs.get(node.run_id) if node.run_id is not None else None
            if state is not None:
                state.open_nodes -= 1
                state.last_end = max(state.last_end, now)
                if node.owns_run:
                    state.root_ended = True
                finish = state.root_ended and state.open_nodes <= 0
                if finish and node.run_id is not None:
                    del self._runs[node.run_id]
        if self.track_current and _current_span() == node.span_id:
            _set_current_span(node.outer)
        annotated = LatencyTracker.end_span(node.span_id)  # what code inside the node added
        if node.stage is not None:
            attributes = node.attributes
            if error is not None or node.first_chunk is not None or extra or annotated:
                attributes = {**(attributes or {}), **(annotated or {}), **(extra or {})}
                if error is not None:
                    attributes["error"] = type(error).__name__
                if node.first_chunk is not None:
                    attributes["time_to_first_chunk"] = node.first_chunk - node.started
            self.tracker.record_interval(
                node.stage,
                node.started,
                now,
                node.run_id,
                attributes,
                span_id=node.span_id,
                parent_id=node.parent_span,
            )
        if finish and node.run_id is not None and state is not None:
            if _current_run() == node.run_id:
                _set_current_run(None)
            self.tracker.finish_run(node.run_id, end=state.last_end)

    def hold(self, run_id: str) -> bool:
        """Keep an open run of this timeline from ending until :meth:`release` (one hold each)."""
        with self._lock:
            state = self._runs.get(run_id)
            if state is None:
                return False
            state.open_nodes += 1
            self._held[run_id] = self._held.get(run_id, 0) + 1
            return True

    def release(self, run_id: str, extend: bool = True) -> None:
        """Drop one hold of :meth:`hold`; the run ends if nothing else is open.

        With ``extend`` the run lasts at least until now; without it (a stream that was
        abandoned, not consumed) it ends when its last operation ended.
        """
        now = self.tracker.clock()
        with self._lock:
            held = self._held.get(run_id, 0)
            state = self._runs.get(run_id)
            if held <= 0 or state is None:
                return
            if held == 1:
                del self._held[run_id]
            else:
                self._held[run_id] = held - 1
            state.open_nodes -= 1
            if extend:
                state.last_end = max(state.last_end, now)
            finish = state.root_ended and state.open_nodes <= 0
            if finish:
                del self._runs[run_id]
        if finish:
            if _current_run() == run_id:
                _set_current_run(None)
            self.tracker.finish_run(run_id, end=state.last_end)

    def held(self, run_id: str | None) -> bool:
        """Whether ``run_id`` has a hold that was not released yet."""
        with self._lock:
            return run_id is not None and self._held.get(run_id, 0) > 0

    def token(self, node_id: Hashable) -> None:
        """A streamed token of the operation: records the run's ``ttft`` on its first one and
        the node's own time to first chunk."""
        now = self.tracker.clock()
        with self._lock:
            node = self._nodes.get(node_id)
            if node is not None and node.first_chunk is None:
                node.first_chunk = now
        if node is not None and node.run_id is not None:
            self.tracker.first_token(node.run_id, now=now)

    def stage_of(self, node_id: Hashable | None) -> str | None:
        """The stage an open node is timed as (None when unknown, or a structural node)."""
        if node_id is None:
            return None
        with self._lock:
            node = self._nodes.get(node_id)
        return None if node is None else node.stage

    def run_of(self, node_id: Hashable) -> str | None:
        """The run id an open node belongs to (None when unknown or outside any run)."""
        with self._lock:
            node = self._nodes.get(node_id)
        return None if node is None else node.run_id

    def open_nodes(self) -> int:
        with self._lock:
            return len(self._nodes)

    def _add(self, node_id: Hashable, node: _Node) -> None:
        """Store a node (lock held) and count it as open in its run."""
        self._nodes[node_id] = node
        if node.run_id is not None and node.run_id in self._runs:
            self._runs[node.run_id].open_nodes += 1
        while len(self._nodes) > self.max_open:
            _, dropped = self._nodes.popitem(last=False)
            LatencyTracker.end_span(dropped.span_id)
            if dropped.run_id is not None and dropped.run_id in self._runs:
                self._runs[dropped.run_id].open_nodes -= 1
        while len(self._runs) > self.max_open:  # runs whose root never ended
            stale = next(iter(self._runs))
            del self._runs[stale]
            self._held.pop(stale, None)
