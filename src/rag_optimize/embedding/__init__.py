"""Embedding models: the protocol, vector checks, and the bundled embedders.

The public surface adapters build on: :class:`Embedder` (the protocol) with
:func:`check_embedder`, :func:`aembed_query` and :func:`aembed_documents` (the async forms any
model gets), :class:`BatchingEmbedder` (micro-batching) with its :class:`BatchingOptions`,
its :class:`BatchStats` and the :class:`ClosesOnExit` lifecycle base (``close()``/``with``),
and the bundled models.
"""

from rag_optimize.embedding.batch_stats import BatchStats
from rag_optimize.embedding.batching import (
    BatchingEmbedder,
    BatchingOptions,
    ClosesOnExit,
    EmbedderClosedError,
)
from rag_optimize.embedding.hashing import HashingEmbedder
from rag_optimize.embedding.local import LocalEmbedder, default_embedder
from rag_optimize.embedding.protocol import (
    Embedder,
    aembed_documents,
    aembed_query,
    check_embedder,
)
from rag_optimize.embedding.vectors import unit_matrix, unit_vector

__all__ = [
    "BatchStats",
    "BatchingEmbedder",
    "BatchingOptions",
    "ClosesOnExit",
    "Embedder",
    "EmbedderClosedError",
    "HashingEmbedder",
    "LocalEmbedder",
    "aembed_documents",
    "aembed_query",
    "check_embedder",
    "default_embedder",
    "unit_matrix",
    "unit_vector",
]
