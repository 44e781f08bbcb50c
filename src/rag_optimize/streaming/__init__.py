"""Streaming answers to clients: server-sent events for LangChain runnables and LlamaIndex
query engines (``sse``, on sse-starlette), with heartbeats, cancellation on disconnect, TTFT,
the run id and the cache status (``HIT`` / ``SEMANTIC_HIT`` / ``MISS``) in headers and events."""

from rag_optimize.streaming.sse import CACHE_HEADER as CACHE_HEADER
from rag_optimize.streaming.sse import CACHE_HIT as CACHE_HIT
from rag_optimize.streaming.sse import CACHE_MISS as CACHE_MISS
from rag_optimize.streaming.sse import CACHE_SEMANTIC_HIT as CACHE_SEMANTIC_HIT
from rag_optimize.streaming.sse import DONE as DONE
from rag_optimize.streaming.sse import META_EVENT as META_EVENT
from rag_optimize.streaming.sse import RUN_ID_HEADER as RUN_ID_HEADER
from rag_optimize.streaming.sse import cache_status as cache_status
from rag_optimize.streaming.sse import chunk_text as chunk_text
from rag_optimize.streaming.sse import format_event as format_event
from rag_optimize.streaming.sse import question_text as question_text
from rag_optimize.streaming.sse import sse as sse
from rag_optimize.streaming.sse import sse_events as sse_events
from rag_optimize.streaming.sse import stream_text as stream_text

__all__ = [
    "CACHE_HEADER",
    "CACHE_HIT",
    "CACHE_MISS",
    "CACHE_SEMANTIC_HIT",
    "DONE",
    "META_EVENT",
    "RUN_ID_HEADER",
    "cache_status",
    "chunk_text",
    "format_event",
    "question_text",
    "sse",
    "sse_events",
    "stream_text",
]
