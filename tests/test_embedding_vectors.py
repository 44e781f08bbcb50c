from __future__ import annotations

import math

import numpy as np
import pytest

from rag_optimize import HashingEmbedder, InvalidVectorError
from rag_optimize.embedding import check_embedder, unit_matrix, unit_vector


def test_unit_vector_normalises() -> None:
    v = unit_vector([3.0, 4.0])
    assert v.dtype == np.float32
    assert np.allclose(v, [0.6, 0.8])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "non-empty"),
        ([0.0, 0.0], "zero vector"),
        ([1.0, math.nan], "NaN"),
        ([[1.0, 2.0]], "1-D"),
    ],
)
def test_unit_vector_rejects_bad_vectors(values: list[float], message: str) -> None:
    with pytest.raises(InvalidVectorError, match=message):
        unit_vector(values)


def test_unit_vector_checks_dimension() -> None:
    with pytest.raises(InvalidVectorError, match="dimension 2, expected 3"):
        unit_vector([1.0, 2.0], dim=3)


def test_unit_matrix_names_bad_row() -> None:
    with pytest.raises(InvalidVectorError, match="row 1"):
        unit_matrix([[1.0, 0.0], [0.0, 0.0]])


def test_check_embedder_rejects_non_embedder() -> None:
    with pytest.raises(TypeError, match="embed_query"):
        check_embedder(object())


def test_hashing_embedder_is_deterministic_and_similar_for_paraphrases() -> None:
    emb = HashingEmbedder()
    a = np.array(emb.embed_query("How do I reset my password?"))
    b = np.array(emb.embed_query("how can I reset my password"))
    c = np.array(emb.embed_query("What is the capital of France?"))
    assert np.allclose(a, HashingEmbedder().embed_query("How do I reset my password?"))
    assert float(a @ b) > 0.9
    assert float(a @ c) < 0.5
