"""rag_optimize.index."""
