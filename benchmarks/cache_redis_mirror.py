"""The mirror path (Redis 7) at scale: replica memory and load time per storage, near-duplicate
recall and decision agreement, lookup latency, and cross-process visibility.

Starts its own Redis 7 (``redis-server`` on PATH, no persistence), fills one namespace with n
random unit vectors (dim 384), then for each mirror storage (``float32``, ``int8``) starts a
fresh replica in a child process (so its RSS is its own):

* ``rss_growth_mb``: RSS after the replica loaded the namespace and answered one lookup
  (binary codes built), minus RSS before it was constructed. A replica of a 2,000-entry
  namespace is measured first in the same process; ``rss_mb_per_100k_entries`` is the
  difference of the two growths per 100k entries (the store's fixed costs cancel), and
  ``ratio_to_raw_per_100k`` that over the raw float32 vectors (100k x 384 x 4 bytes).
* ``seconds_to_loaded``: construction to the end of the first load.
* near-duplicate queries (noise at three levels, so many fall close to the 0.9 threshold):
  whether the top candidate is the true nearest stored vector, and whether "similarity >=
  0.9" agrees with the exact float32 answer (``decision_flips``); ``store.search`` p50.
* ``visibility``: another OS process (the replica) sees this process's writes: seconds from
  ``put`` returning here to the entry being in the replica's mirror (p50, p99 over 200 writes
  20 ms apart).

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_mirror.py [--n 100000]
Writes benchmarks/results/cache_redis_mirror.json (``--out`` to change). ``--compare-src DIR``
also runs replicas on another tree's code (``DIR`` = its ``src``), alternating with this tree's
(``--rounds`` rounds, the first replica of each round swapped), on the same server and data.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# a child replica may run another tree's code (--compare-src): the same data, side by side
sys.path[:0] = [os.environ.get("MIRROR_BENCH_SRC", str(ROOT / "src")), str(ROOT)]

from rag_optimize import RedisStore  # noqa: E402
from rag_optimize.cache.entry import CacheEntry  # noqa: E402
from rag_optimize.cache.keys import digest  # noqa: E402
from rag_optimize.cache.redis.codec import hex_id  # noqa: E402
from rag_optimize.cache.redis.mirror import _release_freed_memory  # noqa: E402
from rag_optimize.cache.redis.options import MirrorOptions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_mirror.json"
DIM = 384
THRESHOLD = 0.9
NS = "mirrorbench"
SMALL = 2000  # entries of the small replica whose growth is subtracted
NOISE = (0.25, 0.45, 0.6)  # near-duplicate noise levels: cosine ~0.97, ~0.91, ~0.86


def unit(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)


def entry(i: int, vector: np.ndarray, now: float) -> CacheEntry:
    key = f"stored question {i}"
    return CacheEntry(id=digest("", key), scope="", query=key, query_key=key, vector=vector,
                      response={"answer": f"answer {i}"}, created_at=now)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fill(url: str, stored: np.ndarray, ns: str = NS) -> float:
    now = time.time()
    with RedisStore(url, ns, max_entries=None, timeout_ms=5000, search="mirror",
                    startup_wait_ms=0) as store:
        def put_range(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                store.put(entry(i, stored[i], now), now)
        step = (len(stored) + 3) // 4
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda lo: put_range(lo, min(lo + step, len(stored))),
                          range(0, len(stored), step)))
        return time.perf_counter() - t0


def warm_up(url: str, storage: str) -> None:
    """Pay the fixed costs once: a store on another namespace, one write, one search on the
    binary-code path (imports redis-py, faiss, the engine)."""
    from rag_optimize.cache.vector_table import VectorTable

    vecs = unit(np.random.default_rng(2).standard_normal((5000, DIM)))  # past the exact scan
    table = VectorTable(DIM, "binary", storage=storage)
    table.add_many([str(i) for i in range(len(vecs))], list(vecs))
    table.search(vecs[0], 1)
    del table
    with RedisStore(url, NS + "-warm", timeout_ms=2000,
                    mirror=MirrorOptions(storage=storage)) as warm:
        warm.put(entry(0, vecs[0], time.time()), time.time())
        warm.search("", vecs[0], 1, time.time())
        warm.clear()


def replica(url: str, ns: str, storage: str) -> tuple[Any, float, float]:
    """A started replica of ``ns`` (loaded, one lookup done), its load seconds, RSS growth."""
    gc.collect()
    _release_freed_memory()
    before = rss_mb()
    t0 = time.perf_counter()
    store = RedisStore(url, ns, max_entries=None, timeout_ms=2000,
                       mirror=MirrorOptions(storage=storage, startup_wait_ms=600_000)).start()
    loaded_s = time.perf_counter() - t0
    probe = unit(np.random.default_rng(1).standard_normal(DIM))
    store.search("", probe, 1, time.time())  # builds the binary codes of index="auto"
    gc.collect()
    _release_freed_memory()
    store.growth = rss_mb() - before
    return store, loaded_s, store.growth


def child(url: str, storage: str, data: str) -> None:
    """One replica: load, measure, answer queries, then report visibility of writes."""
    warm_up(url, storage)  # the fixed cost (lazy imports, connections, threads) is not the mirror's
    small, _, _ = replica(url, NS + "-small", storage)  # a store's fixed costs, paid again below
    store, loaded_s, growth = replica(url, NS, storage)
    per_entry = (growth - small.growth) / (len(store._mirror) - len(small._mirror))
    out: dict[str, Any] = {"storage": storage, "entries_in_mirror": len(store._mirror),
                           "seconds_to_loaded": round(loaded_s, 2),
                           "rss_growth_mb": round(growth, 1),
                           "rss_growth_of_a_small_replica_mb": round(small.growth, 1),
                           "rss_mb_per_100k_entries": round(per_entry * 100_000, 1)}
    small.close()
    with np.load(data) as z:  # after the RSS reading: the truth costs memory too
        stored, queries, truth = z["stored"], z["queries"], z["truth"]
    top_right = flips = 0
    lat: list[int] = []
    for q, t in zip(queries, truth, strict=True):
        s0 = time.perf_counter_ns()
        found = store.search("", q, 1, time.time())
        lat.append(time.perf_counter_ns() - s0)
        exact = float(stored[t] @ q)
        got = found[0] if found else None
        top_right += got is not None and got.entry_id == hex_id(digest("", f"stored question {t}"))
        decided = got is not None and got.similarity >= THRESHOLD
        flips += decided != (exact >= THRESHOLD)
    out.update(queries=len(queries), top1_is_true_nearest=top_right, decision_flips=flips,
               near_threshold_queries=int(np.sum(np.abs(
                   np.einsum("ij,ij->i", stored[truth], queries) - THRESHOLD) < 0.005)),
               search_p50_us=round(float(np.percentile(np.asarray(lat) / 1000, 50)), 1))
    print(json.dumps(out), flush=True)
    # visibility: the parent writes ids it names on stdin; report when each is in the mirror
    for line in sys.stdin:
        hid = line.strip()
        if not hid:
            break
        deadline = time.monotonic() + 5
        while hid not in store._mirror and time.monotonic() < deadline:
            time.sleep(0.0002)
        print(json.dumps(time.time() if hid in store._mirror else None), flush=True)
    store.close()


def run_replica(url: str, storage: str, data: Path, visibility: int,
                src: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["MIRROR_BENCH_SRC"] = src
    load_before = os.getloadavg()
    proc = subprocess.Popen([sys.executable, __file__, "--child", url, storage, str(data)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                            env=env)
    assert proc.stdin is not None and proc.stdout is not None
    res = json.loads(proc.stdout.readline())
    res["tree"] = "this" if src is None else src
    res["load_average_1m"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    delays: list[float] = []
    if visibility:
        rng = np.random.default_rng(5)
        with RedisStore(url, NS, max_entries=None, timeout_ms=2000, search="mirror",
                        startup_wait_ms=0) as writer:
            for i in range(visibility):
                e = entry(10**9 + i, unit(rng.standard_normal(DIM)), time.time())
                proc.stdin.write(hex_id(e.id) + "\n")
                proc.stdin.flush()
                writer.put(e, time.time())
                done = time.time()
                seen = json.loads(proc.stdout.readline())
                if seen is not None:
                    delays.append(max(0.0, seen - done))
                time.sleep(0.02)
            writer.delete([entry(10**9 + i, np.zeros(1), 0).id for i in range(visibility)])
        arr = np.asarray(delays) * 1000
        res["visibility_ms"] = {"p50": round(float(np.percentile(arr, 50)), 2),
                                "p99": round(float(np.percentile(arr, 99)), 2),
                                "seen": f"{len(delays)}/{visibility}"}
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(60)
    return res


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--visibility", type=int, default=200)
    parser.add_argument("--compare-src", default=None,
                        help="another tree's src/ (e.g. an export of main): its replicas are "
                             "run alternating with this tree's, on the same server and data")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--storages", default="float32,int8")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    from tests.redis_server import RedisServer

    rng = np.random.default_rng(args.n)
    stored = unit(rng.standard_normal((args.n, DIM)))
    truth = rng.integers(0, args.n, args.queries)
    noise = np.repeat(NOISE, -(-args.queries // len(NOISE)))[: args.queries, None]
    queries = unit(stored[truth] + noise / np.sqrt(DIM) * rng.standard_normal((args.queries, DIM)))
    server = RedisServer().start()
    results: dict[str, Any] = {"entries": args.n, "dim": DIM, "threshold": THRESHOLD,
                               "raw_float32_mb": round(args.n * DIM * 4 / 2**20, 1),
                               "load_average_start": os.getloadavg()}
    try:
        results["fill_seconds_4_threads"] = round(fill(server.url, stored), 1)
        fill(server.url, unit(rng.standard_normal((SMALL, DIM))), NS + "-small")
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data.npz"
            np.savez(data, stored=stored, queries=queries, truth=truth)
            del stored
            results["replicas"] = []
            trees: list[str | None] = [None] if args.compare_src is None else [
                None, args.compare_src]
            for round_no in range(args.rounds):
                for storage in args.storages.split(","):
                    order = trees if round_no % 2 == 0 else trees[::-1]  # alternate who is first
                    for src in order:
                        res = run_replica(server.url, storage, data,
                                          args.visibility if src is None else 0, src)
                        res["round"] = round_no
                        res["ratio_to_raw_per_100k"] = round(
                            res["rss_mb_per_100k_entries"] / (100_000 * DIM * 4 / 2**20), 2)
                        print(json.dumps(res), flush=True)
                        results["replicas"].append(res)
    finally:
        server.stop()
    results["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
