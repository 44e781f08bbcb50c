"""Log a failing dependency once per incident, not once per call.

A cache in front of a dead backend sees thousands of failures a second; one warning when the
trouble starts and one line when it ends is what an operator can read.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["IncidentLog"]


class IncidentLog:
    """Tracks whether ``what`` is failing and logs only the transitions."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._lock = threading.Lock()
        self._failing = False
        self._suppressed = 0

    @property
    def failing(self) -> bool:
        """Whether the last outcome recorded was a failure."""
        return self._failing

    def failure(self, exc: BaseException) -> None:
        """Record a failure; logs a warning only if this starts an incident."""
        with self._lock:
            if self._failing:
                self._suppressed += 1
                return
            self._failing = True
            self._suppressed = 0
        self._logger.warning(
            "%s failing (%s: %s); the cache fails open (misses, dropped writes) until it recovers",
            self._what,
            type(exc).__name__,
            exc,
        )

    def success(self) -> None:
        """Record a success; logs once if this ends an incident."""
        if not self._failing:
            return
        with self._lock:
            if not self._failing:
                return
            self._failing = False
            suppressed = self._suppressed
        self._logger.warning(
            "%s recovered after %d further failures", self._what, suppressed
        )
