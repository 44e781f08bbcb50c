"""``BatchingEmbedder(wait_when_idle=False)``: a lone caller never waits; a crowd still batches.

The clock is injected and never moves, so ``max_wait_ms`` can never expire: any call that
returns did so without waiting for it.
"""

from __future__ import annotations

import threading

from rag_optimize.embedding.batching import BatchingEmbedder
from tests.test_batching_embedder import WAIT, FakeModel, run_in_thread, wait_until


def test_lone_callers_are_sent_at_once(clock: object) -> None:
    model = FakeModel()
    with BatchingEmbedder(
        model, max_wait_ms=60_000, clock=clock, wait_when_idle=False  # type: ignore[arg-type]
    ) as batcher:
        for text in ("first", "second", "third"):
            thread, box = run_in_thread(lambda t=text: batcher.embed_query(t))
            thread.join(WAIT)
            assert not thread.is_alive(), "a lone caller waited for the (frozen) clock"
            assert box["result"] == model.vector(text)
        stats = batcher.stats()
    assert model.batches == [["first"], ["second"], ["third"]]
    assert stats.queue_wait_p50 == 0.0


def test_callers_arriving_while_a_batch_runs_share_the_next_batch(clock: object) -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    batcher = BatchingEmbedder(
        model, max_batch_size=3, max_wait_ms=60_000, clock=clock,  # type: ignore[arg-type]
        wait_when_idle=False,
    )
    first = run_in_thread(lambda: batcher.embed_query("lone"))
    assert model.entered.wait(WAIT)  # sent at once: the model holds it at the gate
    crowd = [run_in_thread(lambda i=i: batcher.embed_query(f"crowd {i}")) for i in range(3)]
    wait_until(lambda: batcher.stats().requests == 4)
    gate.set()
    for thread, _ in [first, *crowd]:
        thread.join(WAIT)
        assert not thread.is_alive()
    batcher.close()
    assert model.batches[0] == ["lone"]
    assert sorted(model.batches[1]) == ["crowd 0", "crowd 1", "crowd 2"]  # one full batch
