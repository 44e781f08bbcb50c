"""Issue 17's 100k targets with the default dense index, and issue 15's deletes at 100k.

* A filter keeping 10% (``Eq("bucket", 3)``) against an unfiltered search, interleaved,
  and the filtered top 10 against brute force over the matching rows: for the default
  dense index (``quantization="auto"``: binary codes + exact rescoring at this size) and
  for the exact one (``quantization=None``).
* ``save`` of the default 100k hybrid index and ``load(mmap=True)``, three times in this
  process and once in a fresh one; nothing is embedded on load.
* Deletes at 100k: one document at a time with a search after each, as the index does it
  now (rows marked dead, a compaction past 25%), against the old cost (the engine rebuilt
  from the remaining vectors after every delete, the same code path as a compaction); the
  number of engine builds; a hybrid delete followed by a search (BM25 rebuilds its matrix
  on the next search).

Corpus: WikiQA x5 perturbed as in ``retrieval.py`` (103,890 documents) with the MiniLM
embeddings (cached by ``retrieval.py``; the perturbed copies' vectors jittered), so the
default index's codes are measured on real embeddings; ``--synthetic-vectors`` uses seeded
random unit vectors instead (fine for latency and persistence, meaningless for the codes'
recall: random 384-d neighbours are barely nearer than the rest).

Usage: PYTHONPATH=src .venv/bin/python benchmarks/retrieval_targets.py [--synthetic-vectors]
Writes benchmarks/results/retrieval_targets[_synthetic].json.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

import numpy as np
from retrieval import (  # same directory (benchmarks/ is the script's path)
    RESULTS,
    HybridRetriever,
    Lookup,
    bucket,
    build_ours,
    embed_cached,
    filter_report,
    load_beir,
    persistence_report,
    perturb,
)

from rag_optimize.index import DenseIndex


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 3),
        "max_ms": round(1000 * ordered[-1], 3),
        "n": len(ordered),
    }


def delete_report(vectors: np.ndarray, ids: list[str], lookup: Lookup, qtexts: list[str]) -> dict:
    """Per-delete cost now (dead rows) vs before (rebuild per delete), and builds counted."""
    from rag_optimize.index import dense as dense_module

    built = {"count": 0}
    original = dense_module.VectorEngine

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built["count"] += 1
            super().__init__(*args, **kwargs)

    dense_module.VectorEngine = Counting  # type: ignore[misc]
    try:
        index = DenseIndex()  # the default: quantization="auto"
        index.add(vectors, ids=ids)
        built["count"] = 0
        order = random.Random(2).sample(ids, 600)
        now, before = [], []
        for i, doc_id in enumerate(order[:500]):  # as the index deletes now
            start = time.perf_counter()
            index.delete([doc_id])
            now.append(time.perf_counter() - start)
            index.search(lookup.embed_query(qtexts[i % len(qtexts)]), 10)
        builds_now = built["count"]
        dead_after = index.dead_rows
        for i, doc_id in enumerate(order[500:520]):  # as it did: a rebuild per delete
            start = time.perf_counter()
            index.delete([doc_id])
            with index._lock.writing():
                index._compact()
            before.append(time.perf_counter() - start)
            index.search(lookup.embed_query(qtexts[i % len(qtexts)]), 10)
        gone = set(order[:520])
        served = sum(
            bool(gone & {h.id for h in index.search(vectors[ids.index(d)], 10)})
            for d in order[:50]
        )
    finally:
        dense_module.VectorEngine = original  # type: ignore[misc]
    return {
        "docs": len(ids),
        "delete_now": ms(now),
        "engine_builds_in_500_deletes_now": builds_now,
        "dead_rows_after_500": dead_after,
        "delete_with_rebuild_as_before": ms(before),
        "deleted_vectors_asked_for_themselves_served": f"{served}/50",
    }


def unfiltered_recall(built: dict[str, Any], lookup: Lookup, qtexts: list[str]) -> dict:
    """The default index's top 10 against brute force over every row, without a filter
    (what its codes give up anyway; the filtered figure is read against it)."""
    dense = built["dense"]["auto"]
    vectors = np.asarray(built["dense"]["float32"]._vectors)
    found = []
    for q in qtexts:
        vec = np.asarray(lookup.embed_query(q), dtype=np.float32)
        best = set(np.argsort(-(vectors @ (vec / np.linalg.norm(vec))), kind="stable")[:10])
        hits = {dense.documents.position(h.id) for h in dense.search(vec, 10)}
        found.append(len(best & hits) / 10)
    return {"dense_auto_recall@10_vs_brute_force_unfiltered": round(float(np.mean(found)), 4)}


def hybrid_delete_report(built: dict[str, Any], lookup: Lookup, qtexts: list[str]) -> dict:
    hybrid = HybridRetriever(built["bm25"], built["dense"]["auto"], lookup, k=10)
    hybrid.retrieve(qtexts[0])
    doc_id = built["bm25"].documents.ids[7]
    start = time.perf_counter()
    hybrid.delete([doc_id])
    deleted = time.perf_counter() - start
    start = time.perf_counter()
    hybrid.retrieve(qtexts[1])
    first = time.perf_counter() - start
    start = time.perf_counter()
    hybrid.retrieve(qtexts[2])
    second = time.perf_counter() - start
    return {
        "hybrid_delete_s": round(deleted, 4),
        "first_search_after_s": round(first, 3),
        "next_search_s": round(second, 4),
    }


def main() -> None:
    started = time.perf_counter()
    report: dict[str, Any] = {"load_average_start": os.getloadavg(), "python": sys.version}
    data = load_beir("wikiqa")
    all_qids = list(data["queries"])
    qids = list(all_qids)
    random.Random(1).shuffle(qids)
    qtexts = [data["queries"][q] for q in qids[:100]]
    if "--synthetic-vectors" in sys.argv:
        rng = np.random.default_rng(0)
        doc_vecs = rng.normal(size=(len(data["texts"]), 384)).astype(np.float32)
        doc_vecs /= np.linalg.norm(doc_vecs, axis=1, keepdims=True)
        qvecs = rng.normal(size=(len(qtexts), 384)).astype(np.float32)
    else:  # the cached MiniLM embeddings of retrieval.py (computed there if missing)
        from rag_optimize.embedding.local import LocalEmbedder

        embedder = LocalEmbedder(backend="onnx", max_length=256)
        doc_vecs = embed_cached("wikiqa-docs", data["texts"], embedder)
        every = embed_cached("wikiqa-queries", [data["queries"][q] for q in all_qids], embedder)
        by_text = {data["queries"][q]: v for q, v in zip(all_qids, every, strict=True)}
        qvecs = np.asarray([by_text[t] for t in qtexts], dtype=np.float32)
    report["vectors"] = "synthetic" if "--synthetic-vectors" in sys.argv else "MiniLM"
    ids, texts, vectors = perturb(data["ids"], data["texts"], doc_vecs, 5)
    lookup = Lookup(texts + qtexts, np.concatenate([vectors, qvecs]))
    metadatas = [{"bucket": bucket(i)} for i in ids]
    start = time.perf_counter()
    built = build_ours(
        ids, texts, vectors, lookup, quantizations=(None, "auto"), metadatas=metadatas
    )
    report["build_s"] = round(time.perf_counter() - start, 1)
    print(f"built {len(ids)} documents in {report['build_s']} s", flush=True)
    for kind in ("auto", "float32"):
        report[f"filter_{kind}"] = filter_report(built, qtexts, lookup, kind=kind)
        print(f"filter {kind} {json.dumps(report[f'filter_{kind}'])}", flush=True)
    report["unfiltered_auto"] = unfiltered_recall(built, lookup, qtexts)
    print(f"unfiltered {json.dumps(report['unfiltered_auto'])}", flush=True)
    report["persistence_auto"] = persistence_report(built, qtexts[:20], lookup, kind="auto")
    print(f"persistence {json.dumps(report['persistence_auto'])}", flush=True)
    report["deletes_dense"] = delete_report(vectors, ids, lookup, qtexts)
    print(f"deletes {json.dumps(report['deletes_dense'])}", flush=True)
    report["deletes_hybrid"] = hybrid_delete_report(built, lookup, qtexts)
    print(f"hybrid delete {json.dumps(report['deletes_hybrid'])}", flush=True)
    report["load_average_end"] = os.getloadavg()
    report["total_s"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "retrieval_targets" + ("_synthetic" if "--synthetic-vectors" in sys.argv else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / name}.json in {report['total_s']} s")


if __name__ == "__main__":
    main()
