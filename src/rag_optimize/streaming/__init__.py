"""Streaming answers to clients: server-sent events for LangChain runnables and LlamaIndex
query engines (``sse``), with heartbeats, cancellation on disconnect, TTFT and cache replay."""

from rag_optimize.streaming.sse import DONE as DONE
from rag_optimize.streaming.sse import chunk_text as chunk_text
from rag_optimize.streaming.sse import format_event as format_event
from rag_optimize.streaming.sse import question_text as question_text
from rag_optimize.streaming.sse import sse as sse
from rag_optimize.streaming.sse import sse_events as sse_events
from rag_optimize.streaming.sse import stream_text as stream_text

__all__ = [
    "DONE",
    "chunk_text",
    "format_event",
    "question_text",
    "sse",
    "sse_events",
    "stream_text",
]
