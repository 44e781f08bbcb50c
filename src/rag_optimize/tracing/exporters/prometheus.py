"""Prometheus metrics of stage latencies (``pip install 'rag-optimize[prometheus]'``).

Two families, in base units and with label sets whose size is bounded whatever the traffic:

* ``<namespace>_stage_latency_seconds{stage, outcome}``, a histogram observed for every sample
  a tracker records. ``stage`` is one of the known stages (:data:`~rag_optimize.tracing.stages.
  STAGES`) or one of the first ``max_custom_stages`` custom stage names; any further name is
  counted as ``other`` (a stage name built from user input cannot explode the series count).
  ``outcome`` is ``ok`` or ``error``. Model names, run ids and queries are never labels.
* ``<namespace>_cache_lookups_total{result}``, a counter of semantic-cache lookups seen as
  ``cache`` samples, ``result`` one of ``hit``, ``semantic_hit``, ``miss`` (``hit`` when the
  cache only says it hit without saying how).

Buckets default to values around the usual RAG budgets (first token under 300 ms, whole answer
under 1 s). By default the exporter uses a registry of its own, so creating two exporters never
fails with "Duplicated timeseries"; pass ``registry=prometheus_client.REGISTRY`` to publish
through the process-wide registry (for ``start_http_server`` or a ``/metrics`` route).
:meth:`PrometheusExporter.render` gives the text exposition format, or OpenMetrics (which also
states each family's unit) with ``openmetrics=True``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from rag_optimize.errors import ConfigurationError
from rag_optimize.tracing import stages as _stages
from rag_optimize.tracing.exporters import require
from rag_optimize.tracing.tracker import LatencyTracker, SpanRecord

__all__ = ["CACHE_RESULTS", "DEFAULT_BUCKETS", "OTHER_STAGE", "PrometheusExporter"]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
OTHER_STAGE = "other"
#: The values of the ``result`` label of the cache counter.
CACHE_RESULTS: tuple[str, ...] = ("hit", "semantic_hit", "miss")
_KNOWN = frozenset(_stages.STAGES)


class PrometheusExporter:
    """Feeds a tracker's samples into Prometheus histograms and counters (see module doc)."""

    def __init__(
        self,
        tracker: LatencyTracker | None = None,
        registry: Any = None,
        namespace: str = "rag_optimize",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_custom_stages: int = 20,
    ) -> None:
        if (
            isinstance(max_custom_stages, bool)
            or not isinstance(max_custom_stages, int)
            or max_custom_stages < 0
        ):
            raise ConfigurationError(
                f"max_custom_stages must be an int >= 0, got {max_custom_stages!r}"
            )
        client: Any = require("prometheus_client", "PrometheusExporter", "prometheus")
        self._client = client
        self.max_custom_stages = max_custom_stages
        self.registry = client.CollectorRegistry() if registry is None else registry
        self.histogram = client.Histogram(
            "stage_latency",
            "Latency of RAG pipeline stages (cache, embedding, retrieval, rerank, "
            "generation, ttft, total)",
            labelnames=("stage", "outcome"),
            namespace=namespace,
            unit="seconds",
            registry=self.registry,
            buckets=tuple(buckets),
        )
        self.cache_lookups = client.Counter(
            "cache_lookups",
            "Semantic-cache lookups by result (hit, semantic_hit, miss)",
            labelnames=("result",),
            namespace=namespace,
            registry=self.registry,
        )
        self._custom: set[str] = set()
        self._lock = threading.Lock()
        self._trackers: list[LatencyTracker] = []
        if tracker is not None:
            self.attach(tracker)

    def attach(self, tracker: LatencyTracker) -> None:
        """Observe every sample ``tracker`` records from now on."""
        tracker.add_listener(self.observe)
        self._trackers.append(tracker)

    def detach(self) -> None:
        for tracker in self._trackers:
            tracker.remove_listener(self.observe)
        self._trackers.clear()

    def observe(self, sample: SpanRecord) -> None:
        """Listener: one histogram observation (and a cache count for a cache lookup)."""
        outcome = "error" if sample.attributes.get("error") else "ok"
        self.histogram.labels(stage=self._stage_label(sample.stage), outcome=outcome).observe(
            sample.seconds
        )
        if sample.stage == _stages.CACHE:
            result = self._cache_result(sample.attributes)
            if result is not None:
                self.cache_lookups.labels(result=result).inc()

    def _stage_label(self, stage: str) -> str:
        if stage in _KNOWN:
            return stage
        with self._lock:
            if stage in self._custom:
                return stage
            if len(self._custom) < self.max_custom_stages:
                self._custom.add(stage)
                return stage
        return OTHER_STAGE

    @staticmethod
    def _cache_result(attributes: Any) -> str | None:
        status = attributes.get("status")
        if isinstance(status, str) and status.lower() in CACHE_RESULTS:
            return status.lower()
        hit = attributes.get("hit")
        if isinstance(hit, bool):
            return "hit" if hit else "miss"
        return None

    def render(self, openmetrics: bool = False) -> str:
        """The registry in the Prometheus text exposition format (or OpenMetrics)."""
        if openmetrics:
            exposition = require(
                "prometheus_client.openmetrics.exposition", "PrometheusExporter", "prometheus"
            )
            return str(exposition.generate_latest(self.registry).decode("utf-8"))
        return str(self._client.generate_latest(self.registry).decode("utf-8"))
