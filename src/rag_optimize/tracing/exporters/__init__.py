"""Optional exporters: Prometheus metrics (``prometheus.PrometheusExporter``) and OpenTelemetry
nested spans and GenAI histograms (``otel.OpenTelemetryExporter``).

Each one imports its library only when constructed, so ``rag_optimize.tracing`` works without
either installed (extras ``rag-optimize[prometheus]`` and ``rag-optimize[otel]``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, feature: str, extra: str) -> ModuleType:
    """Import an optional dependency, or raise ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs the '{module}' module: pip install 'rag-optimize[{extra}]'"
        ) from exc
