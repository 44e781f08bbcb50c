"""VectorTable input checks: whatever a caller passes is either normalised or refused with a
project error naming it, and a refused batch changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from rag_optimize.cache.vector_table import VectorTable
from rag_optimize.errors import ConfigurationError, InvalidInputError, InvalidVectorError

DIM = 16


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_non_unit_and_list_vectors_are_normalised() -> None:
    table = VectorTable(DIM)
    table.add("scaled", unit(1) * 3.0)
    table.add("listed", unit(2).astype(np.float64).tolist())  # type: ignore[arg-type]
    for entry_id, seed in (("scaled", 1), ("listed", 2)):
        (found, score), *_ = table.search(unit(seed), 1)
        assert found == entry_id and score == pytest.approx(1.0, abs=1e-5)
        stored = table.vector(entry_id)
        assert stored is not None and float(np.linalg.norm(stored)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.full(DIM, np.nan, np.float32), "NaN"),
        (np.zeros(DIM, np.float32), "zero"),
        (np.ones(DIM + 1, np.float32), "dimension 17"),
        ("not a vector", "numeric"),
    ],
)
def test_bad_vectors_raise_invalid_vector_error(vector: object, message: str) -> None:
    table = VectorTable(DIM)
    table.add("good", unit(0))
    with pytest.raises(InvalidVectorError, match=message):
        table.add("bad", vector)  # type: ignore[arg-type]
    with pytest.raises(InvalidVectorError, match=f"{message}|numeric batch"):
        table.add_many(["ok", "bad"], [unit(3), vector])  # type: ignore[list-item]
    assert table.ids() == ["good"] and "ok" not in table  # nothing of a bad batch is kept


def test_bad_batches_and_options_name_the_value() -> None:
    table = VectorTable(DIM)
    with pytest.raises(InvalidInputError, match="2 ids but 1 vectors"):
        table.add_many(["a", "b"], [unit(0)])
    with pytest.raises(InvalidVectorError, match="numeric batch"):
        table.add_many(["a", "b"], [unit(0), np.ones(3, np.float32)])
    with pytest.raises(ConfigurationError, match="'fast'"):
        VectorTable(DIM, index="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="dim must be a positive int"):
        VectorTable(0)
    table.add("a", unit(0))
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        table.search(unit(0), 0)
