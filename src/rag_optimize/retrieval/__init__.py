"""rag_optimize.retrieval."""
