"""rag_optimize.cli."""
