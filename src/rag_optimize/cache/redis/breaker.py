"""A circuit breaker: stop calling a backend that keeps failing, probe it after a cool-down.

Closed (normal) -> after ``failure_threshold`` consecutive failures -> open: every call is
refused at once, without touching the network, for ``cooldown`` seconds -> half-open: one
caller is let through as a probe; its success closes the circuit, its failure opens it for
another cool-down. A probe that never reports back (a cancelled task) is replaced after one
more cool-down, so the circuit cannot stay stuck half-open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from rag_optimize.errors import ConfigurationError

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Thread-safe; ``clock`` is monotonic seconds (injected in tests)."""

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not cooldown > 0:
            raise ConfigurationError(f"cooldown must be > 0 seconds, got {cooldown}")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._since = 0.0
        self.opened = 0

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half-open`` (as of the last call)."""
        return self._state

    @property
    def healthy(self) -> bool:
        """Closed and the last call succeeded: what a locally answered call may assume."""
        return self._state == "closed" and self._failures == 0

    def allow(self) -> bool:
        """Whether a call may go to the backend now (``False``: fail fast)."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._clock() - self._since < self.cooldown:
                return False
            # open past its cool-down, or a half-open probe that never reported back
            self._state = "half-open"
            self._since = self._clock()
            return True

    def success(self) -> None:
        """Record a call that worked: the circuit closes."""
        with self._lock:
            self._state = "closed"
            self._failures = 0

    def failure(self) -> bool:
        """Record a failed call: opens the circuit at the threshold or after a failed probe.
        Returns whether this call opened it (the moment to drop pooled connections)."""
        with self._lock:
            self._failures += 1
            opened = False
            if self._state == "half-open" or self._failures >= self.failure_threshold:
                if self._state != "open":
                    self.opened += 1
                    opened = True
                self._state = "open"
                self._since = self._clock()
            return opened
