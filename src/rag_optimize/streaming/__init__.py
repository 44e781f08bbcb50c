"""rag_optimize.streaming."""
