"""The question inside a rendered RAG prompt: what SemanticLLMCache compares by meaning."""

from __future__ import annotations

import logging

import pytest
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_rag_optimize import SemanticLLMCache
from rag_optimize import HashingEmbedder, SemanticCache
from rag_optimize.cache.decision.prompt import find_question

# The text of LangChain hub prompt rlm/rag-prompt (one human message).
RAG_PROMPT = (
    "You are an assistant for question-answering tasks. Use the following pieces of "
    "retrieved context to answer the question. If you don't know the answer, just say that "
    "you don't know. Use three sentences maximum and keep the answer concise.\n"
    "Question: {question} \nContext: {context} \nAnswer:"
)
CONTEXT = (
    "The premium plan raises the storage limit from 50 GB to 2 TB.\n\n"
    "The basic plan lowers the upload size to 100 MB. Support answers within a day."
)


def test_the_question_label_of_rag_prompt_is_found() -> None:
    text = RAG_PROMPT.format(question="Does premium increase storage?", context=CONTEXT)
    found = find_question(text)
    assert found.rule == "label"
    assert found.question == "Does premium increase storage?"
    assert CONTEXT in found.rest and "question-answering" in found.rest
    assert "Does premium" not in found.rest


def test_context_first_templates_and_the_last_label_win() -> None:
    text = (
        "Answer the question based only on the following context:\n"
        "Q: an example question\nA: an example answer\n\n"
        "Question: How long is the warranty?\n"
    )
    found = find_question(text)
    assert (found.rule, found.question) == ("label", "How long is the warranty?")


def test_a_plain_question_is_itself_and_a_long_unlabelled_message_is_exact() -> None:
    assert find_question("  What is the refund policy? ").rule == "plain"
    blob = "Here are some documents.\n" + CONTEXT + "\nWhat does the premium plan change?"
    found = find_question(blob)
    assert found.rule == "exact" and found.rest == blob
    assert find_question("x" * 600).rule == "exact"
    with pytest.raises(TypeError, match="message must be str"):
        find_question(None)  # type: ignore[arg-type]


@pytest.fixture
def llm_cache():  # type: ignore[no-untyped-def]
    before = get_llm_cache()
    cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5)
    set_llm_cache(SemanticLLMCache(cache))
    yield cache
    set_llm_cache(before)


def _chain(responses: list[str]):  # type: ignore[no-untyped-def]
    prompt = ChatPromptTemplate.from_messages([("human", RAG_PROMPT)])
    return prompt | FakeListChatModel(responses=responses) | StrOutputParser()


def test_rag_prompt_compares_the_question_not_the_context(llm_cache: SemanticCache) -> None:
    chain = _chain(["2 TB", "100 MB", "within a day"])
    ask = lambda q, c=CONTEXT: chain.invoke({"question": q, "context": c})  # noqa: E731
    assert ask("Does the premium plan increase the storage limit?") == "2 TB"
    # another question over the same (dominant) context: not served the first answer
    assert ask("What is the upload size of the basic plan?") == "100 MB"
    # the same question again: served from the cache (the model is not called)
    assert ask("Does the premium plan increase the storage limit?") == "2 TB"
    assert llm_cache.stats.hits == 1
    # the same question over other retrieved context: the answer is not reused
    assert ask("Does the premium plan increase the storage limit?", "Other text.") == (
        "within a day"
    )


def test_an_unlabelled_rag_message_is_exact_only_and_logged_once(
    llm_cache: SemanticCache, caplog: pytest.LogCaptureFixture
) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{context}\n\nAnswer: {question}")])
    chain = prompt | FakeListChatModel(responses=["a", "b", "c"]) | StrOutputParser()
    with caplog.at_level(logging.WARNING, logger="rag_optimize.langchain"):
        assert chain.invoke({"context": CONTEXT, "question": "storage limit?"}) == "a"
        assert chain.invoke({"context": CONTEXT, "question": "upload limit?"}) == "b"
        assert chain.invoke({"context": CONTEXT, "question": "storage limit?"}) == "a"
    warnings = [r for r in caplog.records if "matched exactly only" in r.getMessage()]
    assert len(warnings) == 1 and "with_semantic_cache" in warnings[0].getMessage()
