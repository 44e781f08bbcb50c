"""Retrieval branches: the independent searches a fusion retriever runs side by side.

A branch turns a query into a ranked list of :class:`~rag_optimize.index.Hit`. It has a sync
``search`` (run in a worker thread by the sync retriever) and an async ``asearch`` (awaited on
the event loop by the async retriever). Each may write sub-stage seconds into ``timings``.
Adapters wrap framework retrievers with :class:`CallableBranch`.

A branch over one of our indexes is *filterable*: :meth:`SparseBranch.mask` turns a
metadata filter into a row mask of its index (before the branches start, so a bad filter
raises to the caller instead of degrading a branch) and ``search(..., allowed=mask)``
searches only those rows. Wrapped framework retrievers cannot take our filters.

:class:`DenseBranch` returns its hits as :class:`QueryHits`, a list that also carries the
query vector it searched with, so fusion can score the other branch's candidates against
the same vector (``fusion="consistency"``) without embedding the query twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from rag_optimize.embedding.protocol import Embedder, aembed_query, check_embedder
from rag_optimize.index.bm25 import BM25Index
from rag_optimize.index.dense import DenseIndex
from rag_optimize.index.documents import Hit, Mask
from rag_optimize.retrieval.filters import Filter, filter_mask

Clock = Callable[[], float]
SearchFn = Callable[[str, int], list[Hit]]
AsyncSearchFn = Callable[[str, int], Awaitable[list[Hit]]]


class QueryHits(list[Hit]):
    """A branch's hits (a plain list of :class:`Hit`, best first) plus ``vector``: the query
    embedding the branch searched with (``None`` when it embedded nothing)."""

    def __init__(self, hits: Iterable[Hit] = (), vector: Any = None) -> None:
        super().__init__(hits)
        self.vector = vector


@runtime_checkable
class Branch(Protocol):
    """One search strategy, named so results can say which branch found what."""

    name: str

    def search(self, query: str, k: int, timings: dict[str, float]) -> list[Hit]:
        """The ``k`` best hits for ``query``, best first (blocking)."""
        ...

    async def asearch(self, query: str, k: int, timings: dict[str, float]) -> list[Hit]:
        """The ``k`` best hits for ``query``, best first, without blocking the loop."""
        ...


class SparseBranch:
    """BM25 keyword search; the async form runs it in a worker thread."""

    filterable = True

    def __init__(self, index: BM25Index, name: str = "bm25") -> None:
        self.index = index
        self.name = name

    def mask(self, spec: Filter) -> Mask:
        """The rows of this branch's index that ``spec`` allows."""
        return filter_mask(spec, self.index.documents)

    def _search(self, query: str, k: int, allowed: Mask | None) -> list[Hit]:
        if allowed is None:
            return self.index.search(query, k)
        return self.index.search(query, k, allowed=allowed)

    def search(
        self, query: str, k: int, timings: dict[str, float], allowed: Mask | None = None
    ) -> list[Hit]:
        return self._search(query, k, allowed)

    async def asearch(
        self, query: str, k: int, timings: dict[str, float], allowed: Mask | None = None
    ) -> list[Hit]:
        return await asyncio.to_thread(self._search, query, k, allowed)


class DenseBranch:
    """Embed the query, then search the dense index (records ``timings["embed"]``)."""

    filterable = True

    def __init__(
        self,
        index: DenseIndex,
        embedder: Embedder,
        name: str = "dense",
        clock: Clock = time.perf_counter,
    ) -> None:
        self.index = index
        self.embedder = check_embedder(embedder)
        self.name = name
        self.clock = clock

    def mask(self, spec: Filter) -> Mask:
        """The rows of this branch's index that ``spec`` allows."""
        return filter_mask(spec, self.index.documents)

    def search(
        self, query: str, k: int, timings: dict[str, float], allowed: Mask | None = None
    ) -> list[Hit]:
        start = self.clock()
        vector = self.embedder.embed_query(query)
        timings["embed"] = self.clock() - start
        return QueryHits(self.index.search(vector, k, allowed=allowed), vector)

    async def asearch(
        self, query: str, k: int, timings: dict[str, float], allowed: Mask | None = None
    ) -> list[Hit]:
        start = self.clock()
        vector = await aembed_query(self.embedder, query)
        timings["embed"] = self.clock() - start
        hits = await asyncio.to_thread(self.index.search, vector, k, allowed=allowed)
        return QueryHits(hits, vector)


class CallableBranch:
    """A branch from plain functions, e.g. a wrapped LangChain or LlamaIndex retriever.

    ``asearch`` defaults to running ``search`` in a worker thread.
    """

    def __init__(self, name: str, search: SearchFn, asearch: AsyncSearchFn | None = None):
        self.name = name
        self._search = search
        self._asearch = asearch

    def search(self, query: str, k: int, timings: dict[str, float]) -> list[Hit]:
        return self._search(query, k)

    async def asearch(self, query: str, k: int, timings: dict[str, float]) -> list[Hit]:
        if self._asearch is not None:
            return await self._asearch(query, k)
        return await asyncio.to_thread(self._search, query, k)
