"""RedisStore behind Sentinel: a failover under load, and replica reads side by side.

Starts its own servers on free loopback ports (tests/redis_server.py ``RedisSentinelSetup``:
a master, one replica started with ``--replicaof``, one Sentinel started as
``redis-server <conf> --sentinel``, ``down-after-milliseconds`` 300, ``failover-timeout``
2000); never touches 6379.

* ``failover`` (Redis 7, the mirror path, and Redis 8.2, the server path; ``--trials`` each):
  200 entries in 4 scopes, replicated; 4 threads look them up without pause (near-duplicate
  questions, so every answer is checked) and 1 thread writes a new entry every 10 ms, all
  through one store with the default options (50 ms timeouts, circuit breaker, 1 s cooldown).
  Then the master is SIGKILLed. Reported: exceptions and wrong answers (both must be 0),
  counted store errors, seconds from the kill to the Sentinel naming the promoted replica, to
  the first hit and to the first stored write after the outage began (the first failed
  lookup or write after the kill: answers recorded just after the kill may have left the old
  master before it died).
* ``replica_reads`` (Redis 7 and 8.2, a master and one replica on this machine): 8 threads of
  lookups through a store reading from the master and through one reading from the replica,
  interleaved in rounds; lookups/s and per-lookup p50; then ``set`` p50 of both (replica reads
  add ``WAIT`` to every change). Both servers share the machine's 2 cores with the client.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_sentinel.py [--trials 3]
Writes benchmarks/results/cache_redis_sentinel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache  # noqa: E402
from tests.redis_server import REDIS_BIN, RedisSentinelSetup, redis8_bin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_sentinel.json"
SCOPES = [f"tenant-{i}" for i in range(4)]


def question(scope: str, i: int) -> str:
    return f"what is the delivery time for order number {i} of {scope}"


def new_cache(store: RedisStore) -> SemanticCache:
    return SemanticCache(HashingEmbedder(dim=384), store=store, threshold=0.8)


def fill(cache: SemanticCache, per_scope: int) -> None:
    for scope in SCOPES:
        for i in range(per_scope):
            assert cache.set(question(scope, i), f"{scope}|{i}", scope=scope)


def failover_trial(binary: str, namespace: str) -> dict[str, Any]:
    setup = RedisSentinelSetup(binary=binary).start()
    store = RedisStore(setup.url, namespace)
    try:
        cache = new_cache(store.start())
        fill(cache, 50)
        master = setup.node_on(setup.master_port() or 0)
        assert master.client().execute_command("WAIT", 1, 10_000) == 1
        assert store.wait_synced(30.0)
        errors_before = cache.stats.store_errors
        stop = threading.Event()
        lock = threading.Lock()
        hits: list[float] = []
        misses: list[float] = []  # every question has an answer: a miss is the outage
        writes: list[float] = []
        dropped: list[float] = []
        wrong: list[str] = []
        exceptions: list[str] = []
        lookups = [0]

        def reader(scope: str) -> None:
            i = 0
            while not stop.is_set():
                i = (i + 1) % 50
                try:
                    hit = cache.get(question(scope, i) + " please", scope=scope)
                except Exception as exc:  # noqa: BLE001 - counted: must stay 0
                    exceptions.append(repr(exc))
                    continue
                with lock:
                    lookups[0] += 1
                    if hit is None:
                        misses.append(time.monotonic())
                    else:
                        hits.append(time.monotonic())
                        if hit.response != f"{scope}|{i}":
                            wrong.append(hit.response)

        def writer() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    stored = cache.set(f"a new question number {n}", str(n), scope="writes")
                    with lock:
                        (writes if stored else dropped).append(time.monotonic())
                except Exception as exc:  # noqa: BLE001
                    exceptions.append(repr(exc))
                time.sleep(0.01)

        threads = [threading.Thread(target=reader, args=(s,)) for s in SCOPES]
        threads.append(threading.Thread(target=writer))
        for t in threads:
            t.start()
        time.sleep(1.0)
        old_port = master.port
        killed = time.monotonic()
        master.kill()
        promoted = None
        deadline = killed + 60
        while time.monotonic() < deadline:
            port = setup.master_port()
            if port not in (None, old_port):
                promoted = time.monotonic()
                break
            time.sleep(0.01)
        # answers recorded just after the kill may have left the old master before it (a
        # thread descheduled between reply and record): count from the first failed call
        first_hit = first_write = None
        while time.monotonic() < deadline and (first_hit is None or first_write is None):
            with lock:
                out_r = next((t for t in misses if t > killed), None)
                out_w = next((t for t in dropped if t > killed), None)
                if out_r is not None:
                    first_hit = next((t for t in hits if t > out_r), None)
                if out_w is not None:
                    first_write = next((t for t in writes if t > out_w), None)
            time.sleep(0.01)
        time.sleep(1.0)  # a second of normal service on the new master
        stop.set()
        for t in threads:
            t.join(30)

        def since(t: float | None) -> float | None:
            return None if t is None else round(t - killed, 3)

        return {
            "lookups": lookups[0],
            "exceptions": len(exceptions),
            "wrong_answers": len(wrong),
            "store_errors_during": cache.stats.store_errors - errors_before,
            "promoted_after_s": since(promoted),
            "first_hit_after_outage_s": since(first_hit),
            "first_write_after_outage_s": since(first_write),
            "answers_after_kill_before_outage": sum(
                1 for t in hits if killed < t < (next((m for m in misses if m > killed), t))),
            "search_path": store.search_path,
        }
    finally:
        store.close()
        setup.stop()


def lookup_round(cache: SemanticCache, threads: int, per_thread: int) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    misses = [0]

    def run(k: int) -> None:
        for j in range(per_thread):
            scope = SCOPES[(k + j) % len(SCOPES)]
            i = (k * 7 + j) % 50
            t = time.perf_counter()
            hit = cache.get(question(scope, i) + " please", scope=scope)
            latencies[k].append(time.perf_counter() - t)
            if hit is None:
                misses[0] += 1

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    flat = [x for xs in latencies for x in xs]
    return {
        "lookups_per_s": len(flat) / wall,
        "p50_ms": statistics.median(flat) * 1000,
        "misses": misses[0],
    }


def replica_reads(binary: str, namespace: str, rounds: int) -> dict[str, Any]:
    setup = RedisSentinelSetup(replicas=1, sentinels=0, binary=binary).start()
    url = setup.master.url
    stores = {
        "master": RedisStore(url, namespace, timeout_ms=1000),
        "replica": RedisStore(url, namespace, timeout_ms=1000, read_from_replicas=True),
    }
    try:
        caches = {name: new_cache(s.start()) for name, s in stores.items()}
        fill(caches["master"], 50)
        assert setup.master.client().execute_command("WAIT", 1, 10_000) == 1
        for s in stores.values():
            assert s.wait_synced(30.0)
        per: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
        for r in range(rounds):  # interleaved, the order alternating
            order = list(stores) if r % 2 == 0 else list(reversed(stores))
            for name in order:
                per[name].append(lookup_round(caches[name], threads=8, per_thread=150))
        sets: dict[str, list[float]] = {name: [] for name in stores}
        for n in range(200):
            for name in (list(stores) if n % 2 == 0 else list(reversed(stores))):
                t = time.perf_counter()
                caches[name].set(f"{name} write number {n}", str(n), scope="writes")
                sets[name].append(time.perf_counter() - t)
        out: dict[str, Any] = {}
        for name in stores:
            out[name] = {
                "lookups_per_s_median": round(statistics.median(
                    x["lookups_per_s"] for x in per[name]), 1),
                "lookup_p50_ms_median": round(statistics.median(
                    x["p50_ms"] for x in per[name]), 3),
                "misses": sum(int(x["misses"]) for x in per[name]),
                "set_p50_ms": round(statistics.median(sets[name]) * 1000, 3),
                "store_errors": caches[name].stats.store_errors,
                "status": {k: v for k, v in stores[name].status().items()
                           if k.startswith(("replica", "unconfirmed"))},
            }
        out["replica_over_master_lookups_per_s"] = round(
            out["replica"]["lookups_per_s_median"] / out["master"]["lookups_per_s_median"], 3)
        out["replica_over_master_set_p50"] = round(
            out["replica"]["set_p50_ms"] / out["master"]["set_p50_ms"], 3)
        return out
    finally:
        for s in stores.values():
            s.close()
        setup.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    kinds = {"redis7": REDIS_BIN, "redis8": redis8_bin()}
    results: dict[str, Any] = {
        "load_average_at_start": os.getloadavg(),
        "failover": {k: [] for k in kinds},
        "replica_reads": {},
    }
    for trial in range(args.trials):  # the kinds interleaved
        for kind, binary in kinds.items():
            load = os.getloadavg()[0]
            res = failover_trial(binary, f"bench-failover-{kind}-{trial}")
            res["load_average_start_end"] = [round(load, 1), round(os.getloadavg()[0], 1)]
            results["failover"][kind].append(res)
            print(kind, json.dumps(res), flush=True)
    for kind, binary in kinds.items():
        load = os.getloadavg()[0]
        res = replica_reads(binary, f"bench-replicas-{kind}", args.rounds)
        res["load_average_start_end"] = [round(load, 1), round(os.getloadavg()[0], 1)]
        results["replica_reads"][kind] = res
        print(kind, json.dumps(res), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
