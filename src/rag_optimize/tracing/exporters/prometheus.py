"""Prometheus histograms of stage latencies (``pip install 'rag-optimize[prometheus]'``).

One histogram, ``<namespace>_stage_latency_seconds{stage="..."}``, is observed for every
sample a tracker records. Buckets default to values around the usual RAG budgets (first token
under 300 ms, whole answer under 1 s). By default the exporter uses a registry of its own, so
creating two exporters never fails with "Duplicated timeseries"; pass
``registry=prometheus_client.REGISTRY`` to publish through the process-wide registry (for
``start_http_server`` or a ``/metrics`` route).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_optimize.tracing.exporters import require
from rag_optimize.tracing.tracker import LatencyTracker, SpanRecord

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class PrometheusExporter:
    """Feeds a tracker's samples into a Prometheus histogram labelled by stage."""

    def __init__(
        self,
        tracker: LatencyTracker | None = None,
        registry: Any = None,
        namespace: str = "rag_optimize",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        client: Any = require("prometheus_client", "PrometheusExporter", "prometheus")
        self._client = client
        self.registry = client.CollectorRegistry() if registry is None else registry
        self.histogram = client.Histogram(
            "stage_latency_seconds",
            "Latency of RAG pipeline stages (cache, embedding, retrieval, rerank, "
            "generation, ttft, total)",
            labelnames=("stage",),
            namespace=namespace,
            registry=self.registry,
            buckets=tuple(buckets),
        )
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
        self.histogram.labels(stage=sample.stage).observe(sample.seconds)

    def render(self) -> str:
        """The registry in the Prometheus text exposition format."""
        return str(self._client.generate_latest(self.registry).decode("utf-8"))
