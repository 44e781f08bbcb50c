"""Issue 17: filtered top-k with the default dense index, exact against brute force, and cost.

The default dense index (``quantization="auto"``: binary codes + exact rescoring at 100k)
answers a filter that keeps at most :data:`~rag_optimize.index.engine.EXACT_FILTERED` of the
rows by scoring every matching row exactly; above it, with the codes (the matching rows'
codes ranked, the best rescored). This script measures both rules side by side, interleaved
per query, at filters keeping 1%, 5%, 10%, 25% and 50% of 103,890 documents, for the dense
index alone (k=10) and for the hybrid retriever (k=10, 100 candidates per branch), against
the unfiltered search; and counts queries whose filtered top 10 has the brute-force scores
over the matching rows (and only matching documents, exactly 10 of them).

* ``now``: the engine as it is (exact scan up to ``EXACT_FILTERED``).
* ``exact``: ``EXACT_FILTERED = inf`` (every filtered search scores all matching rows).
* ``codes``: ``EXACT_FILTERED = 0`` (the rule before this change: codes + rescoring for
  every filter keeping more than four times the candidates).
* ``bitmap``: ``now`` without the over-fetch (``_OVERFETCH = 0``): a filter keeping more
  than 40% of the rows has its codes scanned with the bitmap kernel, as before.
* ``rescore_before``: ``now`` rescoring twice the candidates under a filter (320 at k=10),
  as before a filter's saved code bytes went to rescoring (``_SCATTERED_READ``).

Corpus: WikiQA x5 perturbed texts (as in ``retrieval.py``) with seeded synthetic vectors
that have the structure binary codes are made for (clusters, a shared offset, near
duplicates: each perturbed copy is its source's vector jittered), so the codes' ranking is
meaningful; queries are jittered document vectors (many near-ties at the top). Filter
field: ``pct`` = sha1(id) % 100, filters ``Range("pct", lt=p)``.

Usage: PYTHONPATH=src python benchmarks/filtered_exact.py [--queries 200]
Writes benchmarks/results/filtered_exact.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from typing import Any

import numpy as np
from retrieval import RESULTS, Lookup, load_beir, perturb  # same directory

from rag_optimize.index import BM25Index, DenseIndex
from rag_optimize.index import engine as engine_module
from rag_optimize.retrieval import HybridRetriever, Range
from rag_optimize.retrieval.filters import filter_mask

FRACTIONS = (1, 5, 10, 25, 50)


def synthetic_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in 300 clusters around a shared offset (anisotropic, like embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(300, dim)).astype(np.float32)
    offset = rng.normal(size=dim).astype(np.float32)
    x = centres[rng.integers(0, 300, n)] * 0.7 + rng.normal(size=(n, dim)).astype(np.float32) * 0.5
    x += offset * 0.6
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pct(doc_id: str) -> int:
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 100


def p50(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    report: dict[str, Any] = {"load_average_start": os.getloadavg(), "python": sys.version}
    data = load_beir("wikiqa")
    base = synthetic_vectors(len(data["texts"]), 384)
    ids, texts, vectors = perturb(data["ids"], data["texts"], base, 5)
    rng = np.random.default_rng(1)
    qtexts = [data["queries"][q] for q in list(data["queries"])][: args.queries]
    picks = rng.integers(0, len(ids), len(qtexts))
    qvecs = vectors[picks] + rng.normal(size=(len(qtexts), 384)).astype(np.float32) * 0.02
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    lookup = Lookup(qtexts, qvecs)
    metadatas = [{"pct": pct(i)} for i in ids]
    start = time.perf_counter()
    bm25 = BM25Index()
    bm25.add(texts, ids=ids, metadatas=metadatas)
    dense = DenseIndex()  # the default: quantization="auto"
    dense.add(vectors, ids=ids, metadatas=metadatas)
    hybrid = HybridRetriever(bm25, dense, lookup, k=10, candidates=100)
    report["build_s"] = round(time.perf_counter() - start, 1)
    report["docs"] = len(ids)
    report["dense_method"] = dense.engine.active_method() if dense.engine else None
    print(f"built {len(ids)} in {report['build_s']} s", flush=True)
    matrix = np.asarray(vectors)
    specs = {p: Range("pct", lt=p) for p in FRACTIONS}
    masks = {p: filter_mask(spec, dense.documents) for p, spec in specs.items()}
    default_fraction = engine_module.EXACT_FILTERED
    default_overfetch = engine_module._OVERFETCH
    default_scattered = engine_module._SCATTERED_READ
    rules = {"now": default_fraction, "exact": float("inf"), "codes": 0.0, "bitmap": -1.0,
             "rescore_before": -2.0}

    # Contenders: (label, rule fraction or None, call taking the query's index).
    calls: dict[str, tuple[float | None, Any]] = {
        "dense, unfiltered": (None, lambda i: dense.search(qvecs[i], 10)),
        "hybrid, unfiltered": (None, lambda i: hybrid.retrieve(qtexts[i])),
    }
    for p in FRACTIONS:
        for rule, fraction in rules.items():
            calls[f"dense, {p}%, {rule}"] = (
                fraction, lambda i, p=p: dense.search(qvecs[i], 10, allowed=masks[p])
            )
            calls[f"hybrid, {p}%, {rule}"] = (
                fraction, lambda i, p=p: hybrid.retrieve(qtexts[i], filter=specs[p])
            )
    def use(rule: float | None) -> None:
        """Set the engine's switches for one contender (``bitmap``: -1, the rule before the
        over-fetch: codes + the bitmap kernel above a quarter of the rows;
        ``rescore_before``: -2, ``now`` rescoring only 2 x the candidates under a filter, as
        before the saved code bytes were spent on rescoring)."""
        engine_module.EXACT_FILTERED = default_fraction if rule is None or rule < 0 else rule
        engine_module._OVERFETCH = 0.0 if rule == -1 else default_overfetch
        engine_module._SCATTERED_READ = 10**12 if rule == -2 else default_scattered

    times: dict[str, list[float]] = {name: [] for name in calls}
    exact: dict[str, int] = dict.fromkeys(calls, 0)
    complete: dict[str, int] = dict.fromkeys(calls, 0)
    names = list(calls)
    try:
        for warm in range(3):
            for name in names:
                use(calls[name][0])
                calls[name][1](warm)
        for i in range(len(qtexts)):
            order = names[i % len(names) :] + names[: i % len(names)]
            random.Random(i).shuffle(order)
            for name in order:
                fraction, call = calls[name]
                use(fraction)
                t0 = time.perf_counter()
                out = call(i)
                times[name].append(time.perf_counter() - t0)
                if fraction is None:
                    if name.startswith("dense"):  # the unfiltered top 10 against brute force
                        want = np.sort(matrix @ qvecs[i])[::-1][:10]
                        got = [h.score for h in out]
                        exact[name] += bool(np.allclose(got, want, atol=1e-5))
                    continue
                p = int(name.split(", ")[1].rstrip("%"))
                if name.startswith("dense"):
                    allowed = masks[p]
                    rows = np.flatnonzero(allowed)
                    want = np.sort(matrix[rows] @ qvecs[i])[::-1][:10]
                    got = [h.score for h in out]
                    inside = all(allowed[dense.documents.position(h.id)] for h in out)
                    complete[name] += len(out) == 10 and inside
                    exact[name] += len(got) == 10 and bool(np.allclose(got, want, atol=1e-5))
                else:
                    complete[name] += len(out) == 10 and all(pct(d) < p for d in out.ids)
    finally:
        use(None)
    report["load_average_end"] = os.getloadavg()
    report["queries"] = len(qtexts)
    report["exact_filtered_fraction"] = default_fraction
    rows_out: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {"p50_ms": p50(times[name]), "p95_ms": p95(times[name])}
        base_name = "dense, unfiltered" if name.startswith("dense") else "hybrid, unfiltered"
        entry["p50_ratio_to_unfiltered"] = round(
            statistics.median(times[name]) / statistics.median(times[base_name]), 3
        )
        if calls[name][0] is not None:
            entry["complete_and_matching"] = f"{complete[name]}/{len(qtexts)}"
        if name.startswith("dense"):
            entry["equals_brute_force"] = f"{exact[name]}/{len(qtexts)}"
        rows_out[name] = entry
        print(f"{name:28s} {json.dumps(entry)}", flush=True)
    report["kept"] = {p: round(float(masks[p].mean()), 4) for p in FRACTIONS}
    report["results"] = rows_out
    report["total_s"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "filtered_exact.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'filtered_exact.json'} in {report['total_s']} s, load "
          f"{report['load_average_start']} -> {report['load_average_end']}")


if __name__ == "__main__":
    main()
