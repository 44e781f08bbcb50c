"""SemanticLLMCache on real LangChain chains (prompt | fake chat model | parser)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_rag_optimize import SemanticLLMCache
from langchain_rag_optimize._keys import split_prompt, temperature_of
from rag_optimize.cache import InMemoryStore, SemanticCache, cache_scope
from rag_optimize.cache.decision.judges import ExactMatchJudge
from rag_optimize.embedding import HashingEmbedder

RESET = "How do I reset my password?"
RESET_PARAPHRASE = "how can I reset my password"
DELETE = "How do I delete my account?"
TOOL_CALL = {"name": "lookup", "args": {"q": "x"}, "id": "c1"}


@pytest.fixture(autouse=True)
def restore_global_cache() -> Iterator[None]:
    before = get_llm_cache()
    yield
    set_llm_cache(before)


@pytest.fixture
def cache(hashing_embedder: HashingEmbedder) -> SemanticCache:
    return SemanticCache(hashing_embedder, threshold=0.8)


def chain_for(model: object, system: str = "You are a helpful support bot."):  # noqa: ANN201
    prompt = ChatPromptTemplate.from_messages([("system", system), ("human", "{question}")])
    return prompt | model | StrOutputParser()


def answers(n: int) -> list[str]:
    return [f"answer {i}" for i in range(n)]


def test_paraphrase_hits_and_other_question_misses(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=answers(5)))
    assert chain.invoke({"question": RESET}) == "answer 0"
    assert chain.invoke({"question": RESET_PARAPHRASE}) == "answer 0"
    assert chain.invoke({"question": DELETE}) == "answer 1"
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.sets) == (1, 2, 2)


def test_exact_repeat_does_not_embed(
    cache: SemanticCache, hashing_embedder: HashingEmbedder
) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=answers(3)))
    chain.invoke({"question": RESET})
    calls = hashing_embedder.calls
    assert chain.invoke({"question": "  how do i RESET my password?"}) == "answer 0"
    assert hashing_embedder.calls == calls
    assert cache.stats.exact_hits == 1


def test_two_models_never_share_an_answer(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    first = chain_for(FakeListChatModel(responses=["from model A"]))
    second = chain_for(FakeListChatModel(responses=["from model B"]))
    assert first.invoke({"question": RESET}) == "from model A"
    assert second.invoke({"question": RESET}) == "from model B"
    assert first.invoke({"question": RESET_PARAPHRASE}) == "from model A"
    assert second.invoke({"question": RESET_PARAPHRASE}) == "from model B"


def test_model_parameters_are_part_of_the_key(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    model = FakeListChatModel(responses=answers(4))
    assert chain_for(model.bind(max_tokens=10)).invoke({"question": RESET}) == "answer 0"
    assert chain_for(model.bind(max_tokens=20)).invoke({"question": RESET}) == "answer 1"
    assert chain_for(model.bind(max_tokens=10)).invoke({"question": RESET}) == "answer 0"


def test_system_prompt_difference_misses(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    model = FakeListChatModel(responses=answers(4))
    assert chain_for(model, "Answer in English.").invoke({"question": RESET}) == "answer 0"
    assert chain_for(model, "Answer in French.").invoke({"question": RESET}) == "answer 1"
    english = chain_for(model, "Answer in English.")
    assert english.invoke({"question": RESET_PARAPHRASE}) == "answer 0"


def test_bound_tools_difference_misses(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    model = FakeListChatModel(responses=answers(4))
    weather = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    search = {"type": "function", "function": {"name": "search", "parameters": {}}}
    assert chain_for(model.bind(tools=[weather])).invoke({"question": RESET}) == "answer 0"
    assert chain_for(model.bind(tools=[search])).invoke({"question": RESET}) == "answer 1"
    assert chain_for(model.bind(tools=[weather])).invoke({"question": RESET}) == "answer 0"


def test_conversation_prefix_is_exact_and_only_last_question_is_embedded(
    cache: SemanticCache,
) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    model = FakeListChatModel(responses=answers(4))
    history_a = [HumanMessage("I use the mobile app."), AIMessage("Noted.")]
    history_b = [HumanMessage("I use the website."), AIMessage("Noted.")]
    assert model.invoke([*history_a, HumanMessage(RESET)]).content == "answer 0"
    assert model.invoke([*history_b, HumanMessage(RESET)]).content == "answer 1"
    assert model.invoke([*history_a, HumanMessage(RESET_PARAPHRASE)]).content == "answer 0"
    key_a = split_prompt(_dump([*history_a, HumanMessage(RESET)]), "m")
    key_b = split_prompt(_dump([*history_b, HumanMessage(RESET)]), "m")
    assert key_a.question == key_b.question == RESET
    assert key_a.context_digest != key_b.context_digest


def test_contextvar_scope_isolates_tenants_with_global_cache(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=answers(4)))
    with cache_scope("tenant-a"):
        assert chain.invoke({"question": RESET}) == "answer 0"
    with cache_scope("tenant-b"):
        assert chain.invoke({"question": RESET}) == "answer 1"
    with cache_scope("tenant-a"):
        assert chain.invoke({"question": RESET_PARAPHRASE}) == "answer 0"
    assert chain.invoke({"question": RESET}) == "answer 2"  # no scope: the default one


def test_runnable_config_metadata_scope(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=answers(4)))
    a = {"metadata": {"cache_scope": "tenant-a"}}
    b = {"metadata": {"cache_scope": "tenant-b"}}
    assert chain.invoke({"question": RESET}, config=a) == "answer 0"
    assert chain.invoke({"question": RESET}, config=b) == "answer 1"
    assert chain.invoke({"question": RESET_PARAPHRASE}, config=a) == "answer 0"


def test_explicit_scope_wins_and_invalidate_drops_only_that_scope(cache: SemanticCache) -> None:
    tenant_a = SemanticLLMCache(cache, scope="tenant-a")
    set_llm_cache(tenant_a)
    model = FakeListChatModel(responses=answers(6))
    with cache_scope("ignored"):
        assert chain_for(model).invoke({"question": RESET}) == "answer 0"
    assert chain_for(model, "Other system prompt").invoke({"question": RESET}) == "answer 1"
    set_llm_cache(SemanticLLMCache(cache, scope="tenant-b"))
    assert chain_for(model).invoke({"question": RESET}) == "answer 2"
    assert tenant_a.invalidate("tenant-a") == 2
    assert len(cache) == 1
    set_llm_cache(tenant_a)
    assert chain_for(model).invoke({"question": RESET}) == "answer 3"


def test_tool_call_answers_are_not_cached_by_default(cache: SemanticCache) -> None:
    tool_call = AIMessage(content="", tool_calls=[TOOL_CALL])
    set_llm_cache(SemanticLLMCache(cache))
    model = GenericFakeChatModel(messages=iter([tool_call, AIMessage("plain")]))
    assert model.invoke(RESET).tool_calls
    assert model.invoke(RESET).content == "plain"
    assert cache.stats.sets == 1


def test_tool_call_answers_cached_when_asked(cache: SemanticCache) -> None:
    tool_call = AIMessage(content="", tool_calls=[TOOL_CALL])
    set_llm_cache(SemanticLLMCache(cache, cache_tool_calls=True))
    model = GenericFakeChatModel(messages=iter([tool_call, AIMessage("plain")]))
    model.invoke(RESET)
    replayed = model.invoke(RESET_PARAPHRASE)
    assert replayed.tool_calls == tool_call.tool_calls


def test_high_temperature_is_not_cached(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache, max_temperature=0.5))
    model = FakeListChatModel(responses=answers(4))
    hot = chain_for(model.bind(temperature=1.0))
    assert hot.invoke({"question": RESET}) == "answer 0"
    assert hot.invoke({"question": RESET}) == "answer 1"
    assert cache.stats.sets == 0
    cold = chain_for(model.bind(temperature=0.2))
    assert cold.invoke({"question": RESET}) == "answer 2"
    assert cold.invoke({"question": RESET}) == "answer 2"


def test_temperature_is_read_from_both_llm_string_forms() -> None:
    assert temperature_of("[('stop', None), ('temperature', 0.9)]") == 0.9
    assert temperature_of('{"kwargs": {"temperature": 1.5}}---[(\'stop\', None)]') == 1.5
    assert temperature_of('{"kwargs": {"temperature": 0.1}}---[(\'temperature\', 2)]') == 2.0
    assert temperature_of("[('stop', None)]") is None


def test_generations_replay_exactly(cache: SemanticCache) -> None:
    original = AIMessage(
        content="Open Settings, then Security.",
        additional_kwargs={"refusal": None, "extra": [1, 2]},
        response_metadata={"model_name": "fake-1", "finish_reason": "stop"},
    )
    set_llm_cache(SemanticLLMCache(cache))
    model = GenericFakeChatModel(messages=iter([original, AIMessage("second")]))
    first = model.invoke(RESET)
    replay = model.invoke(RESET_PARAPHRASE)
    assert replay.content == first.content == original.content
    assert replay.additional_kwargs == original.additional_kwargs
    assert replay.response_metadata["model_name"] == "fake-1"
    assert type(replay) is AIMessage


async def test_async_lookup_and_update(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=answers(4)))
    assert await chain.ainvoke({"question": RESET}) == "answer 0"
    assert await chain.ainvoke({"question": RESET_PARAPHRASE}) == "answer 0"
    with cache_scope("tenant-x"):
        assert await chain.ainvoke({"question": RESET}) == "answer 1"
    assert await chain.ainvoke({"question": DELETE}) == "answer 2"
    assert cache.stats.hits == 1


def test_batch_goes_through_the_cache(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=["stored"] + answers(5)))
    chain.invoke({"question": RESET})
    out = chain.batch([{"question": RESET_PARAPHRASE}, {"question": "Please reset my password"}])
    assert out == ["stored", "stored"]


async def test_abatch_with_scopes(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=["stored"] + ["fresh"] * 5))
    with cache_scope("tenant-a"):
        await chain.ainvoke({"question": RESET})
        assert await chain.abatch([{"question": RESET_PARAPHRASE}] * 3) == ["stored"] * 3
    with cache_scope("tenant-b"):
        assert await chain.abatch([{"question": RESET_PARAPHRASE}]) == ["fresh"]


def test_text_llm_prompt_is_embedded_whole(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    llm = FakeListLLM(responses=answers(3))
    assert llm.invoke(RESET) == "answer 0"
    assert llm.invoke(RESET_PARAPHRASE) == "answer 0"
    assert llm.invoke(DELETE) == "answer 1"


def test_clear_empties_the_cache(cache: SemanticCache) -> None:
    llm_cache = SemanticLLMCache(cache)
    set_llm_cache(llm_cache)
    chain = chain_for(FakeListChatModel(responses=answers(3)))
    chain.invoke({"question": RESET})
    llm_cache.clear()
    assert len(cache) == 0
    assert chain.invoke({"question": RESET}) == "answer 1"


def test_index_version_is_exact_key_and_metadata(cache: SemanticCache) -> None:
    model = FakeListChatModel(responses=answers(3))
    set_llm_cache(SemanticLLMCache(cache, index_version="v1"))
    assert chain_for(model).invoke({"question": RESET}) == "answer 0"
    set_llm_cache(SemanticLLMCache(cache, index_version="v2"))
    assert chain_for(model).invoke({"question": RESET}) == "answer 1"
    hit = cache.store.delete_where(None, "index_version", ["v1"])
    assert hit == 1


def test_rejects_a_non_semantic_cache() -> None:
    with pytest.raises(TypeError, match="SemanticCache"):
        SemanticLLMCache({})  # type: ignore[arg-type]


def test_system_message_only_prompt_is_keyed_on_its_text(cache: SemanticCache) -> None:
    set_llm_cache(SemanticLLMCache(cache))
    model = FakeListChatModel(responses=answers(3))
    assert model.invoke([SystemMessage("Summarise the policy.")]).content == "answer 0"
    assert model.invoke([SystemMessage("Summarise the policy.")]).content == "answer 0"
    assert model.invoke([SystemMessage("Translate the policy.")]).content == "answer 1"


def _dump(messages: list) -> str:  # type: ignore[type-arg]
    from langchain_core.load import dumps

    return dumps(messages)


def test_require_scope_fails_closed_with_global_cache(hashing_embedder: HashingEmbedder) -> None:
    cache = SemanticCache(hashing_embedder, threshold=0.8, require_scope=True)
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=answers(4)))
    assert chain.invoke({"question": RESET}) == "answer 0"
    assert chain.invoke({"question": RESET}) == "answer 1"
    assert len(cache) == 0
    with cache_scope("tenant-a"):
        assert chain.invoke({"question": RESET}) == "answer 2"
        assert chain.invoke({"question": RESET_PARAPHRASE}) == "answer 2"


def test_shadow_mode_never_serves_and_judges_the_answer_text(
    hashing_embedder: HashingEmbedder,
) -> None:
    cache = SemanticCache(
        hashing_embedder, threshold=0.8, mode="shadow", judge=ExactMatchJudge()
    )
    set_llm_cache(SemanticLLMCache(cache))
    chain = chain_for(FakeListChatModel(responses=["same", "same", "different"]))
    assert chain.invoke({"question": RESET}) == "same"
    assert chain.invoke({"question": RESET_PARAPHRASE}) == "same"
    assert chain.invoke({"question": "Please reset my password"}) == "different"
    report = cache.shadow_report()
    assert cache.stats.hits == 0
    assert (report.would_hits, report.judged, report.correct) == (2, 2, 1)


def test_non_text_blocks_of_the_question_must_match_exactly() -> None:
    def prompt(url: str) -> str:
        image = {"type": "image_url", "image_url": {"url": url}}
        return _dump([HumanMessage(content=[{"type": "text", "text": RESET}, image])])

    a = split_prompt(prompt("a.png"), "m")
    a_again = split_prompt(prompt("a.png"), "m")
    b = split_prompt(prompt("b.png"), "m")
    assert a.question == b.question == RESET
    assert a.context_digest == a_again.context_digest != b.context_digest
    assert split_prompt(RESET, "m").question == RESET  # a text LLM prompt is embedded whole


class CallRecordingStore(InMemoryStore):
    """An in-process store that records which of its methods ran (sync or async twin)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def invalidate(self, scope: str) -> int:
        self.calls.append("invalidate")
        return super().invalidate(scope)

    async def ainvalidate(self, scope: str) -> int:
        self.calls.append("ainvalidate")
        return super().invalidate(scope)


async def test_aclear_of_a_scope_uses_the_stores_async_path(
    hashing_embedder: HashingEmbedder,
) -> None:
    store = CallRecordingStore()
    cache = SemanticCache(hashing_embedder, threshold=0.8, store=store)
    llm_cache = SemanticLLMCache(cache)
    set_llm_cache(llm_cache)
    model = FakeListChatModel(responses=answers(4))
    with cache_scope("tenant-a"):
        assert await chain_for(model).ainvoke({"question": RESET}) == "answer 0"
        assert await chain_for(model, "Other prompt").ainvoke({"question": RESET}) == "answer 1"
    with cache_scope("tenant-b"):
        assert await chain_for(model).ainvoke({"question": RESET}) == "answer 2"
    await llm_cache.aclear(scope="tenant-a")
    assert store.calls == ["ainvalidate"]  # never the blocking twin on the event loop
    assert len(cache) == 1 and cache.stats.invalidated == 2
    with cache_scope("tenant-b"):
        assert await chain_for(model).ainvoke({"question": RESET}) == "answer 2"
    assert await llm_cache.ainvalidate("tenant-b") == 1
