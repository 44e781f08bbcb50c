"""Shared fixtures for the whole suite."""

from __future__ import annotations

import pytest

from rag_optimize.embedding import HashingEmbedder


class FakeClock:
    """A clock the test moves by hand, so TTL and wait logic is tested without sleeping."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hashing_embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=256)
