"""Semantic cache lookup latency at 1k / 10k / 100k entries, side by side in one process.

Query embedding is excluded: every text maps to a precomputed random unit vector (dim 384,
the size of all-MiniLM-L6-v2) through a stub embedder that only does a dict lookup, so the
numbers are the cache's own cost (key normalisation, vector check, search, fetch, stats).

Compared, on the same vectors and the same queries (half near-duplicates of stored entries,
cosine about 0.98, so hits; half fresh random vectors, so misses):

* ``SemanticCache(index="exact")``: one matrix-vector product per lookup;
* ``SemanticCache(index="ann")`` (usearch HNSW) at the largest size;
* the straightforward approach: a dict of {query: (numpy vector, answer)} and a Python loop
  computing ``dot(a, b) / (norm(a) * norm(b))`` per entry, keeping the best above the
  threshold (what tutorials and the seed lesson do);
* GPTCache 0.1.x's similarity cache (``manager_factory("sqlite,faiss")`` +
  ``SearchDistanceEvaluation``, its documented default for similar-question caching) through
  ``gptcache.adapter.api.get``, if ``gptcache`` is importable (it is not a project
  dependency: run this script with an interpreter that has it, see BENCHMARKS.md); skipped
  otherwise.

Also: an exact repeat (a stored query asked again, after case/whitespace changes), answered
from a hash without the embedder.

Run: PYTHONPATH=src python benchmarks/cache_lookup.py  [--quick] [--sizes 1000,10000,100000]
(writes benchmarks/results/cache_lookup.json)
"""

from __future__ import annotations

import os

# One BLAS thread: a single-query matrix-vector product is memory-bound, and on a loaded
# 2-core machine OpenBLAS's spinning worker threads made it 10-20x slower (measured).
# Set OPENBLAS_NUM_THREADS yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import atexit  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "cache_lookup.json"
DIM = 384
THRESHOLD = 0.9


class StubEmbedder:
    """Returns precomputed vectors: embedding cost is kept out of the measurement."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed_query(self, text: str) -> np.ndarray:
        return self.vectors[text]

    def embed_documents(self, texts: list[str]) -> list[np.ndarray]:
        return [self.vectors[t] for t in texts]


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def make_data(n: int, n_queries: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    stored = unit_rows(rng, n)
    near_of = rng.integers(0, n, n_queries // 2)
    near = stored[near_of] + 0.2 * unit_rows(rng, len(near_of))
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    fresh = unit_rows(rng, n_queries - len(near_of))
    queries = np.concatenate([near, fresh]).astype(np.float32)
    return {
        "stored_texts": [f"stored question {i}" for i in range(n)],
        "stored": stored,
        "query_texts": [f"asked question {i}" for i in range(n_queries)],
        "queries": queries,
        "near_of": near_of,
    }


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": round(float(np.percentile(arr, 50)), 2),
        "p99_us": round(float(np.percentile(arr, 99)), 2),
        "mean_us": round(float(arr.mean()), 2),
        "lookups": len(samples_ns),
    }


def timed(fn: Callable[[Any], Any], args: list[Any]) -> tuple[list[int], list[Any]]:
    samples, outs = [], []
    for a in args:
        t0 = time.perf_counter_ns()
        out = fn(a)
        samples.append(time.perf_counter_ns() - t0)
        outs.append(out)
    return samples, outs


# ------------------------------------------------------------------ contenders
def bench_semantic_cache(data: dict[str, Any], index: str, n_queries: int) -> dict[str, Any]:
    from rag_optimize.cache import SemanticCache

    vectors = dict(zip(data["stored_texts"], data["stored"], strict=True))
    vectors.update(zip(data["query_texts"], data["queries"], strict=True))
    cache = SemanticCache(
        StubEmbedder(vectors), threshold=THRESHOLD, max_entries=None, index=index  # type: ignore[arg-type]
    )
    t0 = time.perf_counter()
    for text in data["stored_texts"]:
        cache.set(text, "answer to " + text)
    build_s = time.perf_counter() - t0
    texts = data["query_texts"][:n_queries]
    cache.get(texts[0])  # warm up
    samples, hits = timed(cache.get, texts)
    n_near = min(len(data["near_of"]), n_queries)
    correct = sum(
        1
        for i, hit in enumerate(hits[:n_near])
        if hit is not None and hit.matched_query == data["stored_texts"][data["near_of"][i]]
    )
    false_hits = sum(1 for hit in hits[n_near:] if hit is not None)
    repeats = [t.upper() + "  " for t in data["stored_texts"][: min(n_queries * 5, 5000)]]
    calls_before = len(vectors)
    exact_samples, exact_hits = timed(cache.get, repeats)
    assert all(h is not None and h.exact for h in exact_hits), "exact path missed"
    assert len(vectors) == calls_before
    return {
        **percentiles(samples),
        "build_seconds": round(build_s, 2),
        "near_duplicate_hits": f"{correct}/{n_near}",
        "false_hits": false_hits,
        "exact_repeat": percentiles(exact_samples),
    }


def bench_python_loop(data: dict[str, Any], n_queries: int) -> dict[str, Any]:
    store = {
        text: (vec, "answer to " + text)
        for text, vec in zip(data["stored_texts"], data["stored"], strict=True)
    }

    def lookup(query: np.ndarray) -> str | None:
        best, best_sim = None, THRESHOLD
        for _text, (vec, answer) in store.items():
            sim = float(np.dot(query, vec) / (np.linalg.norm(query) * np.linalg.norm(vec)))
            if sim >= best_sim:
                best, best_sim = answer, sim
        return best

    samples, outs = timed(lookup, list(data["queries"][:n_queries]))
    n_near = min(len(data["near_of"]), n_queries)
    return {**percentiles(samples), "hits": sum(o is not None for o in outs[:n_near])}


def bench_gptcache(data: dict[str, Any], n_queries: int) -> dict[str, Any]:
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put  # noqa: F401 - put documents the API used
    from gptcache.manager import manager_factory
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    vectors = dict(zip(data["stored_texts"], data["stored"], strict=True))
    vectors.update(zip(data["query_texts"], data["queries"], strict=True))
    workdir = tempfile.mkdtemp(prefix="gptcache-bench-")
    # GPTCache flushes its files at interpreter exit (atexit, LIFO): remove them after that.
    atexit.register(shutil.rmtree, workdir, True)
    cwd = os.getcwd()
    os.chdir(workdir)  # manager_factory writes sqlite and faiss files into the cwd
    try:
        cache = Cache()
        manager = manager_factory(
            "sqlite,faiss",
            data_dir=workdir,
            # its eviction manager keeps 1000 entries unless told otherwise
            eviction_params={"max_size": len(data["stored_texts"]) + 1},
            vector_params={"dimension": DIM},
        )
        # GPTCache's SearchDistanceEvaluation maps the L2 distance d of unit vectors to a
        # score in [0, 1] as (max_distance - d) / max_distance with max_distance 4.0; the
        # cosine threshold 0.9 is d^2 = 2 - 2 * 0.9 = 0.2 (faiss returns squared L2).
        cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=lambda text, **_: vectors[text],
            data_manager=manager,
            similarity_evaluation=SearchDistanceEvaluation(),
            config=Config(similarity_threshold=(4.0 - 0.2) / 4.0),
        )
        t0 = time.perf_counter()
        texts = data["stored_texts"]
        cache.import_data(questions=texts, answers=["answer to " + t for t in texts])
        build_s = time.perf_counter() - t0
        queries = data["query_texts"][:n_queries]
        get(queries[0], cache_obj=cache)
        samples, outs = timed(lambda q: get(q, cache_obj=cache), queries)
        n_near = min(len(data["near_of"]), n_queries)
        repeats = data["stored_texts"][: min(n_queries, 500)]
        exact_samples, exact_outs = timed(lambda q: get(q, cache_obj=cache), repeats)
        assert all(o is not None for o in exact_outs), "gptcache lost stored entries"
        return {
            **percentiles(samples),
            "build_seconds": round(build_s, 2),
            "hits": sum(o is not None for o in outs[:n_near]),
            "false_hits": sum(o is not None for o in outs[n_near:]),
            "exact_repeat": percentiles(exact_samples),
        }
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--loop-queries", type=int, default=0, help="default: by size")
    parser.add_argument("--ann-from", type=int, default=100_000, help="ANN at sizes >= this")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--no-gptcache", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.queries = [1000, 5000], 200
    try:
        import gptcache

        gpt_version: str | None = getattr(gptcache, "__version__", "unknown")
    except ImportError as exc:
        gpt_version = None
        gpt_note = f"gptcache not importable here ({exc}); skipped"
    if args.no_gptcache:
        gpt_version, gpt_note = None, "skipped (--no-gptcache)"

    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus "
        "(shared with other work)",
        "python": platform.python_version(),
        "dim": DIM,
        "threshold": THRESHOLD,
        "gptcache": gpt_version or gpt_note,
        "sizes": {},
    }
    for n in sizes:
        n_loop = args.loop_queries or max(10, min(args.queries, 2_000_000 // n))
        data = make_data(n, args.queries)
        row: dict[str, Any] = {}
        print(f"--- {n} entries", flush=True)
        row["semantic_cache_exact"] = bench_semantic_cache(data, "exact", args.queries)
        print("  exact", row["semantic_cache_exact"], flush=True)
        if n >= args.ann_from:
            row["semantic_cache_ann"] = bench_semantic_cache(data, "ann", args.queries)
            print("  ann", row["semantic_cache_ann"], flush=True)
        row["python_loop"] = bench_python_loop(data, n_loop)
        print("  loop", row["python_loop"], flush=True)
        if gpt_version:
            try:
                row["gptcache"] = bench_gptcache(data, args.queries)
            except Exception as exc:  # noqa: BLE001 - report, do not hide, a failing contender
                row["gptcache"] = {"error": f"{type(exc).__name__}: {exc}"}
            print("  gptcache", row["gptcache"], flush=True)
        loop_p50 = row["python_loop"]["p50_us"]
        row["speedup_p50_vs_loop"] = {
            name: round(loop_p50 / row[name]["p50_us"], 1)
            for name in ("semantic_cache_exact", "semantic_cache_ann", "gptcache")
            if name in row and "p50_us" in row[name]
        }
        results["sizes"][str(n)] = row
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
