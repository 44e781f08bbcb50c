"""What a retrieval returns: scored documents with per-branch ranks, and a degraded flag."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, overload


@dataclass(frozen=True)
class RetrievedDocument:
    """One fused (and possibly reranked) result.

    ``score`` is the score the list is ordered by: the reranker's relevance when a reranker
    ran, else the fusion score. ``ranks`` and ``branch_scores`` give, for every branch that
    found the document, its 1-based rank and raw score there (a branch missing from ``ranks``
    did not return it). ``payload`` is the original framework object when a branch wraps a
    LangChain or LlamaIndex retriever.
    """

    id: str
    text: str
    score: float
    metadata: Mapping[str, Any] = field(default_factory=dict)
    ranks: Mapping[str, int] = field(default_factory=dict)
    branch_scores: Mapping[str, float] = field(default_factory=dict)
    fusion_score: float = 0.0
    rerank_score: float | None = None
    payload: Any = None

    def with_rerank(self, score: float) -> RetrievedDocument:
        """A copy ordered by a reranker's relevance ``score``."""
        return replace(self, score=score, rerank_score=score)


@dataclass(frozen=True)
class RetrievalResult:
    """The ordered documents of one retrieval and how it went.

    ``degraded`` is True when a branch or the reranker failed or timed out and the result
    was produced without it; ``failures`` names each failed part and why. ``timings`` holds
    seconds per stage (``"<branch>"``, ``"embed"``, ``"fusion"``, ``"rerank"``, ``"total"``).
    It behaves as a sequence of :class:`RetrievedDocument`.
    """

    documents: tuple[RetrievedDocument, ...]
    degraded: bool = False
    failures: Mapping[str, str] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[RetrievedDocument]:
        return iter(self.documents)

    @overload
    def __getitem__(self, index: int) -> RetrievedDocument: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[RetrievedDocument, ...]: ...

    def __getitem__(self, index: int | slice) -> RetrievedDocument | tuple[RetrievedDocument, ...]:
        return self.documents[index]

    def provenance(self, document: RetrievedDocument) -> dict[str, Any]:
        """JSON-friendly facts about ``document`` in this result, for adapters' metadata."""
        return {
            "score": document.score,
            "fusion_score": document.fusion_score,
            "rerank_score": document.rerank_score,
            "ranks": dict(document.ranks),
            "branch_scores": dict(document.branch_scores),
            "degraded": self.degraded,
            "failures": dict(self.failures),
        }

    @property
    def ids(self) -> list[str]:
        """Document ids in result order."""
        return [d.id for d in self.documents]
