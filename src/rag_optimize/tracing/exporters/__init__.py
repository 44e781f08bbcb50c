"""Optional exporters: Prometheus histograms and OpenTelemetry spans.

Each one imports its library only when constructed, so ``rag_optimize.tracing`` works without
either installed (extras ``rag-optimize[prometheus]`` and ``rag-optimize[otel]``).
"""
