"""The adapters' hybrid-retriever builders take the core's typed options, pinned to their
signatures, and refuse a misspelt one by name (LangChain and LlamaIndex alike)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode

import langchain_rag_optimize
import llama_index_rag_optimize
from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import UnknownOptionError

TEXTS = {
    "p": "Paris is the capital and largest city of France.",
    "b": "Berlin is the capital of Germany.",
    "s": "Photosynthesis turns light into chemical energy.",
}
LangChainRetriever = langchain_rag_optimize.AsyncHybridRetriever
LlamaRetriever = llama_index_rag_optimize.AsyncHybridRetriever


class HashEmbeddings(Embeddings):
    """LangChain embeddings over the deterministic hashing embedder."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return HashingEmbedder(dim=64).embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return HashingEmbedder(dim=64).embed_query(text)


class HashEmbedding(BaseEmbedding):
    """A LlamaIndex embedding over the deterministic hashing embedder."""

    def _get_query_embedding(self, query: str) -> list[float]:
        return HashingEmbedder(dim=64).embed_query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_query_embedding(text)


def var_keyword(function: Callable[..., Any]) -> str:
    (found,) = [
        str(p.annotation)
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.VAR_KEYWORD
    ]
    return found


@pytest.mark.parametrize(
    ("method", "options"),
    [
        (LangChainRetriever.from_documents, "HybridBuildOptions"),
        (LangChainRetriever.from_vectorstore, "HybridBuildOptions"),
        (LangChainRetriever.load, "FusionOptions"),
        (LangChainRetriever.calibrate_fusion, "CalibrationOptions"),
        (LlamaRetriever.from_nodes, "HybridBuildOptions"),
        (LlamaRetriever.from_index, "HybridBuildOptions"),
        (LlamaRetriever.load, "FusionOptions"),
        (LlamaRetriever.calibrate_fusion, "CalibrationOptions"),
    ],
    ids=lambda v: getattr(v, "__qualname__", v),
)
def test_each_builder_takes_one_core_options_type(method: Callable[..., Any], options: str) -> None:
    """The options types themselves are pinned to the core signatures in
    ``test_retrieval_options.py``; here each adapter method is pinned to one of them."""
    assert var_keyword(method) == f"Unpack[{options}]"


def _refused(build: Callable[[], object], misspelt: str, owner: str) -> None:
    with pytest.raises(UnknownOptionError, match=repr(misspelt)) as caught:
        build()
    message = str(caught.value)
    assert owner in message and "branch_timeout_ms" in message  # who, and the valid options


def documents() -> list[Document]:
    return [Document(t, metadata={"src": i}, id=i) for i, t in TEXTS.items()]


def test_langchain_builders_pass_options_and_refuse_a_misspelt_one(tmp_path: Path) -> None:
    model = HashEmbeddings()
    _refused(
        lambda: LangChainRetriever.from_documents(documents(), model, quantisation=None),  # type: ignore[call-arg]
        "quantisation",
        "AsyncHybridRetriever.from_documents",
    )
    store = InMemoryVectorStore.from_documents(documents(), model)
    _refused(
        lambda: LangChainRetriever.from_vectorstore(store, tops=2),  # type: ignore[call-arg]
        "tops",
        "AsyncHybridRetriever.from_vectorstore",
    )
    built = LangChainRetriever.from_vectorstore(store, k=1, quantization=None, fusion="rrf")
    assert built.k == 1 and built.fusion == "rrf"
    assert [d.id for d in built.invoke("capital of France")] == ["p"]
    built.save(tmp_path / "lc")
    _refused(
        lambda: LangChainRetriever.load(tmp_path / "lc", model, quantization=None),  # type: ignore[call-arg]
        "quantization",  # an index option: the saved index is opened as it was built
        "AsyncHybridRetriever.load",
    )
    loaded = LangChainRetriever.load(tmp_path / "lc", model, k=2)
    assert loaded.k == 2 and loaded.fusion == "rrf"
    with pytest.raises(UnknownOptionError, match="'step'") as caught:
        loaded.calibrate_fusion(["capital of France"], [["p"]], step=4)  # type: ignore[call-arg]
    assert "steps" in str(caught.value)
    found = loaded.calibrate_fusion(["capital of France"], [["p"]], steps=4, apply=False)
    assert found.queries == 1


def test_llamaindex_builders_pass_options_and_refuse_a_misspelt_one(tmp_path: Path) -> None:
    model = HashEmbedding()
    nodes = [TextNode(id_=i, text=t, metadata={"src": i}) for i, t in TEXTS.items()]
    _refused(
        lambda: LlamaRetriever.from_nodes(nodes, model, bm25=None),  # type: ignore[call-arg]
        "bm25",
        "AsyncHybridRetriever.from_nodes",
    )
    index = VectorStoreIndex(nodes, embed_model=model)
    _refused(
        lambda: LlamaRetriever.from_index(index, similarity_top_k=2),  # type: ignore[call-arg]
        "similarity_top_k",
        "AsyncHybridRetriever.from_index",
    )
    built = LlamaRetriever.from_index(index, k=1, filters={"src": "p"}, verbose=True)
    assert built.engine.k == 1 and built._verbose
    assert [n.node.node_id for n in built.retrieve("capital")] == ["p"]  # the filter applies
    built.save(tmp_path / "li")
    _refused(
        lambda: LlamaRetriever.load(tmp_path / "li", model, mmap_=True),  # type: ignore[call-arg]
        "mmap_",
        "AsyncHybridRetriever.load",
    )
    loaded = LlamaRetriever.load(tmp_path / "li", model, k=2)
    assert loaded.engine.k == 2
    with pytest.raises(UnknownOptionError, match="'apply_'"):
        loaded.calibrate_fusion(["capital of France"], [["p"]], apply_=False)  # type: ignore[call-arg]
