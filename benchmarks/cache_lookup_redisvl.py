"""RedisVL FLAT contender for benchmarks/cache_lookup.py, run in RedisVL's own venv.

Not a project dependency: ``cache_lookup.py`` starts this script with the interpreter given by
``--redisvl-python`` (a venv with ``pip install redisvl numpy``). It loads the stored vectors
(a ``.npy`` file) into a RedisVL ``SearchIndex`` (hash storage, FLAT, cosine, float32) on the
Redis URL given, prints ``ready <load seconds>``, then answers one command per stdin line:

* ``q <i>``: KNN top-1 of query row ``i``; prints ``<stored row> <cosine> <nanoseconds>``
  (the time of ``index.query`` only, measured here, so the pipe is not counted);
* ``threads <T> <n>``: ``n`` queries spread over ``T`` threads; prints lookups per second;
* ``exit``.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from redisvl.index import SearchIndex
from redisvl.query import VectorQuery


def main() -> None:
    url, stored_path, queries_path = sys.argv[1:4]
    stored = np.load(stored_path)
    queries = np.load(queries_path)
    schema = {
        "index": {"name": "bench", "prefix": "bench", "storage_type": "hash"},
        "fields": [
            {"name": "row", "type": "tag"},
            {
                "name": "vec",
                "type": "vector",
                "attrs": {
                    "dims": int(stored.shape[1]),
                    "distance_metric": "cosine",
                    "algorithm": "flat",
                    "datatype": "float32",
                },
            },
        ],
    }
    index = SearchIndex.from_dict(schema, redis_url=url)
    index.create(overwrite=True, drop=True)
    start = time.perf_counter()
    step = 5_000
    for lo in range(0, stored.shape[0], step):
        rows = range(lo, min(lo + step, stored.shape[0]))
        index.load(
            [{"row": str(i), "vec": stored[i].tobytes()} for i in rows],
            keys=[f"bench:{i}" for i in rows],
        )
    while int(index.info().get("indexing", 0)):
        time.sleep(0.2)
    print(f"ready {time.perf_counter() - start:.2f}", flush=True)

    def query(i: int) -> tuple[int, float]:
        found = index.query(
            VectorQuery(
                vector=queries[i].tobytes(),
                vector_field_name="vec",
                return_fields=["row"],
                num_results=1,
            )
        )
        if not found:
            return -1, 0.0
        return int(found[0]["row"]), 1.0 - float(found[0]["vector_distance"])

    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "exit":
            break
        if cmd[0] == "q":
            t0 = time.perf_counter_ns()
            row, sim = query(int(cmd[1]))
            took = time.perf_counter_ns() - t0
            print(f"{row} {sim:.6f} {took}", flush=True)
        elif cmd[0] == "threads":
            threads, n = int(cmd[1]), int(cmd[2])

            def work(offset: int, n: int = n, threads: int = threads) -> None:
                for j in range(offset, n, threads):
                    query(j % queries.shape[0])

            pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            t0 = time.perf_counter()
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            print(f"{n / (time.perf_counter() - t0):.1f}", flush=True)


if __name__ == "__main__":
    main()
