"""Speed and agreement of the two backends of LocalEmbedder (ONNX int8 vs torch float32).

Run: .venv/bin/python benchmarks/embedding_model.py [--pairs 1000] [--rounds 3]

Both backends load in this one process and are timed interleaved (round by round), so the
ratio holds even on a busy machine. Data: MRPC sentence pairs from $RAG_OPTIMIZE_DATA (default
../shared/data beside the checkout). Reports:

* load time; texts/s for single texts (embed_query, one by one) and batches of 32;
* agreement: cosine between the two backends' vectors of the same sentence, and the Spearman
  correlation of their pair similarities (does the ranking of pairs change?);
* MRPC ROC-AUC of cosine similarity (paraphrase vs not) per backend;
* calibration for the default backend over all MRPC pairs: similarity percentiles of
  label-1 and label-0 pairs, and precision/recall of "similarity >= t" per threshold t (a
  cache hit on a label-0 pair is a false hit).

Writes benchmarks/results/embedding_model.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag_optimize.embedding.local import LocalEmbedder

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAG_OPTIMIZE_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "results" / "embedding_model.json"
THRESHOLDS = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
PERCENTILES = [1, 5, 10, 25, 50, 75, 90, 95, 99]


def load_mrpc() -> list[tuple[int, str, str]]:
    with open(DATA / "mrpc" / "train.tsv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(int(r["label"]), r["text1"], r["text2"]) for r in reader]


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC: P(score of a random positive > score of a random negative)."""
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    r = ranks(scores)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def pair_sims(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine of row i of ``left`` with row i of ``right`` (unit rows)."""
    return np.asarray((left * right).sum(axis=1), dtype=np.float64)


def time_single(model: LocalEmbedder, texts: list[str]) -> float:
    start = time.perf_counter()
    for t in texts:
        model.embed_query(t)
    return len(texts) / (time.perf_counter() - start)


def time_batches(model: LocalEmbedder, texts: list[str], size: int = 32) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), size):
        model.encode(texts[i : i + size])
    return len(texts) / (time.perf_counter() - start)


def calibration(sims: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    pos, neg = sims[labels == 1], sims[labels == 0]
    rows = []
    for t in THRESHOLDS:
        hit = sims >= t
        tp = int((hit & (labels == 1)).sum())
        fp = int((hit & (labels == 0)).sum())
        rows.append(
            {
                "threshold": t,
                "precision": tp / (tp + fp) if tp + fp else None,
                "recall": tp / len(pos),
                "false_hit_rate_on_label0": fp / len(neg),
            }
        )
    return {
        "n_label1": len(pos),
        "n_label0": len(neg),
        "percentiles": PERCENTILES,
        "label1": [round(float(np.percentile(pos, q)), 4) for q in PERCENTILES],
        "label0": [round(float(np.percentile(neg, q)), 4) for q in PERCENTILES],
        "thresholds": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1000, help="MRPC pairs for the comparison")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--single", type=int, default=64, help="texts per single-text round")
    ap.add_argument("--batched", type=int, default=320, help="texts per batch-32 round")
    args = ap.parse_args()

    data = load_mrpc()
    pairs = data[: args.pairs]
    labels = np.array([p[0] for p in pairs])
    sentences = [p[1] for p in pairs] + [p[2] for p in pairs]

    models: dict[str, LocalEmbedder] = {}
    load_s: dict[str, float] = {}
    for name in ("onnx", "torch"):
        start = time.perf_counter()
        models[name] = LocalEmbedder(backend=name)
        models[name].embed_query("warm up")
        load_s[name] = time.perf_counter() - start

    single: dict[str, list[float]] = {n: [] for n in models}
    batched: dict[str, list[float]] = {n: [] for n in models}
    for r in range(args.rounds):
        off = r * args.batched
        s_texts = sentences[off : off + args.single]
        b_texts = sentences[off : off + args.batched]
        for name, model in models.items():
            single[name].append(time_single(model, s_texts))
            batched[name].append(time_batches(model, b_texts))

    # Vectors: sentences = left texts of the pairs, then right texts.
    n_pairs = len(pairs)
    vecs = {name: m.encode(sentences) for name, m in models.items()}
    cos = (vecs["onnx"] * vecs["torch"]).sum(axis=1)
    sims = {name: pair_sims(v[:n_pairs], v[n_pairs:]) for name, v in vecs.items()}
    auc = {name: roc_auc(s, labels) for name, s in sims.items()}

    # Calibration: every MRPC pair with the backend "auto" picks (reuse what we have).
    default = LocalEmbedder().backend
    rest = data[n_pairs:]
    rest_vecs = models[default].encode([p[1] for p in rest] + [p[2] for p in rest])
    all_sims = np.concatenate(
        [sims[default], pair_sims(rest_vecs[: len(rest)], rest_vecs[len(rest) :])]
    )
    all_labels = np.array([p[0] for p in data])

    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "note": "shared 2-core machine; other jobs ran at the same time"},
        "args": vars(args),
        "default_backend": default,
        "load_seconds": {n: round(v, 2) for n, v in load_s.items()},
        "single_texts_per_s": {n: round(statistics.median(v), 1) for n, v in single.items()},
        "batch32_texts_per_s": {n: round(statistics.median(v), 1) for n, v in batched.items()},
        "agreement": {
            "sentences": len(sentences),
            "cosine_min": round(float(cos.min()), 5),
            "cosine_p1": round(float(np.percentile(cos, 1)), 5),
            "cosine_mean": round(float(cos.mean()), 5),
            "pair_similarity_spearman": round(spearman(sims["onnx"], sims["torch"]), 5),
            "pair_similarity_max_abs_diff": round(
                float(np.abs(sims["onnx"] - sims["torch"]).max()), 5
            ),
        },
        "mrpc_roc_auc": {"pairs": len(pairs), **{n: round(v, 4) for n, v in auc.items()}},
        "calibration": {"backend": default, "pairs": len(data),
                        "roc_auc": round(roc_auc(all_sims, all_labels), 4),
                        **calibration(all_sims, all_labels)},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
