"""The embedding-model protocol every component accepts.

It is LangChain's ``Embeddings`` shape, so any LangChain embedding object (and any plain
object with these two methods) works unchanged. ``aembed_query`` is optional: when a model
lacks it, components run ``embed_query`` in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from rag_optimize.errors import InvalidTypeError

__all__ = ["Embedder", "aembed_documents", "aembed_query", "check_embedder"]


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns text into vectors: ``embed_query`` and ``embed_documents``."""

    def embed_query(self, text: str) -> list[float]:
        """Embed one search query."""
        ...

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed several texts in one call."""
        ...


def check_embedder(embedder: object) -> Embedder:
    """Return ``embedder`` if it has the protocol's methods, else raise a clear
    :class:`~rag_optimize.errors.InvalidTypeError` (a ``TypeError``)."""
    missing = [
        name
        for name in ("embed_query", "embed_documents")
        if not callable(getattr(embedder, name, None))
    ]
    if missing:
        raise InvalidTypeError(
            f"embedder {type(embedder).__name__} lacks {', '.join(missing)}(); expected an "
            "object with embed_query(str) and embed_documents(list[str]) such as a LangChain "
            "Embeddings (LlamaIndex models: use the llama_index_rag_optimize adapter)"
        )
    return embedder  # type: ignore[return-value]


async def aembed_query(embedder: Embedder, text: str) -> list[float]:
    """Embed ``text`` without blocking the event loop.

    Uses the model's own ``aembed_query`` when it has one, else runs ``embed_query`` in a
    worker thread.
    """
    native = getattr(embedder, "aembed_query", None)
    if native is not None and asyncio.iscoroutinefunction(native):
        return list(await native(text))
    return list(await asyncio.to_thread(embedder.embed_query, text))


async def aembed_documents(embedder: Embedder, texts: list[str]) -> list[list[float]]:
    """Embed ``texts`` in one batch without blocking the event loop.

    Uses the model's own ``aembed_documents`` when it has one, else runs ``embed_documents``
    in a worker thread.
    """
    native = getattr(embedder, "aembed_documents", None)
    if native is not None and asyncio.iscoroutinefunction(native):
        return list(await native(texts))
    return list(await asyncio.to_thread(embedder.embed_documents, texts))
