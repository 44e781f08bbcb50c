"""The vector engine side by side with numpy, faiss, usearch and RedisVL FLAT, in one run.

Random unit vectors (dim 384) at 100k and 1M rows; each query is a stored row turned to a
cosine drawn uniformly in [0.95, 0.98] (a near-duplicate). Contenders, queried in turn one
query at a time (interleaved, so load swings hit them alike):

* ``ours``: a ``VectorTable`` (the cache's per-scope table: ids, lock, ``VectorEngine``)
  with default settings;
* ``numpy exact``: ``argmax(stored @ query)`` over the float32 matrix;
* ``faiss flat``: ``IndexFlatIP`` (exact, faiss's BLAS kernel);
* ``usearch``: ``Index(ndim, metric="cos")`` with its defaults (HNSW);
* ``faiss hnsw``: ``IndexHNSWFlat(dim, 32, inner product)`` with its defaults;
* ``redisvl``: RedisVL ``SearchIndex`` FLAT cosine on Redis 8.2 with the Query Engine
  module, in RedisVL's own venv (``--redisvl-python``; see cache_lookup_redisvl.py).

Graphs and RedisVL are built only up to ``--graph-max`` / ``--redisvl-max`` rows (filling
them at 1M takes many minutes on the shared machine). Per contender: fill cost per row,
lookup p50/p99, near-duplicate recall (top-1 = the exact nearest). For ours also: memory
held vs the raw float32 vectors, lookups/s from 1, 2 and 8 threads (and RedisVL's from 8,
alternating), and ``SemanticCache.set`` one at a time / ``set_many`` at 100k (a stub
embedder, so the cache flow and store are timed, not the model).

Real embeddings (``--real``): the retrieval benchmark's large corpus (WikiQA sentences
embedded with MiniLM, x5 with vector noise: 103,890 rows; the embeddings are read from its
cache, /tmp/rag-optimize-embeddings, and computed there if missing). Near-duplicate queries
are one-word-dropped variants of stored sentences, embedded too, kept when their exact
nearest row has cosine 0.95-0.98. Also the retriever's dense branch there: ``DenseIndex()``
recall@10 against ``DenseIndex(quantization=None)`` on the 873 WikiQA questions.

Run: PYTHONPATH=src python benchmarks/vector_engine.py --sizes 100000,1000000 --real
     --redisvl-python /tmp/h15-venv/bin/python
(writes benchmarks/results/vector_engine.json, or ``--out``)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see cache_lookup.py
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cache_lookup import (  # noqa: E402
    THRESHOLD,
    FaissContender,
    RedisVLContender,
    StubEmbedder,
    UsearchContender,
    load_average,
    per_second,
    percentiles,
    perturb_text,
    random_data,
    with_exact_truth,
)

from rag_optimize.cache import InMemoryStore, SemanticCache  # noqa: E402
from rag_optimize.cache.vector_table import VectorTable  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "vector_engine.json"


class Ours:
    name = "ours (VectorTable, default)"

    def __init__(self, data: dict[str, Any]) -> None:
        stored = data["stored"]
        self.queries = data["queries"]
        self.table = VectorTable(stored.shape[1])
        ids = [str(i) for i in range(len(stored))]
        t0 = time.perf_counter()
        for lo in range(0, len(stored), 50_000):
            self.table.add_many(ids[lo : lo + 50_000], list(stored[lo : lo + 50_000]))
        self.fill_us = (time.perf_counter() - t0) / len(stored) * 1e6
        self.last_ns = 0

    def lookup(self, i: int) -> int:
        found = self.table.search(self.queries[i], 1)
        return int(found[0][0]) if found else -1


class NumpyExact:
    name = "numpy float32 exact"

    def __init__(self, data: dict[str, Any]) -> None:
        self.stored, self.queries = data["stored"], data["queries"]
        self.fill_us, self.last_ns = 0.0, 0

    def lookup(self, i: int) -> int:
        return int(np.argmax(self.stored @ self.queries[i]))


class FaissFlat:
    name = "faiss IndexFlatIP (exact)"

    def __init__(self, data: dict[str, Any]) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self.queries = data["queries"]
        self.index = faiss.IndexFlatIP(data["stored"].shape[1])
        t0 = time.perf_counter()
        self.index.add(data["stored"])
        self.fill_us = (time.perf_counter() - t0) / len(data["stored"]) * 1e6
        self.last_ns = 0

    def lookup(self, i: int) -> int:
        _, ids = self.index.search(self.queries[i : i + 1], 1)
        return int(ids[0, 0])


def interleaved(contenders: list[Any], data: dict[str, Any], exact_queries: int) -> dict:
    """Each query to each contender in turn; exact scans answer the first ``exact_queries``."""
    times: dict[str, list[int]] = {c.name: [] for c in contenders}
    hits = dict.fromkeys(times, 0)
    slow = {NumpyExact.name, FaissFlat.name}
    for i in range(len(data["queries"])):
        for c in contenders:
            if c.name in slow and i >= exact_queries:
                continue
            c.last_ns = 0
            t0 = time.perf_counter_ns()
            row = c.lookup(i)
            took = time.perf_counter_ns() - t0
            times[c.name].append(c.last_ns or took)  # RedisVL: timed in its own process
            hits[c.name] += int(row == data["truth"][i])
    return {
        c.name: {
            **percentiles(times[c.name]),
            "near_duplicate_recall": round(hits[c.name] / len(times[c.name]), 4),
            "fill_us_per_row": round(c.fill_us, 2),
        }
        for c in contenders
    }


def cache_fill(data: dict[str, Any], n: int) -> dict[str, float]:
    """``SemanticCache.set`` one at a time and ``set_many`` in batches of 10k, to ``n``."""
    texts = [f"stored question {i}" for i in range(n)]
    embedder = StubEmbedder(dict(zip(texts, data["stored"][:n], strict=True)))
    out = {}
    for how in ("set one at a time", "set_many in batches of 10k"):
        cache = SemanticCache(
            embedder,  # type: ignore[arg-type]
            threshold=THRESHOLD,
            store=InMemoryStore(max_entries=None),
            verifier=None,
        )
        t0 = time.perf_counter()
        if how == "set one at a time":
            for text in texts:
                cache.set(text, "answer to " + text)
        else:
            for lo in range(0, n, 10_000):
                cache.set_many([(t, "answer to " + t) for t in texts[lo : lo + 10_000]])
        out[f"SemanticCache.{how}, us/entry"] = round((time.perf_counter() - t0) / n * 1e6, 1)
        del cache
        gc.collect()
    return out


def run_random(n: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"== random, {n:,} rows (load {load_average()})", flush=True)
    data = random_data(n, args.queries)
    out: dict[str, Any] = {"rows": n, "load_before": load_average()}
    ours = Ours(data)
    contenders: list[Any] = [ours, NumpyExact(data), FaissFlat(data)]
    if n <= args.graph_max:
        contenders += [UsearchContender(data), FaissContender(data)]
    redisvl = None
    if args.redisvl_python and n <= args.redisvl_max:
        redisvl = RedisVLContender(data, args.redisvl_python)
        contenders.append(redisvl)
    print("  filled:", {c.name: round(c.fill_us, 1) for c in contenders}, flush=True)
    try:
        ours.lookup(0)
        out["method"] = ours.table.method
        out["lookups"] = interleaved(contenders, data, args.exact_queries)
        p50 = {name: r["p50_us"] for name, r in out["lookups"].items()}
        out["p50_ratio_to_ours"] = {
            name: round(v / p50[Ours.name], 1) for name, v in p50.items() if name != Ours.name
        }
        memory = ours.table._engine.memory_usage()
        ratio = round(memory["total_in_ram"] / memory["raw_float32"], 3)
        out["memory"] = {**memory, "ratio_to_raw": ratio}
        queries = data["queries"]
        out["ours_lookups_per_s"] = {
            f"{t} threads": per_second(
                lambda j: ours.table.search(queries[j % len(queries)], 1), t, args.thread_lookups
            )
            for t in (1, 2, 8)
        }
        if redisvl is not None:
            runs: dict[str, list[float]] = {"ours": [], "redisvl": []}
            for _ in range(2):
                runs["ours"].append(
                    per_second(lambda j: ours.table.search(queries[j % len(queries)], 1), 8,
                               args.thread_lookups)
                )
                runs["redisvl"].append(round(redisvl.threads(8, args.thread_lookups), 1))
            out["8_threads_lookups_per_s"] = runs
    finally:
        if redisvl is not None:
            redisvl.close()
    if n == 100_000 and not args.skip_cache_fill:
        del contenders, ours
        gc.collect()
        out["cache_fill"] = cache_fill(data, n)
    out["load_after"] = load_average()
    print(json.dumps(out), flush=True)
    return out


def run_real(args: argparse.Namespace) -> dict[str, Any]:
    from retrieval import embed_cached, load_beir, perturb

    from rag_optimize.embedding.local import LocalEmbedder
    from rag_optimize.index import DenseIndex

    print(f"== real MiniLM (wikiqa x5, load {load_average()})", flush=True)
    embedder = LocalEmbedder(backend="onnx", max_length=256)  # the retrieval benchmark's
    wiki = load_beir("wikiqa")
    docs = embed_cached("wikiqa-docs", wiki["texts"], embedder)
    questions = embed_cached("wikiqa-queries", list(wiki["queries"].values()), embedder)
    _, _, stored = perturb(wiki["ids"], wiki["texts"], docs, 5)
    rng = random.Random(7)
    long_ones = [t for t in wiki["texts"] if len(t.split()) >= 8]
    variants = [perturb_text(t, rng, ("drop",)) for t in rng.sample(long_ones, args.real_queries)]
    near = embed_cached("vector-engine-near-dups", variants, embedder)
    data = with_exact_truth(stored, near)
    keep = (data["truth_cos"] >= 0.95) & (data["truth_cos"] <= 0.98)
    data.update(queries=near[keep], truth=data["truth"][keep])
    out: dict[str, Any] = {
        "rows": int(stored.shape[0]),
        "near_duplicate_queries": int(keep.sum()),
        "load_before": load_average(),
    }
    contenders = [Ours(data), NumpyExact(data)]
    out["lookups"] = interleaved(contenders, data, len(data["queries"]))
    auto, exact = DenseIndex(), DenseIndex(quantization=None)
    auto.add(stored)
    exact.add(stored)
    recall, t_auto, t_exact = [], [], []
    for query in questions:
        t0 = time.perf_counter_ns()
        got = {h.id for h in auto.search(query, 10)}
        t_auto.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        want = {h.id for h in exact.search(query, 10)}
        t_exact.append(time.perf_counter_ns() - t0)
        recall.append(len(got & want) / 10)
    out["dense_index"] = {
        "queries": len(questions),
        "method": auto.engine.active_method() if auto.engine else None,
        "recall_at_10_vs_exact": round(float(np.mean(recall)), 4),
        "worst_query_recall_at_10": round(float(np.min(recall)), 2),
        "auto": percentiles(t_auto),
        "exact": percentiles(t_exact),
    }
    out["load_after"] = load_average()
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--exact-queries", type=int, default=100)
    parser.add_argument("--thread-lookups", type=int, default=2000)
    parser.add_argument("--graph-max", type=int, default=100_000)
    parser.add_argument("--redisvl-max", type=int, default=100_000)
    parser.add_argument("--redisvl-python", default="")
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--real-queries", type=int, default=600)
    parser.add_argument("--skip-cache-fill", action="store_true")
    parser.add_argument(
        "--fill-only", action="store_true",
        help="only the SemanticCache fill (set one at a time, set_many) at each size",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report: dict[str, Any] = {"command": " ".join(sys.argv), "sizes": {}}

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    if args.real:
        report["real_minilm"] = run_real(args)
        write()
    for n in (int(s) for s in args.sizes.split(",") if s):
        if args.fill_only:
            load_before = load_average()
            fill = cache_fill(random_data(n, 1), n)
            report["sizes"][str(n)] = {
                "rows": n, "load_before": load_before, "cache_fill": fill,
                "load_after": load_average(),
            }
            print(json.dumps(report["sizes"][str(n)]), flush=True)
            write()
            continue
        report["sizes"][str(n)] = run_random(n, args)
        write()
        gc.collect()


if __name__ == "__main__":
    main()
