"""``with_semantic_cache`` around a compiled LangGraph ``StateGraph`` (retrieve + generate).

The graph is real: a retrieve node over LangChain's ``InMemoryVectorStore`` and a generate
node calling a fake chat model that streams tokens. What a hit returns in each stream mode is
compared with what the same graph, uncached, streams for the same question.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.vectorstores import InMemoryVectorStore
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from langchain_rag_optimize import LatencyCallbackHandler, with_semantic_cache
from langchain_rag_optimize.chain_cache import LOOKUP_RUN_NAME
from rag_optimize import HashingEmbedder, LatencyTracker, SemanticCache

ANSWER = "Refunds are paid back within thirty days of the return."
QUESTION = "How long do refunds take?"
PARAPHRASE = "how long do refunds take"
MODES = ["values", "updates", "messages", "custom"]


class State(TypedDict, total=False):
    question: str
    context: list[Document]
    answer: str


class CountingModel(GenericFakeChatModel):
    """Streams ANSWER word by word; counts its calls (streamed or not)."""

    calls: int = 0

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1  # streaming goes through _generate too
        return super()._generate(*args, **kwargs)


def build_graph(checkpointer: Any = None) -> tuple[Any, CountingModel]:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([
        Document(page_content="Refunds take thirty days.", id="refunds"),
        Document(page_content="Shipping is free.", id="shipping"),
    ])
    retriever = store.as_retriever(search_kwargs={"k": 1})
    model = CountingModel(messages=iter([AIMessage(content=ANSWER)] * 100))

    def retrieve(state: State) -> State:
        get_stream_writer()({"retrieved": 1})
        return {"context": retriever.invoke(state["question"])}

    def generate(state: State) -> State:
        return {"answer": str(model.invoke(state["question"]).content)}

    builder = StateGraph(State)
    builder.add_node("retrieve", retrieve)
    builder.add_node("generate", generate)
    builder.add_edge(START, "retrieve")
    builder.add_edge("retrieve", "generate")
    builder.add_edge("generate", END)
    return builder.compile(checkpointer=checkpointer), model


def make_cache() -> SemanticCache:
    return SemanticCache(HashingEmbedder(dim=256), threshold=0.8)


def normalise(mode: str, chunk: Any) -> Any:
    """Comparable form of a chunk: messages become (text, node)."""
    if mode == "messages":
        message, metadata = chunk
        assert isinstance(message, AIMessageChunk)
        return (message.content, metadata["langgraph_node"])
    return chunk


def collect(stream: Any, mode: Any) -> list[Any]:
    if isinstance(mode, list):
        return [(m, normalise(m, c)) for m, c in stream]
    return [normalise(mode, c) for c in stream]


def expected(mode: Any, question: str) -> list[Any]:
    graph, _ = build_graph()
    return collect(graph.stream({"question": question}, stream_mode=mode), mode)


def test_invoke_hit_skips_retrieval_and_generation() -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    first = cached.invoke({"question": QUESTION})
    assert first["answer"] == ANSWER and first["context"][0].id
    assert model.calls == 1
    again = cached.invoke({"question": PARAPHRASE})
    assert model.calls == 1  # answered by the cache
    assert again == {**first, "question": PARAPHRASE}  # the caller's question in the state


@pytest.mark.parametrize("stored_from", [None, *MODES, ["updates", "messages"]])
@pytest.mark.parametrize("replayed_to", [*MODES, ["values", "messages"], ["custom", "updates"]])
def test_an_answer_stored_from_one_mode_replays_in_any_other(
    stored_from: Any, replayed_to: Any
) -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    if stored_from is None:
        cached.invoke({"question": QUESTION})
    else:
        miss = collect(cached.stream({"question": QUESTION}, stream_mode=stored_from), stored_from)
        assert miss == expected(stored_from, QUESTION)  # a miss streams what the graph streams
    assert model.calls == 1
    replay = collect(cached.stream({"question": QUESTION}, stream_mode=replayed_to), replayed_to)
    assert model.calls == 1
    assert replay == expected(replayed_to, QUESTION)


def test_messages_mode_hit_unpacks_as_message_and_metadata() -> None:
    graph, _ = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    cached.invoke({"question": QUESTION})
    text = ""
    for message, metadata in cached.stream({"question": PARAPHRASE}, stream_mode="messages"):
        assert metadata["langgraph_node"] == "generate"
        text += str(message.content)
    assert text == ANSWER


def test_default_stream_mode_is_the_graphs() -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    miss = list(cached.stream({"question": QUESTION}))
    hit = list(cached.stream({"question": QUESTION}))
    assert model.calls == 1
    assert miss == hit == list(build_graph()[0].stream({"question": QUESTION}))


async def test_astream_and_astream_events_on_a_hit() -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    miss = [c async for c in cached.astream({"question": QUESTION}, stream_mode="values")]
    hit = [c async for c in cached.astream({"question": QUESTION}, stream_mode="values")]
    assert miss == hit and len(hit) == 3 and model.calls == 1
    events = [e async for e in cached.astream_events({"question": PARAPHRASE}, version="v2")]
    lookup_end = [
        e for e in events if e["event"] == "on_chain_end" and e["name"] == LOOKUP_RUN_NAME
    ]
    assert len(lookup_end) == 1 and lookup_end[0]["data"]["output"]["hit"] is True
    streamed = [e["data"]["chunk"] for e in events
                if e["event"] == "on_chain_stream" and e["name"] == cached.name]
    assert streamed == list(build_graph()[0].stream({"question": PARAPHRASE}))
    assert model.calls == 1


async def test_astream_events_on_a_miss_show_the_graph_inside() -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    events = [e async for e in cached.astream_events({"question": QUESTION}, version="v2")]
    names = {(e["event"], e["name"]) for e in events}
    assert ("on_chain_start", "retrieve") in names and ("on_chain_start", "generate") in names
    assert any(e["event"] == "on_chat_model_stream" for e in events)
    lookup = next(e for e in events
                  if e["event"] == "on_chain_end" and e["name"] == LOOKUP_RUN_NAME)
    assert lookup["data"]["output"] == {"hit": False}
    assert model.calls == 1


def test_hits_are_traced_with_a_cache_stage_and_hit_true() -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    tracker = LatencyTracker()
    handler = LatencyCallbackHandler(tracker)
    hits: list[bool] = []
    tracker.add_listener(lambda s: hits.append(s.attributes["hit"]) if s.stage == "cache" else None)
    for question in (QUESTION, PARAPHRASE, QUESTION):
        cached.invoke({"question": question}, config={"callbacks": [handler]})
    report = tracker.report()
    assert report["total"].count == 3  # hits are runs like any other
    assert hits == [False, True, True]
    assert report["generation"].count == 1 and report["retrieval"].count == 1
    assert model.calls == 1


def test_a_checkpointed_thread_bypasses_the_cache() -> None:
    graph, model = build_graph(checkpointer=InMemorySaver())
    cached = with_semantic_cache(graph, make_cache())
    config: Any = {"configurable": {"thread_id": "t1"}}
    cached.invoke({"question": QUESTION}, config=config)
    cached.invoke({"question": QUESTION}, config=config)
    assert model.calls == 2
    assert cached.cache.stats.as_dict()["hits"] == 0


def test_unreplayable_stream_modes_bypass_the_cache() -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    cached.invoke({"question": QUESTION})
    debug = list(cached.stream({"question": QUESTION}, stream_mode="debug"))
    assert debug and model.calls == 2  # ran the graph: debug events cannot be replayed


def test_abandoned_graph_stream_is_not_stored() -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())
    stream = cached.stream({"question": QUESTION}, stream_mode="messages")
    next(stream)
    stream.close()
    cached.invoke({"question": QUESTION})
    assert model.calls == 2


def test_concurrent_async_invokes() -> None:
    graph, model = build_graph()
    cached = with_semantic_cache(graph, make_cache())

    async def main() -> list[Any]:
        await cached.ainvoke({"question": QUESTION})
        return list(await asyncio.gather(
            *(cached.ainvoke({"question": QUESTION}) for _ in range(5))
        ))

    results = asyncio.run(main())
    assert model.calls == 1 and all(r["answer"] == ANSWER for r in results)
