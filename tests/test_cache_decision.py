"""The decision pipeline: each signal on its own, the word lists, composition, explanations."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_optimize import ConfigurationError, HashingEmbedder, SemanticCache
from rag_optimize.cache.decision.alignment import AlignmentSignal, alignment_score
from rag_optimize.cache.decision.lexicon import default_lexicon, load_lexicon, words_of
from rag_optimize.cache.decision.pipeline import (
    DEFAULT_SIGNALS,
    RULE_SIGNAL_NAMES,
    DecisionPipeline,
    default_pipeline,
)
from rag_optimize.cache.decision.signals import analyse
from rag_optimize.cache.decision.verifiers import AllOf, check_verifier

RULES = DecisionPipeline(RULE_SIGNAL_NAMES)


def vetoed_by(a: str, b: str, pipeline: DecisionPipeline = RULES) -> str | None:
    found = pipeline.veto(a, b)
    reverse = pipeline.veto(b, a)
    assert (found is None) == (reverse is None)  # every signal is symmetric
    return None if found is None else found[0]


@pytest.mark.parametrize(
    ("a", "b", "signal"),
    [
        ("Can I return an item after 30 days?", "Can I return an item after 60 days?", "numbers"),
        ("Do you have a two bedroom flat?", "Do you have a three bedroom flat?", "numbers"),
        ("Is the app available on Android?", "Isn't the app available on Android?", "negation"),
        ("Is the deposit refundable?", "Is the deposit non-refundable?", "negation"),
        ("When was the tower built?", "Where was the tower built?", "question_intent"),
        ("How long does shipping take?", "How much does shipping cost?", "question_intent"),
        ("Does the plan increase the limit?", "Does the plan decrease the limit?", "polarity"),
        ("The drug promotes growth.", "The drug prevents growth.", "polarity"),
        ("X is a tumour suppressor.", "X is a tumour enhancer.", "polarity"),
        ("How do I turn on dark mode?", "How do I turn off dark mode?", "polarity"),
        ("How do I lock the door?", "How do I unlock the door?", "polarity"),
        ("Which plan is the cheapest?", "Which plan is the most expensive?", "polarity"),
        ("How do I log in?", "How do I log out?", "polarity"),
        ("Opening hours on Sunday?", "Opening hours on Saturday?", "dates"),
        ("Is there a sale in May?", "Is there a sale in June?", "dates"),
        ("Can I book for tonight?", "Can I book for tomorrow?", "dates"),
        ("What is the weight in kilograms?", "What is the weight in pounds?", "units"),
        ("Is it under 5 km?", "Is it under 5 mi?", "units"),
    ],
)
def test_each_near_miss_is_vetoed_by_its_signal(a: str, b: str, signal: str) -> None:
    assert vetoed_by(a, b) == signal


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What time does the store open?", "When does the store open?"),
        ("How do I reset my password?", "What is the way to change my password?"),
        ("How do I export my data?", "Is there a way to export my data?"),
        ("Why was my card declined?", "What is the reason my card was declined?"),
        ("How much does the premium plan cost?", "What is the price of the premium plan?"),
        ("Which browsers are supported?", "What browsers are supported?"),
        ("How many seats are there?", "What number of seats are there?"),
        ("May I bring a guest?", "Can I bring a guest?"),  # "May" is not the month here
        ("Is the museum free for children?", "Do children get into the museum for free?"),
        ("population of 1,000 towns", "population of 1000 towns"),
        ("capital of france", "what is the capital of france"),
    ],
)
def test_paraphrases_pass_every_rule(a: str, b: str) -> None:
    assert vetoed_by(a, b) is None


def test_question_forms_map_to_intents() -> None:
    assert analyse("What time does the store open?").intent == "time"
    assert analyse("When does it open?").intent == "time"
    assert analyse("What is the way to change my password?").intent == "method"
    assert analyse("How strong is steel?").intent == "how strong"  # a form not listed
    assert analyse("Is it open").intent is None


def test_inflections_and_phrases_of_opposites_are_found() -> None:
    assert ("increase",) in analyse("It increased sharply").polar
    assert ("stop",) in analyse("the bus stopped").polar
    assert ("log", "in") in analyse("log in to the site").polar
    assert analyse("open on Sat").dates == frozenset({"saturday"})
    assert analyse("I sat down").dates == frozenset()


def test_words_of_splits_contractions_and_symbols() -> None:
    assert words_of("Isn't it 32% off?") == ("is", "not", "it", "32", "%", "off")


def test_the_packaged_lists_load_and_are_symmetric() -> None:
    lexicon = default_lexicon()
    assert len(lexicon.opposites) > 200 and len(lexicon.question_forms) > 100
    for word, opposites in lexicon.opposites.items():
        for other in opposites:
            assert word in lexicon.opposites[other]


def test_a_malformed_lexicon_file_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "opposites.tsv"
    bad.write_text("# comment\nincrease\tdecrease\nno tab on this line\n")
    with pytest.raises(ConfigurationError, match=r"opposites\.tsv, line 3"):
        load_lexicon(opposites=bad)
    forms = tmp_path / "forms.tsv"
    forms.write_text("time\twhen\nplace\twhen\n")
    with pytest.raises(ConfigurationError, match="two intents"):
        load_lexicon(question_forms=forms)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_lexicon(units=tmp_path / "missing.tsv")


def test_a_custom_lexicon_changes_the_decision(tmp_path: Path) -> None:
    mine = tmp_path / "opposites.tsv"
    mine.write_text("tea\tcoffee\n")
    pipeline = DecisionPipeline(["polarity"], lexicon=load_lexicon(opposites=mine))
    assert not pipeline("Do you serve tea?", "Do you serve coffee?")
    assert pipeline("Does it increase?", "Does it decrease?")  # not in this list


def test_an_unknown_signal_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown signal 'sentiment'"):
        DecisionPipeline(["numbers", "sentiment"])
    with pytest.raises(ConfigurationError, match="listed twice"):
        DecisionPipeline(["numbers", "numbers"])
    with pytest.raises(ConfigurationError, match="alignment threshold"):
        DecisionPipeline(["alignment"], alignment_threshold=2.0)


def test_explain_names_every_vote() -> None:
    detail = RULES.explain("Is it open on Sunday?", "Is it open on Monday?")
    assert detail["decision"] == "veto" and detail["vetoed_by"] == "dates"
    votes = {v["signal"]: v["vote"] for v in detail["signals"]}
    assert votes == {name: ("veto" if name == "dates" else "pass") for name in RULE_SIGNAL_NAMES}
    assert "sunday" in next(v["reason"] for v in detail["signals"] if v["signal"] == "dates")
    assert RULES.explain("a b", "a b")["decision"] == "serve"


class _Failing:
    name = "flaky"

    def check(self, a: object, b: object) -> str | None:
        raise RuntimeError("model unavailable")


def test_a_signal_that_raises_vetoes_in_the_cache_and_is_reported() -> None:
    pipeline = DecisionPipeline(["numbers", _Failing()])
    detail = pipeline.explain("a", "b")
    assert detail["vetoed_by"] == "flaky" and detail["signals"][1]["vote"] == "error"
    cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5, verifier=pipeline)
    cache.set("what is the refund policy", "30 days")
    assert cache.get("what is the refund policy please") is None
    assert cache.stats.verifier_errors == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_rules_accept_a_text_against_itself_and_are_symmetric(a: str, b: str) -> None:
    assert RULES(a, a)
    assert RULES(a, b) == RULES(b, a)


def test_a_sequence_of_verifiers_vetoes_on_the_first_veto() -> None:
    asked: list[str] = []

    def allow(q: str, c: str) -> bool:
        asked.append("allow")
        return True

    def deny(q: str, c: str) -> bool:
        asked.append("deny")
        return False

    combined = check_verifier([allow, deny, allow])
    assert isinstance(combined, AllOf)
    assert not combined("q", "c") and asked == ["allow", "deny"]
    assert combined.explain("q", "c")["vetoed_by"] == "deny"
    assert check_verifier([allow]) is allow
    with pytest.raises(TypeError, match=r"verifier\[1\]"):
        check_verifier([allow, "strict"])
    cache = SemanticCache(HashingEmbedder(dim=256), threshold=0.5, verifier=[RULES, deny])
    cache.set("what is the refund policy", "30 days")
    assert cache.get("what is the refund policy please") is None
    assert cache.stats.verifier_rejections == 1


class _Words:
    """Word vectors given by hand (a stand-in token source's output)."""

    def __init__(self, words: tuple[str, ...], vectors: list[list[float]]) -> None:
        self.words = words
        self.vectors = [[x / sum(y * y for y in v) ** 0.5 for x in v] for v in vectors]


def test_a_content_word_is_matched_only_by_a_content_word() -> None:
    """Contextual vectors make a word close to its neighbours, function words included:
    "penalty for *paying* taxes" / "penalty for *filing* taxes" matched "paying" to "for"
    (0.63, above the threshold) and was served. A content word's counterpart must be a
    content word; with none in the other text, nothing stands for it."""
    fw = default_lexicon().function_words
    assert "for" in fw and "paying" not in fw and "filing" not in fw
    # each verb is 0.7 from "for" (its neighbour), 0.49 from the other verb
    a = _Words(("penalty", "for", "paying"), [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0.7, 0.714, 0]])
    b = _Words(("penalty", "for", "filing"), [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0.7, 0, 0.714]])
    found = alignment_score(a, b, fw)
    assert found.match not in fw and {found.word, found.match} == {"paying", "filing"}
    assert found.score < 0.6  # below the default threshold: vetoed
    only_function = _Words(("for", "the"), [[0, 1, 0, 0], [0, 0.9, 0.1, 0]])
    assert alignment_score(a, only_function, fw).score < 0  # nothing can stand for "penalty"


# --------------------------------------------------------------- token alignment (real model)
@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    from rag_optimize.embedding.local import LocalEmbedder

    return LocalEmbedder()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How long does shipping take to Canada?", "How long does shipping take to Mexico?"),
        ("Is the basic plan free?", "Is the premium plan free?"),
        ("How do I connect my account to Slack?", "How do I connect my account to Zoom?"),
    ],
)
def test_alignment_vetoes_a_content_word_without_counterpart(model, a: str, b: str) -> None:  # type: ignore[no-untyped-def]
    pipeline = DecisionPipeline(DEFAULT_SIGNALS, token_source=model)
    assert RULES(a, b)  # no rule sees it
    assert pipeline.veto(a, b) is not None and pipeline.veto(a, b)[0] == "alignment"  # type: ignore[index]
    assert pipeline.veto(b, a) is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What time does the store open?", "When does the store open?"),
        ("How can I cancel my subscription?", "How do I cancel my subscription?"),
        ("Who founded the company?", "Who is the founder of the company?"),
        # synonyms (data/synonyms.tsv) in a question-form paraphrase
        ("How do I reset my password?", "What is the way to change my password?"),
        ("How do I book a table?", "How can I reserve a table?"),
        ("How do I delete my account?", "How can I remove my account?"),
    ],
)
def test_alignment_passes_paraphrases(model, a: str, b: str) -> None:  # type: ignore[no-untyped-def]
    pipeline = DecisionPipeline(DEFAULT_SIGNALS, token_source=model)
    assert pipeline(a, b), pipeline.explain(a, b)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("a", "b", "signal"),
    [
        (
            "Does the premium plan increase the storage limit?",
            "Does the premium plan decrease the storage limit?",
            "polarity",
        ),
        (
            "What are the opening hours on Saturday?",
            "What are the opening hours on Sunday?",
            "dates",
        ),
        ("How do I reset my password?", "How do I change my username?", "alignment"),
    ],
)
def test_synonyms_do_not_let_near_misses_through(model, a: str, b: str, signal: str) -> None:  # type: ignore[no-untyped-def]
    pipeline = DecisionPipeline(DEFAULT_SIGNALS, token_source=model)
    assert vetoed_by(a, b, pipeline) == signal


@pytest.mark.slow
def test_word_vectors_come_from_the_lookup_forward_pass(model) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    text = "Where is the nearest pharmacy?"
    vector = model.embed_query(text)
    tokens = model.token_vectors(text)
    assert tokens.words == ("where", "is", "the", "nearest", "pharmacy", "?")
    assert tokens.vectors.shape == (6, 384)
    assert np.allclose(np.linalg.norm(tokens.vectors, axis=1), 1.0, atol=1e-5)
    pooled, words = model.encode_with_tokens([text])
    assert np.allclose(pooled[0], vector, atol=1e-5)
    assert words[0].words == tokens.words
    score = alignment_score(tokens, tokens, default_lexicon().function_words)
    assert score.score == 1.0 and score.word is None


def test_the_default_pipeline_has_alignment_when_the_model_is_installed() -> None:
    assert default_pipeline().names == DEFAULT_SIGNALS
    assert AlignmentSignal().name == "alignment"
