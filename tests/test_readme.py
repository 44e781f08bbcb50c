"""Every ``python`` block of README.md runs as written.

Each block is executed as a script of its own (a fresh Python process, in a temporary working
directory), the way a reader pastes it into a file. A block that needs a server says
so in an HTML comment right before it, which the extractor reads::

    <!-- readme-test: redis -->        a Redis server; the test starts one on a free port and
                                       puts its URL in place of redis://localhost:6379/0
    <!-- readme-test: sentinel -->     a Redis master, a replica and a Sentinel; the test starts
                                       them on free ports and puts their URL in place of
                                       redis+sentinel://localhost:26379/mymaster
    <!-- readme-test: server -->       a long-running web app: it is compiled, and its
                                       module-level code runs (the app object is built), but
                                       no server is started

Any other marker, or a block the test cannot run, is a failure: the README must not show
code that does not work.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.redis_server import RedisSentinelSetup, RedisServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEFAULT_REDIS = "redis://localhost:6379/0"
DEFAULT_SENTINEL = "redis+sentinel://localhost:26379/mymaster"
MARKERS = {"redis", "sentinel", "server"}

_BLOCK = re.compile(
    r"(?:<!--\s*readme-test:\s*(?P<marker>[\w-]+)\s*-->\s*\n)?```python\n(?P<code>.*?)```",
    re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    line: int
    code: str
    marker: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """The python blocks of ``text`` with their line numbers and markers."""
    return [
        Block(text.count("\n", 0, m.start("code")), m.group("code"), m.group("marker"))
        for m in _BLOCK.finditer(text)
    ]


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_the_extractor_finds_blocks_and_markers() -> None:
    sample = "text\n<!-- readme-test: redis -->\n```python\nx = 1\n```\n```python\ny = 2\n```\n"
    blocks = readme_blocks(sample)
    assert [(b.code, b.marker) for b in blocks] == [("x = 1\n", "redis"), ("y = 2\n", None)]
    assert len(BLOCKS) >= 5  # the README really has blocks


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def sentinel_url() -> Iterator[str]:
    setup = RedisSentinelSetup().start()
    yield setup.url
    setup.stop()


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_readme_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    assert block.marker is None or block.marker in MARKERS, f"{block}: unknown marker"
    code = block.code
    if block.marker == "sentinel":
        assert DEFAULT_SENTINEL in code, f"{block}: a sentinel block connects to {DEFAULT_SENTINEL}"
        code = code.replace(DEFAULT_SENTINEL, request.getfixturevalue("sentinel_url"))
    if block.marker not in ("redis", "sentinel"):  # never reach a Redis the test did not start
        assert "redis://" not in code and "6379" not in code, f"{block}: needs the redis marker"
    if block.marker == "redis":
        assert DEFAULT_REDIS in code, f"{block}: a redis block connects to {DEFAULT_REDIS}"
        code = code.replace(DEFAULT_REDIS, request.getfixturevalue("redis_url"))
    if block.marker == "server":  # build the app, do not serve it
        code = f"__name__ = 'readme_block'\n{code}"
    script = tmp_path / "readme_block.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(  # a process of its own: globals a block sets die with it
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{block} failed:\n{done.stderr[-3000:]}"
