"""langchain_rag_optimize: thin adapters over rag_optimize.

Public names are re-exported here, one `from ... import X as X` line each, and listed in
``__all__`` (pinned by ``tests/test_exported_members.py``).
"""

from langchain_rag_optimize.callbacks import LatencyCallbackHandler as LatencyCallbackHandler
from langchain_rag_optimize.callbacks import TimedEmbeddings as TimedEmbeddings
from langchain_rag_optimize.embeddings import BatchingEmbeddings as BatchingEmbeddings
from langchain_rag_optimize.llm_cache import SemanticLLMCache as SemanticLLMCache
from langchain_rag_optimize.retrievers import AsyncHybridRetriever as AsyncHybridRetriever
from langchain_rag_optimize.retrievers import CohereRerank as CohereRerank
from langchain_rag_optimize.chain_cache import with_semantic_cache as with_semantic_cache
from langchain_rag_optimize.callbacks import latency_tracing as latency_tracing

__all__ = [
    "AsyncHybridRetriever",
    "BatchingEmbeddings",
    "CohereRerank",
    "LatencyCallbackHandler",
    "SemanticLLMCache",
    "TimedEmbeddings",
    "latency_tracing",
    "with_semantic_cache",
]
