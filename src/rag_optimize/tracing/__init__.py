"""rag_optimize.tracing."""
