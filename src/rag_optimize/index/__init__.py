"""Search indexes: BM25 keyword search (bm25s) and dense vector search (exact, int8, binary)."""

from rag_optimize.index.bm25 import BM25Index, Tokenizer
from rag_optimize.index.dense import DenseIndex
from rag_optimize.index.documents import Hit

__all__ = ["BM25Index", "DenseIndex", "Hit", "Tokenizer"]
