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


@pytest.mark.parametrize("index", ["auto", "exact"])
def test_unit_query_lean_scan_equals_the_checked_search(index: str) -> None:
    """A checked unit query takes the engine's lean scan (no re-validation, one product);
    the same query scaled or as a list takes the checked path: the same answer, with dead
    rows (removed, reused) never returned and ``k`` past the live count."""
    table = VectorTable(DIM, index=index)  # type: ignore[arg-type]
    for i in range(60):
        table.add(f"e{i}", unit(i))
    for i in range(0, 60, 3):
        table.remove(f"e{i}")
    table.add("reused", unit(1000))
    query = unit(7) + 0.3 * unit(8)
    query = (query / np.linalg.norm(query)).astype(np.float32)
    for k in (1, 4, 100):
        lean = table.search(query, k)
        for other in (query * 2.5, query.astype(np.float64).tolist()):
            checked = table.search(other, k)  # type: ignore[arg-type]
            assert [e for e, _ in checked] == [e for e, _ in lean]
            assert np.allclose([s for _, s in checked], [s for _, s in lean], atol=1e-6)
        assert len(lean) == min(k, len(table))
        assert not {f"e{i}" for i in range(0, 60, 3)} & {e for e, _ in lean}
        scores = [s for _, s in lean]
        assert scores == sorted(scores, reverse=True)
    (best, score), *_ = table.search(unit(1000), 1)
    assert best == "reused" and score == pytest.approx(1.0, abs=1e-5)
