"""RedisStore's server-side lookups (Redis 8.2) with redis-py's reply parsers side by side.

n entries (dim 384, random unit vectors, the data of ``cache_redis.py``), then semantic
hits (near-duplicates), misses and exact repeats through ``SemanticCache.get``, interleaved
one by one over stores that differ only in how the lookup runs:

* ``hiredis``: the default one-call lookup, replies parsed by hiredis (redis-py's
  ``_HiredisParser``; needs the ``hiredis`` package importable);
* ``python``: the same, with redis-py's pure-Python RESP3 parser;
* ``exact_first``: ``RedisStore(exact_first=True)`` (the exact key checked before the
  model: two round trips for a semantic lookup), hiredis.

Query embedding is excluded (precomputed vectors), which is what makes the one-call lookup's
embedding-first order free here; with a real model an exact repeat then costs one embedding.

Run: PYTHONPATH=src:.:<dir with hiredis> .venv/bin/python benchmarks/cache_redis_parsers.py
[--entries 10000] (writes benchmarks/results/cache_redis_parsers.json)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.cache_lookup import StubEmbedder  # noqa: E402
from benchmarks.cache_redis import DIM, THRESHOLD, fill, unit  # noqa: E402
from rag_optimize import RedisStore, SemanticCache  # noqa: E402
from rag_optimize.cache.redis.options import ConnectionOptions  # noqa: E402
from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_parsers.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    from redis.connection import _HiredisParser, _RESP3Parser
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:
        raise SystemExit("hiredis is not importable: put a directory holding it on PYTHONPATH")
    n, nq = args.entries, args.queries
    server = RedisServer(binary=redis8_bin()).start()
    out: dict[str, Any] = {"entries": n, "load_before": os.getloadavg()}
    try:
        rng = np.random.default_rng(n)
        stored = unit(rng.standard_normal((n, DIM)))
        texts = [f"stored question {i}" for i in range(n)]
        near_of = rng.integers(0, n, nq)
        near = unit(stored[near_of] + 0.3 / np.sqrt(DIM) * rng.standard_normal((nq, DIM)))
        fresh = unit(rng.standard_normal((nq, DIM)))
        kinds = {"semantic_hit": [f"similar question {i}" for i in range(nq)],
                 "miss": [f"unrelated question {i}" for i in range(nq)],
                 "exact_hit": [texts[i].upper() + " " for i in near_of]}
        vectors = dict(zip(texts, stored, strict=True))
        vectors.update(zip(kinds["semantic_hit"], near, strict=True))
        vectors.update(zip(kinds["miss"], fresh, strict=True))
        vectors.update(zip(kinds["exact_hit"], stored[near_of], strict=True))
        with RedisStore(server.url, "p", max_entries=None, timeout_ms=5000) as writer:
            out["fill_seconds"] = round(fill(writer, texts, stored), 1)
        variants = {"hiredis": (_HiredisParser, False), "python": (_RESP3Parser, False),
                    "exact_first": (_HiredisParser, True)}
        caches = {}
        for name, (parser_class, exact_first) in variants.items():
            store = RedisStore(server.url, "p", max_entries=None, exact_first=exact_first,
                               connection=ConnectionOptions(
                                   timeout_ms=5000, client_options={"parser_class": parser_class}))
            caches[name] = SemanticCache(StubEmbedder(vectors), threshold=THRESHOLD,
                                         verifier=None, store=store.start())
        names = list(caches)
        latency: dict[str, Any] = {}
        for kind, queries in kinds.items():
            samples: dict[str, list[int]] = {c: [] for c in names}
            right = dict.fromkeys(names, 0)
            for i, q in enumerate(queries):
                for c in names[i % len(names):] + names[: i % len(names)]:
                    t = time.perf_counter_ns()
                    hit = caches[c].get(q)
                    samples[c].append(time.perf_counter_ns() - t)
                    right[c] += (hit is not None) == (kind != "miss")
            p50 = {c: round(float(np.percentile(v, 50)) / 1000, 1) for c, v in samples.items()}
            latency[kind] = {"p50_us": p50, "right": right,
                             "python_over_hiredis": round(p50["python"] / p50["hiredis"], 2),
                             "exact_first_over_one_call": round(
                                 p50["exact_first"] / p50["hiredis"], 2)}
            print(kind, json.dumps(latency[kind]), flush=True)
        out["latency"] = latency
        for cache in caches.values():
            cache.store.close()
    finally:
        server.stop()
    out["load_after"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
