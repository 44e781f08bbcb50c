"""How deep a 10% filter's code ranking must be rescored for the exact top 10.

103,890 documents (WikiQA x5 perturbed, MiniLM vectors as ``retrieval_targets.py``), the filter
``Eq("bucket", 3)`` (10.04%), all 873 WikiQA questions. For each rescoring depth (the number
of allowed rows whose codes rank best, rescored exactly; the default's at k=10 is 525), how
many of the filtered top 10s have the brute-force scores, and the filtered search's p50
against the unfiltered one (300 queries x 3 rounds, the contenders in a seeded random order
for each query).

Usage: cd benchmarks && PYTHONPATH=../src python filtered_depth.py
Writes benchmarks/results/filtered_depth.json.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import numpy as np
from retrieval import RESULTS, bucket, embed_cached, load_beir, perturb

from rag_optimize.embedding.local import LocalEmbedder
from rag_optimize.index import DenseIndex
from rag_optimize.index import engine as engine_module
from rag_optimize.retrieval import Eq
from rag_optimize.retrieval.filters import filter_mask

# label -> (the engine's ``candidates``, engine._SCATTERED_READ): a filter keeping <= 40%
# rescores candidates + max(min(candidates, 256), the code bytes it saved / (row bytes x
# _SCATTERED_READ)), at most + 1024; a huge _SCATTERED_READ gives the rule before it (+ 160).
BEFORE = 10**12
DEPTHS = {
    "320 (the rule before)": (None, BEFORE),
    "512": (256, BEFORE),
    "525 (the default: _SCATTERED_READ 8)": (None, engine_module._SCATTERED_READ),
    "1024": (768, BEFORE),
}


def configure(engine: Any, label: str) -> None:
    engine.candidates, engine_module._SCATTERED_READ = DEPTHS[label]


def main() -> None:
    data = load_beir("wikiqa")
    qids = list(data["queries"])
    embedder = LocalEmbedder(backend="onnx", max_length=256)
    docs = embed_cached("wikiqa-docs", data["texts"], embedder)
    queries = embed_cached("wikiqa-queries", [data["queries"][q] for q in qids], embedder)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    ids, _texts, vectors = perturb(data["ids"], data["texts"], docs, 5)
    dense = DenseIndex()
    dense.add(vectors, ids=ids, metadatas=[{"bucket": bucket(i)} for i in ids])
    allowed = filter_mask(Eq("bucket", 3), dense.documents)
    stored, rows = np.asarray(dense._vectors), np.flatnonzero(allowed)
    engine = dense._engine
    assert engine is not None
    res: dict[str, Any] = {"kept": round(float(allowed.mean()), 4), "rows": len(ids),
                           "queries": len(queries), "load_average_start": os.getloadavg()}
    print(res, flush=True)
    truth = [np.sort(stored[rows] @ v)[::-1][:10] for v in queries]
    for label in DEPTHS:
        configure(engine, label)
        exact = sum(
            bool(np.allclose([h.score for h in dense.search(v, 10, allowed=allowed)], want,
                             atol=1e-6))
            for v, want in zip(queries, truth, strict=True)
        )
        res[label] = {"exact_top10": f"{exact}/{len(queries)}"}
        print(label, res[label], flush=True)
    times: dict[str, list[float]] = {label: [] for label in [*DEPTHS, "unfiltered"]}
    rng = random.Random(0)
    for _round in range(3):
        for v in queries[:300]:
            for label in rng.sample(list(times), len(times)):
                if label == "unfiltered":
                    engine.candidates, mask = None, None
                else:
                    configure(engine, label)
                    mask = allowed
                start = time.perf_counter()
                dense.search(v, 10, allowed=mask)
                times[label].append(time.perf_counter() - start)
    for label, taken in times.items():
        res.setdefault(label, {})["p50_ms"] = round(1000 * sorted(taken)[len(taken) // 2], 3)
    res["load_average_end"] = os.getloadavg()
    (RESULTS / "filtered_depth.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
