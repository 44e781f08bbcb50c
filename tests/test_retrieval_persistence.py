"""HybridRetriever: save/load (plain and mmap), add/delete/update by id, damaged saves."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.retrieval import HybridRetriever

sys.path.insert(0, str(Path(__file__).parent))  # tests use --import-mode=importlib
from retrieval_corpus import TEXTS  # noqa: E402

IDS = [f"d{i}" for i in range(len(TEXTS))]
QUERIES = ["capital of France", "energy in plants", "highest mountain", "tower"]


class CountingEmbedder(HashingEmbedder):
    """Hashing embedder that counts document embeddings (a load must not embed any)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(dim=128)
        self.documents = 0
        self.fail = fail

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.fail:
            raise RuntimeError("model crashed")
        self.documents += len(texts)
        return super().embed_documents(texts)


def build(embedder: HashingEmbedder | None = None, **options: object) -> HybridRetriever:
    return HybridRetriever.from_texts(
        TEXTS,
        embedder or CountingEmbedder(),
        ids=IDS,
        metadatas=[{"n": i, "kind": "geo" if i in (0, 1, 2, 5) else "bio"} for i in range(6)],
        **options,  # type: ignore[arg-type]
    )


def both_branches(retriever: HybridRetriever, query: str) -> tuple[list[str], list[str]]:
    assert retriever.sparse is not None and retriever.dense is not None
    assert retriever.embedder is not None
    sparse = [h.id for h in retriever.sparse.search(query, 10)]
    dense = [h.id for h in retriever.dense.search(retriever.embedder.embed_query(query), 10)]
    return sparse, dense


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("quantization", [None, "int8"])
def test_save_load_round_trip_without_re_embedding(
    tmp_path: Path, mmap: bool, quantization: str | None
) -> None:
    original = build(
        quantization=quantization, fusion="relative_score", k=3, weights={"bm25": 1, "dense": 2}
    )
    original.save(tmp_path / "hybrid")
    embedder = CountingEmbedder()
    loaded = HybridRetriever.load(tmp_path / "hybrid", embedder, mmap=mmap)
    assert embedder.documents == 0
    assert (loaded.fusion, loaded.k, loaded.weights) == ("relative_score", 3, original.weights)
    for query in QUERIES:
        assert loaded.retrieve(query).ids == original.retrieve(query).ids
        assert (
            loaded.retrieve(query, filter={"kind": "bio"}).ids
            == original.retrieve(query, filter={"kind": "bio"}).ids
        )
    assert HybridRetriever.load(tmp_path / "hybrid", embedder, k=1).k == 1  # options override
    loaded.add_texts(["Rome is the capital of Italy."], ids=["rome"], metadatas=[{"n": 9}])
    assert loaded.retrieve("capital of Italy").ids[0] == "rome"


def test_save_replaces_an_earlier_save(tmp_path: Path) -> None:
    first = build()
    first.save(tmp_path / "h")
    first.delete(["d0"])
    first.save(tmp_path / "h")
    loaded = HybridRetriever.load(tmp_path / "h", CountingEmbedder())
    assert "d0" not in loaded.retrieve("capital of France", k=6).ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h"]  # no staging copies left


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_delete_and_update_keep_both_branches_consistent(mode: str) -> None:
    retriever = build(k=6)

    def run(query: str) -> list[str]:
        if mode == "sync":
            return retriever.retrieve(query).ids
        return asyncio.run(retriever.aretrieve(query)).ids

    assert retriever.delete(["d0", "d2"]) == 2
    for query in QUERIES:
        sparse, dense = both_branches(retriever, query)
        assert not {"d0", "d2"} & (set(sparse) | set(dense) | set(run(query)))
    assert len(retriever.sparse or ()) == len(retriever.dense or ()) == 4
    retriever.update(["d1"], ["Madrid is the capital of Spain."], [{"n": 1, "kind": "city"}])
    assert run("capital of Spain")[0] == "d1"
    sparse, dense = both_branches(retriever, "capital of Spain")
    assert sparse[0] == dense[0] == "d1"
    assert retriever.retrieve("tower", filter={"kind": "city"}).ids == ["d1"]
    assert retriever.sparse is not None
    assert "d1" not in [h.id for h in retriever.sparse.search("Eiffel lattice tower", 5)]


def test_failed_updates_change_nothing() -> None:
    embedder = CountingEmbedder()
    retriever = build(embedder)
    before = [retriever.retrieve(q).ids for q in QUERIES]
    with pytest.raises(InvalidInputError, match="unknown document id"):
        retriever.delete(["d1", "nope"])
    with pytest.raises(InvalidInputError, match="unknown document id"):
        retriever.update(["nope"], ["text"])
    embedder.fail = True
    with pytest.raises(RuntimeError, match="model crashed"):
        retriever.update(["d1"], ["Madrid is the capital of Spain."])
    assert [retriever.retrieve(q).ids for q in QUERIES] == before
    assert len(retriever.sparse or ()) == len(retriever.dense or ()) == len(TEXTS)


def corrupt_cases() -> dict[str, object]:
    def truncate(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def edit_blob(path: Path, old: bytes, new: bytes) -> None:
        data = np.load(path).tobytes()
        assert old in data
        np.save(path, np.frombuffer(data.replace(old, new), dtype=np.uint8))

    def edit_json(path: Path, key: str, value: object) -> None:
        doc = json.loads(path.read_text())
        doc[key] = value
        path.write_text(json.dumps(doc))

    return {
        "truncated vectors": lambda d: truncate(d / "dense" / "vectors.npy"),
        "missing vectors": lambda d: (d / "dense" / "vectors.npy").unlink(),
        "broken documents": lambda d: (d / "dense" / "documents.json").write_text("{not json"),
        "edited texts": lambda d: np.save(
            d / "dense" / "texts.npy",
            np.frombuffer(
                np.load(d / "dense" / "texts.npy").tobytes().replace(b"Paris", b"Lyons"),
                dtype=np.uint8,
            ),
        ),
        "truncated texts": lambda d: truncate(d / "dense" / "texts.npy"),
        "edited metadata": lambda d: edit_blob(d / "dense" / "metadata.npy", b'"geo"', b'"bio"'),
        "truncated metadata": lambda d: truncate(d / "dense" / "metadata.npy"),
        "edited ids": lambda d: edit_blob(d / "dense" / "ids.npy", b"d1", b"d9"),
        "id offsets of another length": lambda d: np.save(
            d / "dense" / "id_offsets.npy", np.load(d / "dense" / "id_offsets.npy")[:-1]
        ),
        "documents disagree": lambda d: edit_json(
            d / "dense" / "documents.json", "ids", [f"x{i}" for i in range(len(TEXTS))]
        ),
        "fewer documents": lambda d: edit_json(d / "dense" / "documents.json", "ids", IDS[:3]),
        "broken settings": lambda d: (d / "hybrid.json").write_text("[1, 2"),
        "vectors of another shape": lambda d: np.save(
            d / "dense" / "vectors.npy", np.zeros((len(TEXTS), 7), np.float32)
        ),
        "bm25 files missing": lambda d: [p.unlink() for p in (d / "bm25").glob("*.npy")],
    }


@pytest.mark.parametrize("case", sorted(corrupt_cases()))
@pytest.mark.parametrize("mmap", [False, True])
def test_a_damaged_save_fails_to_load_clearly(tmp_path: Path, case: str, mmap: bool) -> None:
    build().save(tmp_path / "h")
    corrupt_cases()[case](tmp_path / "h")  # type: ignore[operator]
    with pytest.raises(InvalidInputError, match="cannot load|holds no|different documents"):
        HybridRetriever.load(tmp_path / "h", CountingEmbedder(), mmap=mmap)


def test_each_index_checks_its_own_documents(tmp_path: Path) -> None:
    from rag_optimize.index import BM25Index, DenseIndex

    build().save(tmp_path / "h")
    (tmp_path / "h" / "bm25" / "documents.json").write_text('{"ids": [1]}')
    with pytest.raises(InvalidInputError, match="cannot load BM25Index"):
        BM25Index.load(tmp_path / "h" / "bm25")
    assert len(DenseIndex.load(tmp_path / "h" / "dense")) == len(TEXTS)


def test_load_refuses_another_embedding_model(tmp_path: Path) -> None:
    class Named(CountingEmbedder):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.model_name = name

    build(Named("model-a")).save(tmp_path / "h")
    with pytest.raises(ConfigurationError, match="'model-a', not 'model-b'"):
        HybridRetriever.load(tmp_path / "h", Named("model-b"))
    assert HybridRetriever.load(tmp_path / "h", Named("model-a")).retrieve("tower")
    with pytest.raises(InvalidInputError, match="holds no HybridRetriever"):
        HybridRetriever.load(tmp_path / "nothing", Named("model-a"))


@pytest.mark.parametrize("mmap", [False, True])
def test_deleted_and_updated_documents_are_never_served_stale(tmp_path: Path, mmap: bool) -> None:
    """Deletes mark the dense rows dead instead of rebuilding (issue 15); neither branch may
    then return a deleted document or an updated document's old vector, before or after a
    save and load."""
    embedder = CountingEmbedder()
    retriever = build(embedder, k=6)
    assert retriever.dense is not None
    old = {i: retriever.dense.vectors([i])[0] for i in IDS}
    retriever.delete(["d0"])
    retriever.retrieve("capital of France")
    retriever.update(["d3"], [TEXTS[0]])  # d3 now holds what d0 said
    retriever.delete(["d4"])
    assert retriever.dense.dead_rows == 3  # d0, d3's old row, d4: dead, not rebuilt

    def check(r: HybridRetriever) -> None:
        assert r.dense is not None and r.sparse is not None
        assert r.sparse.documents.ids == r.dense.documents.ids == ["d1", "d2", "d5", "d3"]
        for query in QUERIES + list(TEXTS):
            sparse, dense = both_branches(r, query)
            assert not {"d0", "d4"} & (set(sparse) | set(dense) | set(r.retrieve(query).ids))
        new_d3 = r.dense.vectors(["d3"])[0]
        for stale in (old["d3"], old["d0"], old["d4"]):
            hits = {h.id: h.score for h in r.dense.search(stale, 6)}
            assert set(hits) <= {"d1", "d2", "d5", "d3"}
            assert hits["d3"] == pytest.approx(float(new_d3 @ stale), abs=1e-6)
        assert r.retrieve(TEXTS[0]).ids[0] == "d3"

    check(retriever)
    documents_embedded = embedder.documents
    retriever.save(tmp_path / "h")
    loaded = HybridRetriever.load(tmp_path / "h", embedder, mmap=mmap)
    assert loaded.dense is not None and loaded.dense.dead_rows == 0
    check(loaded)
    assert embedder.documents == documents_embedded  # nothing re-embedded
