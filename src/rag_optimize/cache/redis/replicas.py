"""Replica reads: lookups on a replica, changes on the master and confirmed by the replicas.

With ``read_from_replicas`` a store sends the calls its plans mark as lookups
(:attr:`~rag_optimize.cache.redis.plans.Script.read`) to a replica, as read-only scripts
(``EVALSHA_RO``: their LRU touch is a ``redis.pcall`` and is skipped there). Every change goes
to the master in one pipeline with ``WAIT <online replicas> <ms>`` and ``ROLE``, so a change
is on every online replica when the call returns (``WAIT`` counts the replicas that
acknowledged it; ``ROLE`` refreshes how many there are for the next change).

What the cache then promises:

* **Own changes are read back.** If the replicas did not all confirm a change in time, this
  process reads from the master for ``cooldown_ms``.
* **Other processes' changes** are on the replicas once the call that made them returned
  (confirmed), else after the replication lag; a process may read a lagging replica's older
  state meanwhile. A stale read can only miss (an entry not there yet) or, for a removal not
  yet replicated, answer the removed entry: the window is the replication lag (measured in
  BENCHMARKS.md, "Replication lag": on one host p99 1.4 ms idle, 10-25 ms under write load),
  and zero for confirmed removals.
* **A failing replica never fails a lookup**: the call is sent to the master at once, the
  replicas are skipped for ``cooldown_ms`` (a breaker of their own: the main circuit breaker
  is not touched), and ``status()`` counts it.
* No replica reads while the master reports no online replica (a replica cut off from its
  master could be arbitrarily behind).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.redis.breaker import CircuitBreaker
from rag_optimize.cache.redis.plans import Batch, Call, Script

__all__ = ["ReplicaReads", "arun_confirmed", "replica_url", "run_confirmed"]

logger = logging.getLogger("rag_optimize.cache.redis")

#: With no replica online at the master's last ``ROLE``, lookups ask it again this often (a
#: master lists a replica only once its sync is done, so a store started meanwhile would
#: otherwise read from the master until its next change).
ROLE_RECHECK_S = 1.0


class ReplicaReads:
    """Where a store's lookups go, and what the replicas confirmed (thread-safe)."""

    def __init__(
        self, enabled: bool, wait_ms: int, breaker: CircuitBreaker, cooldown: float
    ) -> None:
        self.enabled = enabled
        self.wait_ms = wait_ms
        self._breaker = breaker
        self._cooldown = cooldown
        self.expected = 0  # online replicas, as the master last reported (ROLE)
        self.address: tuple[str, int] | None = None  # the first of them
        self._master_until = float("-inf")
        self._lock = threading.Lock()
        self._counts = {"replica_reads": 0, "replica_fallbacks": 0, "unconfirmed_changes": 0}
        self._incidents = IncidentLog(logger, "Redis replica reads")
        self._role_asked = time.monotonic()
        self.role_refused = False  # the user may not run ROLE: never ask again

    def role_due(self) -> bool:
        """Whether to ask the master's ``ROLE`` again before a lookup: no replica was online
        at the last answer (a replica still syncing when the store started, or restarting),
        and it is at least :data:`ROLE_RECHECK_S` old. Changes refresh it anyway."""
        return (
            self.enabled
            and self.expected == 0
            and not self.role_refused
            and time.monotonic() - self._role_asked >= ROLE_RECHECK_S
        )

    def online(self, role: Any) -> None:
        """Take the master's ``ROLE`` reply: how many replicas are online, and where."""
        self._role_asked = time.monotonic()
        if not isinstance(role, (list, tuple)) or len(role) < 3 or _text(role[0]) != "master":
            self.expected, self.address = 0, None
            return
        replicas = [r for r in role[2] if isinstance(r, (list, tuple)) and len(r) >= 2]
        self.expected = len(replicas)
        if replicas and self.address is None:
            self.address = (_text(replicas[0][0]), int(replicas[0][1]))

    def use_replica(self, call: Call) -> bool:
        """Whether ``call`` goes to a replica now."""
        return (
            self.enabled
            and not isinstance(call, Batch)
            and call.read
            and self.expected > 0
            and time.monotonic() >= self._master_until
            and self._breaker.allow()
        )

    def served(self) -> None:
        """A replica answered."""
        self._breaker.success()
        self._incidents.success()
        with self._lock:
            self._counts["replica_reads"] += 1

    def failed(self, exc: Exception) -> None:
        """A replica failed: the caller asks the master; replicas rest for ``cooldown_ms``."""
        self._breaker.failure()
        self._incidents.failure(exc)
        with self._lock:
            self._counts["replica_fallbacks"] += 1

    def confirmed(self, wanted: int, reply: Any, acked: int | None, role: Any) -> Any:
        """A change's pipeline came back: if fewer than ``wanted`` replicas confirmed it, read
        from the master for ``cooldown_ms``; take the fresh ``ROLE``. Returns ``reply``."""
        if acked is None or acked < wanted:
            with self._lock:
                self._master_until = time.monotonic() + self._cooldown
                self._counts["unconfirmed_changes"] += 1
        if role is not None:
            self.online(role)
        return reply

    def status(self) -> dict[str, Any]:
        """Counters for :meth:`RedisStore.status`."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        out["replicas_online"] = self.expected
        out["reading_master"] = time.monotonic() < self._master_until
        return out


def replica_url(url: str, host: str, port: int) -> str:
    """``url`` with another host and port (same scheme, credentials, database, options)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    where = f"[{host}]" if ":" in host else host
    scheme = parts.scheme if parts.scheme in ("redis", "rediss") else "redis"
    path = parts.path if parts.scheme in ("redis", "rediss") else "/0"
    return urlunsplit((scheme, f"{userinfo}{at}{where}:{port}", path, parts.query, ""))


def _queue(pipe: Any, call: Call, *, source: bool) -> int:
    """Queue ``call`` on ``pipe``; how many replies it takes."""
    if isinstance(call, Script):
        if source:
            pipe.eval(call.script.source, len(call.keys), *call.keys, *call.args)
        else:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        return 1
    if isinstance(call, Batch):
        for command in call.commands:
            pipe.execute_command(*command)
        return len(call.commands)
    pipe.execute_command(*call.args)
    return 1


def _confirm(pipe: Any, wanted: int, wait_ms: int) -> None:
    pipe.execute_command("WAIT", wanted, wait_ms)  # 0 wanted: answers at once
    pipe.execute_command("ROLE")


def _finish(call: Call, out: list[Any], n: int) -> tuple[Any, int | None, Any]:
    for reply in out[:n]:
        if isinstance(reply, Exception):
            raise reply
    acked = out[n] if isinstance(out[n], int) else None
    role = None if isinstance(out[n + 1], Exception) else out[n + 1]
    return (out[:n] if isinstance(call, Batch) else out[0]), acked, role


def _unknown_script(call: Call, out: list[Any]) -> bool:
    from redis.exceptions import NoScriptError

    return isinstance(call, Script) and isinstance(out[0], NoScriptError)


def run_confirmed(
    client: Any, call: Call, wanted: int, wait_ms: int
) -> tuple[Any, int | None, Any]:
    """Run a change on the master with ``WAIT`` and ``ROLE`` in the same pipeline (one
    connection, so ``WAIT`` covers this change): ``(reply, replicas that confirmed, ROLE)``."""
    for source in (False, True):
        pipe = client.pipeline(transaction=False)
        n = _queue(pipe, call, source=source)
        _confirm(pipe, wanted, wait_ms)
        out = pipe.execute(raise_on_error=False)
        if not source and _unknown_script(call, out):
            continue  # EVALSHA refused before running: load it with EVAL
        return _finish(call, out, n)
    raise AssertionError("unreachable")  # pragma: no cover


async def arun_confirmed(
    client: Any, call: Call, wanted: int, wait_ms: int
) -> tuple[Any, int | None, Any]:
    """Async twin of :func:`run_confirmed`."""
    for source in (False, True):
        pipe = client.pipeline(transaction=False)
        n = _queue(pipe, call, source=source)
        _confirm(pipe, wanted, wait_ms)
        out = await pipe.execute(raise_on_error=False)
        if not source and _unknown_script(call, out):
            continue
        return _finish(call, out, n)
    raise AssertionError("unreachable")  # pragma: no cover


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
