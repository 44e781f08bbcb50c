"""BM25Index: ranking, tokenizer, incremental add, save/load (plain and mmap), bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_deletes_leave_rows_out_without_rebuilding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted document is never returned (filtered searches too, after save and load),
    and deletes in a loop build no new matrix until a quarter of the rows are gone."""
    import bm25s

    from rag_optimize.index import bm25 as bm25_module

    builds = []
    original = bm25s.BM25.index

    def counting(self: object, *args: object, **kwargs: object) -> object:
        builds.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bm25s.BM25, "index", counting)
    n = 4_200
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    texts = [f"{words[i % 5]} {words[(i // 5) % 5]} doc{i} shared" for i in range(n)]
    index = BM25Index()
    index.add(texts, ids=[f"d{i}" for i in range(n)], metadatas=[{"m": i % 2} for i in range(n)])
    index.search("shared", 1)
    builds.clear()
    due = max(bm25_module.COMPACT_MIN, int(np.ceil(bm25_module.COMPACT_FRACTION * n)))
    gone: set[str] = set()
    for i in range(0, 2 * (due - 1), 2):  # every other document, a search after each
        index.delete([f"d{i}"])
        gone.add(f"d{i}")
        hits = index.search(f"doc{i} shared", 5)
        assert hits and not {h.id for h in hits} & gone
    assert builds == []  # not one rebuild
    allowed = np.asarray([m["m"] == 0 for m in index.documents.metadatas])
    filtered = index.search("alpha shared doc0 doc10", 50, allowed=allowed)
    assert filtered and all(int(h.id[1:]) % 2 == 0 and h.id not in gone for h in filtered)
    # each filtered hit scores as the document itself does (rows mapped past the deletes)
    query = "alpha shared doc0 doc10"
    scores = index.score(query, [h.id for h in filtered])
    assert np.allclose([h.score for h in filtered], scores, rtol=1e-5)
    rest = [i for i, keep in zip(index.documents.ids, allowed, strict=True) if keep]
    assert min(h.score for h in filtered) >= np.sort(index.score(query, rest))[::-1][49] - 1e-6
    assert {h.id for h in index.search("doc0 doc2 doc4 doc1", 10)} == {"d1"}
    index.delete([f"d{2 * (due - 1)}"])  # the delete that reaches a quarter
    index.search("shared", 1)
    assert builds == [1]
    assert {h.id for h in index.search("doc0 doc2 doc4 doc1", 10)} == {"d1"}
    index.delete(["d1"])
    index.save(tmp_path / "b")  # a save writes the live documents only
    loaded = BM25Index.load(tmp_path / "b", mmap=True)
    assert loaded.documents.ids == index.documents.ids and "d1" not in loaded.documents
    assert not loaded.search("doc0 doc2 doc4 doc1", 10)
    loaded.delete(["d3"])
    assert "d3" not in {h.id for h in loaded.search("doc3 shared", 10)}
