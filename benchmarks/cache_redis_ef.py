"""Recall and latency of Redis 8 vector-set search (``VSIM``) against its EF at 100k entries.

The data of ``cache_redis.py`` at 100k (random unit vectors, dim 384, seed 100000, the same
near-duplicate queries): the vectors are added as ``VADD ... Q8 EF 40`` (how ``RedisStore``
builds its sets), then 500 queries ask ``VSIM ... COUNT 5 EF e NOTHREAD`` for several ``e``;
recall is the fraction whose stored original is among the 5 returned. This is what chose the
store's search effort (EF from 50 at 12,500 entries to 800 at 100k, ``cache/redis/vsets.py``).

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_ef.py  (~12 min on a loaded
2-core machine; writes benchmarks/results/cache_redis_ef.json)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_ef.json"


def main() -> None:
    server = RedisServer(binary=redis8_bin()).start()
    out: dict[str, object] = {"load_average_at_start": os.getloadavg()}
    try:
        r = server.client()
        n, d = 100_000, 384
        rng = np.random.default_rng(n)  # the same draws as cache_redis.py at 100k
        stored = rng.standard_normal((n, d)).astype(np.float32)
        stored /= np.linalg.norm(stored, axis=-1, keepdims=True)
        near_of = rng.integers(0, n, 1000)
        noise = 0.3 / np.sqrt(d) * rng.standard_normal((1000, d)).astype(np.float32)
        queries = stored[near_of] + noise
        queries = (queries / np.linalg.norm(queries, axis=-1, keepdims=True)).astype("<f4")
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for i, x in enumerate(stored):
            pipe.execute_command("VADD", "vs", "FP32", x.astype("<f4").tobytes(), str(i),
                                 "Q8", "EF", 40)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        out["fill_seconds_pipelined"] = round(time.perf_counter() - t0, 1)
        rows = []
        for ef in (50, 100, 200, 400, 600, 800):
            found, times = 0, []
            for qi, q in enumerate(queries[:500]):
                t = time.perf_counter_ns()
                res = r.execute_command("VSIM", "vs", "FP32", q.tobytes(), "COUNT", 5,
                                        "EF", ef, "NOTHREAD")
                times.append(time.perf_counter_ns() - t)
                found += str(near_of[qi]).encode() in res
            rows.append({"ef": ef, "recall_at_5": found / 500,
                         "p50_ms": round(float(np.percentile(times, 50)) / 1e6, 2)})
            print(rows[-1], flush=True)
        out["rows"] = rows
    finally:
        server.stop()
    out["load_average_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
