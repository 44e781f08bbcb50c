"""The verifier: a veto on candidates whose query differs in a detail the embedding blurs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_rag_optimize import SemanticLLMCache
from rag_optimize import HashingEmbedder, MismatchVerifier, SemanticCache
from rag_optimize.cache.decision.judges import ExactMatchJudge
from rag_optimize.cache.decision.verifiers import signature
from rag_optimize.errors import InvalidTypeError

WC_1998 = "who won the football world cup in 1998"
WC_2002 = "who won the football world cup in 2002"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("how many people live in berlin", "can you tell me how many people live in berlin?"),
        ("when did elvis presley die", "When did Elvis Presley pass away?"),
        ("population of 1,000 towns", "population of 1000 towns"),
        ("the two largest lakes", "the 2 largest lakes"),
        ("why isn't my build passing", "why is my build not passing"),
        ("why isn\u2019t my build passing", "why is my build not passing"),
        ("which country has the most lakes", "what country has the most lakes"),
        ("how do I reset my password", "how can I reset my password"),
        ("capital of france", "what is the capital of france"),  # no question word: any kind
    ],
)
def test_paraphrases_pass(a: str, b: str) -> None:
    assert MismatchVerifier()(a, b)
    assert MismatchVerifier()(b, a)


@pytest.mark.parametrize(
    ("a", "b", "detail"),
    [
        (WC_1998, WC_2002, "numbers"),
        ("top 3 films of the year", "top 5 films of the year", "numbers"),
        ("three weeks notice", "four weeks notice", "numbers"),
        ("is ibuprofen safe in pregnancy", "is ibuprofen not safe in pregnancy", "negation"),
        ("can I return shoes", "can't I return shoes", "negation"),
        ("when did elvis presley die", "where did elvis presley die", "question_kind"),
        ("how many people live in berlin", "how often do people move to berlin", "question_kind"),
        ("how old is the eiffel tower", "how tall is the eiffel tower", "question_kind"),
        ("who founded the company", "why founded the company", "question_kind"),
    ],
)
def test_detail_mismatches_are_vetoed(a: str, b: str, detail: str) -> None:
    verifier = MismatchVerifier()
    assert verifier.mismatch(a, b) == detail
    assert not verifier(b, a)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_any_text_is_its_own_match_and_the_veto_is_symmetric(a: str, b: str) -> None:
    verifier = MismatchVerifier()
    assert verifier(a, a)
    assert verifier(a, b) == verifier(b, a)


def test_each_check_can_be_switched_off() -> None:
    assert MismatchVerifier(numbers=False)(WC_1998, WC_2002)
    assert MismatchVerifier(negation=False)("is it safe", "is it not safe")
    assert MismatchVerifier(question_kind=False)("when did he die", "where did he die")


def test_signature_reads_numbers_negation_and_question_kind() -> None:
    sig = signature("How many of the 1,500 players didn't score twice in 2019?")
    assert sig.numbers == frozenset({"1500", "2019", "2"})  # "twice" is 2
    assert sig.negated
    assert sig.question == "count"  # the intent of "how many" (also "what number of")


@pytest.fixture
def loose_cache() -> SemanticCache:
    # a low threshold so the hashing embedder's near-duplicates are candidates
    return SemanticCache(HashingEmbedder(dim=256), threshold=0.5, verifier=MismatchVerifier())


def test_cache_vetoes_a_near_duplicate_with_another_number(loose_cache: SemanticCache) -> None:
    loose_cache.set(WC_1998, "France")
    assert loose_cache.get(WC_2002) is None
    stats = loose_cache.stats
    assert (stats.hits, stats.misses, stats.verifier_rejections) == (0, 1, 1)


def test_without_a_verifier_the_near_duplicate_is_served() -> None:
    cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5, verifier=None)
    cache.set(WC_1998, "France")
    hit = cache.get(WC_2002)
    assert hit is not None and hit.response == "France"
    assert cache.stats.verifier_rejections == 0


def test_a_veto_moves_on_to_the_next_candidate(loose_cache: SemanticCache) -> None:
    loose_cache.set(WC_1998, "France")
    loose_cache.set(WC_2002, "Brazil")
    hit = loose_cache.get("who was the winner of the football world cup in 2002")
    assert hit is not None
    assert (hit.response, hit.matched_query) == ("Brazil", WC_2002)
    assert hit.metadata["cache_decision"]["verifier"] == "MismatchVerifier"
    exact = loose_cache.get(WC_2002)
    assert exact is not None and exact.metadata["cache_decision"]["verifier"] is None


async def test_async_lookup_uses_the_verifier(loose_cache: SemanticCache) -> None:
    await loose_cache.aset(WC_1998, "France")
    assert await loose_cache.aget(WC_2002) is None
    assert loose_cache.stats.verifier_rejections == 1


def test_a_custom_verifier_sees_both_queries() -> None:
    seen: list[tuple[str, str]] = []

    def verifier(query: str, cached_query: str) -> bool:
        seen.append((query, cached_query))
        return False

    cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5, verifier=verifier)
    cache.set("what is the refund policy", "30 days")
    assert cache.get("what is the refund policy for shoes") is None
    assert seen == [("what is the refund policy for shoes", "what is the refund policy")]
    assert cache.get("  What is the REFUND policy") is not None  # exact repeats skip it


def test_a_failing_verifier_makes_a_miss_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    def verifier(query: str, cached_query: str) -> bool:
        raise RuntimeError("cross-encoder server down")

    cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5, verifier=verifier)
    cache.set("what is the refund policy", "30 days")
    assert cache.get("what is the refund policy for shoes") is None
    assert cache.get("what is the refund policy for hats") is None
    assert (cache.stats.misses, cache.stats.verifier_errors) == (2, 2)
    warnings = [r for r in caplog.records if "cache verifier failing" in r.getMessage()]
    assert len(warnings) == 1  # once per incident, not per call


def test_a_verifier_that_is_not_callable_is_refused() -> None:
    # the project's error, still a TypeError for code that caught the built-in one
    with pytest.raises(InvalidTypeError, match="verifier must be a callable"):
        SemanticCache(HashingEmbedder(dim=64), verifier="strict")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="empty sequence"):
        SemanticCache(HashingEmbedder(dim=64), verifier=[])


def test_the_error_budget_learns_only_from_verified_candidates() -> None:
    cache = SemanticCache(
        HashingEmbedder(dim=256), threshold=0.99, max_error_rate=0.02, min_threshold=0.5,
        judge=ExactMatchJudge(),
    )
    cache.set(WC_1998, "France")
    budget = cache.error_budget
    assert budget is not None
    # vetoed nearest entry: not probed, so no outcome
    assert cache.get(WC_2002) is None
    cache.set(WC_2002, "Brazil")
    assert len(budget) == 0
    # an allowed nearest entry below the threshold is probed: one outcome, judged right
    assert cache.get("who won the world cup in 1998") is None
    cache.set("who won the world cup in 1998", "France")
    assert len(budget) == 1


def test_llm_cache_never_serves_another_years_answer() -> None:
    before = get_llm_cache()
    try:
        cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5)
        set_llm_cache(SemanticLLMCache(cache))
        prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
        chain = prompt | FakeListChatModel(responses=["France", "Brazil"]) | StrOutputParser()
        assert chain.invoke({"question": WC_1998}) == "France"
        assert chain.invoke({"question": WC_2002}) == "Brazil"
        assert chain.invoke({"question": WC_2002 + "?"}) == "Brazil"
        assert cache.stats.verifier_rejections == 1
    finally:
        set_llm_cache(before)
