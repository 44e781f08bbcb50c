"""The default cache on a file of question pairs: store the first, look up the second.

Each pair runs in its own ``SemanticCache(LocalEmbedder())`` (the shipped default: packaged
MiniLM, candidate threshold 0.8, the default decision pipeline). Label 1 pairs should hit
(a paraphrase), label 0 pairs must not (a near-miss: another question). Prints every miss and
every wrong hit with the signal that decided, and writes the counts.

Run: .venv/bin/python benchmarks/cache_decision_fresh.py [benchmarks/data/decision_pairs_fresh.tsv]
(writes benchmarks/results/cache_decision_fresh.json)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rag_optimize import SemanticCache  # noqa: E402
from rag_optimize.cache.decision.pipeline import default_pipeline  # noqa: E402
from rag_optimize.embedding import LocalEmbedder  # noqa: E402


def main() -> None:
    default = ROOT / "benchmarks/data/decision_pairs_fresh.tsv"
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    with path.open() as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t") if r and not r[0].startswith("#")]
    embedder, explain = LocalEmbedder(), default_pipeline().explain
    counts = {"paraphrases": 0, "paraphrases_hit": 0, "near_misses": 0, "near_misses_served": 0}
    for label, _kind, stored, asked in rows:
        cache = SemanticCache(embedder)
        cache.set(stored, f"answer to: {stored}")
        hit = cache.get(asked) is not None
        vetoed_by = explain(asked, stored)["vetoed_by"]
        if label == "1":
            counts["paraphrases"] += 1
            counts["paraphrases_hit"] += hit
            if not hit:
                print(f"missed ({vetoed_by or 'similarity'}): {stored} | {asked}")
        else:
            counts["near_misses"] += 1
            counts["near_misses_served"] += hit
            if hit:
                print(f"WRONG: {stored} | {asked}")
    print(counts)
    out = ROOT / "benchmarks/results/cache_decision_fresh.json"
    out.write_text(json.dumps({"pairs": str(path.relative_to(ROOT)), **counts}, indent=2) + "\n")


if __name__ == "__main__":
    main()
