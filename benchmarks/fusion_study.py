"""Label-free fusion rules on complete score vectors, design half vs held-out half (issue 17).

For every judged query of each set: BM25's and the dense index's top 100 (the same indexes
and cached MiniLM vectors as benchmarks/retrieval.py), then, for the union of the two lists,
BOTH scores of every candidate (the BM25 score of any document for the query, and its exact
cosine), cheap extra views (IDF-weighted query-term coverage, coverage by the terms that tell
dense's top 10 apart, cosine to the centroid of each branch's top 5, BM25 against the words
of dense's top 5) and each query's score statistics over the whole corpus. Every fusion
variant is then a pure function of those numbers, scored by nDCG@10 on the design half and
the held-out half of the queries (``half_of`` in retrieval.py). Variants marked (b) fit
corpus-level weights on the design half's query stream without labels. Labels are read only
to score, and by the ``independence`` diagnostic.

Sets: scifact-subset and wikiqa (the two shared BEIR sets the default is judged on) and
``mrpc-retrieval``, a check set built from the MRPC pairs (see ``load_set``) that nothing
was designed on.

Usage: python benchmarks/fusion_study.py [--rebuild] [--only PREFIX,...]   (the BEIR
embeddings must be cached by retrieval.py; MRPC's 4k sentences are embedded here once).
Features are cached under /tmp/rag-optimize-fusion-study; results go to
benchmarks/results/fusion_study.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import retrieval as R  # noqa: E402

from rag_optimize.index import BM25Index  # noqa: E402
from rag_optimize.retrieval import fusion as F  # noqa: E402

FEATURES = Path(os.environ.get("RAG_OPTIMIZE_FUSION_STUDY", "/tmp/rag-optimize-fusion-study"))
# The two shared sets; a check set nothing was designed on; and interventions on the shared
# sets (one branch made worse on purpose) that a reliability estimate has to follow.
ALL_SETS = (
    "scifact-subset,wikiqa,mrpc-retrieval,scifact-subset+noisy-dense,scifact-subset+weak-bm25,"
    "wikiqa+noisy-dense,wikiqa+weak-bm25,scifact-subset+hashing-dense,wikiqa+hashing-dense,"
    "scifact-subset+no-stemming-bm25,wikiqa+no-stemming-bm25"
)
SETS = tuple(os.environ.get("FUSION_STUDY_SETS", ALL_SETS).split(","))
SHORT = {"scifact-subset": "sf", "wikiqa": "wq", "mrpc-retrieval": "mrpc"}
SHORT.update({"noisy-dense": "nd", "weak-bm25": "wb", "hashing-dense": "hd"})
SHORT.update({"no-stemming-bm25": "ns"})


def short(name: str) -> str:
    return "+".join(SHORT.get(part, part) for part in name.split("+"))


DEPTH = R.DEPTH


class CachedOnly:
    """Refuses to embed: this script reads the vectors retrieval.py cached."""

    def encode(self, texts: list[str]) -> Any:
        raise SystemExit("embeddings are not cached: run benchmarks/retrieval.py first")


def load_set(name: str) -> dict[str, Any]:
    """A BEIR set from the shared data, or ``mrpc-retrieval``: a check set built from MRPC.

    ``mrpc-retrieval`` (not used to design anything): every distinct second sentence of the
    MRPC pairs is a document; the first sentence of each paraphrase pair (label 1) is a
    query whose relevant document is its paraphrase. Up to ``MRPC_QUERIES`` queries (seeded).
    """
    if name != "mrpc-retrieval":
        return R.load_beir(name)
    ids: dict[str, str] = {}
    pairs: dict[str, set[str]] = {}
    with open(R.DATA / "mrpc" / "train.tsv") as fh:
        next(fh)
        for line in fh:
            label, first, second = line.rstrip("\n").split("\t")
            doc = ids.setdefault(second, f"m{len(ids)}")
            if label == "1":
                pairs.setdefault(first, set()).add(doc)
    chosen = sorted(pairs)
    R.random.Random(0).shuffle(chosen)
    chosen = chosen[:MRPC_QUERIES]
    queries = {f"q{i}": text for i, text in enumerate(chosen)}
    return {
        "ids": list(ids.values()),
        "texts": list(ids),
        "queries": queries,
        "qrels": {q: pairs[t] for q, t in queries.items()},
    }


MRPC_QUERIES = 600
NOISE = 0.06  # per-dimension noise of the "+noisy-dense" intervention (unit vectors, 384 dims)


def features(name: str, rebuild: bool = False) -> list[dict[str, Any]]:
    """Per judged query: the union of both top-100s with both scores of every candidate."""
    FEATURES.mkdir(parents=True, exist_ok=True)
    path = FEATURES / f"{name}.json"
    if path.exists() and not rebuild:
        return json.loads(path.read_text())
    base, _, change = name.partition("+")
    data = load_set(base)
    queries = list(data["queries"].values())
    embedder: Any = CachedOnly()
    if name == "mrpc-retrieval":  # small: embedded here once (and cached like the others)
        from rag_optimize.embedding.local import LocalEmbedder

        embedder = LocalEmbedder(backend="onnx", max_length=256)
    cached = R.embed_cached(f"{base}-queries", queries, embedder)
    qvecs = dict(zip(queries, cached, strict=True))
    dvecs = np.asarray(R.embed_cached(f"{base}-docs", data["texts"], embedder), np.float32)
    texts = data["texts"]
    if change == "noisy-dense":  # an intervention: a worse dense branch, BM25 untouched
        dvecs = dvecs + np.random.default_rng(0).normal(0, NOISE, dvecs.shape).astype(np.float32)
        dvecs /= np.linalg.norm(dvecs, axis=1, keepdims=True)
    elif change == "weak-bm25":  # a worse BM25 branch (each word kept with p 0.4), dense same
        rng = R.random.Random(0)
        texts = [" ".join(w for w in t.split() if rng.random() < 0.4) or t for t in texts]
    elif change == "hashing-dense":  # a real but weak "dense" model: hashed words and bigrams
        from rag_optimize.embedding import HashingEmbedder

        hashing = HashingEmbedder(dim=384)
        dvecs = np.asarray(hashing.embed_documents(texts), np.float32)
        qvecs = dict(zip(queries, hashing.embed_documents(queries), strict=True))
    elif change == "no-stemming-bm25":  # BM25 without stemming or stopwords, dense same
        pass
    elif change:
        raise SystemExit(f"unknown change {change!r}")
    bm25 = BM25Index(stopwords=None, stemmer=None) if change == "no-stemming-bm25" else BM25Index()
    bm25.add(texts, ids=data["ids"])
    model = bm25._model()
    tokens = bm25._tokens or []
    df: dict[str, int] = {}
    for toks in tokens:
        for t in set(toks):
            df[t] = df.get(t, 0) + 1
    n = len(tokens)
    idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
    lengths = np.asarray([len(t) for t in tokens], np.float32)
    rows = []
    for qid, text in data["queries"].items():
        ids_ = model.get_tokens_ids(bm25.tokenizer(text))  # as BM25Index.search scores
        qtoks = list(dict.fromkeys(bm25.tokenizer(text)))
        sparse = np.asarray(model.get_scores_from_ids(ids_), np.float32) if ids_ else np.zeros(n)
        cos = dvecs @ np.asarray(qvecs[text], np.float32)
        top_b = [int(i) for i in np.argsort(-sparse, kind="stable")[:DEPTH] if sparse[i] > 0]
        top_d = [int(i) for i in np.argsort(-cos, kind="stable")[:DEPTH]]
        union = list(dict.fromkeys(top_b + top_d))
        rank_b = {i: r + 1 for r, i in enumerate(top_b)}
        rank_d = {i: r + 1 for r, i in enumerate(top_d)}
        # doc-to-doc views: similarity to the centroid of each branch's top 5 (pseudo-feedback)
        cb = dvecs[top_b[:5]].mean(axis=0) if top_b else np.zeros(dvecs.shape[1], np.float32)
        cd = dvecs[top_d[:5]].mean(axis=0)
        prf_b, prf_d = dvecs[union] @ cb, dvecs[union] @ cd
        # and the lexical view of dense's top 5: BM25 with their words as the query
        words = model.get_tokens_ids([t for i in top_d[:5] for t in tokens[i]])
        lex_d = np.asarray(model.get_scores_from_ids(words), np.float32)[union]
        words = model.get_tokens_ids([t for i in top_b[:5] for t in tokens[i]])
        lex_b = np.asarray(model.get_scores_from_ids(words), np.float32)[union]
        qmass = sum(idf.get(t, 0.0) for t in qtoks) or 1.0
        cover, distinct, rarest = [], [], []
        head = [set(tokens[i]) for i in top_d[:10]]
        # query terms that fewer than half of dense's top 10 contain: lexical evidence that
        # tells the dense head apart (a rare-in-the-head match), not the topic word they share
        telling = {t for t in qtoks if sum(t in h for h in head) < len(head) / 2}
        for i in union:
            have = set(tokens[i])
            cover.append(sum(idf.get(t, 0.0) for t in qtoks if t in have) / qmass)
            distinct.append(sum(idf.get(t, 0.0) for t in telling if t in have) / qmass)
            rarest.append(max([idf.get(t, 0.0) for t in qtoks if t in have], default=0.0))
        rows.append(
            {
                "qid": qid,
                "half": R.half_of(qid),
                "rel": [p for p, i in enumerate(union) if data["ids"][i] in data["qrels"][qid]],
                "n_rel": len(data["qrels"][qid]),
                "bm25_rank": [rank_b.get(i, 0) for i in union],
                "dense_rank": [rank_d.get(i, 0) for i in union],
                "bm25": [float(sparse[i]) for i in union],
                "dense": [float(cos[i]) for i in union],
                "cover": cover,
                "distinct": distinct,
                "rarest": rarest,
                "prf_b": [float(v) for v in prf_b],
                "prf_d": [float(v) for v in prf_d],
                "lex_d": [float(v) for v in lex_d],
                "lex_b": [float(v) for v in lex_b],
                "length": [float(lengths[i]) for i in union],
                "corpus": {
                    "bm25_mean": float(sparse.mean()),
                    "bm25_std": float(sparse.std()),
                    "bm25_nonzero": int((sparse > 0).sum()),
                    "dense_mean": float(cos.mean()),
                    "dense_std": float(cos.std()),
                    "docs": n,
                    "query_terms": len(qtoks),
                    "query_terms_known": len(ids_),
                },
            }
        )
    path.write_text(json.dumps(rows))
    return rows


def ndcg10(order: list[int], rel: set[int], n_rel: int) -> float:
    dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(order[:10]) if i in rel)
    return dcg / sum(1 / math.log2(r + 2) for r in range(min(n_rel, 10)))


# -- variants: each maps one query's row to an order of candidate positions -------------------

Variant = Callable[[dict[str, Any]], list[int]]


def listed(row: dict[str, Any], branch: str) -> list[tuple[str, float]]:
    """The branch's own top-100 as fusion.py sees it: (position as id, score), best first."""
    ranks = row[f"{branch}_rank"]
    hits = sorted((r, i) for i, r in enumerate(ranks) if r)
    return [(str(i), row[branch][i]) for _, i in hits]


def via(fuse: Callable[..., F.Fused], **kw: Any) -> Variant:
    def run(row: dict[str, Any]) -> list[int]:
        ranked = {"bm25": listed(row, "bm25"), "dense": listed(row, "dense")}
        ranked = {b: h for b, h in ranked.items() if h}
        return [int(d) for d, _ in fuse(ranked, **kw)]

    return run


def single(branch: str) -> Variant:
    return lambda row: [int(d) for d, _ in listed(row, branch)]


def z(values: np.ndarray) -> np.ndarray:
    std = values.std()
    return (values - values.mean()) / std if std > 1e-12 else np.zeros_like(values)


def complete(kind: str, depth: int = 10, dense_w: float = 1.0) -> Variant:
    """Fusion over the union with both scores known for every candidate."""

    def run(row: dict[str, Any]) -> list[int]:
        b, d = np.asarray(row["bm25"]), np.asarray(row["dense"])
        if kind == "z":
            zb, zd = z(b), z(d)
            s = (2 - dense_w) * zb + dense_w * zd
        elif kind == "auto":  # auto's evidence weights, on the union
            zb, zd = z(b), z(d)
            cb = max(0.0, float(np.sort(zb)[::-1][:depth].mean()))
            cd = max(0.0, float(np.sort(zd)[::-1][:depth].mean()))
            s = cb * zb + cd * zd
        elif kind == "minmax":
            mm = lambda v: (v - v.min()) / (v.max() - v.min() + 1e-12)  # noqa: E731
            s = mm(b) + mm(d)
        elif kind == "corpus_z":  # z against the whole corpus (the null: almost all non-relevant)
            c = row["corpus"]
            s = (b - c["bm25_mean"]) / (c["bm25_std"] or 1) + (d - c["dense_mean"]) / c["dense_std"]
        else:
            raise ValueError(kind)
        return [int(i) for i in np.argsort(-s, kind="stable")]

    return run


def anchored(top: int, weight: float = 1.0, gate: str = "") -> Variant:
    """(c) Dense ranks; BM25 re-orders only dense's top ``top`` (z-scores among them).

    ``gate``: "" (always), "cover" (BM25 counts only for candidates whose IDF-weighted
    query-term coverage is above the top-``top`` median: lexical evidence that discriminates).
    """

    def run(row: dict[str, Any]) -> list[int]:
        d = np.asarray(row["dense"])
        order = [int(i) for i in np.argsort(-d, kind="stable")]
        head = np.asarray(order[:top])
        b = np.asarray(row["bm25"])[head]
        zb = z(b)
        if gate == "cover":
            c = np.asarray(row["cover"])[head]
            zb = np.where(c > np.median(c), zb, np.minimum(zb, 0.0))
        elif gate == "distinct":  # BM25 counts only where the doc matches a telling term
            c = np.asarray(row["distinct"])[head]
            zb = np.where(c > 0, zb, np.minimum(zb, 0.0))
        elif gate == "distinct-only":  # the telling-term coverage instead of the BM25 score
            zb = z(np.asarray(row["distinct"])[head])
        s = z(d[head]) + weight * zb
        return [int(head[i]) for i in np.argsort(-s, kind="stable")] + order[top:]

    return run


def linear(**weights: float) -> Variant:
    """Sum of z-scores (within the query's union) of the named views, weighted."""

    def run(row: dict[str, Any]) -> list[int]:
        total = sum(w * z(np.asarray(row[view], float)) for view, w in weights.items())
        return [int(i) for i in np.argsort(-np.asarray(total), kind="stable")]

    return run


def pooled(rows: list[dict[str, Any]], view: str) -> np.ndarray:
    """One view's z-scores (within each query's union), all queries end to end."""
    return np.concatenate([z(np.asarray(r[view], float)) for r in rows])


def triplet(rows: list[dict[str, Any]], third: str) -> dict[str, Any]:
    """(b) Each view's accuracy from pooled pairwise moments (the triplet method).

    Views bm25, dense and ``third``, z-scored within each query's candidate union, pooled
    over the query stream (no labels). If their errors were independent given relevance,
    E[v_i v_j] = a_i a_j, so a_i = sqrt(|m_ij m_ik / m_jk|); fusion weight a / (1 - a^2)
    (the discriminant weight of a unit-variance view). a^2 is capped at 0.99.
    """
    views = ("bm25", "dense", third)
    stacked = {v: pooled(rows, v) for v in views}
    m = {(i, j): float(np.mean(stacked[i] * stacked[j])) for i in views for j in views}
    weights = {}
    for i in views:
        j, k = (v for v in views if v != i)
        a = math.sqrt(min(abs(m[(i, j)] * m[(i, k)] / m[(j, k)]), 0.99))
        weights[i] = a / (1 - a * a)
    return {
        "moments": {
            f"{i}~{j}": round(m[(i, j)], 3) for i, j in m if views.index(i) < views.index(j)
        },
        "weights": {v: round(w, 3) for v, w in weights.items()},
    }


def independence(rows: list[dict[str, Any]], views: tuple[str, ...]) -> dict[str, Any]:
    """Diagnostic only (reads labels): correlations of the views among non-relevant and
    among relevant candidates. Conditional independence, which (b) needs, means ~0."""
    stacked = {v: pooled(rows, v) for v in views}
    rel = np.concatenate([np.isin(np.arange(len(r["bm25"])), r["rel"]) for r in rows])
    out: dict[str, Any] = {}
    for label, mask in (("non-relevant", ~rel), ("relevant", rel)):
        c = np.corrcoef(np.stack([stacked[v][mask] for v in views]))
        out[label] = {
            f"{views[i]}~{views[j]}": round(float(c[i, j]), 3)
            for i in range(len(views))
            for j in range(i + 1, len(views))
        }
    out["truth: mean z of relevant minus non-relevant"] = {
        v: round(float(stacked[v][rel].mean() - stacked[v][~rel].mean()), 3) for v in views
    }
    return out


def self_consistency(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cross-space self-consistency, corpus mean and whether it tracks quality per query.

    kappa_bm25 = corr(BM25 score, cosine to the centroid of BM25's top 5) over the union;
    kappa_dense = corr(cosine, BM25 score against the words of dense's top 5). A reliability
    signal should also predict, within one corpus, the queries where BM25 does well.
    """
    kb, kd, gain = [], [], []
    dense_order, bm25_order = single("dense"), single("bm25")
    for r in rows:
        if np.std(r["bm25"]) == 0 or np.std(r["lex_d"]) == 0:
            continue
        kb.append(np.corrcoef(r["bm25"], r["prf_b"])[0, 1])
        kd.append(np.corrcoef(r["dense"], r["lex_d"])[0, 1])
        rel = set(r["rel"])
        gain.append(
            ndcg10(bm25_order(r), rel, r["n_rel"]) - ndcg10(dense_order(r), rel, r["n_rel"])
        )
    return {
        "kappa_bm25": round(float(np.mean(kb)), 3),
        "kappa_dense": round(float(np.mean(kd)), 3),
        "bm25 weight (dense 1)": round(max(0.0, float(np.mean(kb))) / float(np.mean(kd)), 3),
        "per-query corr(kappa_bm25, bm25 nDCG - dense nDCG)": round(
            float(np.corrcoef(kb, gain)[0, 1]), 3
        ),
    }


def stability(design: list[dict[str, Any]], held_out: list[dict[str, Any]]) -> dict[str, Any]:
    """The kappa weight learned from only the first m design queries (an online start), the
    held-out nDCG@10 it gives, and a bootstrap 5-95% band of kappa_bm25 over design queries."""
    out: dict[str, Any] = {}
    for m in (10, 20, 50, len(design)):
        w = self_consistency(design[:m])["bm25 weight (dense 1)"]
        ndcg = evaluate(held_out, linear(bm25=w, dense=1.0))["all"]
        out[f"first {m} queries"] = {"bm25 weight": w, "held-out ndcg@10": ndcg}
    rng = np.random.default_rng(0)
    draws = [
        self_consistency([design[i] for i in rng.integers(0, len(design), len(design))])[
            "kappa_bm25"
        ]
        for _ in range(200)
    ]
    out["kappa_bm25 bootstrap 5-95%"] = [round(float(v), 3) for v in np.percentile(draws, [5, 95])]
    return out


def kappa_weighted(design: list[dict[str, Any]], power: float = 1.0) -> Variant:
    """Each branch weighted by its kappa (clipped at 0) from the design stream, to ``power``."""
    k = self_consistency(design)
    return linear(
        bm25=max(0.0, k["kappa_bm25"]) ** power, dense=max(0.0, k["kappa_dense"]) ** power
    )


VARIANTS: dict[str, Variant] = {
    "bm25": single("bm25"),
    "dense": single("dense"),
    "auto (today's default)": via(F.auto),
    "rrf": via(F.rrf),
    "relative_score": via(F.relative_score),
    "weighted": via(F.weighted),
    "(a) complete: z sum": complete("z"),
    "(a) complete: auto evidence": complete("auto"),
    "(a) complete: min-max sum": complete("minmax"),
    "(a) complete: corpus z sum": complete("corpus_z"),
    **{
        f"(a) complete: z sum, dense share {w / 2:.3g}": complete("z", dense_w=w)
        for w in (1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7)
    },
    **{
        f"(c) dense-anchored top {n}, bm25 x{w}{', gate ' + g if g else ''}": anchored(n, w, g)
        for n in (10, 20, 30, 50)
        for w in (0.5, 1.0)
        for g in ("", "cover", "distinct", "distinct-only")
    },
    **{
        f"(c) dense-anchored top {n}, bm25 x{w}": anchored(n, w)
        for n in (10, 30, 100)
        for w in (0.1, 0.2, 0.3)
    },
    "(d) dense + prf_b (cosine to BM25's top-5 centroid)": linear(dense=1, prf_b=1),
    "(d) dense + 0.5 prf_b": linear(dense=1, prf_b=0.5),
    "(d) dense + bm25 + prf_b": linear(dense=1, bm25=1, prf_b=1),
    "(d) dense + 0.5 bm25 + prf_b": linear(dense=1, bm25=0.5, prf_b=1),
    "(d) dense + prf_d": linear(dense=1, prf_d=1),
    "(d) dense + prf_b + prf_d": linear(dense=1, prf_b=1, prf_d=1),
}
# Fitted from each set's own design half (no labels), then read on both halves.
STREAM_VARIANTS: dict[str, Callable[[list[dict[str, Any]]], Variant]] = {
    **{
        f"(b) triplet weights, third view {t}": (
            lambda d, t=t: weighted_sum(*(triplet(d, t)["weights"][v] for v in ("bm25", "dense")))
        )
        for t in ("cover", "prf_b", "prf_d", "lex_d")
    },
    "(b') kappa-weighted (cross-space self-consistency)": kappa_weighted,
    **{
        f"(b') kappa-weighted, weights kappa^{p}": (lambda d, p=p: kappa_weighted(d, p))
        for p in (1.5, 2, 3)
    },
}


ONLINE = "consistency (built: online estimate, cold start, retrieval.py's stream order)"


def online_consistency(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``fusion="consistency"`` as HybridRetriever runs it, on the cached features: the
    library's own ConsistencyEstimate and ``consistency`` fusion, fed every judged query in
    the order retrieval.py serves them (its Random(1) shuffle), starting cold (``auto``
    until the warm-up). nDCG@10 per half, like :func:`evaluate`."""
    estimate = F.ConsistencyEstimate()
    by_qid = {r["qid"]: r for r in rows}
    stream = list(by_qid)
    R.random.Random(1).shuffle(stream)
    out: dict[str, list[float]] = {"design": [], "held-out": [], "all": []}
    for qid in stream:
        row = by_qid[qid]
        if estimate.should_sample():
            kb = F.self_consistency(row["bm25"], row["prf_b"])
            kd = F.self_consistency(row["dense"], row["lex_d"])
            if kb is not None and kd is not None:
                estimate.observe({"bm25": kb, "dense": kd})
        ranked = {"bm25": listed(row, "bm25"), "dense": listed(row, "dense")}
        ranked = {b: h for b, h in ranked.items() if h}
        ids = [str(i) for i in range(len(row["bm25"]))]
        columns = {"bm25": row["bm25"], "dense": row["dense"]}
        reliability = estimate.weights() if len(ranked) == 2 else None
        fused = F.consistency(ranked, complete=(ids, columns), reliability=reliability)
        score = ndcg10([int(d) for d, _ in fused], set(row["rel"]), row["n_rel"])
        out[row["half"]].append(score)
        out["all"].append(score)
    result = {k: round(float(np.mean(v)), 4) for k, v in out.items()}
    result["weights at the end"] = {
        b: round(v, 3) for b, v in (estimate.weights() or {"warming up": 0.0}).items()
    }
    return result


def weighted_sum(wb: float, wd: float) -> Variant:
    return linear(bm25=wb, dense=wd)


def evaluate(rows: list[dict[str, Any]], variant: Variant) -> dict[str, float]:
    out: dict[str, list[float]] = {"design": [], "held-out": [], "all": []}
    for row in rows:
        score = ndcg10(variant(row), set(row["rel"]), row["n_rel"])
        out[row["half"]].append(score)
        out["all"].append(score)
    return {k: round(float(np.mean(v)), 4) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated variant name prefixes")
    args = parser.parse_args()
    rows = {name: features(name, args.rebuild) for name in SETS}
    design = {name: [r for r in rows[name] if r["half"] == "design"] for name in SETS}
    wanted = [p for p in args.only.split(",") if p]
    report: dict[str, Any] = {
        "load_before": os.getloadavg(),
        "queries": {n: {"design": len(design[n]), "all": len(rows[n])} for n in SETS},
        "variants": {},
    }

    def show(label: str, per_set: dict[str, dict[str, float]]) -> None:
        report["variants"][label] = per_set
        cells = "  ".join(
            f"{short(n)} {v['design']:.4f}/{v['held-out']:.4f}" for n, v in per_set.items()
        )
        print(f"{label:56s} {cells}", flush=True)

    for label, variant in VARIANTS.items():
        if not wanted or any(label.startswith(p) for p in wanted):
            show(label, {name: evaluate(rows[name], variant) for name in SETS})
    for label, make in STREAM_VARIANTS.items():
        if not wanted or any(label.startswith(p) for p in wanted):
            show(label, {name: evaluate(rows[name], make(design[name])) for name in SETS})
    if not wanted or any(ONLINE.startswith(p) for p in wanted):
        show(ONLINE, {name: online_consistency(rows[name]) for name in SETS})
    if wanted:
        return
    views = ("bm25", "dense", "cover", "prf_b", "prf_d", "lex_d")
    report["triplet"] = {n: {t: triplet(design[n], t) for t in views[2:]} for n in SETS}
    report["independence (labels, diagnostic)"] = {n: independence(design[n], views) for n in SETS}
    report["self-consistency"] = {n: self_consistency(design[n]) for n in SETS}
    report["kappa stability"] = {
        n: stability(design[n], [r for r in rows[n] if r["half"] == "held-out"])
        for n in SETS
        if "+" not in n
    }
    report["load_after"] = os.getloadavg()
    for key in (
        "triplet",
        "independence (labels, diagnostic)",
        "self-consistency",
        "kappa stability",
    ):
        print(key, json.dumps(report[key], indent=1), flush=True)
    (R.RESULTS / "fusion_study.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
