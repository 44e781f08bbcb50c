"""Latency tracing: where the time of a RAG request goes, per stage and per run.

``LatencyTracker`` records stage spans (cache, embedding, retrieval, rerank, generation, ttft,
total) keyed by run, nested by parent span, and reports count / mean / p50 / p95 / p99 / max
per stage as a rich table or JSON. ``EventTimeline`` turns framework callbacks into those
spans (used by the LangChain and LlamaIndex adapters). Exporters for Prometheus and
OpenTelemetry (nested spans and GenAI histograms) live in ``rag_optimize.tracing.exporters``
and import their library only when used. ``provider_name`` spells a framework's provider
the way the GenAI conventions' ``gen_ai.provider.name`` does. ``benchmark_pipeline``
measures a whole pipeline with warm-up and correct percentiles.
"""

from rag_optimize.tracing import stages as stages
from rag_optimize.tracing.benchmark import BenchmarkResult as BenchmarkResult
from rag_optimize.tracing.benchmark import abenchmark_pipeline as abenchmark_pipeline
from rag_optimize.tracing.benchmark import benchmark_pipeline as benchmark_pipeline
from rag_optimize.tracing.percentiles import Summary as Summary
from rag_optimize.tracing.percentiles import percentile as percentile
from rag_optimize.tracing.percentiles import percentiles as percentiles
from rag_optimize.tracing.providers import provider_from_class_name as provider_from_class_name
from rag_optimize.tracing.providers import provider_name as provider_name
from rag_optimize.tracing.timeline import EventTimeline as EventTimeline
from rag_optimize.tracing.tracker import LatencyReport as LatencyReport
from rag_optimize.tracing.tracker import LatencyTracker as LatencyTracker
from rag_optimize.tracing.tracker import RunRecord as RunRecord
from rag_optimize.tracing.tracker import SpanRecord as SpanRecord
from rag_optimize.tracing.tracker import optional_span as optional_span

__all__ = [
    "BenchmarkResult",
    "EventTimeline",
    "LatencyReport",
    "LatencyTracker",
    "RunRecord",
    "SpanRecord",
    "Summary",
    "abenchmark_pipeline",
    "benchmark_pipeline",
    "optional_span",
    "percentile",
    "percentiles",
    "provider_from_class_name",
    "provider_name",
    "stages",
]
