"""LangChain ``Embeddings`` that batches concurrent query embeddings of any other ``Embeddings``.

A thin translation over :class:`rag_optimize.BatchingEmbedder`: a LangChain ``Embeddings``
already has the core's ``embed_query``/``embed_documents`` shape, so this class only forwards.
It drops in wherever an ``Embeddings`` goes: vector stores, retrievers, ``CacheBackedEmbeddings``.
"""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from typing_extensions import Unpack

from rag_optimize.embedding import BatchingEmbedder, BatchingOptions, BatchStats, ClosesOnExit
from rag_optimize.errors import InvalidTypeError
from rag_optimize.validation import check_options

__all__ = ["BatchingEmbeddings"]


class BatchingEmbeddings(ClosesOnExit, Embeddings):
    """Wrap ``embeddings`` so concurrent ``embed_query``/``aembed_query`` calls share batches.

    ``options`` are :class:`rag_optimize.BatchingEmbedder`'s, typed as
    :class:`rag_optimize.embedding.BatchingOptions` (``max_batch_size``, ``max_wait_ms``,
    ``max_queue``, ``cache_size``, ``max_in_flight``, ``block``, ``embed_batch``, ``clock``,
    ``tracker``, ``wait_when_idle``); any other keyword raises
    :class:`~rag_optimize.errors.UnknownOptionError` naming it.

    Query batches go to the wrapped model's ``embed_documents``; for a model that embeds
    queries differently from documents (e.g. Cohere's ``input_type``), pass ``embed_batch``.
    ``embed_documents`` is forwarded in chunks of ``max_batch_size``. Call :meth:`close` (or
    use ``with``) to stop its threads.

    Example::

        embeddings = BatchingEmbeddings(HuggingFaceEmbeddings(...), max_wait_ms=5)
        store = InMemoryVectorStore(embedding=embeddings)
    """

    def __init__(self, embeddings: Embeddings, **options: Unpack[BatchingOptions]) -> None:
        if not isinstance(embeddings, Embeddings):
            raise InvalidTypeError(
                f"BatchingEmbeddings wraps a LangChain Embeddings, got {type(embeddings).__name__}"
            )
        check_options(options, BatchingOptions, "BatchingEmbeddings")
        self.embeddings = embeddings
        self.batcher = BatchingEmbedder(embeddings, **options)

    def embed_query(self, text: str) -> list[float]:
        return self.batcher.embed_query(text)

    async def aembed_query(self, text: str) -> list[float]:
        return await self.batcher.aembed_query(text)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.batcher.embed_documents(texts)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self.batcher.aembed_documents(texts)

    def stats(self) -> BatchStats:
        """Batches, mean batch size, cache and dedup hits, queue waits."""
        return self.batcher.stats()

    def close(self) -> None:
        """Finish queued work and stop the batching threads."""
        self.batcher.close()

    def __repr__(self) -> str:
        return f"BatchingEmbeddings({self.embeddings!r}, {self.batcher!r})"
