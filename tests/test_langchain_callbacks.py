"""LatencyCallbackHandler on real LangChain chains with fake models that sleep known amounts.

Assertions are about attribution (which stage, which run, how many times) and ordering, with
only lower bounds on time (a sleep of d seconds takes at least d); no upper bound, and
overlap is proved by a rendezvous, not a duration.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import tool

from langchain_rag_optimize import LatencyCallbackHandler, TimedEmbeddings, latency_tracing
from rag_optimize.tracing import LatencyTracker

sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from rendezvous import ameeting  # noqa: E402

RETRIEVE_S = 0.02
GENERATE_S = 0.01


class SleepyRetriever(BaseRetriever):
    """A retriever that embeds the query (timed) and 'searches' for RETRIEVE_S seconds."""

    embeddings: Any
    seen_runs: dict[str, list[str | None]] = {}
    fail: bool = False
    meet: Any = None  # async: each query's first retrieval waits here for the others

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.embeddings.embed_query(query)
        self.seen_runs.setdefault(query, []).append(LatencyTracker.current_run())
        time.sleep(RETRIEVE_S)
        if self.fail:
            raise ConnectionError("vector store down")
        return [Document(page_content=f"context for {query}")]

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        await self.embeddings.aembed_query(query)
        runs = self.seen_runs.setdefault(query, [])
        runs.append(LatencyTracker.current_run())
        if self.meet is not None and len(runs) == 1:
            await self.meet()
        await asyncio.sleep(RETRIEVE_S)
        return [Document(page_content=f"context for {query}")]


PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from: {context}"), ("human", "{question}")]
)


def make_chain(
    tracker: LatencyTracker, fail: bool = False
) -> tuple[Runnable[Any, str], SleepyRetriever]:
    retriever = SleepyRetriever(
        embeddings=TimedEmbeddings(DeterministicFakeEmbedding(size=16), tracker),
        seen_runs={},
        fail=fail,
    )
    model = FakeListChatModel(responses=["the answer"], sleep=GENERATE_S)
    chain = (
        {
            "context": (lambda x: x["question"]) | retriever,
            "question": lambda x: x["question"],
        }
        | PROMPT
        | model
        | StrOutputParser()
    )
    return chain, retriever


def test_sync_chain_stages_and_run_id() -> None:
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    chain, retriever = make_chain(tracker)
    run_id = uuid.uuid4()
    out = chain.invoke({"question": "q1"}, config={"callbacks": [handler], "run_id": run_id})
    assert out == "the answer"
    record = tracker.run_report(str(run_id))
    assert record is not None and record.total is not None
    assert record.counts == {"embedding": 1, "retrieval": 1, "generation": 1}
    assert record.stages["retrieval"] >= RETRIEVE_S
    assert record.stages["generation"] >= GENERATE_S
    # embedding happens inside retrieval; stages happen inside the run
    assert record.stages["embedding"] <= record.stages["retrieval"]
    assert record.stages["retrieval"] + record.stages["generation"] <= record.total
    assert retriever.seen_runs == {"q1": [str(run_id)]}
    assert LatencyTracker.current_run() is None
    assert handler.timeline.open_nodes() == 0
    assert set(handler.report().stages) == {"embedding", "retrieval", "generation", "total"}


def test_named_runnable_becomes_a_stage_and_tools_are_timed() -> None:
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker, stage_names={"rerank": "rerank"})

    @tool
    def lookup(term: str) -> str:
        """Look a term up."""
        time.sleep(0.005)
        return term.upper()

    def rerank(x: str) -> str:
        time.sleep(0.005)
        return x

    chain = RunnableLambda(rerank, name="rerank") | lookup
    run_id = uuid.uuid4()
    assert chain.invoke("abc", config={"callbacks": [handler], "run_id": run_id}) == "ABC"
    record = tracker.run_report(str(run_id))
    assert record is not None
    assert record.counts == {"rerank": 1, "tool": 1}
    assert min(record.stages.values()) >= 0.005


def test_streaming_ttft_is_before_the_end() -> None:
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    chain, _ = make_chain(tracker)
    run_id = uuid.uuid4()
    chunks = list(
        chain.stream({"question": "q"}, config={"callbacks": [handler], "run_id": run_id})
    )
    assert "".join(chunks) == "the answer"
    record = tracker.run_report(str(run_id))
    assert record is not None and record.total is not None
    ttft = record.stages["ttft"]
    assert record.counts["ttft"] == 1
    # first token comes after retrieval and one token's sleep, well before the last token
    assert ttft >= RETRIEVE_S + GENERATE_S
    assert ttft < record.total
    assert record.stages["generation"] >= len("the answer") * GENERATE_S


async def test_async_streaming_ttft() -> None:
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    chain, _ = make_chain(tracker)
    run_id = uuid.uuid4()
    chunks = [
        c
        async for c in chain.astream(
            {"question": "q"}, config={"callbacks": [handler], "run_id": run_id}
        )
    ]
    assert "".join(chunks) == "the answer"
    record = tracker.run_report(str(run_id))
    assert record is not None and record.total is not None
    assert 0 < record.stages["ttft"] < record.total
    assert record.counts == {"embedding": 1, "retrieval": 1, "generation": 1, "ttft": 1}


async def test_100_concurrent_async_runs_are_attributed_to_their_own_run() -> None:
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    _, retriever = make_chain(tracker)
    # every run's first retrieval waits inside until all 100 are inside one: the runs really
    # overlap (run one after another, they never meet and the test fails)
    retriever.meet = ameeting(100)
    model = FakeListChatModel(responses=["ok"], sleep=0.001)

    async def retrieve_n(x: dict[str, Any], config: RunnableConfig) -> str:
        # run i retrieves (i % 3) + 1 times: counts prove which run each stage went to
        docs = []
        for _ in range(x["n"]):
            docs += await retriever.ainvoke(x["question"], config)
        return " ".join(d.page_content for d in docs)

    chain = (
        {"context": RunnableLambda(retrieve_n), "question": lambda x: x["question"]}
        | PROMPT
        | model
        | StrOutputParser()
    )
    ids = [uuid.uuid4() for _ in range(100)]
    await asyncio.gather(
        *(
            chain.ainvoke(
                {"question": f"q{i}", "n": i % 3 + 1},
                config={"callbacks": [handler], "run_id": ids[i]},
            )
            for i in range(100)
        )
    )
    for i, run_id in enumerate(ids):
        record = tracker.run_report(str(run_id))
        assert record is not None and record.total is not None
        n = i % 3 + 1
        assert record.counts == {"embedding": n, "retrieval": n, "generation": 1}
        assert record.stages["retrieval"] >= n * RETRIEVE_S
        assert retriever.seen_runs[f"q{i}"] == [str(run_id)] * n
    assert tracker.report()["total"].count == 100
    assert handler.timeline.open_nodes() == 0


def test_errors_are_recorded_and_the_run_is_closed() -> None:
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    seen = []
    tracker.add_listener(seen.append)
    chain, _ = make_chain(tracker, fail=True)
    run_id = uuid.uuid4()
    with pytest.raises(ConnectionError):
        chain.invoke({"question": "q"}, config={"callbacks": [handler], "run_id": run_id})
    record = tracker.run_report(str(run_id))
    assert record is not None and record.total is not None
    assert "generation" not in record.counts
    failed = [s for s in seen if s.stage == "retrieval"]
    assert failed and failed[0].attributes["error"] == "ConnectionError"
    assert handler.timeline.open_nodes() == 0
    assert LatencyTracker.current_run() is None


def test_chain_inside_an_outer_tracker_run_joins_it() -> None:
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    chain, _ = make_chain(tracker)
    with tracker.run("request-7"):
        chain.invoke({"question": "a"}, config={"callbacks": [handler]})
        chain.invoke({"question": "b"}, config={"callbacks": [handler]})
    record = tracker.run_report("request-7")
    assert record is not None
    assert record.counts == {"embedding": 2, "retrieval": 2, "generation": 2}
    assert tracker.report()["total"].count == 1


def test_unknown_stage_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="stage"):
        LatencyCallbackHandler(stage_names={"x": ""})


def test_latency_tracing_block_traces_calls_without_config() -> None:
    tracker = LatencyTracker()
    chain, _ = make_chain(tracker)
    with latency_tracing(tracker) as handler:
        chain.invoke({"question": "a"})
        chain.invoke({"question": "b"})
    chain.invoke({"question": "outside"})  # not traced any more
    report = handler.report()
    assert report["total"].count == 2
    assert report["retrieval"].count == 2 and report["generation"].count == 2
    assert report["embedding"].count == 3  # TimedEmbeddings reports on its own, in no run


def test_batch_in_threads_attributes_each_input_to_its_run() -> None:
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    chain, retriever = make_chain(tracker)
    ids = [uuid.uuid4() for _ in range(8)]
    chain.batch(
        [{"question": f"b{i}"} for i in range(8)],
        config=[{"callbacks": [handler], "run_id": run_id} for run_id in ids],
    )
    for i, run_id in enumerate(ids):
        record = tracker.run_report(str(run_id))
        assert record is not None and record.total is not None
        assert record.counts == {"embedding": 1, "retrieval": 1, "generation": 1}
        assert retriever.seen_runs[f"b{i}"] == [str(run_id)]
