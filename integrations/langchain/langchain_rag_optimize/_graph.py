"""Caching a compiled LangGraph graph: record a run once, replay it to any stream mode.

A graph streams different things per ``stream_mode``: ``values`` (the whole state after each
step), ``updates`` (``{node: update}`` per step), ``messages`` (``(message_chunk, metadata)``
per model token), ``custom`` (what nodes write to the stream writer); a list of modes yields
``(mode, chunk)`` pairs. A cached answer must come back in the shape the caller asked for,
whatever shape the run that stored it was consumed in. So a miss always runs the graph with
every replayable mode on (:data:`RECORDED_MODES`), forwards only the requested ones, and the
entry keeps the whole recording; a hit replays the recording filtered to the requested modes.
``invoke`` returns the last ``values`` state.

The caller's question replaces the stored one in replayed ``values`` states (a paraphrase hit
must not show another user's wording in its state). Runs that cannot be replayed faithfully
bypass the cache (no lookup, no write): other stream modes (``debug``, ``tasks``,
``checkpoints``), ``subgraphs=True``, interrupts, extra ``invoke`` options (``context``,
``output_keys`` ...), and a checkpointed thread (``config["configurable"]["thread_id"]``),
whose answer depends on the thread's saved state, not only on the input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

from langchain_rag_optimize._serialization import NotCacheable, decode_value, encode_value
from rag_optimize.errors import InvalidInputError

RECORDED_MODES: tuple[str, ...] = ("values", "updates", "messages", "custom")
"""The stream modes a cached graph answer can be replayed in."""

_UNREPLAYABLE_OPTIONS = ("subgraphs", "interrupt_before", "interrupt_after", "checkpoint_during")


def is_graph(runnable: Any) -> bool:
    """Whether ``runnable`` is a compiled LangGraph graph (a ``Pregel``), without importing
    LangGraph (it is not a dependency of this package)."""
    return any(
        cls.__name__ == "Pregel" and cls.__module__.startswith("langgraph")
        for cls in type(runnable).__mro__
    )


@dataclass(frozen=True)
class StreamShape:
    """What a ``stream`` caller asked for: the modes, and whether chunks come as pairs."""

    modes: tuple[str, ...]
    pairs: bool


def stream_shape(graph: Any, config: RunnableConfig | None, kwargs: Mapping[str, Any]) -> (
    StreamShape | None
):
    """The requested shape of a ``stream``/``astream`` call, or ``None`` to bypass the cache."""
    if _bypass(config, kwargs, allowed=("stream_mode",)):
        return None
    mode: Any = kwargs.get("stream_mode") or getattr(graph, "stream_mode", None) or "values"
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    if not modes or any(m not in RECORDED_MODES for m in modes):
        return None
    return StreamShape(modes, pairs=not isinstance(mode, str))


def invoke_cacheable(config: RunnableConfig | None, kwargs: Mapping[str, Any]) -> bool:
    """Whether an ``invoke`` call can be answered from the cache (plain input, no options)."""
    return not _bypass(config, kwargs, allowed=())


def _bypass(
    config: RunnableConfig | None, kwargs: Mapping[str, Any], allowed: tuple[str, ...]
) -> bool:
    configurable = (config or {}).get("configurable") or {}
    if configurable.get("thread_id") is not None:
        return True
    return any(
        name not in allowed and (name in _UNREPLAYABLE_OPTIONS or value is not None)
        for name, value in kwargs.items()
    )


class Recording:
    """The ``(mode, chunk)`` events of one graph run, in order."""

    def __init__(self, events: list[tuple[str, Any]] | None = None) -> None:
        self.events: list[tuple[str, Any]] = events if events is not None else []

    def add(self, mode: str, chunk: Any) -> None:
        self.events.append((mode, chunk))

    def final(self) -> Any:
        """The last ``values`` state (what ``invoke`` returns), or ``None``."""
        for mode, chunk in reversed(self.events):
            if mode == "values":
                return chunk
        return None

    def encode(self) -> list[list[Any]]:
        """Plain JSON; raises :class:`NotCacheable` when a chunk cannot be stored."""
        out: list[list[Any]] = []
        for mode, chunk in self.events:
            if mode == "messages":
                message, metadata = chunk
                out.append([mode, {"message": encode_value(message),
                                   "metadata": _json_safe(metadata)}])
            else:
                out.append([mode, encode_value(chunk)])
        return out

    @classmethod
    def decode(cls, data: Any) -> Recording:
        """Inverse of :meth:`encode`; raises ``ValueError`` on a malformed entry."""
        if not isinstance(data, list):
            raise InvalidInputError("a graph recording must be a list")
        events: list[tuple[str, Any]] = []
        for item in data:
            if not (isinstance(item, list) and len(item) == 2 and item[0] in RECORDED_MODES):
                raise InvalidInputError(f"malformed graph event {item!r:.80}")
            mode, chunk = item
            if mode == "messages":
                message = decode_value(chunk["message"])
                if not isinstance(message, BaseMessage):
                    raise InvalidInputError("a messages event holds no message")
                events.append((mode, (message, dict(chunk.get("metadata") or {}))))
            else:
                events.append((mode, decode_value(chunk)))
        return cls(events)

    def replay(
        self, shape: StreamShape, question_field: str | None, question: str | None
    ) -> Iterator[Any]:
        """The recorded chunks of the requested modes, in the caller's shape."""
        for mode, chunk in self.events:
            if mode not in shape.modes:
                continue
            if mode == "values":
                chunk = with_question(chunk, question_field, question)
            yield (mode, chunk) if shape.pairs else chunk


def with_question(state: Any, question_field: str | None, question: str | None) -> Any:
    """``state`` with the caller's question in its question field (when it has one)."""
    if isinstance(state, dict) and question_field in state and question is not None:
        return {**state, question_field: question}
    return state


def _json_safe(metadata: Any) -> dict[str, Any]:
    """The JSON-storable part of a ``messages`` event's metadata (node, step, model ...)."""
    out: dict[str, Any] = {}
    for name, value in dict(metadata or {}).items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(name)] = value
    return out


__all__ = [
    "RECORDED_MODES",
    "NotCacheable",
    "Recording",
    "StreamShape",
    "invoke_cacheable",
    "is_graph",
    "stream_shape",
    "with_question",
]
