"""Stage names that every tracker, exporter and adapter agrees on.

A RAG request is broken into the stages users ask about ("where do my 900 ms go?"):

``cache``       semantic-cache lookup (hit or miss)
``embedding``   turning the query (or documents) into vectors
``retrieval``   finding candidate documents; its children ``retrieval.sparse`` (BM25),
                ``retrieval.dense`` (vector search) and ``retrieval.fusion`` (merging the two)
                are reported on their own rows when a component knows them
``rerank``      re-ordering candidates with a cross-encoder or a rerank API
``generation``  the LLM / chat-model call, start to last token
``ttft``        time to first token, measured from the start of the *run* (what the user
                waits before text starts to appear), not from the start of the LLM call
``tool``        a tool call (agents)
``total``       the whole run, start to end

Names are plain strings so a caller can also record a stage of its own (``"parse"``); the
names here only fix the spelling and the order in reports.
"""

from __future__ import annotations

from rag_optimize.errors import InvalidInputError

CACHE = "cache"
EMBEDDING = "embedding"
RETRIEVAL = "retrieval"
SPARSE = "retrieval.sparse"
DENSE = "retrieval.dense"
FUSION = "retrieval.fusion"
RERANK = "rerank"
GENERATION = "generation"
TTFT = "ttft"
TOOL = "tool"
TOTAL = "total"

#: Known stages in the order a request goes through them (the order of report rows).
STAGES: tuple[str, ...] = (
    CACHE,
    EMBEDDING,
    RETRIEVAL,
    SPARSE,
    DENSE,
    FUSION,
    RERANK,
    GENERATION,
    TTFT,
    TOOL,
    TOTAL,
)

_ORDER = {name: i for i, name in enumerate(STAGES)}


def check_stage(stage: object) -> str:
    """Return ``stage`` if it is a usable stage name, else raise :class:`InvalidInputError`."""
    if not isinstance(stage, str) or not stage.strip():
        raise InvalidInputError(f"stage must be a non-empty string, got {stage!r}")
    return stage


def parent_stage(stage: str) -> str | None:
    """The stage a child stage belongs to (``"retrieval.dense"`` -> ``"retrieval"``)."""
    head, dot, _ = stage.rpartition(".")
    return head if dot else None


def stage_sort_key(stage: str) -> tuple[int, str]:
    """Known stages in pipeline order first, then custom stages alphabetically."""
    return (_ORDER.get(stage, len(_ORDER)), stage)
