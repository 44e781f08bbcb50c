"""ContextBudget: token packing in order, near-duplicate dropping, token counters."""

from __future__ import annotations

import pytest

from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError, InvalidTypeError
from rag_optimize.retrieval import ContextBudget, RetrievedDocument, estimate_tokens


def words(n: int, word: str = "alpha") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def test_word_estimate() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("one two three") == 4  # ceil(3 * 1.3)
    assert estimate_tokens("Hello, world!") == 3 + 2  # 2 words -> 3, 2 punctuation marks


def test_packs_in_order_and_skips_what_does_not_fit() -> None:
    budget = ContextBudget(10, token_counter=lambda text: len(text.split()))
    items = [words(4, "a"), words(8, "b"), words(3, "c"), words(3, "d")]
    packed = budget.pack(items)
    assert packed.items == [items[0], items[2], items[3]]  # b is too long, later ones fit
    assert packed.tokens == 10 and packed.over_budget == 1 and packed.duplicates == 0


def test_drops_near_duplicates_keeping_the_first(hashing_embedder: HashingEmbedder) -> None:
    docs = [
        RetrievedDocument("1", "Paris is the capital of France.", 0.9),
        RetrievedDocument("2", "Paris is the capital of France!", 0.8),
        RetrievedDocument("3", "Bananas grow in tropical climates.", 0.7),
    ]
    packed = ContextBudget(1000, embedder=hashing_embedder, token_counter="words").pack(docs)
    assert [d.id for d in packed.items] == ["1", "3"] and packed.duplicates == 1


def test_precomputed_vectors_and_text_accessor() -> None:
    items = [{"body": "x y"}, {"body": "x y z"}, {"body": "q"}]
    vectors = [[1.0, 0.0], [0.99, 0.05], [0.0, 1.0]]
    budget = ContextBudget(100, duplicate_threshold=0.98, token_counter="words")
    packed = budget.pack(items, text=lambda item: item["body"], vectors=vectors)
    assert packed.items == [items[0], items[2]]


def test_auto_counter_counts_something_sensible() -> None:
    budget = ContextBudget(50)  # tiktoken if its encoding loads offline, else the estimate
    assert 2 <= budget.count_tokens("hello wonderful world") <= 6


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="max_tokens"):
        ContextBudget(0)
    with pytest.raises(ConfigurationError, match="duplicate_threshold"):
        ContextBudget(10, duplicate_threshold=1.5)
    with pytest.raises(ConfigurationError, match="token_counter"):
        ContextBudget(10, token_counter="bpe")
    with pytest.raises(ConfigurationError, match="2 items but 1 vectors"):
        ContextBudget(10).pack(["a", "b"], vectors=[[1.0]])


def test_an_item_without_text_is_refused_by_name() -> None:
    with pytest.raises(InvalidTypeError, match="cannot read text from int"):
        ContextBudget(max_tokens=50).pack([3])
