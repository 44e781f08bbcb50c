"""EventTimeline: turns framework start/end events with parent ids into tracker samples.

LangChain callbacks (``run_id`` / ``parent_run_id``), LlamaIndex instrumentation (span ids and
parent span ids) and LlamaIndex's legacy callback manager (``event_id`` / ``parent_id``) all
describe a tree of nested operations by start and end events. The adapters only translate
their framework's events into three calls, and this class holds the logic once:

* ``start(node_id, stage, parent_id)`` when an operation begins. ``stage`` is a stage name
  (``"retrieval"``, ``"generation"``, ...) or None for a structural node (a chain step that is
  not a stage of its own). A node whose parent is unknown is a *root*: it becomes a run of the
  tracker (run id ``str(node_id)``), unless a run is already current in this context (for
  example ``with tracker.run():`` around the chain), in which case it joins that run.
* ``end(node_id)`` when it finishes: the node's stage is recorded for its root's run; ending
  the root finishes the run and records ``total``.
* ``token(node_id)`` for each streamed token: the first token of a run records ``ttft``.

A root that opens a run also makes it the tracker's current run in this context, so our own
components (cache, batching embedder) called inside the chain attribute their spans to it.

Open nodes are bounded (``max_open``): nodes whose end never arrives are dropped oldest first.
Thread-safe; one instance serves any number of concurrent runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from rag_optimize.errors import ConfigurationError
from rag_optimize.tracing.tracker import _CURRENT_RUN, LatencyTracker


@dataclass
class _Node:
    stage: str | None
    run_id: str
    started: float
    is_root: bool
    owns_run: bool
    attributes: Mapping[str, Any] | None


class EventTimeline:
    """Pairs start/end events of a tree of operations into stage samples of a tracker."""

    def __init__(self, tracker: LatencyTracker, max_open: int = 100_000) -> None:
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open <= 0:
            raise ConfigurationError(f"max_open must be a positive int, got {max_open!r}")
        self.tracker = tracker
        self.max_open = max_open
        self._nodes: OrderedDict[Hashable, _Node] = OrderedDict()
        self._lock = threading.Lock()

    def start(
        self,
        node_id: Hashable,
        stage: str | None,
        parent_id: Hashable | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Register the start of an operation; returns the run id it belongs to."""
        now = self.tracker.clock()
        with self._lock:
            parent = self._nodes.get(parent_id) if parent_id is not None else None
            if parent is not None:
                node = _Node(stage, parent.run_id, now, False, False, attributes)
                self._nodes[node_id] = node
                self._trim()
                return node.run_id
        current = _CURRENT_RUN.get()
        if current is not None:
            node = _Node(stage, current, now, True, False, attributes)
        else:
            run_id = self.tracker.start_run(str(node_id), start=now)
            node = _Node(stage, run_id, now, True, True, attributes)
            _CURRENT_RUN.set(run_id)
        with self._lock:
            self._nodes[node_id] = node
            self._trim()
        return node.run_id

    def end(self, node_id: Hashable, error: BaseException | None = None) -> None:
        """Register the end of an operation (``error`` when it failed)."""
        now = self.tracker.clock()
        with self._lock:
            node = self._nodes.pop(node_id, None)
        if node is None:
            return
        if node.stage is not None:
            attributes = node.attributes
            if error is not None:
                attributes = {**(attributes or {}), "error": type(error).__name__}
            self.tracker.record_interval(node.stage, node.started, now, node.run_id, attributes)
        if node.owns_run:
            self.tracker.finish_run(node.run_id, end=now)
            if _CURRENT_RUN.get() == node.run_id:
                _CURRENT_RUN.set(None)

    def token(self, node_id: Hashable) -> None:
        """A streamed token of the operation: records the run's ``ttft`` on its first one."""
        with self._lock:
            node = self._nodes.get(node_id)
        if node is not None:
            self.tracker.first_token(node.run_id)

    def run_of(self, node_id: Hashable) -> str | None:
        """The run id an open node belongs to (None when unknown)."""
        with self._lock:
            node = self._nodes.get(node_id)
        return None if node is None else node.run_id

    def open_nodes(self) -> int:
        with self._lock:
            return len(self._nodes)

    def _trim(self) -> None:
        while len(self._nodes) > self.max_open:
            self._nodes.popitem(last=False)
