"""LlamaIndex ``BaseEmbedding`` that batches concurrent query embeddings of any other model.

A thin translation over :class:`rag_optimize.BatchingEmbedder`: the wrapped LlamaIndex model
is presented to the core in its ``embed_query``/``embed_documents`` shape, and LlamaIndex's
hooks (``_get_query_embedding`` and friends) call the core. Usable as ``Settings.embed_model``.
"""

from __future__ import annotations

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.callbacks import CallbackManager
from pydantic import PrivateAttr
from typing_extensions import Unpack

from rag_optimize.embedding import BatchingEmbedder, BatchingOptions, BatchStats, ClosesOnExit
from rag_optimize.errors import InvalidTypeError
from rag_optimize.validation import check_options

__all__ = ["BatchingEmbedding"]


class _LlamaIndexModel:
    """A LlamaIndex model seen through the core's embedder protocol.

    It calls the model's own hooks (``_get_query_embedding``, ``_get_text_embeddings``), not
    its public methods: the public ones emit LlamaIndex's embedding events, which
    :class:`BatchingEmbedding` already emits once in the caller's span; called again from the
    batching thread they would report every embedding twice, the second time with no parent.
    """

    def __init__(self, model: BaseEmbedding) -> None:
        self.model = model

    def embed_query(self, text: str) -> list[float]:
        return list(self.model._get_query_embedding(text))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if getattr(self.model, "embeddings_cache", None) is not None:
            return [list(v) for v in self.model._get_text_embeddings_cached(texts)]
        return [list(v) for v in self.model._get_text_embeddings(texts)]


class BatchingEmbedding(ClosesOnExit, BaseEmbedding):
    """Wrap ``embed_model`` so concurrent query embeddings (sync and async) share batches.

    ``options`` are :class:`rag_optimize.BatchingEmbedder`'s, typed as
    :class:`rag_optimize.embedding.BatchingOptions` (``max_batch_size``, ``max_wait_ms``,
    ``max_queue``, ``cache_size``, ``max_in_flight``, ``block``, ``embed_batch``, ``clock``,
    ``tracker``, ``wait_when_idle``); any other keyword raises
    :class:`~rag_optimize.errors.UnknownOptionError` naming it.

    Query batches go to the wrapped model's ``get_text_embedding_batch``; a model with a
    query instruction that differs from its text instruction needs ``embed_batch`` (for
    example one that prepends the instruction).
    Text embeddings are forwarded in chunks. Call :meth:`close` to stop its threads.

    Example::

        Settings.embed_model = BatchingEmbedding(HuggingFaceEmbedding(...), max_wait_ms=5)
    """

    _inner: BaseEmbedding = PrivateAttr()
    _batcher: BatchingEmbedder = PrivateAttr()

    def __init__(
        self,
        embed_model: BaseEmbedding,
        *,
        callback_manager: CallbackManager | None = None,
        **options: Unpack[BatchingOptions],
    ) -> None:
        if not isinstance(embed_model, BaseEmbedding):
            raise InvalidTypeError(
                "BatchingEmbedding wraps a LlamaIndex BaseEmbedding, got "
                f"{type(embed_model).__name__}"
            )
        check_options(options, BatchingOptions, "BatchingEmbedding")
        super().__init__(
            model_name=f"batching:{embed_model.model_name}",
            embed_batch_size=embed_model.embed_batch_size,
            callback_manager=callback_manager or CallbackManager([]),
        )
        self._inner = embed_model
        self._batcher = BatchingEmbedder(_LlamaIndexModel(embed_model), **options)

    @classmethod
    def class_name(cls) -> str:
        return "BatchingEmbedding"

    @property
    def embed_model(self) -> BaseEmbedding:
        """The wrapped model."""
        return self._inner

    @property
    def batcher(self) -> BatchingEmbedder:
        """The core batcher (for its options and stats)."""
        return self._batcher

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._batcher.embed_query(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await self._batcher.aembed_query(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._batcher.embed_documents([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._batcher.aembed_documents([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._batcher.embed_documents(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._batcher.aembed_documents(texts)

    def stats(self) -> BatchStats:
        """Batches, mean batch size, cache and dedup hits, queue waits."""
        return self._batcher.stats()

    def close(self) -> None:
        """Finish queued work and stop the batching threads."""
        self._batcher.close()
