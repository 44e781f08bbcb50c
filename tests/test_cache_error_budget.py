"""Error budget: the certificate, per-entry floors, feedback, and learning on a known stream."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag_optimize import CacheHit, ConfigurationError, HashingEmbedder, SemanticCache
from rag_optimize.cache.decision.error_budget import (
    EVIDENCE_KEY,
    EntryEvidence,
    ErrorBudget,
    binomial_upper_bound,
    certify,
    outcomes_needed,
)
from rag_optimize.cache.decision.judges import ExactMatchJudge
from rag_optimize.cache.decision.verifiers import MismatchVerifier


class VectorBook:
    """An embedder whose vectors the test chooses: text -> fixed vector."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.vectors: dict[str, np.ndarray] = {}

    def add(self, text: str, vector: np.ndarray) -> str:
        self.vectors[text] = vector / np.linalg.norm(vector)
        return text

    def embed_query(self, text: str) -> list[float]:
        return [float(x) for x in self.vectors[text]]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


def _at_similarity(rng: np.random.Generator, base: np.ndarray, sim: float) -> np.ndarray:
    """A unit vector with cosine ``sim`` to the unit vector ``base``."""
    noise = np.asarray(rng.standard_normal(int(base.shape[0])), dtype=np.float64)
    noise -= noise.dot(base) * base
    noise /= np.linalg.norm(noise)
    return sim * base + math.sqrt(1 - sim * sim) * noise


def test_clopper_pearson_values() -> None:
    assert binomial_upper_bound(0, 10, 0.05) == pytest.approx(1 - 0.05**0.1)
    # scipy.stats.beta.ppf(0.95, 2, 148) = 0.0314408...
    assert binomial_upper_bound(1, 149, 0.05) == pytest.approx(0.0314408, abs=1e-6)
    assert binomial_upper_bound(5, 5, 0.05) == 1.0
    assert binomial_upper_bound(0, 0, 0.05) == 1.0
    assert outcomes_needed(0.02, 0.95) == 149
    assert outcomes_needed(0.02, 0.95, errors=1) == 236
    # the n it returns is the first that passes: P(Binomial(n, 2%) <= 1) <= 5%
    assert binomial_upper_bound(1, 236, 0.05) <= 0.02 < binomial_upper_bound(1, 235, 0.05)


def test_no_evidence_uses_the_starting_threshold() -> None:
    budget = ErrorBudget(0.02, start_threshold=0.9)
    cert = budget.certificate()
    assert (cert.threshold, cert.certified, cert.outcomes) == (0.9, False, 0)


def test_certificate_lowers_the_threshold_only_with_enough_clean_evidence() -> None:
    budget = ErrorBudget(0.02, start_threshold=0.9)
    for i in range(235):
        budget.record(0.80 + 0.001 * (i % 100), True)
    # testing starts where one wrong outcome could pass: 236 outcomes at 2% and 95%
    assert budget.threshold == 0.9
    assert budget.certificate().outcomes_needed == outcomes_needed(0.02, 0.95, errors=1) == 236
    budget.record(0.85, True)
    cert = budget.certificate()
    assert cert.certified and cert.threshold <= 0.80 + 1e-9 and cert.upper_bound <= 0.02


def test_many_unrelated_low_similarity_outcomes_do_not_block_certification() -> None:
    # diverse traffic: most probes find only an unrelated question (cosine 0.5-0.8, a wrong
    # answer); where the test starts must not depend on how many of those there are
    budget = ErrorBudget(0.02, start_threshold=0.97)
    for i in range(3000):
        budget.record(0.5 + 0.3 * i / 3000, False)
    for i in range(300):
        budget.record(0.95 + 0.05 * i / 300, True)
    cert = budget.certificate()
    assert cert.certified and cert.errors == 0
    # down to the first wrong outcomes and no further (nothing lies between 0.8 and 0.95)
    assert 0.8 - 1e-9 <= cert.threshold <= 0.95 + 1e-9


def test_one_stray_wrong_outcome_at_the_top_does_not_block_certification() -> None:
    budget = ErrorBudget(0.02, start_threshold=0.95)
    budget.record(0.999, False)  # the most similar outcome of all was wrong
    for i in range(400):
        budget.record(0.90 + 0.0002 * i, True)
    cert = budget.certificate()
    assert cert.certified and cert.errors == 1 and cert.upper_bound <= 0.02
    assert cert.threshold <= 0.9 + 1e-9


def test_certificate_stops_at_the_first_failing_threshold() -> None:
    rng = np.random.default_rng(1)
    sims = rng.uniform(0.6, 1.0, 4000)
    # wrong answers only below 0.8, and there half of them: the true error rate among hits
    # at threshold t is 0 for t >= 0.8 and grows quickly below it
    correct = (sims >= 0.8) | (rng.uniform(size=sims.size) < 0.5)
    cert = certify(
        sims, correct, max_error_rate=0.02, confidence=0.95, start_threshold=0.95,
        min_threshold=0.5,
    )
    assert cert.certified
    assert cert.upper_bound <= 0.02
    chosen = sims >= cert.threshold
    true_rate = np.mean(np.where(sims[chosen] >= 0.8, 0.0, 0.5))
    assert true_rate <= 0.02
    assert 0.78 <= cert.threshold <= 0.8


def test_a_wrong_answer_above_the_start_closes_the_uncertified_cache() -> None:
    budget = ErrorBudget(0.02, start_threshold=0.8)
    budget.record(0.7, False)  # below the start: no contradiction
    for _ in range(5):
        budget.record(0.95, True)
    assert budget.threshold == 0.8
    budget.record(0.85, False)
    cert = budget.certificate()
    assert not cert.certified
    assert cert.threshold > 1.0  # no similarity reaches it: exact repeats only


def test_budget_options_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_error_rate"):
        SemanticCache(HashingEmbedder(), max_error_rate=0.0)
    with pytest.raises(ConfigurationError, match="max_error_rate"):
        SemanticCache(HashingEmbedder(), max_error_rate=1.5)
    with pytest.raises(ConfigurationError, match="confidence"):
        SemanticCache(HashingEmbedder(), max_error_rate=0.02, confidence=1.0)
    with pytest.raises(ValueError, match="finite"):
        ErrorBudget(0.02, start_threshold=0.9).record(math.nan, True)


def test_state_round_trips() -> None:
    a = ErrorBudget(0.05, start_threshold=0.9)
    for i in range(200):
        a.record(0.7 + i * 0.001, i % 50 != 0)
    b = ErrorBudget(0.05, start_threshold=0.9)
    b.load(a.state())
    assert b.certificate() == a.certificate()


def test_entry_evidence_is_bounded_json() -> None:
    evidence = EntryEvidence()
    for i in range(40):
        evidence = evidence.add(0.5 + i * 0.01, correct=False)
    evidence = evidence.add(0.99, correct=True)
    data = evidence.to_json()
    assert data["correct"] == 1 and data["wrong"] == 40
    assert len(data["wrong_similarities"]) == 16
    assert evidence.floor == pytest.approx(0.89 + 1e-4)
    assert EntryEvidence.from_metadata({EVIDENCE_KEY: data}) == evidence
    assert EntryEvidence.from_metadata({EVIDENCE_KEY: "garbage"}) == EntryEvidence()


def _pair_cache(**options: object) -> tuple[SemanticCache, VectorBook]:
    book = VectorBook()
    rng = np.random.default_rng(0)
    base = rng.standard_normal(book.dim)
    base /= np.linalg.norm(base)
    book.add("base", base)
    book.add("close", _at_similarity(rng, base, 0.9))
    book.add("closer", _at_similarity(rng, base, 0.95))
    # labels, not questions: the rule stage only (token alignment would veto "close"/"base")
    options.setdefault("verifier", MismatchVerifier())
    cache = SemanticCache(book, threshold=0.85, judge=ExactMatchJudge(), **options)  # type: ignore[arg-type]
    cache.set("base", "answer")
    return cache, book


def test_wrong_feedback_raises_the_entry_threshold_in_budget_mode() -> None:
    cache, _ = _pair_cache(max_error_rate=0.02)
    budget = cache.error_budget
    assert budget is not None
    for i in range(300):  # enough clean evidence to certify a threshold of about 0.86
        budget.record(0.86 + 0.0004 * i, True)
    assert budget.certificate().certified and budget.threshold <= 0.86
    hit = cache.get("close")
    assert hit is not None
    assert cache.feedback(hit, False) == "updated"
    assert budget.certificate().certified  # one wrong in 301 still fits a 2% budget ...
    assert cache.get("close") is None  # ... but this entry's floor is now above 0.9
    hit = cache.get("closer")
    assert hit is not None  # ... and a closer query is still served
    decision = hit.metadata["cache_decision"]
    assert decision["mode"] == "error_budget"
    assert decision["evidence"] == {"correct": 0, "wrong": 1}
    assert decision["entry_threshold"] == pytest.approx(0.9 + 1e-4, abs=1e-5)
    assert decision["threshold"] >= decision["entry_threshold"]
    assert EVIDENCE_KEY not in hit.metadata
    assert cache.feedback(hit, True) == "updated"
    assert cache.get("closer").metadata["cache_decision"]["evidence"] == {  # type: ignore[union-attr]
        "correct": 1,
        "wrong": 1,
    }
    stats = cache.stats
    assert (stats.feedback_wrong, stats.feedback_correct, stats.tombstones) == (1, 1, 0)


def test_wrong_feedback_tombstones_in_fixed_mode() -> None:
    cache, _ = _pair_cache()
    hit = cache.get("close")
    assert hit is not None and hit.metadata["cache_decision"]["mode"] == "fixed"
    assert cache.feedback(hit, True) == "updated"
    assert cache.feedback(hit, False) == "deleted"
    assert cache.get("closer") is None and len(cache) == 0
    assert cache.feedback(hit, False) == "missing"
    assert cache.stats.tombstones == 1


def test_wrong_exact_hit_is_deleted_even_in_budget_mode() -> None:
    cache, _ = _pair_cache(max_error_rate=0.02)
    hit = cache.get("base")
    assert hit is not None and hit.exact
    assert cache.feedback(hit, False) == "deleted"
    assert len(cache) == 0
    assert len(cache.error_budget or []) == 0  # an exact repeat says nothing about similarity


async def test_async_feedback() -> None:
    cache, _ = _pair_cache()
    hit = await cache.aget("close")
    assert hit is not None
    assert await cache.afeedback(hit, False) == "deleted"
    assert await cache.aget("close") is None


def test_feedback_input_checked() -> None:
    cache, _ = _pair_cache()
    with pytest.raises(TypeError, match="CacheHit"):
        cache.feedback("hit", True)  # type: ignore[arg-type]
    hit = cache.get("close")
    assert hit is not None
    with pytest.raises(TypeError, match="bool"):
        cache.feedback(hit, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="entry_id"):
        cache.feedback(CacheHit("x", 0.9, "q", 0.0, {}), True)


def _stream(seed: int, n_bases: int, per_base: int) -> tuple[VectorBook, list[str], dict[str, str]]:
    """Base questions, then paraphrases (same answer, cosine 0.84-0.99 to their base) and
    near-misses (a different right answer, cosine 0.70-0.92), shuffled. Entries differ in
    how close their near-misses come, which a single global threshold cannot express."""
    rng = np.random.default_rng(seed)
    book = VectorBook()
    truth: dict[str, str] = {}
    bases: list[str] = []
    followers: list[str] = []
    for b in range(n_bases):
        base = rng.standard_normal(book.dim)
        base /= np.linalg.norm(base)
        bases.append(book.add(f"b{b}", base))
        truth[f"b{b}"] = f"answer {b}"
        near_top = rng.uniform(0.80, 0.92)  # how close this entry's near-misses come
        for j in range(per_base):
            if rng.uniform() < 0.7:
                text = book.add(f"b{b} p{j}", _at_similarity(rng, base, rng.uniform(0.84, 0.99)))
                truth[text] = f"answer {b}"
            else:
                sim = rng.uniform(0.70, near_top)
                text = book.add(f"b{b} n{j}", _at_similarity(rng, base, sim))
                truth[text] = f"other answer {b}.{j}"
            followers.append(text)
    order = rng.permutation(len(followers))
    return book, bases + [followers[i] for i in order], truth


def _run(
    cache: SemanticCache, queries: list[str], truth: dict[str, str], *, feedback: bool
) -> tuple[int, int, int]:
    hits = wrong = 0
    for query in queries:
        hit = cache.get(query)
        if hit is None:
            cache.set(query, truth[query])
            continue
        hits += 1
        ok = hit.response == truth[query]
        wrong += not ok
        if feedback:
            cache.feedback(hit, ok)
    return len(queries), hits, wrong


def test_learning_on_a_known_stream_stays_within_budget_and_beats_a_safe_fixed_threshold() -> None:
    book, queries, truth = _stream(seed=7, n_bases=150, per_base=20)
    warm, held_out = queries[: len(queries) // 2], queries[len(queries) // 2 :]
    # the query texts are vector labels ("b12 p3"), not questions: no text verifier
    budget = SemanticCache(
        book, threshold=0.95, max_error_rate=0.02, judge=ExactMatchJudge(), max_entries=None,
        verifier=None,
    )
    fixed = SemanticCache(book, threshold=0.95, max_entries=None, verifier=None)
    _run(budget, warm, truth, feedback=True)
    _run(fixed, warm, truth, feedback=False)
    cert = budget.error_budget.certificate()  # type: ignore[union-attr]
    assert cert.certified and cert.threshold < 0.95
    budget.learn_from_misses = False  # evaluate the learned state on unseen queries
    n, hits, wrong = _run(budget, held_out, truth, feedback=False)
    _, fixed_hits, fixed_wrong = _run(fixed, held_out, truth, feedback=False)
    assert hits > 0 and wrong / hits <= 0.02
    assert fixed_wrong == 0
    assert hits > 1.2 * fixed_hits  # learned thresholds serve clearly more, within budget


def test_uncertified_cache_fails_closed_after_a_wrong_answer() -> None:
    cache, _ = _pair_cache(max_error_rate=0.02)
    hit = cache.get("close")
    assert hit is not None
    assert hit.metadata["cache_decision"]["cache_threshold"]["certified"] is False
    # 2% at 95% needs 236 outcomes above a threshold, at most one wrong: the log says how far
    assert hit.metadata["cache_decision"]["cache_threshold"]["outcomes_needed"] == 236
    cache.feedback(hit, False)
    assert cache.get("closer") is None  # semantic hits off until a threshold is certified
    exact = cache.get("base")
    assert exact is not None and exact.exact  # exact repeats are still served
