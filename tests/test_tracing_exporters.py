"""OpenTelemetry spans under the default (legacy) conventions; Prometheus is in
test_tracing_prometheus.py, the current conventions and metrics in test_tracing_otel.py."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rag_optimize.tracing import LatencyTracker, stages
from rag_optimize.tracing.exporters.otel import OpenTelemetryExporter


def _pipeline(tracker: LatencyTracker, clock: Any, run_id: str) -> None:
    with tracker.run(run_id):
        with tracker.span(stages.CACHE):
            clock.advance(0.002)
        with tracker.span(stages.EMBEDDING, attributes={"model": "all-MiniLM-L6-v2"}):
            clock.advance(0.015)
        with tracker.span(stages.DENSE):
            clock.advance(0.030)
        with tracker.span(stages.GENERATION, attributes={"model": "fake-chat"}):
            clock.advance(0.4)


def _otel() -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def test_otel_one_trace_per_run_with_genai_attributes(clock: Any) -> None:
    provider, memory = _otel()
    tracker = LatencyTracker(clock=clock)
    OpenTelemetryExporter(tracker, tracer_provider=provider)
    _pipeline(tracker, clock, "run-a")
    _pipeline(tracker, clock, "run-b")
    spans = memory.get_finished_spans()
    roots = [s for s in spans if s.name == "rag.run"]
    assert len(roots) == 2 and len(spans) == 10
    for root in roots:
        run_id = root.attributes["rag_optimize.run_id"]
        children = [
            s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id
        ]
        assert {c.attributes["rag_optimize.run_id"] for c in children} == {run_id}
        assert all(c.context.trace_id == root.context.trace_id for c in children)
        by_stage = {c.attributes["rag_optimize.stage"]: c for c in children}
        assert set(by_stage) == {"cache", "embedding", "retrieval.dense", "generation"}
        gen = by_stage["generation"]
        assert gen.name == "chat fake-chat"
        assert gen.attributes["gen_ai.operation.name"] == "chat"
        assert gen.attributes["gen_ai.request.model"] == "fake-chat"
        assert gen.kind == SpanKind.CLIENT
        assert by_stage["embedding"].attributes["gen_ai.operation.name"] == "embeddings"
        assert by_stage["retrieval.dense"].attributes["gen_ai.operation.name"] == "retrieval"
        assert "gen_ai.operation.name" not in by_stage["cache"].attributes
        # times: children inside the root, ordered as they ran, durations kept
        assert gen.end_time - gen.start_time == pytest.approx(0.4e9, rel=1e-6)
        assert root.end_time - root.start_time == pytest.approx(0.447e9, rel=1e-6)
        assert by_stage["cache"].start_time >= root.start_time
        assert by_stage["embedding"].start_time >= by_stage["cache"].end_time
        assert gen.end_time <= root.end_time


def test_otel_standalone_and_error_spans(clock: Any) -> None:
    provider, memory = _otel()
    tracker = LatencyTracker(clock=clock)
    OpenTelemetryExporter(tracker, tracer_provider=provider)
    with pytest.raises(TimeoutError), tracker.span(stages.RERANK):
        clock.advance(0.05)
        raise TimeoutError
    (span,) = memory.get_finished_spans()
    assert span.name == "rerank" and span.parent is None
    assert span.attributes["error.type"] == "TimeoutError"
    assert span.status.status_code == StatusCode.ERROR


def test_missing_optional_dependency_names_the_extra() -> None:
    from rag_optimize.tracing.exporters import require

    with pytest.raises(ImportError, match=r"pip install 'rag-optimize\[otel\]'"):
        require("rag_optimize_no_such_module", "OpenTelemetryExporter", "otel")
