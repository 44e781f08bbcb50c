"""Label-free branch signals vs which branch actually wins, per shared set (issue 17).

For each judged query: BM25's and the dense index's top 100 (the same indexes and cached
MiniLM vectors as benchmarks/retrieval.py), then corpus means of signals a label-free fusion
could weigh the branches by, beside the labelled truth (how often each branch has the higher
nDCG@10). A signal that could set a default would have to differ between a set where one
branch is much weaker (WikiQA) and one where both help (SciFact).

Usage: python benchmarks/fusion_signals.py   (embeddings must be cached by retrieval.py)
Writes benchmarks/results/fusion_signals.json.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import retrieval as R  # noqa: E402

from rag_optimize.index import BM25Index, DenseIndex  # noqa: E402


class CachedOnly:
    """Refuses to embed: this script reads the vectors retrieval.py cached."""

    def encode(self, texts: list[str]) -> Any:
        raise SystemExit("embeddings are not cached: run benchmarks/retrieval.py first")


def zscores(scores: list[float]) -> list[float]:
    mean = statistics.fmean(scores)
    std = statistics.pstdev(scores) or 1.0
    return [(s - mean) / std for s in scores]


def ndcg(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    return dcg / sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))


def signals(name: str) -> dict[str, Any]:
    data = R.load_beir(name)
    queries = list(data["queries"].values())
    cached = R.embed_cached(f"{name}-queries", queries, CachedOnly())
    qvecs = dict(zip(queries, cached, strict=True))
    dvecs = R.embed_cached(f"{name}-docs", data["texts"], CachedOnly())
    bm25, dense = BM25Index(), DenseIndex()
    bm25.add(data["texts"], ids=data["ids"])
    dense.add(dvecs, ids=data["ids"])
    rows: dict[str, list[float]] = {}
    wins = {"bm25": 0, "dense": 0, "tie": 0}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for qid, text in data["queries"].items():
        lists = {
            "bm25": [(h.id, h.score) for h in bm25.search(text, R.DEPTH)],
            "dense": [(h.id, h.score) for h in dense.search(qvecs[text], R.DEPTH)],
        }
        ranks = {b: {d: i + 1 for i, (d, _) in enumerate(hits)} for b, hits in lists.items()}
        for b, hits in lists.items():
            other = "dense" if b == "bm25" else "bm25"
            z = zscores([s for _, s in hits])
            add(f"{b} top-1 z", z[0])
            add(f"{b} head spread z1-z10", z[0] - z[min(9, len(z) - 1)])
            add(f"{b} mean z of top 10", statistics.fmean(z[:10]))
            add(f"{b} distinct scores in top 20", len({round(s, 6) for _, s in hits[:20]}) / 20)
            support = [1 / ranks[other].get(d, R.DEPTH + 1) for d, _ in hits[:10]]
            add(f"{b} top 10 reciprocal rank in the other branch", statistics.fmean(support))
        top = {b: {d for d, _ in hits[:10]} for b, hits in lists.items()}
        add("top-10 overlap", len(top["bm25"] & top["dense"]) / 10)
        relevant = data["qrels"][qid]
        gain = {b: ndcg([d for d, _ in hits], relevant) for b, hits in lists.items()}
        if gain["bm25"] == gain["dense"]:
            wins["tie"] += 1
        else:
            wins[max(gain, key=gain.__getitem__)] += 1
    return {
        "docs": len(data["ids"]),
        "queries": len(data["queries"]),
        "labelled: queries each branch wins (nDCG@10)": wins,
        "label-free signals (corpus means)": {
            k: round(statistics.fmean(v), 4) for k, v in rows.items()
        },
    }


def main() -> None:
    report = {name: signals(name) for name in ("scifact-subset", "wikiqa")}
    out = R.RESULTS / "fusion_signals.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
