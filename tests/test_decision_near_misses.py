"""Hand-made near-misses and paraphrases for the signals added for opposite claims and question
forms: opposite groups, comparatives, "less X", opposite prefixes, counted mentions, the order
of a relation's sides, and synonyms in the token alignment. The sentences are written for
these tests (general English, not taken from any benchmark file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_optimize import ConfigurationError
from rag_optimize.cache.decision.lexicon import default_lexicon, load_lexicon
from rag_optimize.cache.decision.pipeline import (
    DEFAULT_SIGNALS,
    RULE_SIGNAL_NAMES,
    DecisionPipeline,
)
from rag_optimize.cache.decision.signals import analyse, swapped_relation

RULES = DecisionPipeline(RULE_SIGNAL_NAMES)


def vetoed_by(a: str, b: str, pipeline: DecisionPipeline = RULES) -> str | None:
    found, reverse = pipeline.veto(a, b), pipeline.veto(b, a)
    assert (found is None) == (reverse is None)  # every signal is symmetric
    return None if found is None else found[0]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # verbs of one sense on each side of a group ("raise" was missing against "decrease")
        ("Do higher taxes decrease spending?", "Do higher taxes raise spending?"),
        ("Does the update boost battery life?", "Does the update cut battery life?"),
        (
            "Will the new policy diminish waiting times?",
            "Will the new policy heighten waiting times?",
        ),
        ("The hormone stimulates bone growth.", "The hormone represses bone growth."),
        (
            "The compound is an activator of the pathway.",
            "The compound is an inhibitor of the pathway.",
        ),
        ("Stress worsens eczema.", "Stress improves eczema."),
        # degree and frequency
        ("The change had a slight effect on sales.", "The change had a dramatic effect on sales."),
        ("Side effects are rare with this drug.", "Side effects are frequent with this drug."),
        ("It mildly affects sleep.", "It severely affects sleep."),
        # comparatives and superlatives from their base form
        ("Is the blue suitcase heavier?", "Is the blue suitcase lighter?"),
        ("Which city has the greatest population?", "Which city has the smallest population?"),
        ("Are electric cars costlier to run?", "Are electric cars cheaper to run?"),
        ("Do trains run faster at night?", "Do trains run slower at night?"),
        ("Which route is the earliest?", "Which route is the latest?"),
        # -ily / -ier adverbs and adjectives
        ("Can the lid be removed easily?", "Is the lid difficult to remove?"),
        # "less X" against "more X" and against "X-er"
        ("Is the train more expensive than the bus?", "Is the train less expensive than the bus?"),
        ("Are older drivers likelier to crash?", "Are older drivers less likely to crash?"),
        # prefixes that make opposites
        ("How do I upload photos?", "How do I download photos?"),
        ("Were the staff overpaid?", "Were the staff underpaid?"),
        ("Does salt cause hypertension?", "Does salt cause hypotension?"),
        ("Is the form valid?", "Is the form invalid?"),
        ("Is the pain worse preoperatively?", "Is the pain worse postoperatively?"),
        # time limits: "within" a period is the opposite of "after" / "beyond" it
        ("Can I return an item after 30 days?", "Can I return an item within 30 days?"),
        ("Is a refund possible beyond the deadline?", "Is a refund possible within the deadline?"),
        # counted mentions: the same words, one of them turned round
        (
            "Upregulation of the receptor causes downregulation of the enzyme.",
            "Upregulation of the receptor causes upregulation of the enzyme.",
        ),
    ],
)
def test_opposites_veto(a: str, b: str) -> None:
    assert vetoed_by(a, b) == "polarity"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "Does aspirin inhibit platelet aggregation?",
            "Does platelet aggregation inhibit aspirin?",
        ),
        ("Is Lyon bigger than Nice?", "Is Nice bigger than Lyon?"),
        ("How long is the flight from Oslo to Rome?", "How long is the flight from Rome to Oslo?"),
        ("How do I convert dollars to euros?", "How do I convert euros to dollars?"),
        (
            "Does poverty predict poor health in children?",
            "Does poor health predict poverty in children?",
        ),
        (
            "Owls hunt more mice than hawks in winter.",
            "Hawks hunt more mice than owls in winter.",
        ),
        (
            "The father of the bride paid for the wedding.",
            "The bride of the father paid for the wedding.",
        ),
    ],
)
def test_swapped_sides_of_a_relation_veto(a: str, b: str) -> None:
    assert vetoed_by(a, b) == "order"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # a passive on one side only turns the sides round again
        ("Does smoking cause cancer?", "Is cancer caused by smoking?"),
        ("Did Edison invent the phonograph?", "Was the phonograph invented by Edison?"),
        ("Does the rent include heating?", "Is heating included in the rent?"),
        ('"The gloves are off," said the official.', 'The official said: "The gloves are off."'),
        # symmetric relations
        ("Is obesity associated with depression?", "Is depression associated with obesity?"),
        (
            "What is the difference between a virus and a bacterium?",
            "What is the difference between a bacterium and a virus?",
        ),
        (
            "Do coffee and tea interact with iron absorption?",
            "Do tea and coffee interact with iron absorption?",
        ),
        # one word moved to the front is not a swap
        ("Can I pay with a credit card online?", "Can I pay online with a credit card?"),
        (
            "Where do I pick up my rental car at the airport?",
            "At the airport, where do I pick up my rental car?",
        ),
        ("Is the museum free for children?", "Do children get into the museum for free?"),
        ("How long is the flight to Rome from Oslo?", "How long is the flight from Oslo to Rome?"),
        # "cheaper" and "less expensive" say the same
        ("Is the hotel cheaper in May?", "Is the hotel less expensive in May?"),
        ("Are older drivers likelier to crash?", "Are older drivers more likely to crash?"),
        ("Does the dose increase or decrease the effect?", "Does the dose increase the effect?"),
    ],
)
def test_paraphrases_pass_the_new_rules(a: str, b: str) -> None:
    assert vetoed_by(a, b) is None, RULES.explain(a, b)


def test_the_order_signal_names_the_relation_and_the_swapped_words() -> None:
    found = swapped_relation(
        analyse("Does aspirin inhibit platelets?"),
        analyse("Do platelets inhibit aspirin?"),
        default_lexicon(),
    )
    assert found == ("inhibit", "aspirin", "platelets")
    reason = RULES.explain("Is Lyon bigger than Nice?", "Is Nice bigger than Lyon?")
    vote = next(v for v in reason["signals"] if v["signal"] == "order")
    assert vote["vote"] == "veto" and "lyon" in vote["reason"] and "nice" in vote["reason"]


def test_mentions_carry_their_sign_and_count() -> None:
    found = analyse("less expensive and more expensive, less risky").polar_counts
    assert found[(("expensive",), -1)] == 1 and found[(("expensive",), 1)] == 1
    assert found[(("less",), 1)] == 1  # consumed before "expensive" (listed), not "risky"
    assert analyse("it was heavier").polar == frozenset({("heavy",)})
    assert ("easy",) in analyse("done easily").polar


def test_an_opposite_group_pairs_every_word_with_every_opposite(tmp_path: Path) -> None:
    mine = tmp_path / "opposites.tsv"
    mine.write_text("tea,green tea\tcoffee,espresso\n")
    lexicon = load_lexicon(opposites=mine)
    assert lexicon.opposites[("green", "tea")] == {("coffee",), ("espresso",)}
    assert ("tea",) not in lexicon.opposites[("green", "tea")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("a,b\tb,c\n")
    with pytest.raises(ConfigurationError, match="its own opposite"):
        load_lexicon(opposites=bad)
    empty = tmp_path / "empty.tsv"
    empty.write_text("a,\tb\n")
    with pytest.raises(ConfigurationError, match=r"empty\.tsv, line 1"):
        load_lexicon(opposites=empty)


def test_malformed_new_lists_raise_configuration_errors(tmp_path: Path) -> None:
    prefixes = tmp_path / "prefixes.tsv"
    prefixes.write_text("up\tdown\nup\tup\n")
    with pytest.raises(ConfigurationError, match=r"prefixes\.tsv, line 2"):
        load_lexicon(opposite_prefixes=prefixes)
    synonyms = tmp_path / "synonyms.tsv"
    synonyms.write_text("change\n")
    with pytest.raises(ConfigurationError, match=r"synonyms\.tsv, line 1"):
        load_lexicon(synonyms=synonyms)
    synonyms.write_text("increase,decrease\n")
    with pytest.raises(ConfigurationError, match="'decrease'.*one synonym group|opposite"):
        load_lexicon(synonyms=synonyms)
    order = tmp_path / "order.tsv"
    order.write_text("reversible\tand\n")
    with pytest.raises(ConfigurationError, match="symmetric' or 'directional"):
        load_lexicon(order_words=order)


def test_the_packaged_synonyms_hold_no_opposites() -> None:
    lexicon = default_lexicon()
    for word, group in lexicon.synonyms.items():
        assert word in group
        assert not {o[0] for o in lexicon.opposites.get((word,), ())} & group


# ------------------------------------------------------------- synonyms in the alignment
# (with the real model: tests/test_cache_decision.py)
def test_a_custom_synonym_list_changes_the_alignment(tmp_path: Path) -> None:
    from rag_optimize.cache.decision.alignment import alignment_score

    class Tokens:
        def __init__(self, words: tuple[str, ...], rows: list[int]) -> None:
            import numpy as np

            self.words = words
            self.vectors = np.eye(8, dtype=np.float32)[rows]  # orthogonal: no two alike

    a, b = Tokens(("reset", "password"), [0, 1]), Tokens(("change", "password"), [2, 1])
    assert alignment_score(a, b, frozenset()).score < 0.5
    mine = tmp_path / "synonyms.tsv"
    mine.write_text("reset,change\n")
    groups = load_lexicon(synonyms=mine).synonyms
    assert alignment_score(a, b, frozenset(), synonyms=groups).score == 1.0


# ------------------------------------------------------------- the pipeline's stage-1 threshold
def test_the_cache_takes_the_pipelines_candidate_threshold() -> None:
    from rag_optimize import HashingEmbedder, SemanticCache
    from rag_optimize.cache import DEFAULT_THRESHOLD
    from rag_optimize.cache.decision.pipeline import DEFAULT_CANDIDATE_THRESHOLD

    embedder = HashingEmbedder(dim=64)
    assert SemanticCache(embedder).threshold == DEFAULT_CANDIDATE_THRESHOLD == 0.8
    assert SemanticCache(embedder, verifier=None).threshold == DEFAULT_THRESHOLD == 0.9
    assert SemanticCache(embedder, verifier=RULES).threshold == 0.9  # rules only: none
    assert SemanticCache(embedder, threshold=0.95).threshold == 0.95
    tuned = DecisionPipeline(DEFAULT_SIGNALS, candidate_threshold=0.85)
    assert SemanticCache(embedder, verifier=tuned).threshold == 0.85
    with pytest.raises(ConfigurationError, match="candidate_threshold"):
        DecisionPipeline(DEFAULT_SIGNALS, candidate_threshold=1.5)


def test_compound_number_words_are_one_number() -> None:
    assert analyse("Fifty-seven senators signed").numbers == frozenset({"57"})
    assert vetoed_by("Fifty-seven senators signed.", "57 senators signed.") is None
    assert vetoed_by("Is it twenty one days?", "Is it twenty two days?") == "numbers"
