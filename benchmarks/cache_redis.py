"""RedisStore vs the in-process store: lookup latency, cross-process visibility, memory.

Starts its own redis-server (plain Redis 7, no modules, no persistence) on a free port.

* Lookup p50/p99 through ``SemanticCache.get`` at 10k and 100k entries (dim 384), the same
  queries against ``InMemoryStore`` and ``RedisStore`` interleaved one by one in one process:
  semantic hits (near-duplicates, cosine ~0.96), misses (fresh vectors) and exact repeats.
  Query embedding is excluded (a stub returns precomputed vectors). The RedisStore measured
  is a *second* replica that loaded the namespace at start (its load time is reported too).
* Cross-process visibility: a child process (another RedisStore on the namespace) records
  when each entry written by this process appears in its local mirror; delay = seen - put.
  Wall time and this thread's CPU time are both recorded: on a loaded machine a lookup that
  waits on a socket also waits for a CPU to run on again afterwards.
* Memory in Redis per entry: ``MEMORY USAGE`` of entry hashes (sampled) plus the LRU/expiry/
  scope structures, and ``used_memory`` growth divided by the entry count.

GPTCache's Redis configuration is not run: its Redis vector store creates a RediSearch index
(``FT.CREATE`` + KNN queries), which plain Redis does not have (see BENCHMARKS.md).

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis.py [--quick]
(writes benchmarks/results/cache_redis.json)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread: see cache_lookup.py
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.cache_lookup import StubEmbedder  # noqa: E402 - precomputed vectors
from rag_optimize import InMemoryStore, RedisStore, SemanticCache  # noqa: E402
from rag_optimize.cache.entry import CacheEntry  # noqa: E402
from rag_optimize.cache.keys import digest, normalise_query  # noqa: E402
from rag_optimize.cache.redis.codec import Keys  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis.json"
DIM = 384
THRESHOLD = 0.9


def unit(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)


def entry(text: str, vector: np.ndarray, now: float) -> CacheEntry:
    key = normalise_query(text)
    return CacheEntry(
        id=digest("", key), scope="", query=text, query_key=key, vector=vector,
        response={"answer": "answer to " + text, "sources": ["doc-1", "doc-2"]},
        created_at=now,
    )


def stats_us(samples_ns: list[int]) -> dict[str, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": round(float(np.percentile(arr, 50)), 1),
        "p99_us": round(float(np.percentile(arr, 99)), 1),
        "n": len(samples_ns),
    }


def fill_redis(url: str, ns: str, texts: list[str], vectors: np.ndarray) -> float:
    """Write all entries through a RedisStore (4 threads); returns seconds."""
    now = time.time()
    with RedisStore(url, ns, max_entries=None, timeout_ms=2000) as writer:
        def put_range(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                writer.put(entry(texts[i], vectors[i], now), now)

        step = (len(texts) + 3) // 4
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda lo: put_range(lo, min(lo + step, len(texts))),
                          range(0, len(texts), step)))
        return time.perf_counter() - t0


def lookups(n: int, n_queries: int, server: RedisServer) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    stored = unit(rng.standard_normal((n, DIM)))
    texts = [f"stored question {i}" for i in range(n)]
    near_of = rng.integers(0, n, n_queries)
    near = unit(stored[near_of] + 0.3 / np.sqrt(DIM) * rng.standard_normal((n_queries, DIM)))
    fresh = unit(rng.standard_normal((n_queries, DIM)))
    vectors = dict(zip(texts, stored, strict=True))
    hit_texts = [f"similar question {i}" for i in range(n_queries)]
    miss_texts = [f"unrelated question {i}" for i in range(n_queries)]
    vectors.update(zip(hit_texts, near, strict=True))
    vectors.update(zip(miss_texts, fresh, strict=True))
    exact_texts = [texts[i].upper() + " " for i in near_of]

    ns = f"bench{n}"
    raw = server.client()
    mem_before = int(raw.info("memory")["used_memory"])
    fill_s = fill_redis(server.url, ns, texts, stored)
    mem_after = int(raw.info("memory")["used_memory"])
    t0 = time.perf_counter()
    redis_store = RedisStore(server.url, ns, max_entries=None, startup_wait_ms=600_000)
    load_s = time.perf_counter() - t0
    assert len(redis_store._mirror) == n, "replica did not load every entry"
    embedder: Any = StubEmbedder(vectors)
    caches = {
        "memory": SemanticCache(embedder, threshold=THRESHOLD, store=InMemoryStore(None)),
        "redis": SemanticCache(embedder, threshold=THRESHOLD, store=redis_store),
    }
    for text in texts:
        caches["memory"].set(text, {"answer": "answer to " + text})
    kinds = ("semantic_hit", "miss", "exact_hit")
    samples: dict[str, dict[str, list[int]]] = {k: {"memory": [], "redis": []} for k in kinds}
    cpu: dict[str, dict[str, list[int]]] = {k: {"memory": [], "redis": []} for k in kinds}
    outcomes = {"memory": 0, "redis": 0}
    for kind, queries in (("semantic_hit", hit_texts), ("miss", miss_texts),
                          ("exact_hit", exact_texts)):
        for name in ("memory", "redis"):
            caches[name].get(queries[0])  # warm up
        for i, query in enumerate(queries):
            order = ("memory", "redis") if i % 2 else ("redis", "memory")
            for name in order:
                c, t = time.thread_time_ns(), time.perf_counter_ns()
                hit = caches[name].get(query)
                samples[kind][name].append(time.perf_counter_ns() - t)
                cpu[kind][name].append(time.thread_time_ns() - c)
                outcomes[name] += (hit is not None) == (kind != "miss")
    ping = []
    for _ in range(n_queries):
        t = time.perf_counter_ns()
        raw.ping()
        ping.append(time.perf_counter_ns() - t)
    per_kind: dict[str, Any] = {"redis_ping_round_trip": stats_us(ping)}
    for kind, by_store in samples.items():
        mem, red = stats_us(by_store["memory"]), stats_us(by_store["redis"])
        per_kind[kind] = {
            "memory": mem, "redis": red,
            "ratio_p50": round(red["p50_us"] / mem["p50_us"], 2),
            "ratio_p99": round(red["p99_us"] / mem["p99_us"], 2),
            "thread_cpu_p50_us": {
                name: stats_us(cpu[kind][name])["p50_us"] for name in ("memory", "redis")
            },
        }
    keys = Keys(ns)
    sample_ids = [digest("", normalise_query(texts[i])) for i in range(0, n, max(1, n // 200))]
    entry_bytes = [int(raw.memory_usage(keys.entry(h), samples=0)) for h in sample_ids]
    shared = sum(int(raw.memory_usage(k, samples=0) or 0)
                 for k in (keys.lru, keys.scope(_scope_digest("")), keys.log))
    redis_store.close()
    raw.delete(*[k for k in raw.scan_iter(match=keys.pattern, count=5000)])
    return {
        "entries": n,
        "lookups_per_kind": n_queries,
        "expected_outcomes": {k: f"{v}/{3 * n_queries}" for k, v in outcomes.items()},
        "latency": per_kind,
        "fill_seconds_4_threads": round(fill_s, 2),
        "replica_load_seconds": round(load_s, 2),
        "redis_bytes_per_entry": {
            "entry_hash_mean": round(float(np.mean(entry_bytes)), 1),
            "index_structures": round(shared / n, 1),
            "used_memory_growth": round((mem_after - mem_before) / n, 1),
        },
        "local_mirror_bytes_per_entry": DIM * 4,
    }


def _scope_digest(scope: str) -> str:
    from rag_optimize.cache.redis.codec import scope_digest

    return scope_digest(scope)


def visibility(server: RedisServer, n: int) -> dict[str, Any]:
    """Delay until an entry put in this process shows up in another process's mirror."""
    ns = "visibility"
    child = subprocess.Popen(
        [sys.executable, __file__, "--visibility-child", server.url, ns, str(n)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    rng = np.random.default_rng(1)
    put_at: list[float] = []
    with RedisStore(server.url, ns, max_entries=None) as store:
        for i in range(n):
            e = entry(f"visible question {i}", unit(rng.standard_normal(DIM)), time.time())
            put_at.append(time.time())
            store.put(e, e.created_at)
            time.sleep(float(rng.uniform(0.002, 0.02)))
    seen = json.loads(child.stdout.readline())
    child.wait(30)
    delays = np.asarray([s - p for s, p in zip(seen, put_at, strict=True)]) * 1000
    return {
        "entries": n,
        "delay_ms": {
            "p50": round(float(np.percentile(delays, 50)), 2),
            "p99": round(float(np.percentile(delays, 99)), 2),
            "max": round(float(delays.max()), 2),
        },
        "staleness_ms_setting": 50,
        "note": "put() start in the writer to the entry appearing in the reader's mirror; "
        "the reader polls its mirror every 0.2 ms",
    }


def _visibility_child(url: str, ns: str, n: int) -> None:
    with RedisStore(url, ns, max_entries=None) as store:
        print("ready", flush=True)
        seen: list[float] = []
        for i in range(n):
            hid = digest("", normalise_query(f"visible question {i}"))
            while hid not in store._mirror:
                time.sleep(0.0002)
            seen.append(time.time())
        print(json.dumps(seen), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--visibility-child", nargs=3)
    args = parser.parse_args()
    if args.visibility_child:
        url, ns, n = args.visibility_child
        _visibility_child(url, ns, int(n))
        return
    sizes, n_queries, n_vis = ((2_000, 10_000), 300, 100) if args.quick else (
        (10_000, 100_000), 2_000, 500)
    server = RedisServer().start()
    try:
        version = server.client().info("server")["redis_version"]
        try:
            server.client().execute_command("FT._LIST")
            search_module = "present"
        except Exception as exc:  # noqa: BLE001 - recorded as the result
            search_module = f"absent ({exc})"
        results = {
            "load_average_at_start": os.getloadavg()[0],
            "machine": f"{platform.machine()} {os.cpu_count()} cores (shared with other jobs)",
            "redis": version,
            "search_module": search_module,
            "dim": DIM,
            "threshold": THRESHOLD,
            "lookups": [],
            "visibility": visibility(server, n_vis),
            "gptcache_redis": "not run: its Redis vector store needs RediSearch (FT.CREATE)",
        }
        print(json.dumps(results["visibility"], indent=1), flush=True)
        for n in sizes:
            load = os.getloadavg()[0]
            res = lookups(n, n_queries if n <= 10_000 else n_queries // 2, server)
            res["load_average_start_end"] = [round(load, 1), round(os.getloadavg()[0], 1)]
            print(json.dumps(res, indent=1), flush=True)
            results["lookups"].append(res)
    finally:
        server.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
