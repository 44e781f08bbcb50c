"""OpenTelemetry spans of stage latencies (``pip install 'rag-optimize[otel]'``).

Each finished run becomes one trace: a root span ``rag.run`` covering ``total`` and one child
span per recorded stage, with the real start and end times. Samples that belong to no run are
exported as standalone spans right away. Only ``opentelemetry-api`` is imported; where the
spans go (OTLP, console, an in-memory exporter in tests) is the application's
``TracerProvider`` (pass one, or the global provider is used).

Attribute names follow the OpenTelemetry GenAI semantic conventions where a stage has a
defined operation: ``gen_ai.operation.name`` is ``embeddings`` for embedding, ``retrieval`` for
retrieval and its children, ``chat`` for generation and ``execute_tool`` for tools; a model
name passed in a sample's attributes (``{"model": ...}``) becomes ``gen_ai.request.model`` and
the span name ``"{operation} {model}"``. Every span also carries ``rag_optimize.stage`` and
``rag_optimize.run_id``; a failed operation sets ``error.type`` and an error status.

The tracker's clock is monotonic; it is mapped to wall-clock nanoseconds with one offset taken
when the exporter is created.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from rag_optimize.tracing import stages as _stages
from rag_optimize.tracing.exporters import require
from rag_optimize.tracing.tracker import LatencyTracker, SpanRecord

GEN_AI_OPERATIONS: dict[str, str] = {
    _stages.EMBEDDING: "embeddings",
    _stages.RETRIEVAL: "retrieval",
    _stages.SPARSE: "retrieval",
    _stages.DENSE: "retrieval",
    _stages.FUSION: "retrieval",
    _stages.GENERATION: "chat",
    _stages.TOOL: "execute_tool",
}
ROOT_SPAN_NAME = "rag.run"


class OpenTelemetryExporter:
    """Turns a tracker's samples into OpenTelemetry spans, one trace per run."""

    def __init__(
        self,
        tracker: LatencyTracker | None = None,
        tracer_provider: Any = None,
        max_pending_runs: int = 1_000,
    ) -> None:
        self._trace: Any = require("opentelemetry.trace", "OpenTelemetryExporter", "otel")
        self._tracer = self._trace.get_tracer("rag_optimize", tracer_provider=tracer_provider)
        self._clock = tracker.clock if tracker is not None else time.perf_counter
        self._offset_ns = time.time_ns() - int(self._clock() * 1e9)
        self._pending: OrderedDict[str, list[SpanRecord]] = OrderedDict()
        self._max_pending = max_pending_runs
        self._lock = threading.Lock()
        self._tracker = tracker
        if tracker is not None:
            tracker.add_listener(self.export)

    def detach(self) -> None:
        if self._tracker is not None:
            self._tracker.remove_listener(self.export)
            self._tracker = None

    def export(self, sample: SpanRecord) -> None:
        """Listener: buffer a run's stages until its ``total`` arrives, then emit the trace."""
        if sample.run_id is None:
            self._emit(sample, context=None)
            return
        if sample.stage != _stages.TOTAL:
            with self._lock:
                self._pending.setdefault(sample.run_id, []).append(sample)
                overflow = []
                while len(self._pending) > self._max_pending:
                    overflow.extend(self._pending.popitem(last=False)[1])
            for orphan in overflow:  # run never finished: export its stages on their own
                self._emit(orphan, context=None)
            return
        with self._lock:
            children = self._pending.pop(sample.run_id, [])
        root = self._tracer.start_span(
            ROOT_SPAN_NAME,
            start_time=self._ns(sample.start),
            attributes={"rag_optimize.run_id": sample.run_id, "rag_optimize.stage": "total"},
        )
        context = self._trace.set_span_in_context(root)
        for child in children:
            self._emit(child, context=context)
        root.end(end_time=self._ns(sample.end))

    def _emit(self, sample: SpanRecord, context: Any) -> None:
        operation = GEN_AI_OPERATIONS.get(sample.stage)
        attributes: dict[str, Any] = {"rag_optimize.stage": sample.stage}
        if sample.run_id is not None:
            attributes["rag_optimize.run_id"] = sample.run_id
        name = sample.stage
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
            name = operation
        model = sample.attributes.get("model")
        if model:
            attributes["gen_ai.request.model"] = str(model)
            name = f"{name} {model}"
        error = sample.attributes.get("error")
        if error:
            attributes["error.type"] = str(error)
        kind = self._trace.SpanKind.CLIENT if operation else self._trace.SpanKind.INTERNAL
        span = self._tracer.start_span(
            name,
            context=context,
            kind=kind,
            start_time=self._ns(sample.start),
            attributes=attributes,
        )
        if error:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        span.end(end_time=self._ns(sample.end))

    def _ns(self, clock_seconds: float) -> int:
        return self._offset_ns + int(clock_seconds * 1e9)
