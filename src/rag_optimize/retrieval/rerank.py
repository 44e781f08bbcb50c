"""Rerankers: reorder fused candidates by a cross-encoder's relevance, failing open.

A reranker is anything with ``rerank(query, texts, top_n) -> [(index, relevance), ...]``
best first (and optionally an async ``arerank``). :func:`apply_reranker` /
:func:`aapply_reranker` run one over retrieved documents and, when it raises or times out,
keep the fused order and report the failure: a reranker outage degrades quality, it never
breaks retrieval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from rag_optimize.errors import ConfigurationError, InvalidInputError, RetrievalError
from rag_optimize.retrieval.results import RetrievedDocument

Ranking = list[tuple[int, float]]


class RerankError(RetrievalError):
    """A reranker failed (its service answered with an error or did not answer in time)."""


@runtime_checkable
class Reranker(Protocol):
    """Scores ``texts`` against ``query``; returns ``top_n`` (index, relevance) best first."""

    def rerank(self, query: str, texts: Sequence[str], top_n: int) -> Ranking:
        """Blocking rerank."""
        ...


def _reorder(
    docs: Sequence[RetrievedDocument], ranking: Ranking, top_n: int
) -> list[RetrievedDocument]:
    out: list[RetrievedDocument] = []
    seen: set[int] = set()
    for index, relevance in ranking[:top_n]:
        if not 0 <= index < len(docs) or index in seen:
            raise RerankError(f"reranker returned index {index} for {len(docs)} documents")
        seen.add(index)
        out.append(docs[index].with_rerank(float(relevance)))
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def apply_reranker(
    reranker: Reranker, query: str, docs: Sequence[RetrievedDocument], top_n: int
) -> tuple[list[RetrievedDocument], str | None]:
    """Rerank ``docs``; on any error return the first ``top_n`` unchanged and the reason."""
    if not docs:
        return [], None
    try:
        ranking = reranker.rerank(query, [d.text for d in docs], min(top_n, len(docs)))
        return _reorder(docs, ranking, top_n), None
    except Exception as exc:  # fail open: the fused order is still a good answer
        return list(docs[:top_n]), _describe(exc)


async def aapply_reranker(
    reranker: Reranker, query: str, docs: Sequence[RetrievedDocument], top_n: int
) -> tuple[list[RetrievedDocument], str | None]:
    """Async :func:`apply_reranker`: uses ``reranker.arerank`` if present, else a thread."""
    if not docs:
        return [], None
    texts = [d.text for d in docs]
    n = min(top_n, len(docs))
    try:
        native = getattr(reranker, "arerank", None)
        if native is not None:
            ranking = await native(query, texts, n)
        else:
            ranking = await asyncio.to_thread(reranker.rerank, query, texts, n)
        return _reorder(docs, ranking, top_n), None
    except Exception as exc:  # fail open, as in apply_reranker
        return list(docs[:top_n]), _describe(exc)


class CohereReranker:
    """Cohere's hosted rerank models through the official SDK (``cohere.ClientV2.rerank``).

    ``timeout`` (seconds) bounds each HTTP attempt and ``max_retries`` how often the SDK
    retries 429 and 5xx answers (with its own backoff, honouring ``Retry-After``). Errors are
    raised as :class:`RerankError`; the retrievers and adapters catch them and keep the fused
    order, flagged as degraded. ``base_url`` points the SDK elsewhere (a proxy, a test server).
    """

    def __init__(
        self,
        model: str = "rerank-v3.5",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 5.0,
        max_retries: int = 2,
        max_tokens_per_doc: int | None = None,
        client: Any = None,
        async_client: Any = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_tokens_per_doc = max_tokens_per_doc
        self._api_key = api_key
        self._base_url = base_url
        self._client = client
        self._async_client = async_client

    def _cohere(self) -> Any:
        try:
            import cohere
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "CohereReranker needs the cohere SDK: pip install 'rag-optimize[cohere]'"
            ) from exc
        return cohere

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.timeout, "max_retries": self.max_retries}
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        if self._base_url is not None:
            kwargs["base_url"] = self._base_url
        return kwargs

    @property
    def client(self) -> Any:
        """The sync ``cohere.ClientV2`` (created on first use; reads CO_API_KEY if no key)."""
        if self._client is None:
            self._client = self._cohere().ClientV2(**self._client_kwargs())
        return self._client

    @property
    def async_client(self) -> Any:
        """The ``cohere.AsyncClientV2`` used by :meth:`arerank`."""
        if self._async_client is None:
            self._async_client = self._cohere().AsyncClientV2(**self._client_kwargs())
        return self._async_client

    def _request(self, query: str, texts: Sequence[str], top_n: int) -> dict[str, Any]:
        if not query.strip():
            raise InvalidInputError("rerank query must be a non-empty string")
        request: dict[str, Any] = {
            "model": self.model,
            "query": query,
            "documents": list(texts),
            "top_n": top_n,
            "request_options": {
                "timeout_in_seconds": self.timeout,
                "max_retries": self.max_retries,
            },
        }
        if self.max_tokens_per_doc is not None:
            request["max_tokens_per_doc"] = self.max_tokens_per_doc
        return request

    @staticmethod
    def _ranking(response: Any) -> Ranking:
        return [(int(r.index), float(r.relevance_score)) for r in response.results]

    def rerank(self, query: str, texts: Sequence[str], top_n: int) -> Ranking:
        """Rerank ``texts`` for ``query``; raises :class:`RerankError` on any API failure."""
        request = self._request(query, texts, top_n)
        try:
            return self._ranking(self.client.rerank(**request))
        except Exception as exc:
            raise RerankError(f"Cohere rerank failed: {_describe(exc)}") from exc

    async def arerank(self, query: str, texts: Sequence[str], top_n: int) -> Ranking:
        """Async :meth:`rerank` with ``cohere.AsyncClientV2``."""
        request = self._request(query, texts, top_n)
        try:
            return self._ranking(await self.async_client.rerank(**request))
        except Exception as exc:
            raise RerankError(f"Cohere rerank failed: {_describe(exc)}") from exc
