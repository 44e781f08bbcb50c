"""Counters of the batching embedder, and the immutable snapshot it reports."""

from __future__ import annotations

from dataclasses import dataclass

from rag_optimize.tracing.percentiles import Window, percentiles

__all__ = ["BatchCounters", "BatchStats"]


@dataclass(frozen=True)
class BatchStats:
    """A snapshot of a :class:`~rag_optimize.embedding.batching.BatchingEmbedder`'s work.

    ``requests`` counts every ``embed_query``/``aembed_query`` call; each is answered by the
    cache (``cache_hits``), by joining an identical text already waiting or in flight
    (``dedup_hits``), or by a new slot in a batch. ``texts_embedded`` counts texts sent to the
    model by batches (retries excluded). Queue waits are seconds from a slot's arrival to its
    batch leaving, over the most recent ``window`` slots.
    """

    requests: int
    cache_hits: int
    dedup_hits: int
    batches: int
    texts_embedded: int
    failed_batches: int
    item_retries: int
    cancelled: int
    queue_wait_p50: float
    queue_wait_p99: float

    @property
    def mean_batch_size(self) -> float:
        """Mean number of texts per batch sent to the model (0.0 before the first batch)."""
        return self.texts_embedded / self.batches if self.batches else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict (JSON-ready), including ``mean_batch_size``."""
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "dedup_hits": self.dedup_hits,
            "batches": self.batches,
            "texts_embedded": self.texts_embedded,
            "mean_batch_size": self.mean_batch_size,
            "failed_batches": self.failed_batches,
            "item_retries": self.item_retries,
            "cancelled": self.cancelled,
            "queue_wait_p50": self.queue_wait_p50,
            "queue_wait_p99": self.queue_wait_p99,
        }


class BatchCounters:
    """Mutable counters; the owner holds its lock while touching them."""

    def __init__(self, window: int = 10_000) -> None:
        self.requests = 0
        self.cache_hits = 0
        self.dedup_hits = 0
        self.batches = 0
        self.texts_embedded = 0
        self.failed_batches = 0
        self.item_retries = 0
        self.cancelled = 0
        self.queue_waits = Window(window)

    def snapshot(self) -> BatchStats:
        if len(self.queue_waits):
            p50, p99 = percentiles(self.queue_waits.values(), (0.5, 0.99))
        else:
            p50 = p99 = 0.0
        return BatchStats(
            requests=self.requests,
            cache_hits=self.cache_hits,
            dedup_hits=self.dedup_hits,
            batches=self.batches,
            texts_embedded=self.texts_embedded,
            failed_batches=self.failed_batches,
            item_retries=self.item_retries,
            cancelled=self.cancelled,
            queue_wait_p50=p50,
            queue_wait_p99=p99,
        )
