"""Embedding models: the protocol, vector checks, and the bundled embedders."""

from rag_optimize.embedding.batching import BatchingEmbedder
from rag_optimize.embedding.hashing import HashingEmbedder
from rag_optimize.embedding.local import LocalEmbedder, default_embedder
from rag_optimize.embedding.protocol import Embedder, aembed_query, check_embedder
from rag_optimize.embedding.vectors import unit_matrix, unit_vector

__all__ = [
    "BatchingEmbedder",
    "Embedder",
    "HashingEmbedder",
    "LocalEmbedder",
    "aembed_query",
    "check_embedder",
    "default_embedder",
    "unit_matrix",
    "unit_vector",
]
