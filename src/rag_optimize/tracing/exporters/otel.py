"""OpenTelemetry spans and metrics of stage latencies (``pip install 'rag-optimize[otel]'``).

Spans
-----
Each finished run becomes one trace: a root span ``rag.run`` covering ``total`` and, nested
under it as they ran, one span per recorded stage, with the real start and end times. The tree
comes from the tracker's span parentage (:attr:`SpanRecord.parent_id`): a ``retrieval`` span
holds its ``retrieval.sparse`` / ``retrieval.dense`` / ``retrieval.fusion`` children (and the
query's ``embeddings`` span inside the dense branch), a LangChain chain its retriever and chat
model. Samples that belong to no run form traces of their own as soon as their top span ends.
The root ``rag.run`` is created in the OpenTelemetry context current when the run finishes, so
inside an instrumented web request it becomes a child of the request's server span.

Which GenAI semantic conventions
--------------------------------
The GenAI conventions are in development and moved to their own repository
(``open-telemetry/semantic-conventions-genai``). Their transition rule (semantic-conventions
v1.37-v1.41, ``gen-ai-metrics.md``): an instrumentation that already emits an older version
SHOULD NOT change what it emits by default, and SHOULD read ``OTEL_SEMCONV_STABILITY_OPT_IN``,
a comma-separated list in which ``gen_ai_latest_experimental`` means "emit the latest
experimental version and not the old one". The rule's text names instrumentations emitting
v1.36.0 or prior; this package's exporter has emitted the v1.37-v1.41 shape since it first
existed (``gen_ai.provider.name``, one ``gen_ai.client.operation.duration``), and keeps it as
the default for the rule's reason (dashboards built on the default must not break on an
upgrade). So the default is :data:`LEGACY`: every GenAI operation a ``CLIENT`` span named
``"{operation} {model}"``, retrieval's top-k as ``gen_ai.request.top_k``, and one
``gen_ai.client.operation.duration`` histogram. ``gen_ai_latest_experimental`` in
``OTEL_SEMCONV_STABILITY_OPT_IN`` (other categories in the list, ``http`` say, are ignored;
blanks and case too), or ``semconv="latest"``, switches to the current conventions
(:data:`LATEST`, semantic-conventions-genai) and stops emitting the old ones, both names and
shapes: nothing is emitted twice.

==============  ==========================  =====  ===========================================
stage           span (name, kind)           op     histogram (seconds)
==============  ==========================  =====  ===========================================
``retrieval``   ``retrieval``, INTERNAL     r      ``gen_ai.retrieval.duration``
``embedding``   ``embeddings {model}``,     e      ``gen_ai.client.embeddings.duration``
                CLIENT
``generation``  ``chat {model}``, CLIENT    chat   ``gen_ai.client.inference.duration``,
                                                   ``gen_ai.client.inference.time_to_first_chunk``
``tool``        ``execute_tool {name}``,    tool
                INTERNAL
==============  ==========================  =====  ===========================================

(r = ``retrieval``, e = ``embeddings``, tool = ``execute_tool``.) The retrieval's children
(sparse, dense, fusion) are ``INTERNAL`` spans named by their stage and carry no
``gen_ai.operation.name``: they are parts of one retrieval, not retrievals of their own, so the
retrieval histogram counts each retrieval once. ``cache`` and ``rerank`` (no GenAI operation
is defined for them) are ``INTERNAL`` spans too; the cache span carries
``rag_optimize.cache.hit`` (the conventions define no cache attribute, so it is namespaced).

Sample attributes map onto span attributes: ``model`` -> ``gen_ai.request.model``,
``provider`` -> ``gen_ai.provider.name``, ``top_k`` -> ``gen_ai.retrieval.top_k`` (latest) or
``gen_ai.request.top_k`` (legacy), ``data_source`` -> ``gen_ai.data_source.id``, ``tool`` ->
``gen_ai.tool.name``, ``time_to_first_chunk`` (set by :class:`EventTimeline` on the first
streamed token) -> ``gen_ai.response.time_to_first_chunk`` with ``gen_ai.request.stream``,
``hit`` / ``status`` on the cache -> ``rag_optimize.cache.hit`` / ``rag_optimize.cache.status``.
A failed operation sets ``error.type`` (the exception's class name) and an error status. Every
span also carries ``rag_optimize.stage`` and ``rag_optimize.run_id``.

Metrics
-------
With a meter provider (the global one by default) the exporter records the histograms of the
table above as samples arrive, in seconds, with the explicit bucket boundaries the conventions
give: 0.01 s doubling to 81.92 s (:data:`DURATION_BUCKETS`) for every one of them. That is
written out for ``gen_ai.client.operation.duration`` (v1.41 ``gen-ai-metrics.md``),
``gen_ai.client.inference.duration`` and ``gen_ai.client.inference.time_to_first_chunk``
(``client-inference.md``) and ``gen_ai.client.embeddings.duration``
(``client-embeddings.md``); ``gen_ai.retrieval.duration``'s section of ``retrieval.md`` could
not be read here, and the same set is used (every GenAI duration histogram that states
boundaries states this one). The finer 1 ms - 10 s set some instrumentations use for time to
first chunk is the *server* metric's (``gen_ai.server.time_to_first_token``), not the client's.
Only the low-cardinality attributes ``gen_ai.operation.name``, ``gen_ai.request.model``,
``gen_ai.provider.name`` and ``error.type`` are metric attributes. ``metrics=False`` or
``spans=False`` turns one signal off.

Only ``opentelemetry-api`` is imported; where spans and metrics go (OTLP, console, the SDK's
in-memory exporter and reader in tests) is the application's providers. The tracker's clock is
monotonic; it is mapped to wall-clock nanoseconds with one offset taken when the exporter is
created.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rag_optimize.errors import ConfigurationError
from rag_optimize.tracing import stages as _stages
from rag_optimize.tracing.exporters import require
from rag_optimize.tracing.tracker import LatencyTracker, SpanRecord

__all__ = [
    "DURATION_BUCKETS",
    "LATEST",
    "LEGACY",
    "OPT_IN_ENV",
    "OPT_IN_LATEST",
    "ROOT_SPAN_NAME",
    "TTFC_BUCKETS",
    "OpenTelemetryExporter",
    "Semconv",
    "StageConvention",
    "semconv_from_env",
]

OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
OPT_IN_LATEST = "gen_ai_latest_experimental"
ROOT_SPAN_NAME = "rag.run"

#: The GenAI conventions' buckets for operation durations (seconds).
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
#: The GenAI conventions' buckets for the client's time to first chunk (seconds): the same
#: boundaries as durations (``client-inference.md``).
TTFC_BUCKETS: tuple[float, ...] = DURATION_BUCKETS

SemconvName = Literal["legacy", "latest"]


@dataclass(frozen=True)
class StageConvention:
    """How one stage is exported: GenAI operation, span kind, histogram names."""

    operation: str | None
    kind: str  # "CLIENT" or "INTERNAL"
    duration_metric: str | None = None
    ttfc_metric: str | None = None


@dataclass(frozen=True)
class Semconv:
    """One version of the conventions: per-stage rules and the retrieval top-k attribute."""

    name: SemconvName
    stages: Mapping[str, StageConvention]
    top_k_attribute: str
    name_with_data_source: bool

    def of(self, stage: str) -> StageConvention:
        return self.stages.get(stage, _INTERNAL)


_INTERNAL = StageConvention(None, "INTERNAL")
_LEGACY_RETRIEVAL_CHILD = StageConvention("retrieval", "CLIENT")

#: What this package emitted before the opt-in existed (semantic-conventions <= 1.41 names).
LEGACY = Semconv(
    name="legacy",
    stages={
        _stages.EMBEDDING: StageConvention(
            "embeddings", "CLIENT", "gen_ai.client.operation.duration"
        ),
        _stages.RETRIEVAL: StageConvention(
            "retrieval", "CLIENT", "gen_ai.client.operation.duration"
        ),
        _stages.SPARSE: _LEGACY_RETRIEVAL_CHILD,
        _stages.DENSE: _LEGACY_RETRIEVAL_CHILD,
        _stages.FUSION: _LEGACY_RETRIEVAL_CHILD,
        _stages.GENERATION: StageConvention(
            "chat",
            "CLIENT",
            "gen_ai.client.operation.duration",
            "gen_ai.client.operation.time_to_first_chunk",
        ),
        _stages.TOOL: StageConvention("execute_tool", "CLIENT"),
    },
    top_k_attribute="gen_ai.request.top_k",
    name_with_data_source=True,
)

#: semantic-conventions-genai v0.1.0: client-embeddings.md, client-inference.md, retrieval.md.
LATEST = Semconv(
    name="latest",
    stages={
        _stages.EMBEDDING: StageConvention(
            "embeddings", "CLIENT", "gen_ai.client.embeddings.duration"
        ),
        _stages.RETRIEVAL: StageConvention("retrieval", "INTERNAL", "gen_ai.retrieval.duration"),
        _stages.GENERATION: StageConvention(
            "chat",
            "CLIENT",
            "gen_ai.client.inference.duration",
            "gen_ai.client.inference.time_to_first_chunk",
        ),
        _stages.TOOL: StageConvention("execute_tool", "INTERNAL"),
    },
    top_k_attribute="gen_ai.retrieval.top_k",
    name_with_data_source=False,
)

_METRIC_HELP = {
    "gen_ai.client.operation.duration": "GenAI operation duration.",
    "gen_ai.client.operation.time_to_first_chunk": "Time to receive the first chunk.",
    "gen_ai.client.inference.duration": "GenAI client inference operation duration.",
    "gen_ai.client.inference.time_to_first_chunk": "Time to receive the first chunk.",
    "gen_ai.client.embeddings.duration": "GenAI client embeddings operation duration.",
    "gen_ai.retrieval.duration": "Duration of a retrieval operation.",
}


def semconv_from_env(environ: Mapping[str, str] | None = None) -> Semconv:
    """:data:`LATEST` when ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists ``gen_ai_latest_experimental``,
    else :data:`LEGACY` (the list is comma-separated; blanks and case are ignored)."""
    value = (os.environ if environ is None else environ).get(OPT_IN_ENV, "")
    tokens = {token.strip().lower() for token in value.split(",")}
    return LATEST if OPT_IN_LATEST in tokens else LEGACY


def _check_semconv(semconv: str | Semconv | None) -> Semconv:
    if semconv is None:
        return semconv_from_env()
    if isinstance(semconv, Semconv):
        return semconv
    if semconv == "latest":
        return LATEST
    if semconv == "legacy":
        return LEGACY
    raise ConfigurationError(f"semconv must be 'latest', 'legacy' or None, got {semconv!r}")


class OpenTelemetryExporter:
    """Turns a tracker's samples into nested OpenTelemetry spans and GenAI histograms."""

    def __init__(
        self,
        tracker: LatencyTracker | None = None,
        tracer_provider: Any = None,
        max_pending_runs: int = 1_000,
        *,
        meter_provider: Any = None,
        semconv: str | Semconv | None = None,
        spans: bool = True,
        metrics: bool = True,
    ) -> None:
        self.semconv = _check_semconv(semconv)
        self._trace: Any = require("opentelemetry.trace", "OpenTelemetryExporter", "otel")
        self._tracer = self._trace.get_tracer("rag_optimize", tracer_provider=tracer_provider)
        self._kinds = {
            "CLIENT": self._trace.SpanKind.CLIENT,
            "INTERNAL": self._trace.SpanKind.INTERNAL,
        }
        self._spans = spans
        self._histograms: dict[str, Any] = {}
        if metrics:
            self._histograms = self._create_histograms(meter_provider)
        self._clock = tracker.clock if tracker is not None else time.perf_counter
        self._offset_ns = time.time_ns() - int(self._clock() * 1e9)
        self._pending: OrderedDict[str, list[SpanRecord]] = OrderedDict()
        self._orphans: OrderedDict[int, list[SpanRecord]] = OrderedDict()
        self._emitted: OrderedDict[int, Any] = OrderedDict()  # span id -> OTel span context
        self._max_pending = max_pending_runs
        self._lock = threading.Lock()
        self._tracker = tracker
        if tracker is not None:
            tracker.add_listener(self.export)

    def _create_histograms(self, meter_provider: Any) -> dict[str, Any]:
        metrics: Any = require("opentelemetry.metrics", "OpenTelemetryExporter", "otel")
        meter = metrics.get_meter("rag_optimize", meter_provider=meter_provider)
        names: dict[str, tuple[float, ...]] = {}
        for convention in self.semconv.stages.values():
            if convention.duration_metric:
                names[convention.duration_metric] = DURATION_BUCKETS
            if convention.ttfc_metric:
                names[convention.ttfc_metric] = TTFC_BUCKETS
        return {
            name: meter.create_histogram(
                name,
                unit="s",
                description=_METRIC_HELP.get(name, name),
                explicit_bucket_boundaries_advisory=list(buckets),
            )
            for name, buckets in names.items()
        }

    def detach(self) -> None:
        if self._tracker is not None:
            self._tracker.remove_listener(self.export)
            self._tracker = None

    # ------------------------------------------------------------------ listener
    def export(self, sample: SpanRecord) -> None:
        """Listener: record the sample's histograms; buffer its span until its trace is whole."""
        if self._histograms:
            self._record_metrics(sample)
        if not self._spans:
            return
        if sample.run_id is None:
            self._export_outside_runs(sample)
            return
        if sample.stage != _stages.TOTAL:
            with self._lock:
                self._pending.setdefault(sample.run_id, []).append(sample)
                overflow: list[SpanRecord] = []
                while len(self._pending) > self._max_pending:
                    overflow.extend(self._pending.popitem(last=False)[1])
            for orphan in overflow:  # run never finished: export its stages on their own
                self._emit_tree(orphan, [], None)
            return
        with self._lock:
            children = self._pending.pop(sample.run_id, [])
        self._emit_tree(sample, children, None, root_name=ROOT_SPAN_NAME)

    def _export_outside_runs(self, sample: SpanRecord) -> None:
        """A span of no run: wait for its parent, or emit its subtree when it is a top span."""
        with self._lock:
            descendants = self._collect(sample.span_id)
            parent = sample.parent_id
            if parent is not None and parent not in self._emitted:
                self._orphans.setdefault(parent, []).extend([sample, *descendants])
                overflow: list[SpanRecord] = []
                while len(self._orphans) > self._max_pending:
                    overflow.extend(self._orphans.popitem(last=False)[1])
                parent_context = None
                emit = False
            else:
                parent_context = self._emitted.get(parent) if parent is not None else None
                emit = True
                overflow = []
        for orphan in overflow:
            self._emit_tree(orphan, [], None)
        if emit:
            self._emit_tree(sample, descendants, parent_context)

    def _collect(self, span_id: int | None) -> list[SpanRecord]:
        """Buffered samples below ``span_id`` (lock held), removed from the buffer."""
        found: list[SpanRecord] = []
        todo = [span_id]
        while todo:
            current = todo.pop()
            if current is None:
                continue
            children = self._orphans.pop(current, [])
            found.extend(children)
            todo.extend(child.span_id for child in children)
        return found

    # ------------------------------------------------------------------ spans
    def _emit_tree(
        self,
        root: SpanRecord,
        samples: Iterable[SpanRecord],
        parent_context: Any,
        root_name: str | None = None,
    ) -> None:
        """Emit ``root`` and ``samples`` nested by parent id (unknown parents: under root)."""
        members = list(samples)
        known = {s.span_id for s in members} | {root.span_id}
        children: dict[int | None, list[SpanRecord]] = {}
        for s in members:
            parent = s.parent_id if s.parent_id in known and s.parent_id != s.span_id else None
            children.setdefault(root.span_id if parent is None else parent, []).append(s)
        context = None
        if parent_context is not None:
            context = self._trace.set_span_in_context(self._trace.NonRecordingSpan(parent_context))
        self._emit(root, context, children, root_name)

    def _emit(
        self,
        sample: SpanRecord,
        context: Any,
        children: Mapping[int | None, list[SpanRecord]],
        name: str | None = None,
    ) -> None:
        if name is not None:  # the run's root
            span = self._tracer.start_span(
                name,
                context=context,
                start_time=self._ns(sample.start),
                attributes={
                    "rag_optimize.run_id": str(sample.run_id),
                    "rag_optimize.stage": "total",
                },
            )
            error = None
        else:
            span_name, kind, attributes, error = self._describe(sample)
            span = self._tracer.start_span(
                span_name,
                context=context,
                kind=self._kinds[kind],
                start_time=self._ns(sample.start),
                attributes=attributes,
            )
        if sample.span_id is not None:
            with self._lock:
                self._emitted[sample.span_id] = span.get_span_context()
                while len(self._emitted) > 4 * self._max_pending:
                    self._emitted.popitem(last=False)
        inner = self._trace.set_span_in_context(span)
        for child in sorted(children.get(sample.span_id, ()), key=lambda s: s.start):
            self._emit(child, inner, children)
        if error:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        span.end(end_time=self._ns(sample.end))

    def _describe(self, sample: SpanRecord) -> tuple[str, str, dict[str, Any], str | None]:
        """Span name, kind, attributes and error type of one sample under the conventions."""
        convention = self.semconv.of(sample.stage)
        given = sample.attributes
        attributes: dict[str, Any] = {"rag_optimize.stage": sample.stage}
        if sample.run_id is not None:
            attributes["rag_optimize.run_id"] = sample.run_id
        operation = convention.operation
        name = operation or sample.stage
        model = given.get("model")
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
            if model:
                attributes["gen_ai.request.model"] = str(model)
            if given.get("provider"):
                attributes["gen_ai.provider.name"] = str(given["provider"])
        if operation == "retrieval":
            top_k = given.get("top_k")
            if isinstance(top_k, int) and not isinstance(top_k, bool):
                attributes[self.semconv.top_k_attribute] = top_k
            source = given.get("data_source")
            if source:
                attributes["gen_ai.data_source.id"] = str(source)
                if self.semconv.name_with_data_source:
                    name = f"{name} {source}"
        elif operation == "execute_tool":
            if given.get("tool"):
                attributes["gen_ai.tool.name"] = str(given["tool"])
                name = f"{name} {given['tool']}"
        elif operation is not None and model:
            name = f"{name} {model}"
        ttfc = given.get("time_to_first_chunk")
        if operation == "chat" and isinstance(ttfc, (int, float)):
            attributes["gen_ai.response.time_to_first_chunk"] = float(ttfc)
            attributes["gen_ai.request.stream"] = True
        if sample.stage == _stages.CACHE:
            if isinstance(given.get("hit"), bool):
                attributes["rag_optimize.cache.hit"] = given["hit"]
            if given.get("status"):
                attributes["rag_optimize.cache.status"] = str(given["status"])
        elif model and operation is None:
            attributes["rag_optimize.model"] = str(model)
        error = given.get("error")
        if error:
            attributes["error.type"] = str(error)
        return name, convention.kind, attributes, str(error) if error else None

    # ------------------------------------------------------------------ metrics
    def _record_metrics(self, sample: SpanRecord) -> None:
        convention = self.semconv.of(sample.stage)
        if convention.duration_metric is None or convention.operation is None:
            return
        given = sample.attributes
        attributes: dict[str, Any] = {"gen_ai.operation.name": convention.operation}
        if given.get("model"):
            attributes["gen_ai.request.model"] = str(given["model"])
        if given.get("provider"):
            attributes["gen_ai.provider.name"] = str(given["provider"])
        if given.get("error"):
            attributes["error.type"] = str(given["error"])
        self._histograms[convention.duration_metric].record(sample.seconds, attributes)
        ttfc = given.get("time_to_first_chunk")
        if convention.ttfc_metric is not None and isinstance(ttfc, (int, float)):
            attributes.pop("error.type", None)
            self._histograms[convention.ttfc_metric].record(float(ttfc), attributes)

    def _ns(self, clock_seconds: float) -> int:
        return self._offset_ns + int(clock_seconds * 1e9)
