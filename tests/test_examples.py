"""Each example runs in short mode, offline, and shows what it claims.

The examples are loaded from their files and their ``main(["--short"])`` called in this
process (the frameworks and the embedding model are loaded once for all of them).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def hit_rate(text: str) -> int:
    match = re.search(r"cache hit rate (\d+)%", text)
    assert match is not None, text
    return int(match.group(1))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "plain", "optimized"), [
    ("langchain_app", "plain app:", "optimized app:"),
    ("llamaindex_app", "plain engine:", "optimized engine:"),
])
def test_framework_examples(
    name: str, plain: str, optimized: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load(name).main(["--short"]) == 0
    out = capsys.readouterr().out
    assert plain in out and optimized in out
    assert hit_rate(out) > 0  # the short stream repeats a question
    answers = re.findall(r"  A: (.*)", out)
    assert len(answers) == 2 and answers[0] == answers[1]
    assert "Reset password" in answers[0]  # grounded in the right document
    assert "latency per stage" in out and "generation" in out


@pytest.mark.slow
def test_fastapi_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert load("fastapi_app").main(["--short"]) == 0
    out = capsys.readouterr().out
    assert out.count("last 'data: [DONE]'") == 2
    first, second = re.findall(r"  answer: (.*)", out)
    assert first == second and "semantic cache" in first.lower()  # the paraphrase hit
    assert "ttft: p50" in out and "over 2 requests" in out
    assert "cache: 1 hits, 1 misses" in out
