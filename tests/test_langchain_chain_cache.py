"""with_semantic_cache on real LCEL chains: invoke, stream, batch (sync and async), sources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import (
    Runnable,
    RunnableGenerator,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_rag_optimize import with_semantic_cache
from langchain_rag_optimize.chain_cache import default_key
from rag_optimize.cache import SemanticCache, cache_scope
from rag_optimize.embedding import HashingEmbedder

RESET = "How do I reset my password?"
RESET_PARAPHRASE = "how can I reset my password"
DELETE = "How do I delete my account?"
LONG_ANSWER = "Open Settings, choose Security, then press Reset password."


@pytest.fixture
def cache(hashing_embedder: HashingEmbedder) -> SemanticCache:
    return SemanticCache(hashing_embedder, threshold=0.8)


def qa_chain(responses: list[str]) -> Runnable[Any, str]:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer support questions."), ("human", "{question}")]
    )
    return prompt | FakeListChatModel(responses=responses) | StrOutputParser()


def rag_chain(responses: list[str]) -> Runnable[Any, Any]:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(
        [
            Document("Passwords are reset under Settings > Security.", id="doc-security"),
            Document("Accounts are deleted by support.", metadata={"source": "faq.md#delete"}),
        ]
    )
    retriever = store.as_retriever(search_kwargs={"k": 2})
    prompt = ChatPromptTemplate.from_messages([("human", "{context}\n\nQuestion: {question}")])
    answer = prompt | FakeListChatModel(responses=responses) | StrOutputParser()
    return RunnableParallel(
        context=retriever, question=RunnablePassthrough()
    ).assign(answer=answer)


def test_invoke_paraphrase_hit_and_other_question_miss(cache: SemanticCache) -> None:
    cached = with_semantic_cache(qa_chain(["first", "second", "third"]), cache)
    assert cached.invoke({"question": RESET}) == "first"
    assert cached.invoke({"question": RESET_PARAPHRASE}) == "first"
    assert cached.invoke(RESET_PARAPHRASE) != "first"  # a str input is another chain input
    assert cache.stats.hits == 1


def test_default_key_and_other_fields_are_exact(cache: SemanticCache) -> None:
    assert default_key("q") == "q"
    assert default_key({"input": "i", "query": "q"}) == "i"
    assert default_key({"query": "q"}) == "q"
    assert default_key({"other": 1}) is None
    prompt = ChatPromptTemplate.from_messages([("human", "{question} ({language})")])
    chain = prompt | FakeListChatModel(responses=["en", "fr", "x"]) | StrOutputParser()
    cached = with_semantic_cache(chain, cache)
    assert cached.invoke({"question": RESET, "language": "en"}) == "en"
    assert cached.invoke({"question": RESET, "language": "fr"}) == "fr"
    assert cached.invoke({"question": RESET_PARAPHRASE, "language": "en"}) == "en"


def test_custom_key_function(cache: SemanticCache) -> None:
    chain = RunnableLambda(lambda x: f"echo {x['msg']['text']}")
    cached = with_semantic_cache(chain, cache, key=lambda x: x["msg"]["text"])
    assert cached.invoke({"msg": {"text": RESET}}) == f"echo {RESET}"
    assert cached.invoke({"msg": {"text": RESET_PARAPHRASE}}) == f"echo {RESET}"


def test_input_without_question_bypasses_the_cache(cache: SemanticCache) -> None:
    cached = with_semantic_cache(RunnableLambda(lambda x: x["n"] * 2), cache)
    assert cached.invoke({"n": 2}) == 4
    assert len(cache) == 0


def test_two_chains_do_not_share_answers(cache: SemanticCache) -> None:
    first = with_semantic_cache(qa_chain(["from A"]), cache)
    second = with_semantic_cache(qa_chain(["from B"]), cache)
    assert first.invoke({"question": RESET}) == "from A"
    assert second.invoke({"question": RESET}) == "from B"
    same_as_first = with_semantic_cache(qa_chain(["from A"]), cache)
    assert same_as_first.namespace == first.namespace


def test_stream_miss_passes_through_then_hit_replays_in_chunks(cache: SemanticCache) -> None:
    cached = with_semantic_cache(qa_chain([LONG_ANSWER, "never used"]), cache)
    first = list(cached.stream({"question": RESET}))
    assert "".join(first) == LONG_ANSWER
    replay = list(cached.stream({"question": RESET_PARAPHRASE}))
    assert len(replay) > 3
    assert "".join(replay) == LONG_ANSWER
    assert cached.invoke({"question": RESET_PARAPHRASE}) == LONG_ANSWER


def test_failed_stream_is_not_stored(cache: SemanticCache) -> None:
    calls = {"n": 0}

    def fail_first_time(chunks: Iterator[str]) -> Iterator[str]:
        calls["n"] += 1
        for chunk in chunks:
            yield chunk
            if calls["n"] == 1:
                raise RuntimeError("connection dropped")

    chain = qa_chain(["partial answer here", "full answer"]) | RunnableGenerator(fail_first_time)
    cached = with_semantic_cache(chain, cache)
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="connection dropped"):
        for chunk in cached.stream({"question": RESET}):
            seen.append(chunk)
    assert seen  # something was streamed before the failure
    assert len(cache) == 0
    assert "".join(cached.stream({"question": RESET})) == "full answer"
    assert len(cache) == 1


def test_abandoned_stream_is_not_stored(cache: SemanticCache) -> None:
    cached = with_semantic_cache(qa_chain([LONG_ANSWER, "second"]), cache)
    stream = cached.stream({"question": RESET})
    next(stream)
    stream.close()
    assert len(cache) == 0


def test_failed_invoke_is_not_stored(cache: SemanticCache) -> None:
    def boom(_: Any) -> str:
        raise ValueError("model down")

    cached = with_semantic_cache(RunnableLambda(boom), cache)
    with pytest.raises(ValueError, match="model down"):
        cached.invoke(RESET)
    assert len(cache) == 0


async def test_ainvoke_and_astream(cache: SemanticCache) -> None:
    cached = with_semantic_cache(qa_chain([LONG_ANSWER, "other", "third"]), cache)
    assert await cached.ainvoke({"question": RESET}) == LONG_ANSWER
    chunks = [c async for c in cached.astream({"question": RESET_PARAPHRASE})]
    assert len(chunks) > 3 and "".join(chunks) == LONG_ANSWER
    missed = [c async for c in cached.astream({"question": DELETE})]
    assert "".join(missed) == "other"
    assert await cached.ainvoke({"question": DELETE}) == "other"


async def test_failed_astream_is_not_stored(cache: SemanticCache) -> None:
    async def fail(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
        async for chunk in chunks:
            yield chunk
            raise RuntimeError("dropped")

    cached = with_semantic_cache(qa_chain(["a b c"]) | RunnableGenerator(fail), cache)
    with pytest.raises(RuntimeError):
        async for _ in cached.astream({"question": RESET}):
            pass
    assert len(cache) == 0


def test_batch_sends_only_misses_to_the_chain(cache: SemanticCache) -> None:
    cached = with_semantic_cache(qa_chain(["stored", "fresh", "unused"]), cache)
    cached.invoke({"question": RESET})
    out = cached.batch([{"question": RESET_PARAPHRASE}, {"question": DELETE}])
    assert out == ["stored", "fresh"]
    assert cached.batch([{"question": DELETE}]) == ["fresh"]
    assert cached.batch([]) == []


async def test_abatch_with_exceptions_stores_only_successes(cache: SemanticCache) -> None:
    def answer(question: str) -> str:
        if "delete" in question:
            raise ValueError("no")
        return f"answer to {question}"

    cached = with_semantic_cache(RunnableLambda(answer), cache)
    out = await cached.abatch([RESET, DELETE], return_exceptions=True)
    assert out[0] == f"answer to {RESET}"
    assert isinstance(out[1], ValueError)
    assert len(cache) == 1
    assert await cached.abatch([RESET_PARAPHRASE]) == [f"answer to {RESET}"]


def test_scopes_from_contextvar_and_config(cache: SemanticCache) -> None:
    cached = with_semantic_cache(qa_chain(["a", "b", "c", "d"]), cache)
    with cache_scope("tenant-a"):
        assert cached.invoke({"question": RESET}) == "a"
    assert cached.invoke({"question": RESET}, {"metadata": {"cache_scope": "tenant-b"}}) == "b"
    tenant_a = {"metadata": {"cache_scope": "tenant-a"}}
    assert cached.invoke({"question": RESET_PARAPHRASE}, tenant_a) == "a"
    with cache_scope("tenant-b"):
        assert cached.invoke({"question": RESET_PARAPHRASE}) == "b"
    assert cached.invoke({"question": RESET}) == "c"


def test_source_ids_from_output_documents_and_replay(cache: SemanticCache) -> None:
    cached = with_semantic_cache(rag_chain(["Use Settings > Security.", "unused"]), cache)
    first = cached.invoke(RESET)
    assert [d.id for d in first["context"]]
    entries = cache.store.entries()  # type: ignore[attr-defined]
    ids = entries[0].metadata["source_ids"]
    assert {"doc-security", "faq.md#delete"} <= set(ids)
    assert {d.id for d in first["context"]} <= set(ids)  # the store-assigned id too
    again = cached.invoke(RESET_PARAPHRASE)
    assert again["answer"] == first["answer"]
    assert [d.page_content for d in again["context"]] == [d.page_content for d in first["context"]]
    assert all(isinstance(d, Document) for d in again["context"])
    streamed: Any = None
    for chunk in cached.stream(RESET_PARAPHRASE):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed["answer"] == first["answer"]
    assert [d.id for d in streamed["context"]] == [d.id for d in first["context"]]
    assert cache.store.delete_where(None, "source_ids", ["doc-security"]) == 1


def test_source_ids_from_retrievers_inside_a_string_chain(cache: SemanticCache) -> None:
    inner = rag_chain(["Use Settings."]) | RunnableLambda(lambda out: out["answer"])
    cached = with_semantic_cache(inner, cache)
    assert cached.invoke(RESET) == "Use Settings."
    (entry,) = cache.store.entries()  # type: ignore[attr-defined]
    assert {"doc-security", "faq.md#delete"} <= set(entry.metadata["source_ids"])
    assert entry.response["text"] == "Use Settings."


async def test_source_ids_async(cache: SemanticCache) -> None:
    cached = with_semantic_cache(rag_chain(["Use Settings."]), cache)
    await cached.ainvoke(RESET)
    (entry,) = cache.store.entries()  # type: ignore[attr-defined]
    assert "doc-security" in entry.metadata["source_ids"]


def test_index_version_separates_entries(cache: SemanticCache) -> None:
    v1 = with_semantic_cache(qa_chain(["old", "new"]), cache, index_version="v1")
    assert v1.invoke(RESET) == "old"
    v2 = with_semantic_cache(v1.runnable, cache, index_version="v2")
    assert v2.invoke(RESET) == "new"
    assert cache.store.delete_where(None, "index_version", ["v1"]) == 1


def test_rejects_a_non_semantic_cache() -> None:
    with pytest.raises(TypeError, match="SemanticCache"):
        with_semantic_cache(qa_chain(["x"]), object())  # type: ignore[arg-type]


def test_source_invalidation_through_the_core(cache: SemanticCache) -> None:
    cached = with_semantic_cache(rag_chain(["first answer", "second answer"]), cache)
    assert cached.invoke(RESET)["answer"] == "first answer"
    assert cached.invoke(RESET_PARAPHRASE)["answer"] == "first answer"
    assert cache.invalidate(source_ids=["faq.md#delete"]) == 1
    assert cached.invoke(RESET_PARAPHRASE)["answer"] == "second answer"


def test_require_scope_fails_closed(hashing_embedder: HashingEmbedder) -> None:
    cache = SemanticCache(hashing_embedder, threshold=0.8, require_scope=True)
    cached = with_semantic_cache(qa_chain(["a", "b", "c"]), cache)
    assert cached.invoke(RESET) == "a"
    assert cached.invoke(RESET) == "b"
    assert len(cache) == 0
    with cache_scope("tenant-a"):
        assert cached.invoke(RESET) == "c"
        assert cached.invoke(RESET_PARAPHRASE) == "c"


def test_malformed_entry_is_a_miss(cache: SemanticCache) -> None:
    cached = with_semantic_cache(qa_chain(["good", "fresh"]), cache)
    cached.invoke(RESET)
    (entry,) = cache.store.entries()  # type: ignore[attr-defined]
    entry.response = {"unexpected": True}
    assert cached.invoke(RESET_PARAPHRASE) == "fresh"


def test_invalidate_user_scope_across_chains(cache: SemanticCache) -> None:
    first = with_semantic_cache(qa_chain(["a1", "a2"]), cache)
    second = with_semantic_cache(qa_chain(["b1", "b2"]), cache)
    with cache_scope("tenant-a"):
        first.invoke(RESET)
        second.invoke(RESET)
    with cache_scope("tenant-b"):
        first.invoke(RESET)
        assert first.invalidate("tenant-a") == 2
        assert first.invalidate() == 1  # the active scope
    assert len(cache) == 0


async def test_concurrent_ainvoke_and_threads(cache: SemanticCache) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    cached = with_semantic_cache(RunnableLambda(lambda q: f"answer to {q}"), cache)
    questions = [f"question number {i % 10} about topic {i % 10}" for i in range(60)]
    answers = await asyncio.gather(*(cached.ainvoke(q) for q in questions))
    assert answers == [f"answer to {q}" for q in questions]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(cached.invoke, questions)) == answers
    stats = cache.stats
    assert stats.hits + stats.misses == 120
    assert stats.hits >= 60  # the threaded round finds every answer stored
    assert len(cache) == 10


async def test_abandoned_astream_is_not_stored(cache: SemanticCache) -> None:
    """The async driver closes the plan when the caller stops early: nothing is stored."""
    cached = with_semantic_cache(qa_chain([LONG_ANSWER, "second"]), cache)
    stream = cached.astream({"question": RESET})
    await anext(stream)
    await stream.aclose()
    assert len(cache) == 0
    assert await cached.ainvoke({"question": RESET}) == "second"  # a miss, then stored
    assert len(cache) == 1


async def test_failed_ainvoke_is_not_stored_and_keeps_its_traceback(cache: SemanticCache) -> None:
    def boom(_: Any) -> str:
        raise ValueError("model down")

    cached = with_semantic_cache(RunnableLambda(boom), cache)
    with pytest.raises(ValueError, match="model down") as caught:
        await cached.ainvoke(RESET)
    assert len(cache) == 0
    assert any(frame.name == "boom" for frame in caught.traceback)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_lookup_is_a_child_run_in_both_drivers(cache: SemanticCache, mode: str) -> None:
    """The lookup's child run starts and ends through the run manager of either kind, with
    ``hit`` in its output, on a miss and on the following hit."""
    from uuid import UUID

    from langchain_core.callbacks import BaseCallbackHandler

    class Lookups(BaseCallbackHandler):
        def __init__(self) -> None:
            self.started: list[UUID] = []
            self.ended: dict[UUID, Any] = {}

        def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            if kwargs.get("name") == "semantic_cache_lookup":
                self.started.append(kwargs["run_id"])

        def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
            self.ended[kwargs["run_id"]] = outputs

    cached = with_semantic_cache(qa_chain([LONG_ANSWER]), cache)
    seen = Lookups()
    config: Any = {"callbacks": [seen]}
    for question in (RESET, RESET_PARAPHRASE):
        if mode == "sync":
            assert cached.invoke({"question": question}, config) == LONG_ANSWER
        else:
            assert await cached.ainvoke({"question": question}, config) == LONG_ANSWER
    assert len(seen.started) == 2
    miss, hit = (seen.ended[run_id] for run_id in seen.started)
    assert miss == {"hit": False}
    assert hit["hit"] is True and hit["matched_query"] == RESET
