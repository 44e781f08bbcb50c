"""LangChain ``Embeddings`` over the packaged local model, with document vectors computed once.

Both demo pipelines index the same documents; :class:`PackagedEmbeddings` embeds the corpus
once (with a progress bar) and then answers ``embed_documents`` for those texts from memory,
so building the second index does not embed the corpus again. Queries always go to the
model.
"""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.embeddings import Embeddings

from rag_optimize.embedding import Embedder


class PackagedEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` over any rag-optimize embedder (the packaged MiniLM)."""

    def __init__(self, embedder: Embedder, chunk_size: int = 32) -> None:
        self.embedder = embedder
        self.chunk_size = chunk_size
        self._documents: dict[str, list[float]] = {}

    def precompute(self, texts: list[str], advance: Callable[[int], None] | None = None) -> None:
        """Embed ``texts`` in chunks (calling ``advance(n)`` after each) and keep the vectors."""
        for start in range(0, len(texts), self.chunk_size):
            chunk = texts[start : start + self.chunk_size]
            for text, vector in zip(chunk, self.embedder.embed_documents(chunk), strict=True):
                self._documents[text] = vector
            if advance is not None:
                advance(len(chunk))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self._documents]
        if missing:
            self.precompute(missing)
        return [self._documents[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text)

    async def aembed_query(self, text: str) -> list[float]:
        aembed = getattr(self.embedder, "aembed_query", None)
        if aembed is not None:
            return list(await aembed(text))
        return await super().aembed_query(text)
