"""The shared-cache example runs end to end (short mode) against a test redis-server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.redis_server import ROOT, RedisServer, any_server  # noqa: F401


@pytest.mark.slow
def test_example_two_replicas_share_one_cache(any_server: RedisServer) -> None:  # noqa: F811
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAG_OPTIMIZE_EXAMPLE_SHORT": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "redis_shared_cache.py"), "--url",
         any_server.url, "--timeout-ms", "1000"],  # a loaded test machine is no outage
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    path = "server" if "8." in any_server.client().info("server")["redis_version"][:2] else "mirror"
    assert out.count(f"search path: {path}") == 2  # both replicas
    assert "[replica B] 'how can I reset my password quickly' -> cache" in out
    assert "[replica A] 'what are your support hours at weekends' -> cache" in out
    assert "invalidated scope 'acme': 2 entries" in out
    assert out.rstrip().endswith("shared cache behaved as expected")
