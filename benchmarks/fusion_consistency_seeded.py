"""``fusion="consistency"`` through HybridRetriever: cold, and seeded from unlabelled queries.

The judged queries in retrieval.py's order (its Random(1) shuffle), every one scored by
nDCG@10 (all / design / held-out halves, ``half_of``), for: dense alone, BM25 alone,
``auto``, ``consistency`` starting cold, and ``consistency`` seeded first with
``observe_queries`` on ``--seed`` queries that are NOT in the scored stream's first part
(the last ones of the stream; no labels are read by the seeding). Quality only, no timing.

Usage: python benchmarks/fusion_consistency_seeded.py [--seed 5]
Writes benchmarks/results/fusion_consistency_seeded_<seed>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fusion_consistency_cost as C  # noqa: E402
import retrieval as R  # noqa: E402

from rag_optimize.index import BM25Index, DenseIndex  # noqa: E402
from rag_optimize.retrieval import HybridRetriever  # noqa: E402


def run(name: str, seed: int) -> dict[str, Any]:
    data = R.load_beir(name)
    ids, texts, vectors, lookup, _ = C.corpus(name, 1)
    qids = list(data["queries"])
    random.Random(1).shuffle(qids)
    bm25 = BM25Index()
    bm25.add(texts, ids=ids)
    dense = DenseIndex()
    dense.add(vectors, ids=ids)

    def make(fusion: str) -> HybridRetriever:
        return HybridRetriever(bm25, dense, lookup, fusion=fusion, k=R.DEPTH, candidates=R.DEPTH)

    seeded = make("consistency")
    weights = seeded.observe_queries([data["queries"][q] for q in qids[-seed:]])
    methods = {
        "bm25": lambda q: [h.id for h in bm25.search(q, R.DEPTH)],
        "dense": lambda q: [h.id for h in dense.search(lookup.embed_query(q), R.DEPTH)],
        "auto": make("auto").retrieve,
        "consistency, cold": make("consistency").retrieve,
        f"consistency, seeded with {seed} unlabelled queries": seeded.retrieve,
    }
    out: dict[str, Any] = {"queries": len(qids), "seed_weights": weights, "quality": {}}
    for label, search in methods.items():
        run_ = {}
        for q in qids:
            got = search(data["queries"][q])
            run_[q] = got if isinstance(got, list) else got.ids
        out["quality"][label] = R.ndcg_recall(run_, data["qrels"])
        print(name, f"{label:45s}", out["quality"][label], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    report = {"sets": {n: run(n, args.seed) for n in ("scifact-subset", "wikiqa")}}
    report["load_average"] = os.getloadavg()
    path = R.RESULTS / f"fusion_consistency_seeded_{args.seed}.json"
    path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
