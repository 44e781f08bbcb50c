"""Retrieval evidence: confirm a cached answer with the new question's own retrieval.

In a RAG app the answer stored for a question was written from the documents the retriever
returned for it (the entry's ``source_ids``). Running the retriever for the new question is
cheap next to generating an answer, and when it returns other documents, the new question
is about something else ("shipping to Canada" and "shipping to Mexico" retrieve different
pages), whatever the two questions' embeddings say. :func:`sources_agree` decides:

* every id is compared as a string; a retrieved document counts as *found* when its primary id
  (``Document.id``, else ``metadata["id"]``, else ``metadata["source"]``; the adapters
  compute it) is among the stored ``source_ids``;
* the vote passes when at least ``min_overlap`` (default 0.5) of the retrieved documents are
  found, so a retriever that reorders or swaps one of several documents still confirms;
* it abstains (passes, ``reason="no evidence"``) when the entry stored no ``source_ids`` or
  the retriever returned nothing: the decision is then the pipeline's alone.

The adapters opt in with one argument: ``with_semantic_cache(chain, cache,
confirm_with=retriever)`` and ``CachedQueryEngine(engine, cache, confirm_with=retriever)``.
Only semantic hits are confirmed (an exact repeat retrieves the same documents).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag_optimize.errors import ConfigurationError

__all__ = ["DEFAULT_MIN_OVERLAP", "EvidenceVote", "check_min_overlap", "sources_agree"]

DEFAULT_MIN_OVERLAP = 0.5


@dataclass(frozen=True)
class EvidenceVote:
    """Whether the new question's retrieval confirms the cached answer, and why."""

    agree: bool
    overlap: float | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``hit.metadata["cache_decision"]``."""
        return {"agree": self.agree, "overlap": self.overlap, "reason": self.reason}


def check_min_overlap(min_overlap: float) -> float:
    """``min_overlap`` if it is a number in (0, 1], else a ConfigurationError naming it."""
    if (
        isinstance(min_overlap, bool)
        or not isinstance(min_overlap, (int, float))
        or math.isnan(min_overlap)
        or not 0.0 < min_overlap <= 1.0
    ):
        raise ConfigurationError(f"min_overlap must be in (0, 1], got {min_overlap!r}")
    return float(min_overlap)


def sources_agree(
    stored_ids: Sequence[Any] | None,
    retrieved_ids: Sequence[str],
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> EvidenceVote:
    """The vote of the new question's retrieval (``retrieved_ids``: one primary id per
    retrieved document, in rank order) on an entry that stored ``stored_ids``."""
    min_overlap = check_min_overlap(min_overlap)
    stored = {str(i) for i in stored_ids or () if i is not None}
    retrieved = list(dict.fromkeys(str(i) for i in retrieved_ids))
    if not stored:
        return EvidenceVote(True, None, "no evidence: the entry stored no source_ids")
    if not retrieved:
        return EvidenceVote(True, None, "no evidence: the retriever returned nothing")
    found = sum(i in stored for i in retrieved)
    overlap = found / len(retrieved)
    if overlap >= min_overlap:
        return EvidenceVote(True, round(overlap, 4), f"{found} of {len(retrieved)} retrieved "
                            "documents are the cached answer's sources")
    return EvidenceVote(False, round(overlap, 4), f"only {found} of {len(retrieved)} retrieved "
                        f"documents are the cached answer's sources (< {min_overlap})")
