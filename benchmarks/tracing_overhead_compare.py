"""Tracing overhead of two revisions of the package, side by side, interleaved.

Runs the same measurement code against two source trees (``--base`` and ``--head``, each a
directory holding ``src/`` and ``integrations/``), alternating which goes first:

* ``benchmarks/tracing_overhead.py`` (core span / record / timeline pair, LangChain handler,
  LlamaIndex handler), copied to a temporary directory so it never overwrites the committed
  results;
* an exporter run: one traced request of 8 stages (a run with cache, retrieval and its
  sparse / dense / fusion children, embedding, generation) through ``OpenTelemetryExporter``
  into the OpenTelemetry SDK (a TracerProvider with an in-memory span exporter, and with
  ``--head`` exporters that take one, a MeterProvider with an in-memory reader), against the
  same request with no exporter attached.

* a CPU-time run (``time.thread_time``, the minimum of 30 rounds): one ``tracker.span``
  enter + exit and one ``tracker.record``, which leaves out the time the process waits for
  a core on a loaded machine.

Each side is a separate process (two revisions of one package cannot share one), so the
comparison is of medians over ``--pairs`` interleaved process pairs. Writes
benchmarks/results/tracing_overhead_compare.json with every run and the load average.

Run: .venv/bin/python benchmarks/tracing_overhead_compare.py --base /tmp/base --head . [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "tracing_overhead_compare.json"

EXPORTER_SNIPPET = textwrap.dedent(
    """
    import inspect, json, statistics, sys, time
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from rag_optimize.tracing import LatencyTracker, stages
    from rag_optimize.tracing.exporters.otel import OpenTelemetryExporter

    n, n_rounds = int(sys.argv[1]), int(sys.argv[2])

    def request(tracker):
        with tracker.run():
            with tracker.span(stages.CACHE, attributes={"hit": False}):
                pass
            with tracker.span(stages.RETRIEVAL, attributes={"top_k": 4}):
                for stage in (stages.SPARSE, stages.DENSE, stages.FUSION):
                    with tracker.span(stage):
                        pass
            with tracker.span(stages.EMBEDDING, attributes={"model": "m"}):
                pass
            with tracker.span(stages.GENERATION, attributes={"model": "m"}):
                pass

    def timed(tracker):
        t0 = time.perf_counter()
        for _ in range(n):
            request(tracker)
        return (time.perf_counter() - t0) / n

    plain = LatencyTracker()
    traced = LatencyTracker()
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    options = {"tracer_provider": provider}
    if "meter_provider" in inspect.signature(OpenTelemetryExporter).parameters:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        options["meter_provider"] = MeterProvider(metric_readers=[InMemoryMetricReader()])
    OpenTelemetryExporter(traced, **options)
    samples = {"plain": [], "otel": []}
    for _ in range(n_rounds):
        samples["plain"].append(timed(plain))
        samples["otel"].append(timed(traced))
        memory.clear()
    medians = {k: statistics.median(v) for k, v in samples.items()}
    print(json.dumps({"request_s": medians, "spans_per_request": 9}))
    """
)


CPU_SNIPPET = textwrap.dedent(
    """
    import json, sys, time
    from rag_optimize.tracing import LatencyTracker

    n, n_rounds = int(sys.argv[1]), int(sys.argv[2])
    tracker = LatencyTracker()
    run = tracker.start_run("cpu")

    def span():
        t0 = time.thread_time()
        for _ in range(n):
            with tracker.span("embedding", run_id=run):
                pass
        return (time.thread_time() - t0) / n * 1e6

    def record():
        t0 = time.thread_time()
        for _ in range(n):
            tracker.record("embedding", 0.001, run_id=run)
        return (time.thread_time() - t0) / n * 1e6

    spans, records = [], []
    for _ in range(n_rounds):
        spans.append(span())
        records.append(record())
    print(json.dumps({"span_cpu_us": min(spans), "record_cpu_us": min(records)}))
    """
)


def run_side(root: Path, quick: bool, workdir: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{root / 'src'}:{root / 'integrations/langchain'}:"
        f"{root / 'integrations/llama-index'}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    script = workdir / "benchmarks" / "tracing_overhead.py"
    args = [sys.executable, str(script)] + (["--quick"] if quick else [])
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    overhead = json.loads(
        (workdir / "benchmarks" / "results" / "tracing_overhead.json").read_text()
    )
    n, n_rounds = (300, 5) if quick else (3000, 9)
    out = subprocess.run(
        [sys.executable, "-c", EXPORTER_SNIPPET, str(n), str(n_rounds)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu = subprocess.run(
        [sys.executable, "-c", CPU_SNIPPET, "20000", "30"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {"tracing_overhead": overhead, "exporter": json.loads(out), "cpu": json.loads(cpu)}


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    def med(path: tuple[str, ...]) -> float:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value[key]
            values.append(float(value))
        return statistics.median(values)

    core = ("tracing_overhead", "core")
    return {
        "core_span_us": med((*core, "span_us")),
        "core_record_us": med((*core, "record_us")),
        "core_timeline_pair_us": med((*core, "timeline_start_end_pair_us")),
        "langchain_handler_direct_per_event_us": med(
            ("tracing_overhead", "langchain", "handler_direct_per_event_us")
        ),
        "llama_index_handler_per_callback_us": med(
            ("tracing_overhead", "llama_index", "handler_overhead_per_callback_us")
        ),
        "cpu_span_us": med(("cpu", "span_cpu_us")),
        "cpu_record_us": med(("cpu", "record_cpu_us")),
        "exporter_plain_request_us": med(("exporter", "request_s", "plain")) * 1e6,
        "exporter_otel_request_us": med(("exporter", "request_s", "otel")) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--head", type=Path, default=HERE.parent)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "benchmarks").mkdir()
        shutil.copy(HERE / "tracing_overhead.py", workdir / "benchmarks" / "tracing_overhead.py")
        for i in range(args.pairs):
            order = ("base", "head") if i % 2 == 0 else ("head", "base")
            for side in order:
                root = args.base if side == "base" else args.head
                runs[side].append(run_side(root.resolve(), args.quick, workdir))
                print(f"pair {i + 1}/{args.pairs}: {side} done", file=sys.stderr)
    base, head = summary(runs["base"]), summary(runs["head"])
    result = {
        "base": str(args.base),
        "head": str(args.head),
        "pairs": args.pairs,
        "quick": args.quick,
        "median": {"base": base, "head": head},
        "ratio_head_over_base": {k: head[k] / base[k] for k in base if base[k]},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median", "ratio_head_over_base", "load_average")},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
