"""rag-optimize: drop-in speed for existing LangChain and LlamaIndex RAG apps.

Public names are re-exported here (``X as X`` marks an explicit re-export) and listed in
``__all__`` (pinned by ``tests/test_exported_members.py``); the subpackages that define
``__all__`` (``rag_optimize.cache``, ``rag_optimize.embedding``, ``rag_optimize.tracing``,
``rag_optimize.retrieval``, ``rag_optimize.index``, ``rag_optimize.streaming``,
``rag_optimize.cli``, ``rag_optimize.errors``, ``rag_optimize.validation``) are public too.
Everything else may move between releases.
"""

from rag_optimize.embedding import Embedder as Embedder
from rag_optimize.embedding import HashingEmbedder as HashingEmbedder
from rag_optimize.errors import ConfigurationError as ConfigurationError
from rag_optimize.errors import EmbeddingError as EmbeddingError
from rag_optimize.errors import InvalidInputError as InvalidInputError
from rag_optimize.errors import InvalidVectorError as InvalidVectorError
from rag_optimize.errors import QueueFull as QueueFull
from rag_optimize.errors import RagOptimizeError as RagOptimizeError
from rag_optimize.errors import RetrievalError as RetrievalError
from rag_optimize.errors import StoreError as StoreError

from rag_optimize._version import __version__ as __version__
# Components add their public names below, one `from ... import X as X` line each.
from rag_optimize.embedding.batching import BatchingEmbedder as BatchingEmbedder
from rag_optimize.embedding.local import LocalEmbedder as LocalEmbedder
from rag_optimize.embedding.local import default_embedder as default_embedder
from rag_optimize.cache import CacheEntry as CacheEntry
from rag_optimize.cache import CacheHit as CacheHit
from rag_optimize.cache import CacheStats as CacheStats
from rag_optimize.cache import InMemoryStore as InMemoryStore
from rag_optimize.cache import SemanticCache as SemanticCache
from rag_optimize.cache import Store as Store
from rag_optimize.tracing import BenchmarkResult as BenchmarkResult
from rag_optimize.tracing import LatencyReport as LatencyReport
from rag_optimize.tracing import LatencyTracker as LatencyTracker
from rag_optimize.tracing import RunRecord as RunRecord
from rag_optimize.tracing import abenchmark_pipeline as abenchmark_pipeline
from rag_optimize.tracing import benchmark_pipeline as benchmark_pipeline
from rag_optimize.cache import cache_scope as cache_scope
from rag_optimize.index import BM25Index as BM25Index
from rag_optimize.index import DenseIndex as DenseIndex
from rag_optimize.retrieval import CohereReranker as CohereReranker
from rag_optimize.retrieval import ContextBudget as ContextBudget
from rag_optimize.retrieval import FusionRetriever as FusionRetriever
from rag_optimize.retrieval import HybridRetriever as HybridRetriever
from rag_optimize.retrieval import Reranker as Reranker
from rag_optimize.retrieval import RetrievalResult as RetrievalResult
from rag_optimize.retrieval import RetrievedDocument as RetrievedDocument
from rag_optimize.cache.redis.store import RedisStore as RedisStore
from rag_optimize.cache import calibrate_threshold as calibrate_threshold
from rag_optimize.cache import CalibrationResult as CalibrationResult
from rag_optimize.cache import ErrorBudget as ErrorBudget
from rag_optimize.cache import ShadowReport as ShadowReport
from rag_optimize.cache import ExactMatchJudge as ExactMatchJudge
from rag_optimize.cache import EmbeddingJudge as EmbeddingJudge
from rag_optimize.cache import MismatchVerifier as MismatchVerifier
from rag_optimize.cache import ErrorBudgetSettings as ErrorBudgetSettings
from rag_optimize.cache import StoreReport as StoreReport
from rag_optimize.errors import InvalidTypeError as InvalidTypeError
from rag_optimize.cache import DecisionPipeline as DecisionPipeline

__all__ = [
    "BM25Index",
    "BatchingEmbedder",
    "BenchmarkResult",
    "CacheEntry",
    "CacheHit",
    "CacheStats",
    "CalibrationResult",
    "CohereReranker",
    "DecisionPipeline",
    "ConfigurationError",
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
]
