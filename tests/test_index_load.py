"""Opening a saved index does little: codes adopted, documents mapped, no bm25s import.

Issue 17's load target (a saved 100k hybrid index opens in under a second) is measured in
``benchmarks/load_profile.py``; these tests pin what makes it so, without timing anything:
the dense index's codes are saved and adopted (the vectors are not read at load), documents
are mapped and decoded per row (no per-document objects built at load), and BM25 searches
a loaded matrix without importing bm25s (and scipy under it). Each checks the results are
the same as before the save.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag_optimize.errors import InvalidInputError
from rag_optimize.index import BM25Index, DenseIndex
from rag_optimize.index.documents import DocumentStore, MappedMetadata, MappedTexts
from rag_optimize.index.engine import VectorEngine
from rag_optimize.retrieval import Eq, HybridRetriever

sys.path.insert(0, str(Path(__file__).parent))
from retrieval_corpus import TEXTS  # noqa: E402


def coded_index(n: int = 6_000, dim: int = 128, seed: int = 0) -> tuple[DenseIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim))
    x = (centres[rng.integers(0, 30, n)] + 0.7 * rng.standard_normal((n, dim))).astype(np.float32)
    index = DenseIndex()  # the default: binary codes from 4,096 rows
    index.add(x, ids=[f"d{i}" for i in range(n)], metadatas=[{"m": i % 7} for i in range(n)])
    assert index.engine is not None and index.engine.active_method() == "binary"
    return index, x[rng.integers(0, n, 15)] + 0.3 * rng.standard_normal((15, dim))


def results(index: DenseIndex, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 6)) for h in index.search(q, 10)] for q in queries]


@pytest.mark.parametrize("mmap", [False, True])
def test_a_dense_load_adopts_the_saved_codes_without_reading_the_vectors(
    tmp_path: Path, mmap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, queries = coded_index()
    index.delete([f"d{i}" for i in range(0, 600, 3)])  # dead rows: the save writes live ones
    want = results(index, queries)
    index.save(tmp_path / "dense")
    assert json.loads((tmp_path / "dense" / "dense.json").read_text())["codes"] == [
        "center", "codes"
    ]

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the load read the vectors to rebuild codes")

    with monkeypatch.context() as patch:
        patch.setattr(VectorEngine, "_float_rows", no_reading)
        loaded = DenseIndex.load(tmp_path / "dense", mmap=mmap)
    assert results(loaded, queries) == want
    # The adopted codes and centre are the saved index's own (of its live rows, in order).
    assert index.engine is not None and loaded.engine is not None
    live = index._engine_rows(np.arange(len(index)))
    assert np.array_equal(loaded.engine._bits[: len(index)], index.engine._bits[live])
    assert np.array_equal(loaded.engine._mean, index.engine._mean)
    # A save without codes (the earlier layout) still loads: codes rebuilt from the vectors.
    meta_path = tmp_path / "dense" / "dense.json"
    meta = json.loads(meta_path.read_text())
    del meta["codes"]
    meta_path.write_text(json.dumps(meta))
    rebuilt = DenseIndex.load(tmp_path / "dense", mmap=mmap)
    assert rebuilt.engine is not None and rebuilt.engine._bits is not None
    assert [len(r) for r in results(rebuilt, queries)] == [10] * len(queries)
    loaded.add(queries[:2], ids=["new1", "new2"])  # adopted codes are updated in place
    assert loaded.search(queries[1], 1)[0].id == "new2"


def test_saved_codes_that_do_not_fit_fail_the_load_clearly(tmp_path: Path) -> None:
    index, _ = coded_index()
    index.save(tmp_path / "dense")
    np.save(tmp_path / "dense" / "engine_codes.npy", np.zeros((6_000, 8), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="cannot load DenseIndex.*codes"):
        DenseIndex.load(tmp_path / "dense")
    (tmp_path / "dense" / "engine_codes.npy").unlink()
    with pytest.raises(InvalidInputError, match="cannot load DenseIndex"):
        DenseIndex.load(tmp_path / "dense")


def test_a_loaded_store_maps_its_documents_and_decodes_rows_on_demand(tmp_path: Path) -> None:
    store = DocumentStore()
    metas = [{"n": i, "tags": ["a", "b"] if i % 2 else [], "s": "é" * (i % 3)} for i in range(50)]
    store.extend(50, [f"id{i}" for i in range(50)], [f"text {i} ü" for i in range(50)], metas)
    digest = store.save(tmp_path)
    loaded = DocumentStore.load(tmp_path, digest)
    # Nothing per document was built: mapped rows, no id map yet.
    assert isinstance(loaded.ids, MappedTexts) and isinstance(loaded.texts, MappedTexts)
    assert isinstance(loaded.metadatas, MappedMetadata) and loaded._index is None
    hit = loaded.hit(7, 0.5)
    assert (hit.id, hit.text, hit.metadata) == ("id7", "text 7 ü", metas[7])
    assert loaded._index is None  # a hit needs no id map
    assert list(loaded.ids) == store.ids and list(loaded.texts) == store.texts
    assert list(loaded.metadatas) == metas and loaded.metadatas.all() == metas
    assert loaded.same_ids(store) and loaded.ids == store.ids
    assert loaded.position("id42") == 42 and "id3" in loaded and "nope" not in loaded
    assert Eq("tags", "a").mask(loaded).tolist() == [bool(i % 2) for i in range(50)]
    copy = loaded.copy()
    assert copy.ids is loaded.ids  # mapped rows are shared, not listed
    copy.delete(["id0", "id1"])
    copy.extend(1, ["id50"], ["new"], [{"n": 50}])
    assert len(loaded) == 50 and loaded.position("id49") == 49  # the original is unchanged
    assert copy.position("id50") == 48 and copy.hit(48, 1.0).metadata == {"n": 50}
    again = DocumentStore.load(_saved(copy, tmp_path / "copy"))
    assert list(again.ids) == copy.ids and list(again.metadatas) == copy.metadatas


def test_a_loaded_store_decodes_all_its_ids_in_one_pass_for_the_id_map(tmp_path: Path) -> None:
    store = DocumentStore()
    ids = [f"dóc-{i}-{'€' * (i % 4)}" for i in range(300)]  # multi-byte UTF-8 rows
    store.extend(300, ids, [f"text {i}" for i in range(300)], [{} for _ in ids])
    loaded = DocumentStore.load(tmp_path, store.save(tmp_path))
    assert isinstance(loaded.ids, MappedTexts)
    first = loaded.ids.all()
    assert first == ids and list(loaded.ids) == ids and loaded.ids[299] == ids[299]
    first.append("changed")  # each call hands out its own list
    assert loaded.ids.all() == ids
    assert [loaded.position(i) for i in reversed(ids)] == list(range(299, -1, -1))
    copy = loaded.copy()
    copy.extend(1, ["new"], ["new text"], [{}])  # lists the shared rows, then changes them
    assert loaded.ids.all() == ids and len(loaded) == 300 and copy.position("new") == 300


def _saved(store: DocumentStore, directory: Path) -> Path:
    directory.mkdir()
    store.save(directory)
    return directory


def test_the_previous_documents_layout_still_loads(tmp_path: Path) -> None:
    texts = ["alpha", "beta"]
    blob = np.frombuffer("".join(texts).encode(), dtype=np.uint8)
    np.save(tmp_path / "texts.npy", blob)
    np.save(tmp_path / "text_offsets.npy", np.array([0, 5, 9], dtype=np.int64))
    payload = {"ids": ["a", "b"], "metadatas": [{"k": 1}, {}], "texts": "texts.npy"}
    (tmp_path / "documents.json").write_text(json.dumps(payload))
    store = DocumentStore.load(tmp_path)
    assert store.ids == ["a", "b"] and list(store.texts) == texts
    assert store.metadatas == [{"k": 1}, {}] and store.position("b") == 1
    payload["ids"] = ["a", "a"]
    (tmp_path / "documents.json").write_text(json.dumps(payload))
    with pytest.raises(InvalidInputError, match="duplicate"):
        DocumentStore.load(tmp_path)


FRESH_BM25 = r"""
import json, sys
from rag_optimize.index import BM25Index
index = BM25Index.load(sys.argv[1], mmap=True)
hits = {q: [(h.id, h.score) for h in index.search(q, 5)] for q in json.loads(sys.argv[2])}
print(json.dumps({"hits": hits, "bm25s": "bm25s" in sys.modules, "scipy": "scipy" in sys.modules}))
"""
QUERIES = ["capital of France", "protein folding cells", "the river and the sea", "zzzz"]


def test_a_loaded_bm25_index_searches_without_importing_bm25s(tmp_path: Path) -> None:
    index = BM25Index()
    index.add(TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))])
    want = {q: [[h.id, h.score] for h in index.search(q, 5)] for q in QUERIES}
    index.save(tmp_path / "bm25")
    out = subprocess.run(
        [sys.executable, "-c", FRESH_BM25, str(tmp_path / "bm25"), json.dumps(QUERIES)],
        capture_output=True, text=True, check=True,
    )
    got = json.loads(out.stdout)
    assert got["hits"] == want  # the same documents and float32 scores as bm25s's
    assert not got["bm25s"] and not got["scipy"]
    loaded = BM25Index.load(tmp_path / "bm25")
    loaded.save(tmp_path / "again")  # saved again unchanged, then opened by bm25s itself
    import bm25s

    model = bm25s.BM25.load(str(tmp_path / "again"), show_progress=False)
    tokens = loaded.tokenizer("capital of France")
    assert np.array_equal(
        np.asarray(model.get_scores_from_ids(model.get_tokens_ids(tokens))),
        loaded._model().get_scores_from_ids(loaded._model().get_tokens_ids(tokens)),
    )
    loaded.add(["a quokka met a zebra"], ids=["new"])  # rebuilt with bm25s
    assert loaded.search("quokka zebra", 1)[0].id == "new"
    assert loaded.search(QUERIES[0], 1)[0].id == want[QUERIES[0]][0][0]


@pytest.mark.parametrize("method", ["bm25+", "bm25l"])
def test_bm25_variants_with_a_non_occurrence_term_load_through_bm25s(
    tmp_path: Path, method: str
) -> None:
    index = BM25Index(method=method)
    index.add(TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))])
    want = [(h.id, h.score) for h in index.search("capital of France", 5)]
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25", mmap=True)
    assert [(h.id, h.score) for h in loaded.search("capital of France", 5)] == want
    assert loaded.tokenizer.config() == index.tokenizer.config()


def test_a_hybrid_load_in_a_fresh_process_gives_the_same_results(tmp_path: Path) -> None:
    from rag_optimize.embedding import HashingEmbedder

    embedder = HashingEmbedder(dim=64)
    metadatas = [{"kind": "even" if i % 2 == 0 else "odd"} for i in range(len(TEXTS))]
    retriever = HybridRetriever.from_texts(TEXTS, embedder, metadatas=metadatas, k=4)
    retriever.save(tmp_path / "h")
    settings = json.loads((tmp_path / "h" / "hybrid.json").read_text())
    assert settings["shared_documents_sha1"]  # one documents load for both indexes
    want = {q: retriever.retrieve(q, filter=Eq("kind", "odd")).ids for q in QUERIES[:3]}
    code = (
        "import json, sys\n"
        "from rag_optimize.retrieval import HybridRetriever, Eq\n"
        "from rag_optimize.embedding import HashingEmbedder\n"
        "r = HybridRetriever.load(sys.argv[1], HashingEmbedder(dim=64), mmap=True)\n"
        "assert r.sparse.documents.ids is r.dense.documents.ids\n"
        "got = {q: r.retrieve(q, filter=Eq('kind', 'odd')).ids for q in json.loads(sys.argv[2])}\n"
        "print(json.dumps({'got': got, 'bm25s': 'bm25s' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "h"), json.dumps(QUERIES[:3])],
        capture_output=True, text=True, check=True,
    )
    got = json.loads(out.stdout)
    assert got["got"] == want and not got["bm25s"]
