"""Word lists the cache decision reads (see rag_optimize.cache.decision.lexicon)."""
