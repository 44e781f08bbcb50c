"""Prometheus exposition: names in seconds with the _seconds suffix, units, bounded label sets.

The text is parsed back with prometheus_client's own parsers (text format and OpenMetrics).
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from rag_optimize import HashingEmbedder, SemanticCache
from rag_optimize.errors import ConfigurationError
from rag_optimize.tracing import LatencyTracker, stages
from rag_optimize.tracing.exporters.prometheus import OTHER_STAGE, PrometheusExporter


def families(text: str) -> dict[str, Any]:
    """Metric families by name (prometheus_client's ``*_created`` timestamp gauges left out)."""
    return {
        f.name: f for f in text_string_to_metric_families(text) if not f.name.endswith("_created")
    }


def test_names_units_and_label_sets(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    exporter = PrometheusExporter(tracker, max_custom_stages=2)
    cache = SemanticCache(HashingEmbedder(dim=64), threshold=0.9, tracker=tracker)
    with tracker.run("r"):
        assert cache.get("What is the capital of France?") is None
        cache.set("What is the capital of France?", "Paris.")
        assert cache.get("what is the capital of france?") is not None  # exact repeat
        with tracker.span(stages.GENERATION, attributes={"model": "gpt-x"}):
            clock.advance(0.4)
        with pytest.raises(RuntimeError), tracker.span(stages.RERANK):
            raise RuntimeError("rerank API down")
    for i in range(5):  # custom stage names beyond the bound collapse into "other"
        tracker.record(f"parse-{i}", 0.001)

    parsed = families(exporter.render())
    assert set(parsed) == {"rag_optimize_stage_latency_seconds", "rag_optimize_cache_lookups"}
    latency = parsed["rag_optimize_stage_latency_seconds"]
    assert latency.type == "histogram"
    label_sets = {frozenset(s.labels) for s in latency.samples}
    assert label_sets == {frozenset({"stage", "outcome"}), frozenset({"stage", "outcome", "le"})}
    counts = {
        (s.labels["stage"], s.labels["outcome"]): s.value
        for s in latency.samples
        if s.name.endswith("_count")
    }
    assert counts == {
        ("cache", "ok"): 2.0,
        ("generation", "ok"): 1.0,
        ("rerank", "error"): 1.0,
        ("total", "ok"): 1.0,
        ("parse-0", "ok"): 1.0,
        ("parse-1", "ok"): 1.0,
        (OTHER_STAGE, "ok"): 3.0,
    }
    sums = {s.labels["stage"]: s.value for s in latency.samples if s.name.endswith("_sum")}
    assert sums["generation"] == pytest.approx(0.4)  # seconds, not milliseconds
    buckets = {
        s.labels["le"]: s.value
        for s in latency.samples
        if s.name.endswith("_bucket") and s.labels["stage"] == "generation"
    }
    assert buckets["0.3"] == 0.0 and buckets["0.5"] == 1.0 and buckets["+Inf"] == 1.0
    lookups = parsed["rag_optimize_cache_lookups"]
    assert lookups.type == "counter"
    results = {s.labels["result"]: s.value for s in lookups.samples if s.name.endswith("_total")}
    assert results == {"miss": 1.0, "hit": 1.0}
    assert not any("model" in s.labels or "run_id" in s.labels for s in latency.samples)

    open_families = {f.name: f for f in openmetrics_families(exporter.render(openmetrics=True))}
    assert open_families["rag_optimize_stage_latency_seconds"].unit == "seconds"


def test_cache_status_label_and_detach(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    exporter = PrometheusExporter(tracker)
    tracker.record(stages.CACHE, 0.001, attributes={"hit": True, "status": "SEMANTIC_HIT"})
    tracker.record(stages.CACHE, 0.001, attributes={"hit": True, "status": "bogus"})
    exporter.detach()
    tracker.record(stages.CACHE, 0.001, attributes={"hit": False})
    lookups = families(exporter.render())["rag_optimize_cache_lookups"]
    results = {s.labels["result"]: s.value for s in lookups.samples if s.name.endswith("_total")}
    assert results == {"semantic_hit": 1.0, "hit": 1.0}


def test_two_exporters_do_not_collide_and_bad_options() -> None:
    PrometheusExporter(LatencyTracker())
    PrometheusExporter(LatencyTracker())
    with pytest.raises(ConfigurationError, match="max_custom_stages"):
        PrometheusExporter(max_custom_stages=-1)
