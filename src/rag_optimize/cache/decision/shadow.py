"""Shadow mode bookkeeping: what the cache would have served, and whether it would have been right.

In ``mode="shadow"`` a lookup runs in full but returns ``None``, so the app always calls its
model. What the lookup found waits here (an :class:`Observation`, keyed by scope and
normalised query) until the app stores the model's real answer with ``set``; a judge then
says whether the stored answer would have been right, and :class:`ShadowLog` tallies it.
:meth:`ShadowReport.at` replays the judged lookups at any other threshold, so one shadow run
answers "what hit rate and precision would threshold ``t`` have had on our traffic?".
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

_MAX_AWAITING = 4096
_MAX_JUDGED = 20_000


@dataclass(frozen=True)
class Observation:
    """A lookup waiting for the model's real answer.

    ``entry_id`` is empty when the scope held no entry at all; otherwise the entry is the one
    that would have been served (``would_hit``) or, on a miss, the nearest one.
    """

    entry_id: str
    scope: str
    response: Any
    similarity: float
    threshold: float | None
    would_hit: bool
    exact: bool = False


class AwaitingAnswers:
    """Observations keyed by ``(scope, query_key)``, the most recent ``capacity`` kept."""

    def __init__(self, capacity: int = _MAX_AWAITING) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple[str, str], Observation] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, scope: str, key: str, observation: Observation) -> None:
        """Remember what the lookup of ``key`` in ``scope`` saw."""
        with self._lock:
            self._items[(scope, key)] = observation
            self._items.move_to_end((scope, key))
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def pop(self, scope: str, key: str) -> Observation | None:
        """Take the observation for this query, if one is waiting."""
        with self._lock:
            return self._items.pop((scope, key), None)

    def clear(self) -> None:
        """Forget everything waiting."""
        with self._lock:
            self._items.clear()


@dataclass(frozen=True)
class ShadowReport:
    """What the cache would have done in shadow mode.

    ``lookups``: shadow lookups. ``would_hits``: those that would have been served.
    ``answered``: lookups followed by the model's real answer (a ``set`` of the same query);
    ``judged``/``correct``: would-be hits among them, and how many the judge found right.
    ``precision`` is ``correct / judged`` (``None`` before any), ``false_hit_rate`` its
    complement, ``would_hit_rate`` is ``would_hits / lookups``.
    """

    lookups: int
    would_hits: int
    answered: int
    judged: int
    correct: int
    judge_errors: int
    outcomes: tuple[tuple[float, bool], ...] = ()

    @property
    def would_hit_rate(self) -> float:
        """Fraction of lookups that would have been served from the cache."""
        return self.would_hits / self.lookups if self.lookups else 0.0

    @property
    def precision(self) -> float | None:
        """Fraction of judged would-be hits whose cached answer was right."""
        return self.correct / self.judged if self.judged else None

    @property
    def false_hit_rate(self) -> float | None:
        """Fraction of judged would-be hits whose cached answer was wrong."""
        return None if self.precision is None else 1.0 - self.precision

    def at(self, threshold: float) -> dict[str, float | int | None]:
        """Hit rate and precision the answered lookups would have had at ``threshold``
        (judging the nearest stored answer of each; per-entry floors not applied)."""
        hits = [ok for sim, ok in self.outcomes if sim >= threshold]
        return {
            "threshold": threshold,
            "answered": self.answered,
            "hits": len(hits),
            "hit_rate": len(hits) / self.answered if self.answered else 0.0,
            "precision": sum(hits) / len(hits) if hits else None,
        }

    def as_dict(self) -> dict[str, Any]:
        """Counters and rates as JSON."""
        return {
            "lookups": self.lookups,
            "would_hits": self.would_hits,
            "would_hit_rate": self.would_hit_rate,
            "answered": self.answered,
            "judged": self.judged,
            "correct": self.correct,
            "precision": self.precision,
            "false_hit_rate": self.false_hit_rate,
            "judge_errors": self.judge_errors,
        }


class ShadowLog:
    """Thread-safe tallies behind :class:`ShadowReport`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {
            "lookups": 0,
            "would_hits": 0,
            "answered": 0,
            "judged": 0,
            "correct": 0,
            "judge_errors": 0,
        }
        self._outcomes: deque[tuple[float, bool]] = deque(maxlen=_MAX_JUDGED)

    def lookup(self, would_hit: bool) -> None:
        """Count one shadow lookup."""
        with self._lock:
            self._counts["lookups"] += 1
            self._counts["would_hits"] += int(would_hit)

    def answered(self, observation: Observation, correct: bool | None) -> None:
        """Count the real answer to an observed lookup; ``correct`` is the judge's verdict on
        the stored answer (``None``: nothing to judge, or the judge failed)."""
        with self._lock:
            self._counts["answered"] += 1
            if correct is None:
                return
            self._outcomes.append((observation.similarity, correct))
            if observation.would_hit:
                self._counts["judged"] += 1
                self._counts["correct"] += int(correct)

    def judge_error(self) -> None:
        """Count a judge that raised."""
        with self._lock:
            self._counts["judge_errors"] += 1

    def report(self) -> ShadowReport:
        """A snapshot."""
        with self._lock:
            return ShadowReport(**self._counts, outcomes=tuple(self._outcomes))

    def reset(self) -> None:
        """Zero everything."""
        with self._lock:
            for name in self._counts:
                self._counts[name] = 0
            self._outcomes.clear()
