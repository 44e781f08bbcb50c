"""A small thread-unsafe LRU map used by the batching embedder (it locks around it).

``functools.lru_cache`` memoises a function and cannot be filled from outside; the batching
embedder needs to store results that arrive from a batch, so it keeps its own map.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from rag_optimize.errors import ConfigurationError

__all__ = ["LRUCache"]

K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """Keeps at most ``capacity`` entries, dropping the least recently used. 0 disables it."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ConfigurationError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        """Return the value and mark it recently used, or ``None`` when absent."""
        try:
            value = self._data[key]
        except KeyError:
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Store ``value``, evicting the least recently used entry when full."""
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()
