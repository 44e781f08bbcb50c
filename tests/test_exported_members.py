"""The public surface, pinned (as httpx's ``tests/test_exported_members.py`` does).

Adding or removing a public name is a deliberate change: it fails here until the lists below
are updated with it. The adapters build only on this surface: a second test walks every
import statement of the two adapter packages and fails on any core import that does not come
through a front door, i.e. ``rag_optimize`` itself or one of its public subpackages/modules
(``rag_optimize.cache``, ``rag_optimize.cli``, ``rag_optimize.errors`` ...), with the name
listed in that module's ``__all__`` (so ``rag_optimize.cache.keys``,
``rag_optimize.cli.measure`` and the like cannot creep back in).
"""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = {
    "langchain_rag_optimize": ROOT / "integrations/langchain/langchain_rag_optimize",
    "llama_index_rag_optimize": ROOT / "integrations/llama-index/llama_index_rag_optimize",
}

EXPORTED = {
    "rag_optimize": [
        "BM25Index",
        "BatchingEmbedder",
        "BenchmarkResult",
        "CacheEntry",
        "CacheHit",
        "CacheStats",
        "CalibrationResult",
        "CohereReranker",
        "ConfigurationError",
        "DecisionPipeline",
        "ContextBudget",
        "DenseIndex",
        "Embedder",
        "EmbeddingError",
        "EmbeddingJudge",
        "ErrorBudget",
        "ErrorBudgetSettings",
        "ExactMatchJudge",
        "FusionRetriever",
        "HashingEmbedder",
        "HybridRetriever",
        "InMemoryStore",
        "InvalidInputError",
        "InvalidTypeError",
        "InvalidVectorError",
        "LatencyReport",
        "LatencyTracker",
        "LocalEmbedder",
        "MismatchVerifier",
        "QueueFull",
        "RagOptimizeError",
        "RedisStore",
        "Reranker",
        "RetrievalError",
        "RetrievalResult",
        "RetrievedDocument",
        "RunRecord",
        "SemanticCache",
        "ShadowReport",
        "Store",
        "StoreError",
        "StoreReport",
        "__version__",
        "abenchmark_pipeline",
        "benchmark_pipeline",
        "cache_scope",
        "calibrate_threshold",
        "default_embedder",
    ],
    "rag_optimize.cache": [
        "DEFAULT_MIN_OVERLAP",
        "DEFAULT_THRESHOLD",
        "CacheEntry",
        "CacheHit",
        "CacheStats",
        "CalibrationResult",
        "Candidate",
        "CrossEncoderVerifier",
        "DecisionPipeline",
        "EmbeddingJudge",
        "EmbeddingVerifier",
        "ErrorBudget",
        "ErrorBudgetSettings",
        "EvidenceVote",
        "ExactMatchJudge",
        "ExactPart",
        "InMemoryStore",
        "MismatchVerifier",
        "PromptQuestion",
        "ReportLog",
        "SemanticCache",
        "SemanticCacheOptions",
        "ShadowReport",
        "Store",
        "StoreDefaults",
        "StoreReport",
        "SyncStoreMixin",
        "Verifier",
        "cache_scope",
        "calibrate_threshold",
        "check_min_overlap",
        "current_scope",
        "digest",
        "entry_id",
        "exact_digest",
        "find_question",
        "normalise_query",
        "sources_agree",
    ],
    "rag_optimize.retrieval": [
        "And",
        "Branch",
        "CalibrationOptions",
        "CallableBranch",
        "CohereReranker",
        "ContextBudget",
        "DenseBranch",
        "DocumentColumns",
        "Eq",
        "FUSIONS",
        "Filter",
        "FusionCalibration",
        "FusionOptions",
        "FusionRetriever",
        "HybridBuildOptions",
        "HybridRetriever",
        "In",
        "Ne",
        "Not",
        "NotIn",
        "Or",
        "PackedContext",
        "Range",
        "RerankError",
        "Reranker",
        "RetrievalResult",
        "RetrievedDocument",
        "SparseBranch",
        "WrapOptions",
        "aapply_reranker",
        "apply_reranker",
        "calibrate_fusion",
        "estimate_tokens",
        "parse_filter",
        "relative_score",
        "rrf",
        "weighted",
        "wrap_retrievers",
    ],
    "langchain_rag_optimize": [
        "AsyncHybridRetriever",
        "BatchingEmbeddings",
        "CohereRerank",
        "LatencyCallbackHandler",
        "SemanticLLMCache",
        "TimedEmbeddings",
        "latency_tracing",
        "with_semantic_cache",
    ],
    "llama_index_rag_optimize": [
        "AsyncHybridRetriever",
        "BatchingEmbedding",
        "CachedQueryEngine",
        "CohereRerank",
        "ContextBudgetPostprocessor",
        "LatencyEventHandler",
        "LatencySpanHandler",
        "LegacyLatencyHandler",
        "LlamaIndexEmbedder",
    ],
}


@pytest.mark.parametrize("module_name", sorted(EXPORTED))
def test_exported_names_are_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(EXPORTED[module_name])
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name!r}"


# Plain modules (not packages) whose own imports (``Any``, ``Callable``) look public: only
# their ``__all__`` is pinned.
MODULE_ALL = {
    "rag_optimize.plans": ["Call", "Plan", "Step", "arun", "run"],
}


@pytest.mark.parametrize("module_name", sorted(MODULE_ALL))
def test_plain_modules_all_is_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(MODULE_ALL[module_name])
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name!r}"


@pytest.mark.parametrize("module_name", sorted(EXPORTED))
def test_every_public_attribute_is_exported(module_name: str) -> None:
    """Nothing public-looking is re-exported without being listed (submodules aside)."""
    module = importlib.import_module(module_name)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(module.__all__) == set()


def _core_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every ``rag_optimize`` import in ``path`` (any depth:
    imports inside functions count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rag_optimize" or node.module.startswith("rag_optimize."):
                out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "rag_optimize" or alias.name.startswith("rag_optimize."):
                    out.append((node.lineno, alias.name, []))
    return out


def _adapter_sources() -> list[Path]:
    return sorted(p for root in ADAPTERS.values() for p in root.rglob("*.py"))


def test_the_walker_sees_the_adapters_core_imports() -> None:
    """The import walk below is not vacuous: it finds the adapters' many core imports."""
    found = [imp for path in _adapter_sources() for imp in _core_imports(path)]
    assert len(found) >= 20
    assert {module for _, module, _ in found} >= {"rag_optimize", "rag_optimize.cache"}


def _violations(path: Path) -> list[str]:
    """Why each core import of ``path`` is not public (empty: all are)."""
    problems = []
    for line, module_name, names in _core_imports(path):
        parts = module_name.split(".")
        if len(parts) > 2 or any(part.startswith("_") for part in parts):
            problems.append(f"line {line}: {module_name} is not a front door of the core")
            continue
        exported = getattr(importlib.import_module(module_name), "__all__", None)
        if exported is None:
            problems.append(f"line {line}: {module_name} has no __all__ (not a public module)")
            continue
        problems += [
            f"line {line}: {module_name}.{name} is not in its __all__"
            for name in names
            if name not in exported
        ]
    return problems


@pytest.mark.parametrize(
    "path", _adapter_sources(), ids=lambda p: str(p.relative_to(ROOT / "integrations"))
)
def test_adapters_import_only_public_core_names(path: Path) -> None:
    problems = _violations(path)
    assert not problems, "\n".join(problems)


def test_the_check_catches_each_kind_of_private_import(tmp_path: Path) -> None:
    """The rule itself, on a file that breaks it in each way (and one line that keeps it)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from rag_optimize.cache import digest\n"  # fine: a front door, exported there
        "from rag_optimize.cache.keys import digest\n"  # behind the front door
        "from rag_optimize._version import __version__\n"  # a private module
        "from rag_optimize.cache import StatsCounter\n"  # not exported by the front door
        "def later():\n"
        "    import rag_optimize.cli.measure\n",  # inside a function still counts
        encoding="utf-8",
    )
    problems = _violations(bad)
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 4", "line 6"]


@pytest.mark.parametrize("adapter", ["langchain", "llama-index"])
def test_adapters_pin_the_core_to_a_compatible_range(adapter: str) -> None:
    """Non-exported core names may move between minor releases, so each adapter allows only
    the core versions it was built against: ``>=0.1.0,<0.2`` (and the core is at 0.1)."""
    tomllib = pytest.importorskip("tomllib")
    requirements = pytest.importorskip("packaging.requirements")
    project = tomllib.loads((ROOT / "integrations" / adapter / "pyproject.toml").read_text())
    core = [
        requirements.Requirement(dep)
        for dep in project["project"]["dependencies"]
        if requirements.Requirement(dep).name == "rag-optimize"
    ]
    assert len(core) == 1
    spec = core[0].specifier
    assert str(spec) in ("<0.2,>=0.1.0", ">=0.1.0,<0.2")
    import rag_optimize

    assert spec.contains(rag_optimize.__version__)
    assert not spec.contains("0.2.0") and not spec.contains("1.0.0")


def test_every_public_adapter_module_declares_its_public_names() -> None:
    """Each non-underscore module of the adapters lists its public names in ``__all__``, and
    every listed name exists (so ``from module import *`` and the docs agree with the code)."""
    checked = 0
    for package, root in ADAPTERS.items():
        for path in sorted(root.rglob("*.py")):
            if path.name.startswith("_") and path.name != "__init__.py":
                continue
            relative = path.relative_to(root).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            module = importlib.import_module(".".join([package, *parts]))
            assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
            missing = [name for name in module.__all__ if not hasattr(module, name)]
            assert missing == [], f"{module.__name__}.__all__ lists missing names {missing}"
            checked += 1
    assert checked >= 10
