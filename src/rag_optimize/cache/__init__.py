"""rag_optimize.cache."""
