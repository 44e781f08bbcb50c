"""What the id-map pass costs ``invalidate`` on the Redis 8 (vector-set) path.

Both ``invalidate(scope)`` and ``invalidate(source_ids=...)`` walk the namespace's id map
after the scope's LRU set, so that an entry whose LRU set Redis evicted (``allkeys-*``) is
removed too. That pass reads the whole map, whatever the scope's size. Here one scope holds
30 entries and the map also lists N ids of 20 other scopes (written straight into the map:
the pass's cost depends on the map's size, not on what the other entries hold); each size
invalidates the scope 5 times (by scope, then by source) and reports the medians.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_invalidate.py
(writes benchmarks/results/cache_redis_invalidate.json)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from rag_optimize import RedisStore, SemanticCache  # noqa: E402
from rag_optimize.cache.redis.codec import scope_digest  # noqa: E402
from rag_optimize.cache.redis.vsets import VectorSetKeys  # noqa: E402
from rag_optimize.embedding import HashingEmbedder  # noqa: E402
from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

SIZES = (0, 10_000, 100_000, 1_000_000)


def fill_map(client: object, namespace: str, n: int) -> None:
    keys = VectorSetKeys(namespace)
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    for i in range(n):
        pipe.hset(keys.ids, f"{i:032x}", scope_digest(f"other-{i % 20}"))
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def main() -> None:
    server = RedisServer(binary=redis8_bin()).start()
    results: dict[str, dict[str, float]] = {}
    try:
        raw = server.client()
        for n in SIZES:
            namespace = f"invalidate-{n}"
            store = RedisStore(server.url, namespace, timeout_ms=5000).start()
            assert store.search_path == "server"
            cache = SemanticCache(HashingEmbedder(dim=64), store=store)
            fill_map(raw, namespace, n)
            by_scope, by_source = [], []
            for _ in range(5):
                for kind, times in (("scope", by_scope), ("source", by_source)):
                    for i in range(30):
                        cache.set(f"question number {i}", f"A-{i}", scope="A",
                                  metadata={"source_ids": ["doc-1"]})
                    start = time.perf_counter()
                    if kind == "scope":
                        removed = cache.invalidate("A")
                    else:
                        removed = cache.invalidate("A", source_ids=["doc-1"])
                    times.append(time.perf_counter() - start)
                    assert removed == 30, removed
            results[str(n)] = {"scope_ms": 1e3 * statistics.median(by_scope),
                               "source_ms": 1e3 * statistics.median(by_source)}
            print(n, results[str(n)], flush=True)
            store.close()
    finally:
        server.stop()
    out = {"load_average": Path("/proc/loadavg").read_text().split()[:3], "results": results}
    path = ROOT / "benchmarks" / "results" / "cache_redis_invalidate.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(out["load_average"])


if __name__ == "__main__":
    main()
