"""A LlamaIndex ``BaseEmbedding`` seen through the core's embedder protocol.

The core (``SemanticCache``, ``HybridRetriever`` ...) wants ``embed_query`` /
``embed_documents`` (and uses ``aembed_query`` when present). LlamaIndex models speak
``get_query_embedding`` / ``get_text_embedding_batch`` / ``aget_query_embedding``. This
wrapper only renames; batching, retries and callbacks stay those of the LlamaIndex model.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding

from rag_optimize.embedding import Embedder
from rag_optimize.errors import InvalidTypeError

__all__ = ["LlamaIndexEmbedder", "as_embedder"]


class LlamaIndexEmbedder:
    """Present ``model`` (any LlamaIndex ``BaseEmbedding``) as a rag_optimize embedder.

    Example::

        cache = SemanticCache(LlamaIndexEmbedder(Settings.embed_model), threshold=0.9)
    """

    def __init__(self, model: BaseEmbedding) -> None:
        if not isinstance(model, BaseEmbedding):
            raise InvalidTypeError(
                f"model must be a llama_index BaseEmbedding, got {type(model).__name__}"
            )
        self.model = model

    def embed_query(self, text: str) -> list[float]:
        """The model's query embedding of ``text``."""
        return list(self.model.get_query_embedding(text))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """The model's text embeddings of ``texts`` (batched by the model)."""
        return [list(v) for v in self.model.get_text_embedding_batch(texts)]

    async def aembed_query(self, text: str) -> list[float]:
        """Async query embedding through the model's own async path."""
        return list(await self.model.aget_query_embedding(text))

    def __repr__(self) -> str:
        return f"LlamaIndexEmbedder({self.model.model_name!r})"


def as_embedder(model: Any) -> Embedder:
    """``model`` as a core embedder: a LlamaIndex ``BaseEmbedding`` is wrapped, anything with
    ``embed_query``/``embed_documents`` is used as is; anything else is an
    ``InvalidTypeError`` (a ``TypeError``)."""
    if isinstance(model, BaseEmbedding):
        return LlamaIndexEmbedder(model)
    if callable(getattr(model, "embed_query", None)) and callable(
        getattr(model, "embed_documents", None)
    ):
        return model
    raise InvalidTypeError(
        "expected a llama_index BaseEmbedding or an embedder with embed_query/embed_documents, "
        f"got {type(model).__name__}"
    )
