"""The semantic cache: keys, scopes, thresholds, stats, and the stores behind them.

The adapter-facing surface of the cache is what this package exports (``__all__``): the
cache and its settings, the records it returns, the store protocol with its report type and
defaults (for writing a store), the key helpers an adapter needs to build the exact part of
a key (``exact_digest``, ``digest``), and scopes. Submodules not re-exported here may move.
"""

from rag_optimize.cache.decision.calibration import CalibrationResult, calibrate_threshold
from rag_optimize.cache.decision.error_budget import ErrorBudget
from rag_optimize.cache.decision.evidence import (
    DEFAULT_MIN_OVERLAP,
    check_min_overlap,
    sources_agree,
)
from rag_optimize.cache.decision.pipeline import DecisionPipeline
from rag_optimize.cache.decision.prompt import PromptQuestion, find_question
from rag_optimize.cache.decision.evidence import (
    EvidenceVote,
)
from rag_optimize.cache.decision.judges import EmbeddingJudge, ExactMatchJudge
from rag_optimize.cache.decision.models import CrossEncoderVerifier, EmbeddingVerifier
from rag_optimize.cache.decision.shadow import ShadowReport
from rag_optimize.cache.decision.verifiers import MismatchVerifier, Verifier
from rag_optimize.cache.entry import CacheEntry, CacheHit, Candidate
from rag_optimize.cache.keys import ExactPart, digest, entry_id, exact_digest, normalise_query
from rag_optimize.cache.memory import InMemoryStore
from rag_optimize.cache.scopes import cache_scope, current_scope
from rag_optimize.cache.semantic import DEFAULT_THRESHOLD, ErrorBudgetSettings, SemanticCache
from rag_optimize.cache.stats import CacheStats
from rag_optimize.cache.store import ReportLog, Store, StoreDefaults, StoreReport, SyncStoreMixin

__all__ = [
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
]
