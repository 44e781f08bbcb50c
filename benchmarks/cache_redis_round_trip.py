"""What one round trip to Redis costs the client, by how the command is sent.

An empty script (``EVALSHA`` of ``return 1``) on a fresh local Redis 7, the three ways
interleaved call by call, ``--calls`` each, in ``--rounds`` rounds:

* ``raw_socket``: the packed command written to a TCP socket and the reply read back (the
  floor: loopback, the server's wake-up and its few microseconds of work);
* ``connection``: ``cache/redis/direct.py``'s ``execute`` on the store's own client (a pooled
  redis-py connection: ``send_command`` / ``read_response``);
* ``execute_command``: redis-py's ``Redis.execute_command`` on that same client (no
  retries: its retry wrapper, deprecated-argument check and observability hooks included),
  how the store ran every command before;
* ``default_client``: ``execute_command`` on a ``redis.Redis.from_url(url)`` with redis-py's
  defaults (retries on), how a caller's own client runs.

Run: PYTHONPATH=src:. .venv/bin/python benchmarks/cache_redis_round_trip.py [--calls 3000]
Writes benchmarks/results/cache_redis_round_trip.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import redis  # noqa: E402

from rag_optimize.cache.redis.direct import execute  # noqa: E402
from rag_optimize.cache.redis.server import sync_client  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cache_redis_round_trip.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out: dict[str, Any] = {"calls": args.calls, "load_average_at_start": os.getloadavg()}
    server = RedisServer().start()
    try:
        own = sync_client(server.url, {"socket_timeout": 2.0}, cluster=False)
        default = redis.Redis.from_url(server.url)
        sha = own.script_load("return 1")
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        packed = f"*3\r\n$7\r\nEVALSHA\r\n$40\r\n{sha}\r\n$1\r\n0\r\n".encode()
        buf = bytearray(64)

        def raw_socket() -> None:
            sock.sendall(packed)
            sock.recv_into(buf)

        ways: dict[str, Callable[[], Any]] = {
            "raw_socket": raw_socket,
            "connection": lambda: execute(own, "EVALSHA", sha, 0),
            "execute_command": lambda: own.execute_command("EVALSHA", sha, 0),
            "default_client": lambda: default.execute_command("EVALSHA", sha, 0),
        }
        rounds = []
        for r in range(args.rounds):
            times: dict[str, list[float]] = {name: [] for name in ways}
            names = list(ways)
            for i in range(args.calls):
                turn = (i + r) % len(names)
                for name in names[turn:] + names[:turn]:
                    start = time.perf_counter()
                    ways[name]()
                    times[name].append(time.perf_counter() - start)
            row = {f"{n}_p50_us": round(1e6 * sorted(v)[len(v) // 2], 1)
                   for n, v in times.items()}
            row["load_average"] = os.getloadavg()
            rounds.append(row)
            print(row, flush=True)
        out["rounds"] = rounds
        sock.close()
        own.close()
        default.close()
    finally:
        server.stop()
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
