"""Far candidates not sent (local codes, issue 14): what it saves, and what it drops.

* ``rows``: no server. Packaged MiniLM ONNX embeddings (cached in /tmp/rag-optimize-embeddings,
  as ``retrieval.py``): the 20,778 WikiQA passages 3 times (the copies with noise 0.01) plus
  the MRPC second sentences as a local table (``LocalTable``, the store's own kernel);
  queries: 600 word-dropped WikiQA passages (as ``cache_redis_codes.py --data real``) and the
  MRPC first sentences. For each query the 20 rows the store ranks, with and without the
  margin (first k + 1 = 5 always kept): how often the exact nearest of the 20 is dropped, how
  many rows of the exact top 4 passing 0.8 / 0.85 / 0.9 / 0.95 are dropped, and how many rows
  go to the server.
* ``lookups``: one Redis 8.2 server, n random unit entries (``cache_redis.py``'s draws), one
  ``RedisStore`` with its table loaded; ``SemanticCache.get`` for near-duplicates and misses,
  with the margin (``pruned``) and without it (``all20``: ``PRUNE_SIGMAS`` set huge for that
  lookup) and the in-process store, in every order in turn (seeded); p50s, ratios, answers
  right; and the server's time per script call (``INFO commandstats``) for each.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_prune.py [--n 100000]
[--queries 1000] [--skip-rows] [--skip-lookups] (writes
benchmarks/results/cache_redis_prune.json)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from benchmarks.cache_lookup import StubEmbedder  # noqa: E402
from benchmarks.cache_redis import dataset, filled_caches, unit  # noqa: E402
from benchmarks.cache_redis_codes import wikiqa_near_duplicates  # noqa: E402
from rag_optimize.cache.redis import codes  # noqa: E402
from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_prune.json"
MRPC = ROOT.parent / "shared" / "data" / "mrpc" / "train.tsv"
COUNT, LEAST = 20, 5  # what a lookup with k = 4 ranks, and the k + 1 always sent


def real_rows() -> tuple[np.ndarray, np.ndarray]:
    from retrieval import embed_cached, load_beir

    from rag_optimize.embedding.local import LocalEmbedder

    embedder = LocalEmbedder(backend="onnx", max_length=256)
    passages, near = wikiqa_near_duplicates(load_beir("wikiqa"), embedder)
    with MRPC.open(newline="") as f:
        pairs = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    first = unit(embed_cached("mrpc-a", [p[1] for p in pairs], embedder))
    second = unit(embed_cached("mrpc-b", [p[2] for p in pairs], embedder))
    noise = np.random.default_rng(0)
    copies = [passages + 0.01 * noise.standard_normal(passages.shape) for _ in range(2)]
    return unit(np.concatenate([passages, *copies, second])), np.concatenate([near, first])


def rows_study() -> dict[str, Any]:
    stored, queries = real_rows()
    dim = stored.shape[1]
    table = codes.LocalTable(dim, stored.mean(axis=0), len(stored), b"g")
    with table.lock:
        table.add([f"{i:032x}" for i in range(len(stored))], [r.tobytes() for r in stored])
    thresholds = (0.8, 0.85, 0.9, 0.95)
    passing = dict.fromkeys(thresholds, 0)
    dropped = dict.fromkeys(thresholds, 0)
    gaps: dict[float, list[float]] = {t: [] for t in thresholds}
    best_dropped, sent = 0, []
    for q in queries:
        ranked = table.nearest(q, COUNT)[0]
        kept = set(table.nearest(q, COUNT, LEAST)[0])
        sent.append(len(kept))
        sims = stored[ranked] @ q
        if ranked[int(np.argmax(sims))] not in kept:
            best_dropped += 1
        for j in np.argsort(-sims)[:4]:
            for t in thresholds:
                if sims[j] >= t:
                    passing[t] += 1
                    if ranked[j] not in kept:
                        dropped[t] += 1
                        gaps[t].append(round(float(sims.max() - sims[j]), 3))
    return {
        "rows": len(stored), "queries": len(queries), "margin_bits": codes.prune_margin(dim),
        "exact_nearest_of_the_ranked_dropped": f"{best_dropped}/{len(queries)}",
        "top4_rows_passing_dropped": {str(t): f"{dropped[t]}/{passing[t]}" for t in thresholds},
        "dropped_rows_below_the_best_by": {str(t): sorted(g)[:10] for t, g in gaps.items()},
        "rows_sent_mean": round(float(np.mean(sent)), 2),
        "rows_sent_histogram": {str(k): int(v) for k, v in enumerate(np.bincount(sent)) if v},
    }


def lookups(n: int, nq: int) -> dict[str, Any]:
    d = dataset(n, nq)
    embedder: Any = StubEmbedder(d["vectors"])
    out: dict[str, Any] = {"entries": n, "lookups_per_kind_and_round": nq}
    server = RedisServer(binary=redis8_bin()).start()
    try:
        seconds, store, cache, memory = filled_caches(server.url, "prune", d, embedder)
        out["fill_seconds_4_threads"] = round(seconds, 1)
        caches = {"memory": memory, "pruned": cache, "all20": cache}
        orders = [list(p) for p in itertools.permutations(caches)]
        random.Random(0).shuffle(orders)
        stats = server.client()
        loads = [os.getloadavg()[0]]
        for kind, queries in (("semantic_hit", d["hit_texts"]), ("miss", d["miss_texts"])):
            times: dict[str, list[int]] = {c: [] for c in caches}
            right = dict.fromkeys(caches, 0)
            for r in range(2):
                for i, query in enumerate(queries):
                    for name in orders[(i + r) % len(orders)]:
                        codes.PRUNE_SIGMAS = 1e9 if name == "all20" else 4.0
                        t = time.perf_counter_ns()
                        found = caches[name].get(query) is not None
                        times[name].append(time.perf_counter_ns() - t)
                        right[name] += found == (kind == "semantic_hit")
            server_us = {}
            for name, sigmas in (("pruned", 4.0), ("all20", 1e9)):
                codes.PRUNE_SIGMAS = sigmas
                stats.config_resetstat()
                for query in queries[:500]:
                    cache.get(query)
                server_us[name] = float(stats.info("commandstats")["cmdstat_evalsha"]
                                        ["usec_per_call"])
            codes.PRUNE_SIGMAS = 4.0
            loads.append(os.getloadavg()[0])
            p50 = {c: round(float(np.median(v)) / 1e3, 1) for c, v in times.items()}
            out[kind] = {
                "p50_us": p50,
                "pruned_over_all20": round(p50["pruned"] / p50["all20"], 3),
                "over_memory": {c: round(p50[c] / p50["memory"], 2) for c in ("pruned", "all20")},
                "server_us_per_script_call": server_us,
                "right": {c: f"{v}/{2 * nq}" for c, v in right.items()},
                "store_errors": caches["pruned"].stats.store_errors,
            }
        out["load_average_per_phase"] = [round(x, 2) for x in loads]
        store.close()
    finally:
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--skip-rows", action="store_true")
    parser.add_argument("--skip-lookups", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    out: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    if not args.skip_rows:
        out["rows"] = rows_study()
        print(json.dumps(out["rows"], indent=1), flush=True)
    if not args.skip_lookups:
        out["lookups"] = lookups(args.n, args.queries)
    out["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
