"""Retrieval evidence: a semantic hit is served only when the new question retrieves its sources."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_rag_optimize import with_semantic_cache
from rag_optimize import ConfigurationError, HashingEmbedder, SemanticCache
from rag_optimize.cache.decision.evidence import sources_agree

CANADA = "How long does shipping to Canada take?"
MEXICO = "How long does shipping to Mexico take?"


def test_the_vote_counts_retrieved_documents_among_the_sources() -> None:
    assert sources_agree(["a", "b"], ["a", "c"]).agree  # 1 of 2 >= 0.5
    vote = sources_agree(["a", "b"], ["c", "d"])
    assert not vote.agree and vote.overlap == 0.0 and "0 of 2" in vote.reason
    assert not sources_agree(["a"], ["a", "c", "d"], min_overlap=0.5).agree
    assert sources_agree([], ["a"]).reason.startswith("no evidence")
    assert sources_agree(["a"], []).agree
    with pytest.raises(ConfigurationError, match="min_overlap"):
        sources_agree(["a"], ["a"], min_overlap=0)


class _Embeddings(Embeddings):
    """The hashing model as LangChain Embeddings (the base class adds the async methods)."""

    def __init__(self) -> None:
        self.model = HashingEmbedder(dim=256)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(v) for v in self.model.embed_documents(texts)]

    def embed_query(self, text: str) -> list[float]:
        return list(self.model.embed_query(text))


def _retriever() -> Any:
    store = InMemoryVectorStore(_Embeddings())
    store.add_documents(
        [
            Document("Shipping to Canada takes 5 days.", id="ship-ca"),
            Document("Shipping to Mexico takes 9 days.", id="ship-mx"),
        ]
    )
    return store.as_retriever(search_kwargs={"k": 1})


def _chain(retriever: Any, responses: list[str]) -> Runnable[Any, Any]:
    prompt = ChatPromptTemplate.from_messages([("human", "{context}\n\nQuestion: {question}")])
    answer = prompt | FakeListChatModel(responses=responses) | StrOutputParser()
    return RunnableParallel(context=retriever, question=RunnablePassthrough()).assign(
        answer=answer
    ) | RunnableLambda(lambda out: out["answer"])


@pytest.fixture
def loose_cache() -> SemanticCache:
    # similarity alone, low threshold: the two shipping questions are one candidate apart
    return SemanticCache(HashingEmbedder(dim=256), threshold=0.5, verifier=None)


def test_without_evidence_the_other_country_is_served(loose_cache: SemanticCache) -> None:
    cached = with_semantic_cache(_chain(_retriever(), ["5 days", "9 days"]), loose_cache,
                                 key=lambda q: q)
    assert cached.invoke(CANADA) == "5 days"
    assert cached.invoke(MEXICO) == "5 days"  # the wrong answer this option exists for


def test_the_new_questions_retrieval_vetoes_another_topic(loose_cache: SemanticCache) -> None:
    retriever = _retriever()
    cached = with_semantic_cache(
        _chain(retriever, ["5 days", "9 days", "the model was called again"]), loose_cache,
        key=lambda q: q, confirm_with=retriever,
    )
    assert cached.invoke(CANADA) == "5 days"
    assert cached.invoke(MEXICO) == "9 days"
    assert cached.evidence_rejections == 1
    # a paraphrase retrieves the same source: served from the cache
    assert cached.invoke("how long does shipping to canada take") == "5 days"
    # the core counted both candidates it found; one of them the evidence did not serve
    assert cached.evidence_rejections == 1 and loose_cache.stats.hits == 2


async def test_async_lookups_are_confirmed_too(loose_cache: SemanticCache) -> None:
    retriever = _retriever()
    cached = with_semantic_cache(
        _chain(retriever, ["5 days", "9 days"]), loose_cache, key=lambda q: q,
        confirm_with=retriever,
    )
    assert await cached.ainvoke(CANADA) == "5 days"
    assert await cached.ainvoke(MEXICO) == "9 days"
    assert cached.evidence_rejections == 1


def test_a_failing_retriever_vetoes_and_the_chain_answers(loose_cache: SemanticCache) -> None:
    def broken(question: str) -> list[Document]:
        raise RuntimeError("vector store down")

    cached = with_semantic_cache(
        _chain(_retriever(), ["5 days", "still 5 days"]), loose_cache, key=lambda q: q,
        confirm_with=RunnableLambda(broken),
    )
    assert cached.invoke(CANADA) == "5 days"
    assert cached.invoke("how long does shipping to canada take") == "still 5 days"
    assert cached.evidence_rejections == 1
    with pytest.raises(ConfigurationError, match="min_overlap"):
        with_semantic_cache(_chain(_retriever(), ["x"]), loose_cache, min_overlap=1.5)
