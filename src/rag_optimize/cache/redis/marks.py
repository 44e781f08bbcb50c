"""LRU marks of entries the cache served, written with a later call.

A Redis store marks an entry used (its score in the LRU sorted set) when the cache serves
it, as the in-process store does. Some reads cannot write that mark themselves: a search on
the Redis 8 path does not know which candidate, if any, the cache will serve, and any read on
a replica (``read_from_replicas``) cannot write at all. Such marks wait here, per LRU set
(a scope on the Redis 8 path, the namespace on the mirror path). The next script call to that
set carries them as one argument (``'score id score id ...'``; the scripts apply them with
``ZADD XX GT``, so a mark never lowers a score and never brings a removed entry back), and
the store writes what is left when it closes. A mark whose set sees no such call is written
within :data:`WRITE_WITHIN_S` anyway (:class:`FlushTimer`): until then another process's put
could evict the entry as least recently used, though this one just served it.

Bounded: :data:`PER_SET` marks per set and :data:`SETS` sets; past either, the oldest are
dropped. A dropped or lost mark (its call failed) leaves an entry's LRU time a little old,
never a wrong answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["PER_SET", "SETS", "TOUCH_SERVED_LUA", "WRITE_WITHIN_S", "FlushTimer", "ServedMarks"]

PER_SET = 256
SETS = 256
#: Seconds within which a pending mark is written, with or without a later call to its set.
WRITE_WITHIN_S = 1.0

#: Lua for the scripts: ``touch_served(lru_key, spec, pairs)`` marks the entries of ``spec``
#: (the argument :meth:`ServedMarks.take` built) and the ``{score, id, ...}`` already in
#: ``pairs``; skipped where Redis refuses writes (a replica, a full server), so a read still
#: answers there.
TOUCH_SERVED_LUA = r"""
local function touch_served(lru, spec, pairs)
  for score, id in string.gmatch(spec or '', '(%S+) (%S+)') do
    pairs[#pairs + 1] = score
    pairs[#pairs + 1] = id
  end
  if #pairs > 0 then redis.pcall('ZADD', lru, 'XX', 'GT', unpack(pairs)) end
end
"""


class ServedMarks:
    """Pending marks by LRU set: set -> {entry id: when served} (thread-safe)."""

    def __init__(self, per_set: int = PER_SET, sets: int = SETS) -> None:
        self._per_set = per_set
        self._sets = sets
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, float]] = {}
        #: called after every :meth:`add` (the store's :meth:`FlushTimer.poke`)
        self.on_add: Callable[[], None] | None = None

    def add(self, group: str, hid: str, now: float) -> None:
        """Entry ``hid`` of LRU set ``group`` was served at ``now`` (the later time wins)."""
        now = float(now)  # a numpy float's repr is no Redis score
        with self._lock:
            pending = self._pending.pop(group, None) or {}
            self._pending[group] = pending  # the set served last goes last
            pending[hid] = max(now, pending.pop(hid, now))
            if len(pending) > self._per_set:
                del pending[next(iter(pending))]
            if len(self._pending) > self._sets:
                del self._pending[next(iter(self._pending))]
        if self.on_add is not None:
            self.on_add()

    def take(self, group: str) -> str:
        """The pending marks of ``group`` as the scripts' argument, now handed over."""
        with self._lock:
            pending = self._pending.pop(group, None)
        if not pending:
            return ""
        return " ".join(f"{now!r} {hid}" for hid, now in pending.items())

    def take_all(self) -> dict[str, list[str]]:
        """Every pending mark, now handed over: set -> ``[score, id, score, id, ...]``."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return {
            group: [x for hid, now in served.items() for x in (repr(now), hid)]
            for group, served in pending.items()
        }

    def clear(self) -> None:
        """Drop every pending mark (the namespace was cleared)."""
        with self._lock:
            self._pending.clear()


class FlushTimer:
    """Runs ``flush`` :data:`WRITE_WITHIN_S` after a mark is added, once for all the marks
    added meanwhile: a daemon ``threading.Timer`` started on demand, none while nothing is
    pending (thread-safe)."""

    def __init__(self, flush: Callable[[], None], delay: float = WRITE_WITHIN_S) -> None:
        self._flush = flush
        self._delay = delay
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._stopped = False

    def poke(self) -> None:
        """A mark was added: make sure a flush is due within the delay."""
        with self._lock:
            if self._stopped or self._timer is not None:
                return
            timer = threading.Timer(self._delay, self._fire)
            timer.daemon = True  # never keeps the process alive
            timer.name = "rag-optimize-marks"
            self._timer = timer
        timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None  # a mark added from here on asks for the next flush
            if self._stopped:
                return
        self._flush()

    def stop(self) -> None:
        """No more flushes (the store is closing: it writes what is left itself)."""
        with self._lock:
            self._stopped = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
