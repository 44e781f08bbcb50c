"""The semantic cache: keys, scopes, thresholds, stats, and the stores behind them."""

from rag_optimize.cache.decision.calibration import CalibrationResult, calibrate_threshold
from rag_optimize.cache.entry import CacheEntry, CacheHit, Candidate
from rag_optimize.cache.decision.error_budget import ErrorBudget
from rag_optimize.cache.decision.judges import EmbeddingJudge, ExactMatchJudge
from rag_optimize.cache.memory import InMemoryStore
from rag_optimize.cache.semantic import DEFAULT_THRESHOLD, SemanticCache
from rag_optimize.cache.scopes import cache_scope, current_scope
from rag_optimize.cache.decision.shadow import ShadowReport
from rag_optimize.cache.stats import CacheStats
from rag_optimize.cache.store import Store
from rag_optimize.cache.decision.verifiers import MismatchVerifier, Verifier
from rag_optimize.cache.decision.pipeline import DecisionPipeline

__all__ = [
    "DEFAULT_THRESHOLD",
    "CacheEntry",
    "CacheHit",
    "CacheStats",
    "CalibrationResult",
    "DecisionPipeline",
    "EmbeddingJudge",
    "ErrorBudget",
    "ExactMatchJudge",
    "Candidate",
    "InMemoryStore",
    "MismatchVerifier",
    "SemanticCache",
    "ShadowReport",
    "Store",
    "Verifier",
    "cache_scope",
    "calibrate_threshold",
    "current_scope",
]
