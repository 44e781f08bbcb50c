"""What ``fusion="consistency"`` adds to a retrieval: latency side by side with ``auto``.

Same indexes and cached MiniLM vectors as benchmarks/retrieval.py (a lookup "embedder", so
only retrieval is timed). Per query, interleaved (the order rotating per query):

* ``auto`` (today's default);
* ``consistency, sampling``: every query observed (its cross-space views computed), as in
  the first ``sample_first`` (200) queries a retriever serves;
* ``consistency, steady``: a warm estimate (seeded from 20 queries) that samples no more:
  the complete scores only (BM25 scores of the dense-only candidates, cosines of the
  BM25-only ones), the cost of 9 queries in 10 after the first 200.

And the parts of one query on their own: ``BM25Index.score`` over the union, the union's
vectors and cosines, and the two views (centroid cosines, BM25 over five documents' words).
``--large`` adds wikiqa x5 perturbed (>= 100k documents, as retrieval.py's large run).

Usage: python benchmarks/fusion_consistency_cost.py [--queries N] [--large]
Writes benchmarks/results/fusion_consistency_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import retrieval as R  # noqa: E402

from rag_optimize.index import BM25Index, DenseIndex  # noqa: E402
from rag_optimize.retrieval import HybridRetriever  # noqa: E402
from rag_optimize.retrieval.fusion import ConsistencyEstimate  # noqa: E402


class CachedOnly:
    def encode(self, texts: list[str]) -> Any:
        raise SystemExit("embeddings are not cached: run benchmarks/retrieval.py first")


def corpus(name: str, copies: int) -> tuple[list[str], list[str], np.ndarray, R.Lookup, list[str]]:
    data = R.load_beir(name)
    docs = R.embed_cached(f"{name}-docs", data["texts"], CachedOnly())
    every = R.load_beir(name)["queries"]
    qvecs = R.embed_cached(f"{name}-queries", list(every.values()), CachedOnly())
    ids, texts, vectors = list(data["ids"]), list(data["texts"]), docs
    if copies > 1:
        ids, texts, vectors = R.perturb(ids, texts, docs, copies)
    qids = list(data["queries"])
    random.Random(1).shuffle(qids)
    queries = [data["queries"][q] for q in qids]
    lookup = R.Lookup(texts + list(every.values()), np.concatenate([vectors, qvecs]))
    return ids, texts, vectors, lookup, queries


def parts(retriever: HybridRetriever, queries: list[str]) -> dict[str, Any]:
    """Each added step of one consistency retrieval, timed on its own (ms, p50/p95)."""
    times: dict[str, list[float]] = {"bm25 score of the union": [], "union cosines": []}
    times["views (centroid cosines + bm25 over 5 docs' words)"] = []
    times["union size"] = []
    for query in queries:
        request = retriever._request(query, None, None)
        outcomes, _ = retriever._run_sync(request)
        sparse, dense = outcomes["bm25"], outcomes["dense"]
        assert not isinstance(sparse, BaseException) and not isinstance(dense, BaseException)
        ids = list(dict.fromkeys([h.id for h in sparse] + [h.id for h in dense]))
        start = time.perf_counter()
        assert retriever.sparse is not None
        retriever.sparse.score(query, ids)
        times["bm25 score of the union"].append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        columns = retriever._columns(query, sparse, dense)
        took = (time.perf_counter() - start) * 1000
        times["union cosines"].append(max(0.0, took - times["bm25 score of the union"][-1]))
        start = time.perf_counter()
        if columns is not None:
            retriever._kappas(columns, sparse, dense)
        times["views (centroid cosines + bm25 over 5 docs' words)"].append(
            (time.perf_counter() - start) * 1000
        )
        times["union size"].append(float(len(ids)))
    out: dict[str, Any] = {k: R.percentiles(v) for k, v in times.items() if k != "union size"}
    out["union size mean"] = round(float(np.mean(times["union size"])), 1)
    return out


def run(name: str, copies: int, n: int) -> dict[str, Any]:
    print(f"== {name} x{copies}", flush=True)
    ids, texts, vectors, lookup, queries = corpus(name, copies)
    start = time.perf_counter()
    bm25 = BM25Index()
    bm25.add(texts, ids=ids)
    dense = DenseIndex(quantization=None if copies == 1 else "auto")
    dense.add(vectors, ids=ids)
    bm25.search("warm up", 1)
    built = time.perf_counter() - start
    depth = R.DEPTH

    def make(fusion: str) -> HybridRetriever:
        return HybridRetriever(bm25, dense, lookup, fusion=fusion, k=depth, candidates=depth)

    auto = make("auto")
    sampling = make("consistency")
    sampling.consistency = ConsistencyEstimate(sample_first=10**9)  # observes every query
    steady = make("consistency")
    steady.observe_queries(queries[-20:])  # warm; then it never samples
    steady.consistency.sample_first, steady.consistency.sample_every = 0, 10**9
    methods = {
        "hybrid auto": lambda q: auto.retrieve(q).ids,
        "hybrid consistency, sampling (first 200 queries)": lambda q: sampling.retrieve(q).ids,
        "hybrid consistency, steady (complete scores only)": lambda q: steady.retrieve(q).ids,
    }
    load_before = os.getloadavg()
    _, latency = R.interleaved(methods, queries[:n])
    base = latency["hybrid auto"]["p50_ms"]
    out = {
        "docs": len(ids),
        "queries": min(n, len(queries)),
        "dense_index": dense.engine.method if hasattr(dense.engine, "method") else None,
        "build_s": round(built, 1),
        "load_before": load_before,
        "latency": latency,
        "p50_ratio_vs_auto": {m: round(v["p50_ms"] / base, 3) for m, v in latency.items()},
        "parts_ms": parts(steady, queries[:n]),
        "weights_steady": steady.consistency.weights(),
        "load_after": os.getloadavg(),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--large", action="store_true", help="also wikiqa x5 (>= 100k docs)")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_average_start": os.getloadavg(), "sets": {}}
    for name in ("scifact-subset", "wikiqa"):
        report["sets"][name] = run(name, 1, args.queries)
    if args.large:
        report["sets"]["wikiqa x5"] = run("wikiqa", 5, min(args.queries, 100))
    report["load_average_end"] = os.getloadavg()
    R.RESULTS.mkdir(parents=True, exist_ok=True)
    (R.RESULTS / "fusion_consistency_cost.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
