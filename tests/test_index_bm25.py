"""BM25Index: ranking, tokenizer, incremental add, save/load (plain and mmap), bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index import BM25Index, Tokenizer

DOCS = [
    "The cat sat on the mat.",
    "Dogs bark loudly at night.",
    "Cats are independent animals that hunt mice.",
    "A guide to growing tomatoes in the garden.",
]


def build() -> BM25Index:
    index = BM25Index()
    index.add(DOCS, ids=["cat", "dog", "cats", "tomato"], metadatas=[{"n": i} for i in range(4)])
    return index


def test_ranks_matching_documents_first_and_skips_non_matching() -> None:
    hits = build().search("cats hunting mice", k=4)
    assert hits[0].id == "cats"
    assert {h.id for h in hits} <= {"cat", "cats"}  # stemming: cat/cats/hunting match
    assert all(h.score > 0 for h in hits)
    assert hits[0].text == DOCS[2] and hits[0].metadata == {"n": 2}


def test_tokenizer_lowercases_drops_stopwords_and_stems() -> None:
    assert Tokenizer(stemmer="english")("The Cats are RUNNING") == ["cat", "run"]
    assert Tokenizer(stopwords=None, stemmer=None)("The Cats") == ["the", "cats"]
    assert Tokenizer(stopwords=["foo"], stemmer=None)("foo bar") == ["bar"]


def test_query_with_only_unknown_words_returns_nothing() -> None:
    assert build().search("zebra quantum", k=3) == []


def test_add_after_search_rebuilds_index() -> None:
    index = build()
    assert index.search("zebra", k=3) == []
    index.add(["A zebra crossing."], ids=["zebra"])
    assert [h.id for h in index.search("zebra", k=3)] == ["zebra"]
    assert len(index) == 5


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path: Path, mmap: bool) -> None:
    index = build()
    before = index.search("cat garden tomatoes", k=4)
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25", mmap=mmap)
    after = loaded.search("cat garden tomatoes", k=4)
    assert [(h.id, h.text, dict(h.metadata)) for h in after] == [
        (h.id, h.text, dict(h.metadata)) for h in before
    ]
    assert [h.score for h in after] == pytest.approx([h.score for h in before])
    loaded.add(["tomatoes and more tomatoes"], ids=["more"])
    assert loaded.search("tomatoes", k=1)[0].id == "more"
    assert len(loaded) == 5


def test_bad_input() -> None:
    index = build()
    with pytest.raises(InvalidInputError, match="empty"):
        index.search("   ", k=3)
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        index.search("cat", k=0)
    with pytest.raises(InvalidInputError, match="empty"):
        BM25Index().search("cat", k=3)
    with pytest.raises(InvalidInputError, match="duplicate document id"):
        index.add(["again"], ids=["cat"])
    with pytest.raises(InvalidInputError, match="not one string"):
        index.add("one string")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="stemmer"):
        BM25Index(stemmer="klingon")
    with pytest.raises(ConfigurationError, match="method"):
        BM25Index(method="tfidf")


def test_load_rejects_a_directory_without_an_index(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="holds no BM25Index"):
        BM25Index.load(tmp_path)
