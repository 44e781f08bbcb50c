"""``rag-optimize demo``: an offline before/after run of a LangChain RAG chain.

A document set (:mod:`.corpus`), a realistic question stream (:mod:`.questions`), a local
extractive chat model or an OpenAI-compatible one (:mod:`.chat_model`), and the runner
(:mod:`.runner`) that times a plain LangChain chain and the same chain with rag-optimize's
components dropped in.
"""
