"""The retrievers' typed options: each options type is pinned to the signature it stands for
(names and annotations), so the two cannot drift apart, and a misspelt option is refused by
name with the valid ones listed (as ``SemanticCacheOptions`` / ``BatchingOptions`` are)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, ForwardRef

import pytest

from rag_optimize.embedding import HashingEmbedder
from rag_optimize.errors import ConfigurationError, UnknownOptionError
from rag_optimize.index import BM25Index, Hit
from rag_optimize.retrieval import (
    CalibrationOptions,
    CallableBranch,
    DocumentColumns,
    FusionOptions,
    FusionRetriever,
    HybridBuildOptions,
    HybridRetriever,
    WrapOptions,
    calibrate_fusion,
    wrap_retrievers,
)

TEXTS = ["Paris is the capital of France.", "Berlin is the capital of Germany."]


def keyword_annotations(
    function: Callable[..., Any], leave_out: frozenset[str] = frozenset()
) -> dict[str, str]:
    """``{name: annotation}`` of ``function``'s keyword-only parameters (``**`` aside)."""
    return {
        name: p.annotation
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in leave_out
    }


def declared(options: type) -> dict[str, str]:
    """``{name: annotation}`` a ``TypedDict`` declares (its own and inherited keys)."""
    return {
        name: value.__forward_arg__ if isinstance(value, ForwardRef) else value
        for name, value in options.__annotations__.items()
    }


def var_keyword(function: Callable[..., Any]) -> str:
    """The annotation of ``function``'s ``**options``."""
    (found,) = [
        p.annotation
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.VAR_KEYWORD
    ]
    return str(found)


def test_fusion_options_are_the_fusion_retrievers_keywords() -> None:
    assert declared(FusionOptions) == keyword_annotations(FusionRetriever)
    assert var_keyword(HybridRetriever) == "Unpack[FusionOptions]"
    assert var_keyword(HybridRetriever.load) == "Unpack[FusionOptions]"


def test_wrap_options_are_the_fusion_options_but_weights() -> None:
    """``wrap_retrievers`` takes the weights itself (in retriever order, as a sequence)."""
    assert declared(WrapOptions) == {
        k: v for k, v in declared(FusionOptions).items() if k != "weights"
    }
    assert set(keyword_annotations(wrap_retrievers)) == {"names", "weights"}
    assert var_keyword(wrap_retrievers) == "Unpack[WrapOptions]"


def test_build_options_are_from_texts_keywords_but_the_columns() -> None:
    """What ``from_texts`` takes besides the documents' columns: its index keywords and the
    fusion options (the adapters read the columns from their framework's objects)."""
    columns = frozenset({"ids", "metadatas", "vectors", "embed_texts"})
    own = keyword_annotations(HybridRetriever.from_texts, leave_out=columns)
    assert set(own) == {"quantization", "ann", "bm25_options"}
    assert var_keyword(HybridRetriever.from_texts) == "Unpack[FusionOptions]"
    assert declared(HybridBuildOptions) == {**declared(FusionOptions), **own}


@pytest.mark.parametrize(
    "method", [HybridRetriever.from_texts, HybridRetriever.add_texts, HybridRetriever.update]
)
def test_document_columns_are_what_each_writer_takes(method: Callable[..., Any]) -> None:
    """``**columns`` fits ``from_texts``, ``add_texts`` and ``update`` alike (same names, same
    types but for which of them may be ``None``), so an adapter's one reader feeds all three."""

    def base(annotation: str) -> str:
        return annotation.removesuffix(" | None")

    parameters = inspect.signature(method).parameters
    columns = declared(DocumentColumns)
    assert {n: base(parameters[n].annotation) for n in columns} == {
        n: base(a) for n, a in columns.items()
    }
    assert DocumentColumns.__required_keys__ == {"texts", "ids", "metadatas"}


def test_document_columns_build_add_and_update() -> None:
    embedder = HashingEmbedder(dim=32)
    columns = DocumentColumns(texts=TEXTS, ids=["fr", "de"], metadatas=[{"c": "fr"}, None])
    built = HybridRetriever.from_texts(embedder=embedder, **columns, k=1)
    more = DocumentColumns(
        texts=["Rome is the capital of Italy."],
        ids=["it"],
        metadatas=[None],
        vectors=[None],
        embed_texts=["Rome Italy capital"],
    )
    assert built.add_texts(**more) == ["it"]
    changed = DocumentColumns(texts=["Bonn was the capital."], ids=["de"], metadatas=[None])
    assert built.update(**changed) == ["de"]
    assert [d.id for d in built.retrieve("capital of Italy")] == ["it"]
    assert built.retrieve("Bonn")[0].text == "Bonn was the capital."


def test_calibration_options_are_calibrate_fusions_keywords() -> None:
    assert declared(CalibrationOptions) == keyword_annotations(calibrate_fusion)


def _refused(build: Callable[[], object], misspelt: str, valid: str) -> None:
    with pytest.raises(UnknownOptionError, match=repr(misspelt)) as caught:
        build()
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ConfigurationError)
    assert valid in str(caught.value)  # the valid options are listed


def test_an_unknown_option_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    embedder = HashingEmbedder(dim=32)
    _refused(lambda: HybridRetriever(BM25Index(), None, fusio="rrf"), "fusio", "fusion")  # type: ignore[call-arg]
    _refused(
        lambda: HybridRetriever.from_texts(TEXTS, embedder, quantisation=None),  # type: ignore[call-arg]
        "quantisation",
        "weights",
    )
    built = HybridRetriever.from_texts(TEXTS, embedder, quantization=None, k=1, rrf_k=10.0)
    assert built.k == 1 and built.rrf_k == 10.0
    built.save(tmp_path / "saved")
    _refused(
        lambda: HybridRetriever.load(tmp_path / "saved", embedder, canditates=5),  # type: ignore[call-arg]
        "canditates",
        "candidates",
    )
    loaded = HybridRetriever.load(tmp_path / "saved", embedder, candidates=5)
    assert loaded.candidates == 5 and loaded.k == 1  # an option overrides, the rest is saved


def _branch(name: str, texts: list[str]) -> CallableBranch:
    def search(query: str, k: int) -> list[Hit]:
        return [Hit(str(i), 1.0 / (i + 1), t, {}) for i, t in enumerate(texts)][:k]

    async def asearch(query: str, k: int) -> list[Hit]:
        return search(query, k)

    return CallableBranch(name, search, asearch)


def test_wrap_retrievers_refuses_weights_by_name_and_keeps_rrf() -> None:
    """``weights`` by name is not one of its options: it is the sequence keyword."""
    _refused(
        lambda: wrap_retrievers([TEXTS], _branch, fusino="rrf"),  # type: ignore[call-arg]
        "fusino",
        "branch_timeout_ms",
    )
    fused = wrap_retrievers([TEXTS, TEXTS[::-1]], _branch, weights=[2, 1], k=1)
    assert isinstance(fused, FusionRetriever)
    assert fused.fusion == "rrf" and fused.k == 1 and fused.weights["r0"] > fused.weights["r1"]
    assert [d.text for d in fused.retrieve("capital")] == [TEXTS[0]]
