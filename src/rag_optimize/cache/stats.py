"""Cache counters: updated under a lock, read as an immutable snapshot."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields

__all__ = ["CacheStats", "StatsCounter"]


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a cache's counters.

    ``hits`` includes ``exact_hits``. ``embedder_errors`` and ``store_errors`` count failures
    the cache absorbed (the lookup became a miss, or the write was dropped).
    ``unscoped_lookups``/``unscoped_writes`` count calls refused by ``require_scope=True``
    (also counted as ``misses``/``dropped_writes``); ``feedback_*`` count ``feedback()`` calls,
    ``tombstones`` the entries it deleted, ``judge_errors`` judges that raised.
    ``verifier_rejections`` counts candidates above the threshold that the verifier vetoed,
    ``verifier_errors`` verifier calls that raised (each counted as a veto).
    ``invalidated`` counts the entries ``invalidate``/``ainvalidate`` removed.
    ``evictions``/``expirations``/``corrupt_entries`` are what the store reported about this
    cache's own calls plus the store's background events handed to this cache.
    """

    hits: int = 0
    exact_hits: int = 0
    misses: int = 0
    sets: int = 0
    evictions: int = 0
    expirations: int = 0
    embedder_errors: int = 0
    store_errors: int = 0
    dropped_writes: int = 0
    corrupt_entries: int = 0
    unscoped_lookups: int = 0
    unscoped_writes: int = 0
    feedback_correct: int = 0
    feedback_wrong: int = 0
    tombstones: int = 0
    judge_errors: int = 0
    verifier_rejections: int = 0
    verifier_errors: int = 0
    invalidated: int = 0
    entries: int = 0

    @property
    def lookups(self) -> int:
        """Number of lookups answered (hits + misses)."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Fraction of lookups that were hits (0.0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, float]:
        """All counters plus ``hit_rate``, for logging and JSON."""
        out: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hit_rate"] = self.hit_rate
        return out


class StatsCounter:
    """Thread-safe counters behind :class:`CacheStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {f.name: 0 for f in fields(CacheStats)}

    def add(self, name: str, amount: int = 1) -> None:
        """Increase counter ``name`` by ``amount``."""
        with self._lock:
            self._counts[name] += amount

    def add_each(self, *names: str) -> None:
        """Increase each counter in ``names`` by one (one lock for all: an exact hit is both
        a hit and an exact hit)."""
        with self._lock:
            counts = self._counts
            for name in names:
                counts[name] += 1

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            for name in self._counts:
                self._counts[name] = 0

    def snapshot(self, **overrides: int) -> CacheStats:
        """The current counters, with ``overrides`` (e.g. live ``entries``) applied."""
        with self._lock:
            counts = dict(self._counts)
        counts.update(overrides)
        return CacheStats(**counts)
