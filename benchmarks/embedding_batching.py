"""Throughput and latency of BatchingEmbedder vs the bare model, with the real local model.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/embedding_batching.py \
        [--backends torch,onnx] [--rounds 2] [--requests 256]

For each backend of the packaged all-MiniLM-L6-v2 (``LocalEmbedder``: ``torch`` =
sentence-transformers float32, ``onnx`` = int8 onnxruntime), in one process:

* the model's own ceiling: texts/s when called directly with lists of 32 vs one text at a time;
* closed-loop load at 1, 8, 32 and 128 concurrent caller threads: each caller embeds its next
  text as soon as the previous one returned; bare (``model.embed_query`` from every thread)
  vs batched (``BatchingEmbedder(model).embed_query``), interleaved round by round; texts/s
  and per-call latency p50/p99;
* the same at 32 concurrent asyncio tasks (``aembed_query`` vs ``asyncio.to_thread``);
* a stream with 50% repeated texts (every text twice, shuffled) at 32 callers: batched with
  its dedup and cache, vs the batched embedder on a stream of the same length without
  repeats (what the stream would cost without dedup and cache).

Targets (issue 5): at 32 callers, batched texts/s >= 0.85 x ceiling ratio x bare texts/s and
batched p99 <= bare p99; repeats give >= 1.8x on top. Texts: WikiQA questions and short
corpus sentences from $RAG_OPTIMIZE_DATA (default ../shared/data beside the checkout).
Writes benchmarks/results/embedding_batching.json. Timings come from a shared 2-core machine:
read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rag_optimize.embedding.batching import BatchingEmbedder  # noqa: E402
from rag_optimize.embedding.local import LocalEmbedder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAG_OPTIMIZE_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "results" / "embedding_batching.json"
CONCURRENCY = [1, 8, 32, 128]
SMALL = {"max_batch_size": 4, "max_in_flight": 8}
BATCH: dict[str, Any] = {"max_batch_size": 32, "max_wait_ms": 5.0, "max_in_flight": 1}


def load_texts() -> list[str]:
    """WikiQA questions, then corpus sentences of query length (6-30 words), deduplicated."""
    texts: dict[str, None] = {}
    for name in ("queries.jsonl", "corpus.jsonl"):
        with open(DATA / "wikiqa" / name, encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["text"].strip()
                if 6 <= len(text.split()) <= 30:
                    texts[text] = None
    pool = list(texts)
    random.Random(0).shuffle(pool)  # questions and sentences mixed evenly
    return pool


class TextSource:
    """Hands out fresh texts so no run sees another run's texts."""

    def __init__(self, texts: list[str]) -> None:
        self._texts = texts
        self._next = 0

    def take(self, n: int) -> list[str]:
        if self._next + n > len(self._texts):
            self._next = 0
        out = self._texts[self._next : self._next + n]
        self._next += n
        return out


def summarise(latencies: list[float], elapsed: float, cpu: float) -> dict[str, float]:
    lat = np.array(latencies)
    return {
        "requests": len(latencies),
        "texts_per_s": len(latencies) / elapsed,
        "texts_per_cpu_s": len(latencies) / max(cpu, 1e-9),
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
    }


def closed_loop_threads(
    call: Callable[[str], object], texts: list[str], concurrency: int
) -> dict[str, float]:
    """``concurrency`` threads, each embedding its next text when the previous returned."""
    counter = itertools.count()
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def caller() -> None:
        mine: list[float] = []
        start.wait()
        while (i := next(counter)) < len(texts):
            began = time.perf_counter()
            call(texts[i])
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=caller) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    return summarise(latencies, time.perf_counter() - began, time.process_time() - cpu)


def closed_loop_tasks(
    call: Callable[[str], Awaitable[object]], texts: list[str], concurrency: int
) -> dict[str, float]:
    """The same with ``concurrency`` asyncio tasks on one event loop."""

    async def main() -> dict[str, float]:
        counter = itertools.count()
        latencies: list[float] = []

        async def caller() -> None:
            while (i := next(counter)) < len(texts):
                began = time.perf_counter()
                await call(texts[i])
                latencies.append(time.perf_counter() - began)

        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return summarise(latencies, time.perf_counter() - began, time.process_time() - cpu)

    return asyncio.run(main())


def ceiling(model: LocalEmbedder, texts: list[str]) -> dict[str, float]:
    """Direct calls, one text at a time vs lists of 32, from one worker thread (like a
    caller thread or the batcher's worker: torch runs differently in the main thread)."""
    out: dict[str, float] = {}

    def measure() -> None:
        for name, calls in (
            ("single", [[t] for t in texts]),
            ("batch32", [texts[i : i + 32] for i in range(0, len(texts), 32)]),
        ):
            began, cpu = time.perf_counter(), time.process_time()
            for call in calls:
                if len(call) == 1:
                    model.embed_query(call[0])
                else:
                    model.embed_documents(call)
            out[f"{name}_texts_per_s"] = len(texts) / (time.perf_counter() - began)
            out[f"{name}_texts_per_cpu_s"] = len(texts) / (time.process_time() - cpu)

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    return out


def batched_run(
    model: LocalEmbedder,
    texts: list[str],
    concurrency: int,
    asynchronous: bool = False,
    **options: Any,
) -> dict[str, Any]:
    with BatchingEmbedder(model, **{**BATCH, **options}) as batcher:
        if asynchronous:
            result: dict[str, Any] = closed_loop_tasks(batcher.aembed_query, texts, concurrency)
        else:
            result = closed_loop_threads(batcher.embed_query, texts, concurrency)
        stats = batcher.stats()
    result["mean_batch_size"] = stats.mean_batch_size
    result["batches"] = stats.batches
    result["cache_hits"] = stats.cache_hits
    result["dedup_hits"] = stats.dedup_hits
    result["queue_wait_p99_ms"] = stats.queue_wait_p99 * 1e3
    return result


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def bench_backend(backend: str, pool: list[str], rounds: int, requests: int) -> dict[str, Any]:
    began = time.perf_counter()
    model = LocalEmbedder(backend=backend)
    load_s = time.perf_counter() - began
    source = TextSource(pool)
    model.embed_documents(source.take(64))  # warm up

    ceilings = [ceiling(model, source.take(256)) for _ in range(rounds)]
    ceil = median_of(ceilings)
    ceil["ratio"] = ceil["batch32_texts_per_s"] / ceil["single_texts_per_s"]
    ceil["cpu_ratio"] = ceil["batch32_texts_per_cpu_s"] / ceil["single_texts_per_cpu_s"]
    print(f"[{backend}] ceiling: {ceil}", flush=True)

    def size(c: int) -> int:
        return max(requests, 8 * c)

    rows = []
    for c in CONCURRENCY:
        bare_runs, batched_runs = [], []
        for r in range(rounds):
            texts = source.take(size(c))  # the same texts for both, order alternating
            for which in ("bare", "batched") if r % 2 == 0 else ("batched", "bare"):
                if which == "bare":
                    bare_runs.append(closed_loop_threads(model.embed_query, texts, c))
                else:
                    batched_runs.append(batched_run(model, texts, c))
        row = {"concurrency": c, "callers": "threads"}
        row["bare"], row["batched"] = median_of(bare_runs), median_of(batched_runs)
        row["speedup"] = row["batched"]["texts_per_s"] / row["bare"]["texts_per_s"]
        rows.append(row)
        print(f"[{backend}] c={c}: {row}", flush=True)

    # Small batches, several in flight: for a runtime that overlaps concurrent calls (ONNX).
    bare_runs, batched_runs = [], []
    for _ in range(rounds):
        texts = source.take(size(32))
        bare_runs.append(closed_loop_threads(model.embed_query, texts, 32))
        batched_runs.append(batched_run(model, texts, 32, **SMALL))
    small_row = {"concurrency": 32, "callers": "threads", "options": SMALL}
    small_row["bare"], small_row["batched"] = median_of(bare_runs), median_of(batched_runs)
    small_row["speedup"] = small_row["batched"]["texts_per_s"] / small_row["bare"]["texts_per_s"]
    rows.append(small_row)
    print(f"[{backend}] c=32 {SMALL}: {small_row}", flush=True)

    bare_runs, batched_runs = [], []

    async def bare_async(text: str) -> object:
        return await asyncio.to_thread(model.embed_query, text)

    for _ in range(rounds):
        texts = source.take(size(32))
        bare_runs.append(closed_loop_tasks(bare_async, texts, 32))
        batched_runs.append(batched_run(model, texts, 32, asynchronous=True))
    async_row = {"concurrency": 32, "callers": "asyncio tasks"}
    async_row["bare"], async_row["batched"] = median_of(bare_runs), median_of(batched_runs)
    async_row["speedup"] = async_row["batched"]["texts_per_s"] / async_row["bare"]["texts_per_s"]
    rows.append(async_row)
    print(f"[{backend}] async c=32: {async_row}", flush=True)

    repeat_runs, unique_runs, bare_repeat_runs = [], [], []
    rng = random.Random(5)
    for _ in range(rounds):
        distinct = source.take(size(32) // 2)
        stream = distinct * 2
        rng.shuffle(stream)
        # the unique stream: the same distinct texts plus as many fresh ones
        unique = distinct + source.take(len(distinct))
        rng.shuffle(unique)
        repeat_runs.append(batched_run(model, stream, 32))
        unique_runs.append(batched_run(model, unique, 32))
        bare_repeat_runs.append(closed_loop_threads(model.embed_query, stream, 32))
    repeats = {
        "concurrency": 32,
        "batched_50pct_repeats": median_of(repeat_runs),
        "batched_unique": median_of(unique_runs),
        "bare_50pct_repeats": median_of(bare_repeat_runs),
    }
    repeats["gain_over_batched_unique"] = (
        repeats["batched_50pct_repeats"]["texts_per_s"] / repeats["batched_unique"]["texts_per_s"]
    )
    repeats["gain_over_bare"] = (
        repeats["batched_50pct_repeats"]["texts_per_s"]
        / repeats["bare_50pct_repeats"]["texts_per_s"]
    )
    print(f"[{backend}] repeats: {repeats}", flush=True)

    at32 = rows[CONCURRENCY.index(32)]
    needed = 0.85 * ceil["ratio"] * at32["bare"]["texts_per_s"]
    targets = {
        "throughput_at_32_needed": needed,
        "throughput_at_32_got": at32["batched"]["texts_per_s"],
        "throughput_at_32_met": at32["batched"]["texts_per_s"] >= needed,
        "throughput_vs_single_ceiling": at32["batched"]["texts_per_s"]
        / (0.85 * ceil["ratio"] * ceil["single_texts_per_s"]),
        "p99_at_32_met": at32["batched"]["p99_ms"] <= at32["bare"]["p99_ms"],
        "repeats_gain_met": repeats["gain_over_batched_unique"] >= 1.8,
    }
    print(f"[{backend}] targets: {targets}", flush=True)
    return {
        "backend": backend,
        "load_s": load_s,
        "ceiling": ceil,
        "load": rows,
        "repeats": repeats,
        "targets": targets,
    }


def markdown(results: dict[str, Any]) -> str:
    """The tables for BENCHMARKS.md, from a results dict."""
    lines = []
    for b in results["backends"]:
        c = b["ceiling"]
        lines += [
            f"**{b['backend']}** - model ceiling (direct calls, one worker thread): "
            f"{c['single_texts_per_s']:.1f} texts/s one at a time, "
            f"{c['batch32_texts_per_s']:.1f} in lists of 32 (x{c['ratio']:.2f} wall; "
            f"x{c['cpu_ratio']:.2f} per CPU-second: {c['single_texts_per_cpu_s']:.0f} vs "
            f"{c['batch32_texts_per_cpu_s']:.0f}).",
            "",
            "| callers | bare texts/s | batched texts/s | x | bare texts/CPU-s | batched "
            "texts/CPU-s | bare p50 / p99 ms | batched p50 / p99 ms | mean batch |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in b["load"]:
            bare, bat = r["bare"], r["batched"]
            kind = "" if r["callers"] == "threads" else " tasks"
            if "options" in r:
                kind += f" (batch {r['options']['max_batch_size']}, "
                kind += f"{r['options']['max_in_flight']} in flight)"
            lines.append(
                f"| {r['concurrency']}{kind} | {bare['texts_per_s']:.1f} | "
                f"{bat['texts_per_s']:.1f} | {r['speedup']:.2f} | {bare['texts_per_cpu_s']:.0f} | "
                f"{bat['texts_per_cpu_s']:.0f} | {bare['p50_ms']:.0f} / {bare['p99_ms']:.0f} | "
                f"{bat['p50_ms']:.0f} / {bat['p99_ms']:.0f} | {bat['mean_batch_size']:.1f} |"
            )
        rep = b["repeats"]
        rr, ru = rep["batched_50pct_repeats"], rep["batched_unique"]
        t = b["targets"]
        lines += [
            "",
            f"50% repeated texts, 32 callers: {rr['texts_per_s']:.1f} texts/s "
            f"({rr['cache_hits']:.0f} cache hits, {rr['dedup_hits']:.0f} dedup hits of "
            f"{rr['requests']:.0f}) vs {ru['texts_per_s']:.1f} on a stream without repeats: "
            f"x{rep['gain_over_batched_unique']:.2f} (x{rep['gain_over_bare']:.2f} over the bare "
            "model on the repeat stream).",
            "",
            f"Targets at 32 callers: throughput >= 0.85 x ceiling x bare = "
            f"{t['throughput_at_32_needed']:.1f} texts/s: got {t['throughput_at_32_got']:.1f} "
            f"({'met' if t['throughput_at_32_met'] else 'NOT met'}); p99 <= bare p99: "
            f"{'met' if t['p99_at_32_met'] else 'NOT met'}; repeats >= x1.8: "
            f"{'met' if t['repeats_gain_met'] else 'NOT met'}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=256, help="texts per run (min 8 x c)")
    parser.add_argument("--max-in-flight", type=int, default=BATCH["max_in_flight"])
    parser.add_argument("--max-wait-ms", type=float, default=BATCH["max_wait_ms"])
    parser.add_argument(
        "--report", action="store_true", help="only print the tables of the last run"
    )
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads(OUT.read_text(encoding="utf-8"))))
        return
    BATCH.update(max_in_flight=args.max_in_flight, max_wait_ms=args.max_wait_ms)
    pool = load_texts()
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "shared 2-core machine; other jobs ran at the same time",
        },
        "settings": {**BATCH, "rounds": args.rounds, "requests": args.requests},
        "backends": [
            bench_backend(b, pool, args.rounds, args.requests) for b in args.backends.split(",")
        ],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
    print(markdown(results))


if __name__ == "__main__":
    main()
