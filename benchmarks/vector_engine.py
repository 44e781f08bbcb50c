"""The vector engine alone at 100k and 1M rows: default method vs the float32 exact scan.

Random unit vectors (dim 384); queries are stored rows turned to cosine 0.95-0.98 (near-
duplicates). Per size: bulk ``add`` cost per row, lookup p50/p99 of ``VectorEngine`` with
default settings and of the exact numpy scan, interleaved query by query, near-duplicate
recall (top-1 = the exact nearest), memory held vs the raw float32 vectors, and lookups/s
from 1, 2 and 8 threads (the Hamming kernel releases the GIL). The cache-level comparison
with usearch, faiss and RedisVL is benchmarks/cache_lookup.py.

Run: PYTHONPATH=src python benchmarks/vector_engine.py [--sizes 100000,1000000]
(writes benchmarks/results/vector_engine.json)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see cache_lookup.py
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cache_lookup import load_average, per_second, percentiles, random_data  # noqa: E402

from rag_optimize.index.engine import VectorEngine  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "vector_engine.json"


def throughput(engine: VectorEngine, queries: np.ndarray, threads: int, n: int) -> float:
    return per_second(lambda j: engine.search(queries[j % len(queries)], 4), threads, n)


def run(n: int, n_queries: int, exact_queries: int) -> dict[str, Any]:
    data = random_data(n, n_queries)
    stored, queries, truth = data["stored"], data["queries"], data["truth"]
    out: dict[str, Any] = {"rows": n, "load_before": load_average()}
    engine = VectorEngine(stored.shape[1])
    t0 = time.perf_counter()
    for lo in range(0, n, 50_000):
        engine.add(np.arange(lo, min(n, lo + 50_000)), stored[lo : lo + 50_000])
    out["bulk_add_us_per_row"] = round((time.perf_counter() - t0) / n * 1e6, 2)
    engine.search(queries[0], 4)  # builds the codes once
    ours, exact, hits, exact_hits = [], [], 0, 0
    for i, query in enumerate(queries):
        t0 = time.perf_counter_ns()
        rows, _ = engine.search(query, 4)
        ours.append(time.perf_counter_ns() - t0)
        hits += int(rows[0] == truth[i])
        if i < exact_queries:
            t0 = time.perf_counter_ns()
            best = int(np.argmax(stored @ query))
            exact.append(time.perf_counter_ns() - t0)
            exact_hits += int(best == truth[i])
    out["method"] = engine.active_method()
    out["engine"] = {**percentiles(ours), "near_duplicate_recall": round(hits / len(ours), 4)}
    out["numpy_exact"] = {
        **percentiles(exact), "near_duplicate_recall": round(exact_hits / len(exact), 4)
    }
    out["p50_speedup_vs_exact"] = round(out["numpy_exact"]["p50_us"] / out["engine"]["p50_us"], 1)
    memory = engine.memory_usage()
    ratio = round(memory["total_in_ram"] / memory["raw_float32"], 3)
    out["memory"] = {**memory, "ratio_to_raw": ratio}
    out["lookups_per_s"] = {f"{t} threads": throughput(engine, queries, t, 2000) for t in (1, 2, 8)}
    out["load_after"] = load_average()
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--exact-queries", type=int, default=50)
    args = parser.parse_args()
    report: dict[str, Any] = {"command": " ".join(sys.argv), "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        report["sizes"][str(n)] = run(n, args.queries, args.exact_queries)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
