"""llama_index_rag_optimize: thin adapters over rag_optimize.

Public names are re-exported here, one `from ... import X as X` line each, and listed in
``__all__`` (pinned by ``tests/test_exported_members.py``).
"""

from llama_index_rag_optimize.embeddings import BatchingEmbedding as BatchingEmbedding
from llama_index_rag_optimize.tracing import LatencyEventHandler as LatencyEventHandler
from llama_index_rag_optimize.tracing import LatencySpanHandler as LatencySpanHandler
from llama_index_rag_optimize.tracing import LegacyLatencyHandler as LegacyLatencyHandler
from llama_index_rag_optimize.postprocessors import CohereRerank as CohereRerank
from llama_index_rag_optimize.postprocessors import (
    ContextBudgetPostprocessor as ContextBudgetPostprocessor,
)
from llama_index_rag_optimize.retrievers import AsyncHybridRetriever as AsyncHybridRetriever
from llama_index_rag_optimize.query_engine import CachedQueryEngine as CachedQueryEngine
from llama_index_rag_optimize.embedder import LlamaIndexEmbedder as LlamaIndexEmbedder

__all__ = [
    "AsyncHybridRetriever",
    "BatchingEmbedding",
    "CachedQueryEngine",
    "CohereRerank",
    "ContextBudgetPostprocessor",
    "LatencyEventHandler",
    "LatencySpanHandler",
    "LegacyLatencyHandler",
    "LlamaIndexEmbedder",
]
