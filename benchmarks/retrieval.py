"""Retrieval benchmark: quality (nDCG@10, recall@100) and latency of hybrid retrieval.

Compares, on the same MiniLM embeddings (all-MiniLM-L6-v2, ONNX int8 via LocalEmbedder,
truncated to 256 tokens) and the same BEIR data (../shared/data or $RAG_OPTIMIZE_DATA):

* rag-optimize: BM25Index alone, DenseIndex alone, HybridRetriever with auto (the default) /
  rrf / weighted / relative_score fusion (and, for latency, with int8 / binary / usearch
  dense indexes), and auto with weights from ``calibrate_fusion`` on the design half of the
  judged queries (its held-out half is the number to read);
* LangChain EnsembleRetriever(BM25Retriever + InMemoryVectorStore retriever);
* LlamaIndex QueryFusionRetriever(BM25Retriever + VectorStoreIndex retriever), RRF mode,
  num_queries=1 (no LLM query generation).

Query embedding is measured on its own; retrieval latencies use the cached query vectors
(a lookup "embedder"), so every method is timed on retrieval alone. The large-corpus run
replicates wikiqa five times with perturbation (a word dropped and two swapped per copy, the
vector jittered and renormalised) to >= 100k documents.

Usage: .venv/bin/python benchmarks/retrieval.py [--quick]
Writes benchmarks/results/retrieval.json; embeddings are cached as .npy files under
$RAG_OPTIMIZE_EMBED_CACHE (default /tmp/rag-optimize-embeddings), keyed by model and corpus.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rag_optimize.index import BM25Index, DenseIndex  # noqa: E402
from rag_optimize.retrieval import HybridRetriever, calibrate_fusion  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CACHE = Path(os.environ.get("RAG_OPTIMIZE_EMBED_CACHE", "/tmp/rag-optimize-embeddings"))
MODEL_TAG = "minilm-l6-int8-onnx-256"
DATA = Path(os.environ.get("RAG_OPTIMIZE_DATA", ROOT.parent.parent / "shared" / "data"))
FUSIONS = ("auto", "consistency", "rrf", "weighted", "relative_score")
DEPTH = 100  # documents retrieved per query (recall@100)
DENSE_LEANING = {"bm25": 0.25, "dense": 0.75}
CALIBRATED = "hybrid auto, weights calibrated on the design half (ours)"


# -- data ------------------------------------------------------------------------------------


def load_beir(name: str) -> dict[str, Any]:
    base = DATA / name
    ids, texts = [], []
    with open(base / "corpus.jsonl") as fh:
        for line in fh:
            row = json.loads(line)
            ids.append(row["_id"])
            texts.append(f"{row.get('title') or ''} {row['text']}".strip())
    queries = {}
    with open(base / "queries.jsonl") as fh:
        for line in fh:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    qrels: dict[str, set[str]] = {}
    for path in sorted((base / "qrels").glob("*.tsv")):
        with open(path) as fh:
            next(fh)
            for line in fh:
                qid, did, score = line.rstrip("\n").split("\t")
                if int(score) > 0:
                    qrels.setdefault(qid, set()).add(did)
    qids = [q for q in queries if q in qrels]
    return {"ids": ids, "texts": texts, "queries": {q: queries[q] for q in qids}, "qrels": qrels}


def embed_cached(tag: str, texts: list[str], embedder: Any) -> np.ndarray:
    """``embedder.encode(texts)``, cached by model, ``tag`` and the texts' digest."""
    CACHE.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:12]
    path = CACHE / f"{MODEL_TAG}-{tag}-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    start = time.perf_counter()
    matrix = embedder.encode(texts)
    took = time.perf_counter() - start
    print(f"  embedded {len(texts)} {tag} texts in {took:.0f}s", flush=True)
    np.save(path, matrix, allow_pickle=False)
    return matrix


def perturb(ids: list[str], texts: list[str], vectors: np.ndarray, copies: int, seed: int = 0):
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    all_ids, all_texts, blocks = list(ids), list(texts), [vectors]
    for r in range(1, copies):
        for doc_id, text in zip(ids, texts, strict=True):
            words = text.split()
            if len(words) > 3:
                del words[rng.randrange(len(words))]
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            all_ids.append(f"{doc_id}#r{r}")
            all_texts.append(" ".join(words))
        noisy = vectors + nrng.normal(0, 0.01, vectors.shape).astype(np.float32)
        blocks.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    return all_ids, all_texts, np.concatenate(blocks).astype(np.float32)


# -- embedder stand-ins that return cached vectors -----------------------------------------


class Lookup:
    """Returns precomputed vectors by text, so retrieval is timed without the model."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.table = {t: v for t, v in zip(texts, vectors, strict=True)}

    def embed_query(self, text: str) -> list[float]:
        return self.table[text].tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table[t].tolist() for t in texts]


def langchain_embeddings(lookup: Lookup) -> Any:
    from langchain_core.embeddings import Embeddings

    class LookupEmbeddings(Embeddings):
        def embed_query(self, text: str) -> list[float]:
            return lookup.embed_query(text)

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return lookup.embed_documents(texts)

    return LookupEmbeddings()


def llama_embedding(lookup: Lookup) -> Any:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class LookupEmbedding(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return lookup.embed_query(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return lookup.embed_query(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return lookup.embed_query(text)

    return LookupEmbedding(model_name="lookup", embed_batch_size=1024)


# -- systems under test ------------------------------------------------------------------------

Search = Callable[[str], list[str]]


def build_ours(
    ids, texts, vectors, lookup, quantizations=(None,), ann=False, metadatas=None
) -> dict[str, Any]:
    start = time.perf_counter()
    bm25 = BM25Index()
    bm25.add(texts, ids=ids, metadatas=metadatas)
    bm25.search("warm up the index", 1)
    built = {"bm25_build_s": time.perf_counter() - start}
    dense = {}
    for q in quantizations:
        index = DenseIndex(quantization=q)
        index.add(vectors, ids=ids, metadatas=metadatas)
        dense[q or "float32"] = index
    if ann:
        start = time.perf_counter()
        index = DenseIndex(ann="usearch", rescore_factor=4, ann_options={"threads": 2})
        index.add(vectors, ids=ids)
        built["usearch_build_s"] = time.perf_counter() - start
        dense["usearch"] = index
    return {"bm25": bm25, "dense": dense, "lookup": lookup, "built": built}


def our_methods(
    built: dict[str, Any], fusions=FUSIONS, dense_kinds=("float32",)
) -> dict[str, Search]:
    bm25, lookup = built["bm25"], built["lookup"]
    methods: dict[str, Search] = {
        "bm25 (ours)": lambda q: [h.id for h in bm25.search(q, DEPTH)],
    }
    for kind in dense_kinds:
        index = built["dense"][kind]
        suffix = "" if kind == "float32" else f", {kind}"
        methods[f"dense (ours{suffix})"] = lambda q, index=index: [
            h.id for h in index.search(lookup.embed_query(q), DEPTH)
        ]
        for fusion in fusions:
            retriever = HybridRetriever(
                bm25, index, lookup, fusion=fusion, k=DEPTH, candidates=DEPTH
            )
            methods[f"hybrid {fusion} (ours{suffix})"] = lambda q, r=retriever: r.retrieve(q).ids
    fixed = [f for f in fusions if f not in ("auto", "consistency")]  # weights mean the same
    for fusion in fixed if "float32" in dense_kinds else ():
        # A common a-priori hybrid setting (alpha = 0.75 towards dense), not tuned here.
        retriever = HybridRetriever(
            bm25,
            built["dense"]["float32"],
            lookup,
            fusion=fusion,
            weights=DENSE_LEANING,
            k=DEPTH,
            candidates=DEPTH,
        )
        methods[f"hybrid {fusion} (ours, dense 0.75)"] = lambda q, r=retriever: r.retrieve(q).ids
    return methods


def langchain_ensemble(ids, texts, lookup) -> Search:
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    docs = [
        Document(page_content=t, id=i, metadata={"id": i}) for i, t in zip(ids, texts, strict=True)
    ]
    tokenizer = BM25Index().tokenizer  # same tokens as ours, so the engines are compared
    bm25 = BM25Retriever.from_documents(docs, k=DEPTH, preprocess_func=tokenizer)
    store = InMemoryVectorStore(langchain_embeddings(lookup))
    store.add_documents(docs)
    ensemble = EnsembleRetriever(
        retrievers=[bm25, store.as_retriever(search_kwargs={"k": DEPTH})],
        weights=[0.5, 0.5],
        id_key="id",
    )
    return lambda q: [d.metadata["id"] for d in ensemble.invoke(q)][:DEPTH]


def build_llama(ids, texts, vectors, lookup) -> Search:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bm25 import BM25Retriever

    nodes = [
        TextNode(id_=i, text=t, embedding=v.tolist())
        for i, t, v in zip(ids, texts, vectors, strict=True)
    ]
    embed = llama_embedding(lookup)
    vector = VectorStoreIndex(nodes, embed_model=embed).as_retriever(similarity_top_k=DEPTH)
    bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=DEPTH)
    fusion = QueryFusionRetriever(
        [bm25, vector],
        llm=MockLLM(),
        mode="reciprocal_rerank",
        similarity_top_k=DEPTH,
        num_queries=1,
    )
    return lambda q: [n.node.node_id for n in fusion.retrieve(q)][:DEPTH]


# -- measuring -------------------------------------------------------------------------------


def ndcg_recall(run: dict[str, list[str]], qrels: dict[str, set[str]]) -> dict[str, float]:
    """nDCG@10 and recall@100 over all queries, and nDCG@10 on each half (see half_of)."""
    ndcgs, recalls = {}, []
    for qid, ranked in run.items():
        rel = qrels[qid]
        dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in rel)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(rel), 10)))
        ndcgs[qid] = dcg / idcg
        recalls.append(len(set(ranked[:DEPTH]) & rel) / len(rel))
    out = {"ndcg@10": statistics.fmean(ndcgs.values()), "recall@100": statistics.fmean(recalls)}
    for half in ("design", "held-out"):
        part = [v for q, v in ndcgs.items() if half_of(q) == half]
        out[f"ndcg@10 {half}"] = statistics.fmean(part) if part else float("nan")
    return {k: round(v, 4) for k, v in out.items()}


def percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": round(times[len(times) // 2], 2),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2),
        "n": len(times),
    }


def timed_run(search: Search, queries: list[str], warmup: int = 3):
    """Results of ``search`` for every query, and its latency percentiles (after warm-up)."""
    for q in queries[:warmup]:
        search(q)
    results, times = [], []
    for q in queries:
        start = time.perf_counter()
        results.append(search(q))
        times.append((time.perf_counter() - start) * 1000)
    return results, percentiles(times)


def latency_ms(search: Search, queries: list[str], warmup: int = 3) -> dict[str, float]:
    return timed_run(search, queries, warmup)[1]


def interleaved(methods: dict[str, Search], queries: list[str], warmup: int = 3):
    """Every method on every query, the methods' order rotating per query (fair under load).

    Returns ``{method: results}`` and ``{method: latency percentiles}``.
    """
    names = list(methods)
    for q in queries[:warmup]:
        for name in names:
            methods[name](q)
    results: dict[str, list[list[str]]] = {n: [] for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for i, q in enumerate(queries):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            results[name].append(methods[name](q))
            times[name].append((time.perf_counter() - start) * 1000)
    return results, {n: percentiles(t) for n, t in times.items()}


def half_of(qid: str) -> str:
    """A fixed split of the queries into a design half and a held-out half (by id hash).

    The default fusion was designed looking at the "design" half only; the "held-out" half
    checks that it was not fitted to those queries.
    """
    return "design" if int(hashlib.sha1(qid.encode()).hexdigest(), 16) % 2 == 0 else "held-out"


def recall_vs_exact(index: DenseIndex, exact: DenseIndex, qvecs: np.ndarray, k: int = 10) -> float:
    found = []
    for q in qvecs:
        want = {h.id for h in exact.search(q, k)}
        found.append(len({h.id for h in index.search(q, k)} & want) / k)
    return round(statistics.fmean(found), 4)


def quantization_report(built: dict[str, Any], qvecs: np.ndarray) -> dict[str, Any]:
    exact = built["dense"]["float32"]
    out: dict[str, Any] = {"float32": {"scan_bytes": exact.memory_usage()["scan"]}}
    for kind, index in built["dense"].items():
        if kind == "float32":
            continue
        mem = index.memory_usage()
        out[kind] = {
            "recall@10_vs_exact": recall_vs_exact(index, exact, qvecs),
            "scan_bytes": mem["scan"],
            "memory_ratio_vs_float32": round(out["float32"]["scan_bytes"] / max(1, mem["scan"]), 1),
            "rescore_bytes": mem["rescore"],
        }
    return out


def query_embedding_latency(embedder: Any, queries: list[str]) -> dict[str, float]:
    return latency_ms(lambda q: embedder.embed_query(q) and [], queries)


# -- main ------------------------------------------------------------------------------------


def corpus_prefix(data: dict[str, Any], docs: int) -> dict[str, Any]:
    """The first ``docs`` documents, and the queries whose relevant documents all lie there.

    For a corpus too slow to embed in full on a loaded machine (wikiqa's sentences are in
    question order, so a prefix holds whole candidate sets of the first questions).
    """
    ids, texts = data["ids"][:docs], data["texts"][:docs]
    inside = set(ids)
    queries = {q: t for q, t in data["queries"].items() if data["qrels"][q] <= inside}
    return {**data, "ids": ids, "texts": texts, "queries": queries}


def run_dataset(name: str, embedder: Any, args: argparse.Namespace, report: dict) -> dict:
    print(f"== {name}", flush=True)
    data = load_beir(name)
    prefix = dict(p.split("=") for p in args.prefix.split(",") if p).get(name)
    if prefix:
        data = corpus_prefix(data, int(prefix))
    ids, texts = data["ids"], data["texts"]
    all_qids = list(data["queries"])  # every query with a judgement, in file order
    doc_vecs = embed_cached(f"{name}-docs", texts, embedder)
    every = load_beir(name)["queries"]  # query vectors are cached for every judged query
    vecs = embed_cached(f"{name}-queries", list(every.values()), embedder)
    by_text = dict(zip(every.values(), vecs, strict=True))
    all_vecs = np.asarray([by_text[data["queries"][q]] for q in all_qids], dtype=np.float32)
    qids = list(all_qids)
    random.Random(1).shuffle(qids)
    qids = qids[: args.max_queries] if args.max_queries else qids
    qtexts = [data["queries"][q] for q in qids]
    lookup = Lookup(
        list(texts) + [data["queries"][q] for q in all_qids], np.concatenate([doc_vecs, all_vecs])
    )
    q_vecs = np.asarray([lookup.table[t] for t in qtexts])
    if args.contenders_only:
        return contenders(ids, texts, doc_vecs, lookup, qtexts)
    built = build_ours(ids, texts, doc_vecs, lookup, quantizations=(None, "int8", "binary"))
    methods = our_methods(built)
    # Weights calibrated on the judged queries of the design half only; read its held-out
    # column (its design column is in-sample).
    calibrated = HybridRetriever(
        built["bm25"], built["dense"]["float32"], lookup, fusion="auto", k=DEPTH, candidates=DEPTH
    )
    design = [q for q in all_qids if half_of(q) == "design"]
    calibration = calibrate_fusion(
        calibrated, [data["queries"][q] for q in design], [data["qrels"][q] for q in design]
    )
    methods[CALIBRATED] = lambda q, r=calibrated: r.retrieve(q).ids
    start = time.perf_counter()
    methods["LangChain EnsembleRetriever"] = langchain_ensemble(ids, texts, lookup)
    lc_build = time.perf_counter() - start
    start = time.perf_counter()
    methods["LlamaIndex QueryFusionRetriever"] = build_llama(ids, texts, doc_vecs, lookup)
    li_build = time.perf_counter() - start
    hybrid = HybridRetriever(
        built["bm25"], built["dense"]["float32"], lookup, fusion="auto", k=DEPTH, candidates=DEPTH
    )
    out: dict[str, Any] = {
        "docs": len(ids),
        "corpus": f"first {len(ids)} documents (prefix)" if prefix else "full",
        "queries": len(qids),
        "build_s": {
            **built["built"],
            "langchain": round(lc_build, 1),
            "llamaindex": round(li_build, 1),
        },
        "load_before": os.getloadavg()[0],
        "calibration": {
            "weights": calibration.weights,
            "design_queries": calibration.queries,
            "design_ndcg@10": round(calibration.ndcg, 4),
            "design_ndcg@10_equal_weights": round(calibration.before, 4),
        },
        "quality": {},
        "latency": {},
    }
    print(f"  calibration {out['calibration']}", flush=True)
    start = time.perf_counter()
    ranked, out["latency"] = interleaved(methods, qtexts)
    for label in methods:
        q = ndcg_recall(dict(zip(qids, ranked[label], strict=True)), data["qrels"])
        out["quality"][label] = q
        print(
            f"  {label:40s} nDCG@10 {q['ndcg@10']:.4f} (design {q['ndcg@10 design']:.4f}, "
            f"held-out {q['ndcg@10 held-out']:.4f}) R@100 {q['recall@100']:.4f} "
            f"p50 {out['latency'][label]['p50_ms']:.2f} ms",
            flush=True,
        )
    print(f"  ({time.perf_counter() - start:.0f}s)", flush=True)
    import asyncio

    async def async_latency() -> dict[str, float]:
        times = []
        for q in qtexts[: args.latency_queries]:
            start = time.perf_counter()
            await hybrid.aretrieve(q)
            times.append((time.perf_counter() - start) * 1000)
        return percentiles(times)

    out["latency"]["hybrid auto (ours, aretrieve)"] = asyncio.run(async_latency())
    out["quantization"] = quantization_report(built, q_vecs)
    if not args.skip_sweep:
        out["dense_weight_sweep"] = weight_sweep(built, data, lookup)
        print(f"  dense weight sweep {out['dense_weight_sweep']}", flush=True)
    out["load_after"] = os.getloadavg()[0]
    print(f"  quantization {out['quantization']}", flush=True)
    report["query_embedding"] = query_embedding_latency(embedder, qtexts[:100])
    del methods
    gc.collect()
    return out


BEFORE_KERNEL = "hybrid auto (ours, products on BLAS gemv as before)"


def with_blas_gemv(retrieve: Callable[[str], Any], query: str) -> Any:
    """``retrieve(query)`` with every one-query product on numpy's ``dot`` (BLAS gemv, threaded
    by OpenBLAS above a small size), as before issue 17's third pass: the same code
    otherwise, so both run interleaved in one process."""
    from rag_optimize.index import _kernels

    saved, _kernels.BLAS_MATVEC_MAX = _kernels.BLAS_MATVEC_MAX, 1 << 62
    try:
        return retrieve(query)
    finally:
        _kernels.BLAS_MATVEC_MAX = saved


def contenders(ids, texts, doc_vecs, lookup, qtexts) -> dict[str, Any]:
    """Latency only: the default hybrid against the two frameworks, interleaved per query."""
    built = build_ours(ids, texts, doc_vecs, lookup)
    hybrid = HybridRetriever(
        built["bm25"], built["dense"]["float32"], lookup, fusion="auto", k=DEPTH, candidates=DEPTH
    )
    consistency = HybridRetriever(
        built["bm25"],
        built["dense"]["float32"],
        lookup,
        fusion="consistency",
        k=DEPTH,
        candidates=DEPTH,
    )
    methods: dict[str, Search] = {
        "hybrid auto (ours)": lambda q: hybrid.retrieve(q).ids,
        "hybrid consistency (ours)": lambda q: consistency.retrieve(q).ids,
        BEFORE_KERNEL: lambda q: with_blas_gemv(hybrid.retrieve, q).ids,
        "LangChain EnsembleRetriever": langchain_ensemble(ids, texts, lookup),
        "LlamaIndex QueryFusionRetriever": build_llama(ids, texts, doc_vecs, lookup),
    }
    before = os.getloadavg()
    # Blocks first (ours before any framework ran, then again after them), then interleaved:
    # a framework's large BLAS calls wake OpenBLAS's worker threads, which then slow the
    # small matrix-vector product of whatever runs next in the process.
    blocks: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(2):
        for name, search in methods.items():
            blocks[name].append(timed_run(search, qtexts[:100])[1]["p50_ms"])
    ranked, latency = interleaved(methods, qtexts)
    pairs = zip(ranked["hybrid auto (ours)"], ranked[BEFORE_KERNEL], strict=True)
    same = sum(a == b for a, b in pairs)
    out = {
        "docs": len(ids),
        "queries": len(qtexts),
        "same_ids_as_before_kernel": f"{same}/{len(qtexts)}",
        "ratios_p50": {
            f"{ours} / {theirs}": round(latency[ours]["p50_ms"] / latency[theirs]["p50_ms"], 4)
            for ours in ("hybrid auto (ours)", "hybrid consistency (ours)", BEFORE_KERNEL)
            for theirs in ("LangChain EnsembleRetriever", "LlamaIndex QueryFusionRetriever")
        },
        "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_before": before,
        "load_after": os.getloadavg(),
        "latency": latency,
        "blocks_p50_ms_two_rounds": blocks,
        "consistency_estimate": consistency.consistency.to_dict(),
    }
    print(f"  {json.dumps(out)}", flush=True)
    return out


SWEEP = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def weight_sweep(built: dict[str, Any], data: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
    """nDCG@10 of ``auto`` and ``weighted`` fusion with fixed dense weights, on every judged
    query (quality only, not timed): whether any one fixed weighting of the two branches
    reaches the best single branch on a set. Reported, never used to pick the default."""
    qids = list(data["queries"])
    out: dict[str, Any] = {}
    for fusion in ("auto", "weighted"):
        for w in SWEEP:
            retriever = HybridRetriever(
                built["bm25"],
                built["dense"]["float32"],
                lookup,
                fusion=fusion,
                weights={"bm25": round(1 - w, 4), "dense": w},
                k=DEPTH,
                candidates=DEPTH,
            )
            run = {q: retriever.retrieve(data["queries"][q]).ids for q in qids}
            out[f"{fusion} dense {w}"] = ndcg_recall(run, data["qrels"])["ndcg@10"]
    return out


def bucket(doc_id: str) -> int:
    """A metadata value that splits the corpus into 10 equal parts, unrelated to content."""
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 10


def filter_report(
    built: dict[str, Any], qtexts: list[str], lookup: Lookup, kind: str = "float32"
) -> dict[str, Any]:
    """Filtered (10% of the corpus) vs unfiltered search, and exactness vs brute force
    (``kind``: which dense index of ``built``, e.g. ``"float32"`` exact or ``"auto"``)."""
    from rag_optimize.retrieval import Eq
    from rag_optimize.retrieval.filters import filter_mask

    bm25, dense = built["bm25"], built["dense"][kind]
    spec = Eq("bucket", 3)
    hybrid = HybridRetriever(bm25, dense, lookup, fusion="auto", k=10, candidates=DEPTH)
    allowed = filter_mask(spec, dense.documents)
    sparse_allowed = filter_mask(spec, bm25.documents)
    vectors = np.asarray(dense._vectors)
    exact_dense = exact_bm25 = 0
    inside = 0
    overlap = []  # |dense filtered top 10 & brute-force top 10| / 10
    for q in qtexts:
        vec = np.asarray(lookup.embed_query(q), dtype=np.float32)
        rows = np.flatnonzero(allowed)
        scores = vectors[rows] @ (vec / np.linalg.norm(vec))
        want = np.sort(scores)[::-1][:10]
        hits = dense.search(vec, 10, allowed=allowed)
        best = set(rows[np.argsort(-scores, kind="stable")[:10]].tolist())
        overlap.append(len(best & {dense.documents.position(h.id) for h in hits}) / 10)
        # Same scores as the brute-force top 10 (ids may swap only between equal scores).
        exact_dense += np.allclose([h.score for h in hits], want, atol=1e-6) and all(
            allowed[dense.documents.position(h.id)] for h in hits
        )
        model = bm25._model()
        full = np.asarray(model.get_scores_from_ids(model.get_tokens_ids(bm25.tokenizer(q))))
        full = np.where(sparse_allowed, full, 0.0)
        want_scores = np.sort(full[full > 0])[::-1][:10]
        got = bm25.search(q, 10, allowed=sparse_allowed)
        exact_bm25 += np.allclose([h.score for h in got], want_scores) and all(
            sparse_allowed[bm25.documents.position(h.id)] for h in got
        )
        result = hybrid.retrieve(q, filter=spec)
        inside += len(result) == 10 and all(bucket(i) == 3 for i in result.ids)
    methods: dict[str, Search] = {
        "hybrid auto, unfiltered": lambda q: hybrid.retrieve(q).ids,
        "hybrid auto, filter 10%": lambda q: hybrid.retrieve(q, filter=spec).ids,
        "dense, unfiltered": lambda q: [h.id for h in dense.search(lookup.embed_query(q), 10)],
        "dense, filter 10%": lambda q: [
            h.id for h in dense.search(lookup.embed_query(q), 10, allowed=allowed)
        ],
        "bm25, unfiltered": lambda q: [h.id for h in bm25.search(q, 10)],
        "bm25, filter 10%": lambda q: [h.id for h in bm25.search(q, 10, allowed=sparse_allowed)],
    }
    _, latency = interleaved(methods, qtexts)
    return {
        "kept": round(float(allowed.mean()), 4),
        "queries": len(qtexts),
        "dense_index": kind,
        "dense_equals_brute_force": exact_dense,
        "dense_recall@10_vs_brute_force": round(statistics.fmean(overlap), 4),
        "bm25_equals_brute_force": exact_bm25,
        "hybrid_k_results_all_matching": inside,
        "latency": latency,
    }


def persistence_report(
    built: dict[str, Any], qtexts: list[str], lookup: Lookup, kind: str = "float32"
) -> dict:
    """Save the 100k hybrid index, then time load(mmap=True) here and in a fresh process."""
    import shutil
    import subprocess
    import tempfile

    hybrid = HybridRetriever(built["bm25"], built["dense"][kind], lookup, k=10)
    directory = Path(tempfile.mkdtemp(prefix="rag-optimize-bench-")) / "hybrid"
    start = time.perf_counter()
    hybrid.save(directory)
    save_s = time.perf_counter() - start
    loads = []
    for _ in range(3):
        start = time.perf_counter()
        loaded = HybridRetriever.load(directory, lookup, mmap=True)
        loads.append(time.perf_counter() - start)
    start = time.perf_counter()
    loaded.retrieve(qtexts[0])
    first_query = time.perf_counter() - start
    # A fresh load against the saved retriever, query by query: the default fusion learns
    # from the query stream, so both must see the same one (``loaded`` has seen one more).
    again = HybridRetriever.load(directory, lookup, mmap=True)
    same = sum(again.retrieve(q).ids == hybrid.retrieve(q).ids for q in qtexts)
    code = (
        "import time, sys; t = time.perf_counter(); "
        "from rag_optimize.retrieval import HybridRetriever; "
        "from rag_optimize.embedding import HashingEmbedder; i = time.perf_counter(); "
        f"r = HybridRetriever.load({str(directory)!r}, HashingEmbedder(dim=384), mmap=True); "
        "e = time.perf_counter(); print(e - i, i - t)"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    fresh_load, fresh_import = (float(x) for x in fresh.stdout.split())
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    shutil.rmtree(directory.parent)
    return {
        "docs": len(built["bm25"]),
        "dense_index": kind,
        "save_s": round(save_s, 2),
        "load_mmap_s_same_process": [round(x, 3) for x in loads],
        "load_mmap_s_fresh_process": round(fresh_load, 3),
        "import_s_fresh_process": round(fresh_import, 3),
        "first_query_s": round(first_query, 4),
        "same_results": f"{same}/{len(qtexts)}",
        "bytes_on_disk": size,
        "embedded_on_load": 0,
    }


def run_large(embedder: Any, args: argparse.Namespace) -> dict:
    print(f"== wikiqa x{args.copies} (perturbed)", flush=True)
    data = load_beir("wikiqa")
    all_qids = list(data["queries"])
    all_vecs = embed_cached("wikiqa-queries", [data["queries"][q] for q in all_qids], embedder)
    if args.synthetic_vectors:  # seeded random unit vectors: latency, filters, persistence only
        rng = np.random.default_rng(0)
        doc_vecs = rng.normal(size=(len(data["texts"]), all_vecs.shape[1])).astype(np.float32)
        doc_vecs /= np.linalg.norm(doc_vecs, axis=1, keepdims=True)
    else:
        doc_vecs = embed_cached("wikiqa-docs", data["texts"], embedder)
    qids = list(all_qids)
    random.Random(1).shuffle(qids)
    qtexts = [data["queries"][q] for q in qids[: args.latency_queries]]
    ids, texts, vectors = perturb(data["ids"], data["texts"], doc_vecs, args.copies)
    qtable = {data["queries"][q]: v for q, v in zip(all_qids, all_vecs, strict=True)}
    lookup = Lookup(
        texts + qtexts, np.concatenate([vectors, np.asarray([qtable[t] for t in qtexts])])
    )
    q_vecs = np.asarray([qtable[t] for t in qtexts])
    metadatas = [{"bucket": bucket(i)} for i in ids]
    start = time.perf_counter()
    built = build_ours(
        ids,
        texts,
        vectors,
        lookup,
        quantizations=(None, "int8", "binary"),
        ann=not args.skip_ann,
        metadatas=metadatas,
    )
    print(f"  built ours in {time.perf_counter() - start:.0f}s", flush=True)
    kinds = ("float32", "int8", "binary") + (() if args.skip_ann else ("usearch",))
    methods = our_methods(built, fusions=("auto", "rrf"), dense_kinds=kinds)
    out: dict[str, Any] = {
        "docs": len(ids),
        "build_s": dict(built["built"]),
        "vectors": "synthetic (seeded random)" if args.synthetic_vectors else "MiniLM",
    }
    out["load_before"] = os.getloadavg()[0]
    _, out["latency"] = interleaved(methods, qtexts)
    for label, lat in out["latency"].items():
        print(f"  {label:38s} {lat}", flush=True)
    out["filter"] = filter_report(built, qtexts, lookup)
    print(f"  filter {json.dumps(out['filter'])}", flush=True)
    out["persistence"] = persistence_report(built, qtexts[:20], lookup)
    print(f"  persistence {json.dumps(out['persistence'])}", flush=True)
    if not args.synthetic_vectors:  # recall of codes on random vectors says nothing
        out["quantization"] = quantization_report(built, q_vecs)
        print(f"  quantization {out['quantization']}", flush=True)
    ours = {m: methods[m] for m in ("hybrid auto (ours)", "hybrid rrf (ours)")}
    del methods, built
    gc.collect()
    if not args.skip_baselines:
        slow_queries = qtexts[: args.baseline_queries]
        start = time.perf_counter()
        ensemble = langchain_ensemble(ids, texts, lookup)
        out["build_s"]["langchain"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        llama = build_llama(ids, texts, vectors, lookup)
        out["build_s"]["llamaindex"] = round(time.perf_counter() - start, 1)
        contenders = {
            **ours,
            "LangChain EnsembleRetriever": ensemble,
            "LlamaIndex QueryFusionRetriever": llama,
        }
        _, side = interleaved(contenders, slow_queries, warmup=1)
        out["latency_vs_baselines"] = side
        print(f"  side by side {json.dumps(side)}", flush=True)
    out["load_after"] = os.getloadavg()[0]
    return out


def markdown(report: dict[str, Any]) -> str:
    """Tables for BENCHMARKS.md from a report written by this script."""
    lines = []
    names = list(report["datasets"])
    head = " | ".join(f"{n} nDCG@10 | {n} R@100 | {n} p50/p95 ms" for n in names)
    lines += [f"| method | {head} |", "|---" * (1 + 3 * len(names)) + "|"]
    methods = list(next(iter(report["datasets"].values()))["latency"])
    for method in methods:
        cells = []
        for n in names:
            ds = report["datasets"][n]
            q = ds["quality"].get(method)
            lat = ds["latency"].get(method)
            cells.append(f"{q['ndcg@10']:.4f}" if q else "")
            cells.append(f"{q['recall@100']:.4f}" if q else "")
            cells.append(f"{lat['p50_ms']:.2f} / {lat['p95_ms']:.2f}" if lat else "")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if "large" in report:
        large = report["large"]
        lines += ["", f"Latency at {large['docs']:,} documents (wikiqa x5, perturbed):", ""]
        lines += ["| method | p50 ms | p95 ms | queries |", "|---|---|---|---|"]
        for method, lat in large["latency"].items():
            lines.append(f"| {method} | {lat['p50_ms']:.2f} | {lat['p95_ms']:.2f} | {lat['n']} |")
    lines += ["", "Quantized dense search vs exact float32 (recall@10 of the exact top 10):", ""]
    lines += [
        "| corpus | codes | recall@10 | scanned bytes | vs float32 |",
        "|---|---|---|---|---|",
    ]
    sets = dict(report["datasets"])
    if "large" in report:
        sets[f"wikiqa x5 ({report['large']['docs']:,})"] = report["large"]
    for n, ds in sets.items():
        for kind, q in ds.get("quantization", {}).items():
            if kind == "float32":
                lines.append(f"| {n} | float32 | 1.0 | {q['scan_bytes']:,} | 1x |")
            else:
                lines.append(
                    f"| {n} | {kind} | {q['recall@10_vs_exact']:.4f} | {q['scan_bytes']:,} | "
                    f"{q['memory_ratio_vs_float32']}x smaller |"
                )
    emb = report.get("query_embedding")
    if emb:
        lines += [
            "",
            f"Query embedding (MiniLM ONNX int8, one query): p50 {emb['p50_ms']:.1f} ms, "
            f"p95 {emb['p95_ms']:.1f} ms.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-queries", type=int, default=0, help="queries scored per dataset (0: all judged)"
    )
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--baseline-queries", type=int, default=20, help="at 100k docs")
    parser.add_argument("--copies", type=int, default=5, help="wikiqa replicas for the large run")
    parser.add_argument("--datasets", default="scifact-subset,wikiqa")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-ann", action="store_true", help="no usearch graph at 100k")
    parser.add_argument(
        "--synthetic-vectors",
        action="store_true",
        help="100k run on seeded random document vectors (latency/filters/persistence only)",
    )
    parser.add_argument("--out", default="retrieval.json", help="file name under results/")
    parser.add_argument(
        "--prefix", default="", help="NAME=DOCS,...: score on the first DOCS documents of NAME"
    )
    parser.add_argument(
        "--skip-baselines", action="store_true", help="no LangChain/LlamaIndex at 100k"
    )
    parser.add_argument(
        "--contenders-only",
        action="store_true",
        help="latency of the default hybrid vs the two frameworks only (no quality tables)",
    )
    parser.add_argument(
        "--skip-sweep", action="store_true", help="no fixed-dense-weight quality sweep"
    )
    parser.add_argument("--table", action="store_true", help="print tables from the last run")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads((RESULTS / "retrieval.json").read_text())))
        return
    from rag_optimize.embedding.local import LocalEmbedder

    embedder = LocalEmbedder(backend="onnx", max_length=256)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "note": "shared 2-core machine; other jobs ran at the same time",
        },
        "args": vars(args),
        "load_average_start": os.getloadavg(),
        "embedder": repr(embedder),
        "datasets": {},
    }
    for name in filter(None, args.datasets.split(",")):
        report["datasets"][name] = run_dataset(name, embedder, args, report)
    if not args.skip_large:
        report["large"] = run_large(embedder, args)
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["load_average_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / args.out} in {report['total_s']:.0f}s")


if __name__ == "__main__":
    main()
