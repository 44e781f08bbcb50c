"""Shadow mode: never serves, judges what it would have served, reports, feeds the budget."""

from __future__ import annotations

import pytest

from rag_optimize import HashingEmbedder, SemanticCache
from rag_optimize.cache.decision.judges import EmbeddingJudge, ExactMatchJudge, answer_text
from rag_optimize.cache.decision.verifiers import MismatchVerifier


def _shadow(**options: object) -> SemanticCache:
    # the rule stage only: these tests need the near-miss "... for gifts" to be a would-be hit
    options.setdefault("verifier", MismatchVerifier())
    return SemanticCache(
        HashingEmbedder(), threshold=0.6, mode="shadow", judge=ExactMatchJudge(), **options  # type: ignore[arg-type]
    )


def test_shadow_never_serves_even_exact_repeats() -> None:
    cache = _shadow()
    cache.set("how do I reset my password", "Settings > Security")
    for query in ("how do I reset my password", "please reset my password quickly", "billing"):
        assert cache.get(query) is None
    stats = cache.stats
    assert stats.hits == 0 and stats.misses == 3
    report = cache.shadow_report()
    assert (report.lookups, report.would_hits) == (3, 2)
    assert report.would_hit_rate == pytest.approx(2 / 3)


def test_shadow_judges_would_be_hits_against_the_real_answer() -> None:
    cache = _shadow()
    cache.set("how do I reset my password", "Settings > Security")
    cache.set("what is the refund policy", "30 days")
    assert cache.get("please reset my password quickly") is None
    cache.set("please reset my password quickly", "settings >  security")  # right
    assert cache.get("what is the refund policy for gifts") is None
    cache.set("what is the refund policy for gifts", "Gifts cannot be refunded")  # wrong
    assert cache.get("weather in Paris tomorrow", scope="empty") is None
    cache.set("weather in Paris tomorrow", "Sunny", scope="empty")  # nothing stored: no verdict
    report = cache.shadow_report()
    assert (report.lookups, report.would_hits, report.answered) == (3, 2, 3)
    assert (report.judged, report.correct) == (2, 1)
    assert report.precision == 0.5 and report.false_hit_rate == 0.5
    strict = report.at(0.999)
    assert strict["hits"] == 0 and strict["precision"] is None
    loose = report.at(0.0)
    assert loose["hits"] == 2 and loose["precision"] == 0.5
    assert report.as_dict()["would_hit_rate"] == pytest.approx(2 / 3)


def test_shadow_outcomes_feed_the_error_budget() -> None:
    cache = _shadow(max_error_rate=0.05)
    cache.set("how do I reset my password", "A")
    cache.get("please reset my password quickly")
    cache.set("please reset my password quickly", "B")
    budget = cache.error_budget
    assert budget is not None and len(budget) == 1
    assert budget.state()["outcomes"][0][1] is False


def test_live_probes_learn_from_misses_in_budget_mode() -> None:
    cache = SemanticCache(
        HashingEmbedder(), threshold=0.99, max_error_rate=0.05, judge=ExactMatchJudge()
    )
    cache.set("how do I reset my password", "A")
    assert cache.get("please reset my password quickly") is None  # below 0.99: a miss ...
    cache.set("please reset my password quickly", "A")  # ... whose nearest answer was right
    budget = cache.error_budget
    assert budget is not None and len(budget) == 1
    assert budget.state()["outcomes"][0][1] is True


def test_failing_judge_is_counted_not_raised() -> None:
    def judge(query: str, cached: object, fresh: object) -> bool:
        raise RuntimeError("judge model down")

    cache = SemanticCache(HashingEmbedder(), threshold=0.6, mode="shadow", judge=judge)
    cache.set("how do I reset my password", "A")
    cache.get("please reset my password quickly")
    assert cache.set("please reset my password quickly", "A") is True
    assert cache.stats.judge_errors == 1
    report = cache.shadow_report()
    assert report.judge_errors == 1 and report.judged == 0 and report.answered == 1


async def test_async_shadow_with_callable_and_coroutine_judges() -> None:
    calls: list[str] = []

    async def coro_judge(query: str, cached: object, fresh: object) -> bool:
        calls.append(query)
        return cached == fresh

    cache = SemanticCache(HashingEmbedder(), threshold=0.6, mode="shadow", judge=coro_judge)
    await cache.aset("how do I reset my password", "A")
    assert await cache.aget("please reset my password quickly") is None
    await cache.aset("please reset my password quickly", "A")
    assert calls == ["please reset my password quickly"]
    assert cache.shadow_report().precision == 1.0

    cache2 = SemanticCache(
        HashingEmbedder(), threshold=0.6, mode="shadow", judge=lambda q, a, b: False
    )
    await cache2.aset("how do I reset my password", "A")
    assert await cache2.aget("please reset my password quickly") is None
    await cache2.aset("please reset my password quickly", "A")
    assert cache2.shadow_report().precision == 0.0

    cache.set("reset my password now", "A")
    assert cache.get("please reset my password now") is None
    cache.set("please reset my password now", "A")  # an async judge cannot judge a sync set
    assert cache.stats.judge_errors == 1


async def test_embedding_judge_default() -> None:
    judge = EmbeddingJudge(HashingEmbedder(), min_similarity=0.8)
    assert judge("q", "Open Settings then Security", "open settings  then security")
    assert judge("q", "Open the Settings page, then Security", "Open Settings page then Security")
    assert not judge("q", "Paris", "Berlin")
    assert await judge.ajudge("q", {"text": "Paris"}, "paris")
    assert answer_text({"a": 1}) == '{"a": 1}'
    cache = SemanticCache(HashingEmbedder(), mode="shadow")
    assert isinstance(cache.judge, EmbeddingJudge)


def test_mode_and_judge_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        SemanticCache(HashingEmbedder(), mode="dry-run")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="judge"):
        SemanticCache(HashingEmbedder(), judge="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_similarity"):
        EmbeddingJudge(HashingEmbedder(), min_similarity=0)


def test_switching_a_live_cache_to_shadow_and_back_at_runtime() -> None:
    cache = SemanticCache(HashingEmbedder(), threshold=0.6, judge=ExactMatchJudge())
    cache.set("how do I reset my password", "A")
    assert cache.get("how do I reset my password") is not None
    cache.mode = "shadow"  # e.g. flipped by an operator after a bad answer was reported
    assert cache.get("how do I reset my password") is None  # observes, never serves
    cache.set("how do I reset my password", "B")  # the model now answers differently
    report = cache.shadow_report()
    assert report.would_hit_rate == 1.0 and report.precision == 0.0
    cache.mode = "live"
    hit = cache.get("how do I reset my password")
    assert hit is not None and hit.response == "B"
    with pytest.raises(ValueError, match="mode"):
        cache.mode = "dry-run"  # type: ignore[assignment]
    with pytest.raises(TypeError, match="judge"):
        cache.judge = "exact"  # type: ignore[assignment]
    assert cache.mode == "live" and isinstance(cache.judge, ExactMatchJudge)
