"""The packaged all-MiniLM-L6-v2 embedder, run for real (both backends, offline)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rag_optimize import LocalEmbedder, default_embedder
from rag_optimize.embedding import check_embedder
from rag_optimize.errors import ConfigurationError

SENTENCES = [
    "How do I reset my password?",
    "What is the way to change my password?",
    "The weather in Paris is sunny today.",
    "Revenue rose 12 percent in the third quarter.",
    "Quarterly sales grew by twelve percent.",
    "A cat is sleeping on the sofa.",
]


@pytest.fixture(scope="module")
def onnx() -> LocalEmbedder:
    return LocalEmbedder(backend="onnx")


@pytest.fixture(scope="module")
def torch_model() -> LocalEmbedder:
    return LocalEmbedder(backend="torch")


@pytest.fixture(scope="module", params=["onnx", "torch"])
def model(request: pytest.FixtureRequest) -> LocalEmbedder:
    return request.getfixturevalue("onnx" if request.param == "onnx" else "torch_model")


def test_shape_and_unit_norm(model: LocalEmbedder) -> None:
    check_embedder(model)
    vec = model.embed_query(SENTENCES[0])
    assert model.dim == 384 and len(vec) == 384
    assert all(isinstance(x, float) for x in vec)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    mat = np.asarray(model.embed_documents(SENTENCES))
    assert mat.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)


def test_deterministic(model: LocalEmbedder) -> None:
    first = model.encode(SENTENCES)
    second = model.encode(SENTENCES)
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_paraphrase_closer_than_unrelated(model: LocalEmbedder) -> None:
    m = model.encode(SENTENCES)
    sim = m @ m.T
    assert sim[0, 1] > 0.7  # password paraphrases (measured ~0.83)
    assert sim[3, 4] > 0.6  # revenue paraphrases
    for unrelated in (sim[0, 2], sim[0, 5], sim[3, 5], sim[1, 3]):
        assert unrelated < 0.3
        assert sim[0, 1] > unrelated + 0.4


def test_batch_equals_single(model: LocalEmbedder) -> None:
    # Batches pad short texts and reorder by length; neither may change a vector.
    batch = model.encode(SENTENCES)
    single = np.array([model.embed_query(s) for s in SENTENCES])
    np.testing.assert_allclose(batch, single, atol=2e-4)


def test_input_order_kept_across_batches() -> None:
    small = LocalEmbedder(backend="onnx", batch_size=2)
    texts = ["a much longer sentence about quarterly revenue growth", "hi", "medium text here"]
    got = small.encode(texts)
    for i, text in enumerate(texts):
        assert float(got[i] @ np.asarray(small.embed_query(text))) > 0.9999


def test_backends_agree(onnx: LocalEmbedder, torch_model: LocalEmbedder) -> None:
    # int8 ONNX vs float32 torch: measured cosine >= 0.998 on 2,000 MRPC sentences.
    a = onnx.encode(SENTENCES)
    b = torch_model.encode(SENTENCES)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.98


def test_truncates_long_input(onnx: LocalEmbedder) -> None:
    long_text = "word " * 2000
    vec = onnx.embed_query(long_text)
    assert len(vec) == 384
    # Text beyond 256 tokens is cut, like sentence-transformers does.
    assert float(np.dot(vec, onnx.embed_query("word " * 1000))) > 0.9999


def test_bad_input(onnx: LocalEmbedder) -> None:
    assert onnx.embed_documents([]) == []
    with pytest.raises(TypeError, match="str"):
        onnx.embed_query(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        onnx.embed_documents(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of str"):
        onnx.embed_documents("not a list")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="backend"):
        LocalEmbedder(backend="gpu")
    with pytest.raises(ConfigurationError, match="batch_size"):
        LocalEmbedder(batch_size=0)


async def test_async_matches_sync(onnx: LocalEmbedder) -> None:
    q, docs = await asyncio.gather(
        onnx.aembed_query(SENTENCES[0]), onnx.aembed_documents(SENTENCES[:3])
    )
    np.testing.assert_allclose(q, onnx.embed_query(SENTENCES[0]), atol=1e-6)
    np.testing.assert_allclose(docs, onnx.encode(SENTENCES[:3]), atol=2e-4)


def test_thread_safe(model: LocalEmbedder) -> None:
    expected = model.encode(SENTENCES)
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(model.embed_query, [SENTENCES[i % 6] for i in range(12)]))
    assert len(got) == 12
    for i, vec in enumerate(got):
        np.testing.assert_allclose(vec, expected[i % 6], atol=2e-4)


def test_default_embedder_is_shared() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda _: default_embedder(), range(4)))
    assert len({id(e) for e in got}) == 1
    assert got[0] is default_embedder()
    assert got[0].backend == "onnx"  # auto picks ONNX when installed (measured faster)
