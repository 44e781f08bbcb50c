"""HybridRetriever / FusionRetriever: concurrency, degradation, timings, reranking, bad input."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError, InvalidInputError, RetrievalError
from rag_optimize.index import BM25Index, DenseIndex, Hit
from rag_optimize.retrieval import (
    CallableBranch,
    FusionRetriever,
    HybridRetriever,
    RetrievalResult,
)

sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from rendezvous import Held, ameeting, meeting  # noqa: E402
from retrieval_corpus import TEXTS  # noqa: E402


def no_hold() -> None:
    """The default for the fakes' ``hold``: no wait at all."""


class SlowBM25(BM25Index):
    """A BM25 index whose search first calls ``hold`` (a fake slow component), or fails."""

    def __init__(self, hold: Callable[[], object] = no_hold, fail: bool = False) -> None:
        super().__init__()
        self.hold, self.fail = hold, fail

    def search(self, query: str, k: int = 10) -> list[Hit]:
        self.hold()
        if self.fail:
            raise ConnectionError("keyword service down")
        return super().search(query, k)


class SlowEmbedder(HashingEmbedder):
    """Embeds queries after calling ``hold``, or after advancing a fake clock by ``delay``."""

    def __init__(
        self,
        hold: Callable[[], object] = no_hold,
        clock: object = None,
        delay: float = 0.0,
        fail: bool = False,
    ) -> None:
        super().__init__(dim=256)
        self.hold, self.clock, self.delay, self.fail = hold, clock, delay, fail

    def embed_query(self, text: str) -> list[float]:
        if self.clock is not None:
            self.clock.advance(self.delay)  # type: ignore[attr-defined]
        self.hold()
        if self.fail:
            raise RuntimeError("embedding model crashed")
        return super().embed_query(text)


def build(sparse: BM25Index, embedder: HashingEmbedder, **options: object) -> HybridRetriever:
    dense = DenseIndex()
    retriever = HybridRetriever(sparse, dense, embedder, **options)  # type: ignore[arg-type]
    retriever.add_texts(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])
    return retriever


def test_fused_results_carry_per_branch_ranks(hashing_embedder: HashingEmbedder) -> None:
    retriever = build(BM25Index(), hashing_embedder, k=3, fusion="rrf")
    result = retriever.retrieve("capital of France")
    assert not result.degraded and result.failures == {}
    assert result.ids[0] == "d0"
    top = result[0]
    assert top.ranks == {"bm25": 1, "dense": 1}
    assert set(top.branch_scores) == {"bm25", "dense"}
    assert top.score == pytest.approx(2 / 61)  # rrf: rank 1 in both branches
    assert len(result) == 3
    assert [d.score for d in result] == sorted((d.score for d in result), reverse=True)


def test_sync_branches_run_concurrently() -> None:
    # Each branch waits inside its search until the other is inside its own: run one after
    # the other, they never meet, the barrier breaks and both branches fail.
    meet = meeting(2)
    retriever = build(SlowBM25(hold=meet), SlowEmbedder(hold=meet))
    result = retriever.retrieve("capital of France")
    assert not result.degraded, result.failures
    assert result.ids[0] == "d0"
    retriever.close()


async def test_async_branches_run_concurrently() -> None:
    # 3 queries x 2 branches, each branch in a worker thread (asyncio.to_thread): all six
    # searches are inside at once, or the barrier breaks. The loop's default pool is set to
    # six threads so the promise does not depend on this machine's CPU count.
    executor = cf.ThreadPoolExecutor(max_workers=6)
    asyncio.get_running_loop().set_default_executor(executor)
    meet = meeting(6)
    retriever = build(SlowBM25(hold=meet), SlowEmbedder(hold=meet))
    try:
        results = await asyncio.gather(
            *(retriever.aretrieve("capital of France") for _ in range(3))
        )
    finally:
        executor.shutdown(wait=False)
    assert all(not r.degraded for r in results), [r.failures for r in results]
    assert all(r.ids[0] == "d0" for r in results)


async def test_callable_branches_run_concurrently_async_native() -> None:
    meet = ameeting(3)  # the three coroutines meet on the loop, or time out

    async def slow(query: str, k: int) -> list[Hit]:
        await meet()
        return [Hit(query, 1.0, query, {})]

    branches = [CallableBranch(n, lambda q, k: [], slow) for n in ("one", "two", "three")]
    result = await FusionRetriever(branches).aretrieve("same")
    assert not result.degraded, result.failures
    assert result[0].ranks == {"one": 1, "two": 1, "three": 1}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_failing_branch_degrades_to_the_other(mode: str, hashing_embedder: HashingEmbedder) -> None:
    retriever = build(SlowBM25(fail=True), hashing_embedder)
    call = retriever.retrieve if mode == "sync" else lambda q: asyncio.run(retriever.aretrieve(q))
    result = call("capital of France")
    assert result.degraded
    assert "bm25" in result.failures and "keyword service down" in result.failures["bm25"]
    assert result.ids[0] == "d0"
    assert all(set(d.ranks) == {"dense"} for d in result)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_timed_out_branch_degrades_to_the_other(mode: str) -> None:
    # The embedding is held until the test has its answer, so an answer given while it is
    # still unfinished proves the retriever did not wait for it.
    embedding = Held()
    retriever = build(
        BM25Index(), SlowEmbedder(hold=embedding.hold), branch_timeout_ms={"dense": 100}
    )

    async def answer_async() -> tuple[RetrievalResult, bool]:
        try:  # released inside the loop: asyncio.run waits for its worker threads
            result = await retriever.aretrieve("Eiffel Tower")
            return result, embedding.finished
        finally:
            embedding.release()

    if mode == "sync":
        try:
            result, waited = retriever.retrieve("Eiffel Tower"), embedding.finished
        finally:
            embedding.release()
    else:
        result, waited = asyncio.run(answer_async())
    assert not waited, "the answer waited for the timed-out embedding"
    assert result.degraded and "timed out after 100 ms" in result.failures["dense"]
    assert result.ids[0] == "d1" and set(result[0].ranks) == {"bm25"}
    retriever.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("timeout_ms", [None, 10_000])
def test_a_branch_raising_its_own_timeout_error_degrades(
    mode: str, timeout_ms: float | None
) -> None:
    # A client's own TimeoutError (a socket read, say) is that branch's failure, with its own
    # message, not the retriever's timeout (and not a crash when no timeout is configured).
    def timing_out(query: str, k: int) -> list[Hit]:
        raise TimeoutError("vector db read timed out")

    async def atiming_out(query: str, k: int) -> list[Hit]:
        raise TimeoutError("vector db read timed out")

    branches = [
        CallableBranch("good", lambda q, k: [Hit("a", 1.0, "a", {})]),
        *(CallableBranch(n, timing_out, atiming_out) for n in ("db", "db2")),
    ]
    timeouts = None if timeout_ms is None else {"db": timeout_ms, "db2": timeout_ms}
    retriever = FusionRetriever(branches, branch_timeout_ms=timeouts)
    call = retriever.retrieve if mode == "sync" else lambda q: asyncio.run(retriever.aretrieve(q))
    result = call("anything")
    assert result.degraded and result.ids == ["a"]
    assert result.failures == {
        "db": "TimeoutError: vector db read timed out",
        "db2": "TimeoutError: vector db read timed out",
    }


def test_both_branches_failing_is_a_clear_error() -> None:
    retriever = build(SlowBM25(fail=True), SlowEmbedder(fail=True))
    with pytest.raises(RetrievalError, match="every retrieval branch failed.*keyword service down"):
        retriever.retrieve("capital")
    with pytest.raises(RetrievalError, match="embedding model crashed"):
        asyncio.run(retriever.aretrieve("capital"))


def test_empty_indexes_fail_clearly(hashing_embedder: HashingEmbedder) -> None:
    retriever = HybridRetriever(BM25Index(), DenseIndex(), hashing_embedder)
    with pytest.raises(RetrievalError, match="BM25 index is empty.*dense index is empty"):
        retriever.retrieve("anything")


def test_timings_use_the_injected_clock(clock: object) -> None:
    embedder = SlowEmbedder(delay=0.25, clock=clock)
    retriever = build(BM25Index(), embedder, clock=clock)
    result = retriever.retrieve("Berlin")
    assert result.timings["embed"] == pytest.approx(0.25)
    assert result.timings["dense"] == pytest.approx(0.25)
    assert result.timings["total"] == pytest.approx(0.25)
    # BM25 ran at the same time; whether it read the clock before or after the embedder
    # advanced it depends on thread timing.
    assert result.timings["bm25"] in (pytest.approx(0.0), pytest.approx(0.25))
    assert "fusion" in result.timings


class ReverseReranker:
    def __init__(self) -> None:
        self.seen: list[Sequence[str]] = []

    def rerank(self, query: str, texts: Sequence[str], top_n: int) -> list[tuple[int, float]]:
        self.seen.append(list(texts))
        return [(i, float(i)) for i in reversed(range(len(texts)))][:top_n]


class BrokenReranker:
    def rerank(self, query: str, texts: Sequence[str], top_n: int) -> list[tuple[int, float]]:
        raise TimeoutError("rerank service slow")


def test_reranker_reorders_the_fused_pool(hashing_embedder: HashingEmbedder) -> None:
    plain = build(BM25Index(), hashing_embedder, k=2, candidates=6, fusion="rrf")
    fused = plain.retrieve("capital city").ids
    reranker = ReverseReranker()
    retriever = build(
        BM25Index(), hashing_embedder, k=2, candidates=6, reranker=reranker, fusion="rrf"
    )
    result = retriever.retrieve("capital city")
    pool = plain.retrieve("capital city", k=6).ids
    assert len(reranker.seen[0]) == len(pool)
    assert result.ids == list(reversed(pool))[:2]
    assert result[0].rerank_score == result[0].score and result[0].fusion_score > 0
    assert not result.degraded and fused != result.ids


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_failing_reranker_keeps_fused_order(mode: str, hashing_embedder: HashingEmbedder) -> None:
    plain = build(BM25Index(), hashing_embedder, k=3)
    retriever = build(BM25Index(), hashing_embedder, k=3, reranker=BrokenReranker())
    call = retriever.retrieve if mode == "sync" else lambda q: asyncio.run(retriever.aretrieve(q))
    result = call("capital city")
    assert result.ids == plain.retrieve("capital city").ids
    assert result.degraded and "rerank service slow" in result.failures["reranker"]
    assert all(d.rerank_score is None for d in result)


@pytest.mark.parametrize("fusion", ["rrf", "weighted", "relative_score"])
def test_each_fusion_finds_the_obvious_answer(
    fusion: str, hashing_embedder: HashingEmbedder
) -> None:
    retriever = build(BM25Index(), hashing_embedder, fusion=fusion, weights={"bm25": 1, "dense": 2})
    assert retriever.retrieve("highest mountain Everest").ids[0] == "d5"


def test_bad_input(hashing_embedder: HashingEmbedder) -> None:
    retriever = build(BM25Index(), hashing_embedder)
    with pytest.raises(InvalidInputError, match="query is empty"):
        retriever.retrieve("  ")
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        retriever.retrieve("Paris", k=0)
    with pytest.raises(InvalidInputError, match="query is empty"):
        asyncio.run(retriever.aretrieve(""))
    with pytest.raises(ConfigurationError, match="unknown fusion 'max'"):
        HybridRetriever(BM25Index(), None, fusion="max")
    with pytest.raises(ConfigurationError, match="needs an embedder"):
        HybridRetriever(None, DenseIndex())
    with pytest.raises(ConfigurationError, match="needs a sparse index, a dense index or both"):
        HybridRetriever(None, None)
    with pytest.raises(ConfigurationError, match="k must be a positive integer"):
        HybridRetriever(BM25Index(), None, k=-1)
    with pytest.raises(ConfigurationError, match="unknown branch"):
        HybridRetriever(BM25Index(), None, weights={"dense": 1.0})
    with pytest.raises(ConfigurationError, match="must be > 0"):
        HybridRetriever(BM25Index(), None, branch_timeout_ms=0)


def test_from_texts_with_quantization(hashing_embedder: HashingEmbedder) -> None:
    retriever = HybridRetriever.from_texts(
        TEXTS,
        hashing_embedder,
        metadatas=[{"row": i} for i in range(len(TEXTS))],
        quantization="int8",
        k=2,
    )
    result = retriever.retrieve("powerhouse of the cell")
    assert result.ids[0] == "4" and result[0].metadata == {"row": 4}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tracker_receives_stage_times_in_the_current_run(
    mode: str, hashing_embedder: HashingEmbedder
) -> None:
    from rag_optimize.tracing import LatencyTracker

    tracker = LatencyTracker()
    retriever = build(BM25Index(), hashing_embedder, k=2, tracker=tracker)
    with tracker.run() as run_id:
        if mode == "sync":
            retriever.retrieve("capital of France")
        else:
            asyncio.run(retriever.aretrieve("capital of France"))
    record = tracker.run_report(run_id)
    assert record is not None
    for stage in ("retrieval", "retrieval.sparse", "retrieval.dense", "retrieval.fusion"):
        assert record.counts.get(stage) == 1, stage
    assert record.counts.get("embedding") == 1
    assert record.stages["retrieval"] >= record.stages["retrieval.fusion"]
    assert tracker.report()["retrieval"].count == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_per_call_k_overrides_k_and_widens_candidates(
    mode: str, hashing_embedder: HashingEmbedder
) -> None:
    retriever = build(BM25Index(), hashing_embedder, k=2, candidates=2)

    def run(k: int | None = None) -> RetrievalResult:
        if mode == "sync":
            return retriever.retrieve("capital of France", k)
        return asyncio.run(retriever.aretrieve("capital of France", k))

    assert len(run()) == 2
    assert len(run(1)) == 1 and run(1).ids == run().ids[:1]
    # k above candidates: each branch is asked for k, the dense branch returns every text.
    assert sorted(run(len(TEXTS)).ids) == sorted(f"d{i}" for i in range(len(TEXTS)))
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        run(0)


def test_add_texts_reuses_given_vectors_and_embeds_the_rest() -> None:
    class Counting(HashingEmbedder):
        def __init__(self) -> None:
            super().__init__(dim=64)
            self.embedded: list[str] = []

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.embedded.extend(texts)
            return super().embed_documents(texts)

    embedder = Counting()
    known = HashingEmbedder(dim=64).embed_query(TEXTS[0])
    retriever = HybridRetriever.from_texts(
        TEXTS[:3],
        embedder,
        ids=["a", "b", "c"],
        vectors=[known, None, None],
        embed_texts=["x", "title: " + TEXTS[1], "title: " + TEXTS[2]],
    )
    assert embedder.embedded == ["title: " + TEXTS[1], "title: " + TEXTS[2]]
    assert retriever.dense is not None
    assert retriever.dense.search(known, 1)[0].id == "a"
    with pytest.raises(InvalidInputError, match="duplicate document id 'a'"):
        retriever.add_texts(["again"], ids=["a"])
    assert len(retriever.dense) == len(retriever.sparse or ()) == 3  # nothing half-added
    with pytest.raises(InvalidInputError, match="1 texts but 2 vectors"):
        retriever.add_texts(["one"], ids=["d"], vectors=[known, known])
