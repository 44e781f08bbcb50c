"""Keeps a process's :class:`LocalMirror` current with the Redis change log.

One background thread per store: it loads the namespace (the ``snapshot_page`` script: a
``ZSCAN`` of the LRU set and the index fields of each page, packed; see
:mod:`~rag_optimize.cache.redis.snapshot`), then tails the ``{ns}:log`` stream with
``XREAD BLOCK``, so a change made by any process reaches this one's mirror one round trip
after it happens. The stream's ``seq`` field increases by exactly one per change, and each
event names the log id of the one before (``prev``); a gap (the stream was trimmed past us,
the server restarted empty, someone flushed it), an event that does not follow the last one
applied (another history: a replica promoted by a failover had not received the old
master's last changes and numbered its own the same) or any error triggers a full reload
once Redis answers again. After a reload caused by an error or another history, this
process's changes made during the load are replayed as unnumbered (their numbers may come
from either history). The same thread sweeps expired entries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.redis.breaker import CircuitBreaker
from rag_optimize.cache.redis.codec import (
    FORMAT_VERSION,
    INDEX_FIELDS,
    CorruptEntry,
    IndexRecord,
    Keys,
    decode_index_record,
)
from rag_optimize.cache.redis.mirror import LocalMirror
from rag_optimize.cache.redis.scripts import HEAD, SNAPSHOT_PAGE, SWEEP, run_script
from rag_optimize.cache.redis.snapshot import Snapshot

logger = logging.getLogger("rag_optimize.cache.redis")

_LOAD_CHUNK = 1000
_READ_COUNT = 1000
_SWEEP_LIMIT = 1000


class _Gap(Exception):
    """The change log skipped changes: reload."""


class ChangeFollower:
    """The background thread that loads and tails one namespace into a mirror."""

    def __init__(
        self,
        client: Any,
        keys: Keys,
        mirror: LocalMirror,
        breaker: CircuitBreaker,
        *,
        block_ms: int,
        sweep_interval: float,
        stream_maxlen: int,
        clock: Callable[[], float],
        get_dim: Callable[[], int | None],
        set_dim: Callable[[int | None], None],
        on_corrupt: Callable[[str, Exception], None],
        on_expired: Callable[[int], None],
        on_cleared: Callable[[], None],
    ) -> None:
        self._client = client
        self._keys = keys
        self._mirror = mirror
        self._breaker = breaker
        self._block_ms = block_ms
        self._sweep_interval = sweep_interval
        self._maxlen = stream_maxlen
        self._clock = clock
        self._get_dim = get_dim
        self._set_dim = set_dim
        self._on_corrupt = on_corrupt
        self._on_expired = on_expired
        self._on_cleared = on_cleared
        self._incidents = IncidentLog(logger, f"Redis change log of {keys.namespace!r}")
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._progress = threading.Condition()  # notified whenever the position moves
        self._last_id: bytes = b"0-0"
        self._last_link: bytes = b"0-0"  # the last event's link (its log id before links)
        self._seq = 0
        self._need_load = True
        self._renumber = False  # the next load may meet another history: replay unnumbered
        self._last_ok = float("-inf")
        self._next_sweep = 0.0
        self.loads = 0
        self._thread = threading.Thread(
            target=self._run, name=f"rag-optimize-redis-{keys.namespace}", daemon=True
        )

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the thread (loads the namespace first)."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop and wait for it (at most one ``XREAD`` block)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_loaded(self, timeout: float) -> bool:
        """Block until the first full load finished (or ``timeout``); returns whether it did."""
        return self._loaded.wait(timeout)

    def wait_applied(self, seq: int, timeout: float) -> bool:
        """Block until the mirror reflects every change numbered up to ``seq`` (or
        ``timeout``); returns whether it does."""
        with self._progress:
            return self._progress.wait_for(
                lambda: not self._need_load and self._seq >= seq, timeout
            )

    def fresh(self, bound: float) -> bool:
        """Whether the mirror is loaded and was confirmed current within ``bound`` seconds."""
        return not self._need_load and time.monotonic() - self._last_ok <= bound

    @property
    def failing(self) -> bool:
        """Whether the last attempt to read the change log failed."""
        return self._incidents.failing

    @property
    def position(self) -> tuple[bytes, int]:
        """The last change applied: (stream id, sequence number)."""
        return self._last_id, self._seq

    # --------------------------------------------------------------------- loop
    def _run(self) -> None:
        pause = min(0.05, self._breaker.cooldown)
        while not self._stop.is_set():
            if not self._breaker.allow():
                self._stop.wait(pause)
                continue
            try:
                if self._need_load:
                    self._load()
                self._tail()
                self._maybe_sweep()
            except _Gap:
                self._need_load = True
                self._breaker.success()
                continue
            except Exception as exc:  # noqa: BLE001 - any backend trouble: retry, reload
                self._need_load = True
                self._renumber = True  # e.g. a failover: the next server may number anew
                self._breaker.failure()
                self._incidents.failure(exc)
                self._stop.wait(pause)
                continue
            self._last_ok = time.monotonic()
            self._breaker.success()
            self._incidents.success()

    def _load(self) -> None:
        self._mirror.begin_snapshot()
        try:
            self._read_snapshot()
        except BaseException:
            self._mirror.abandon_snapshot()
            raise

    def _read_snapshot(self) -> None:
        keys = self._keys
        seq_raw, last_id, dim_raw, entries, last_link = run_script(
            self._client, HEAD, (keys.log,), (keys.prefix, self._maxlen)
        )
        dim = _parse_dim(dim_raw)
        snapshot = Snapshot(int(entries) + _LOAD_CHUNK, dim)
        # One page ahead: the next page's script runs on the server (and its reply is read)
        # in a helper thread while this one decodes the page before, so the server's time
        # and this process's overlap instead of adding up (measured, BENCHMARKS.md issue 14).
        with ThreadPoolExecutor(1, thread_name_prefix="rag-optimize-redis-load") as ahead:
            pending = ahead.submit(self._read_page, b"0", snapshot.width)
            while True:
                reply = pending.result()
                cursor = reply[0] if isinstance(reply, list) and reply else b"0"
                done = cursor in (b"0", 0, "0")
                if not done:  # the width the script found on the first page, if unknown
                    width = snapshot.width or _parse_dim(reply[1])
                    pending = ahead.submit(self._read_page, cursor, width)
                try:
                    snapshot.add_page(reply, self._on_corrupt)
                except BaseException:
                    pending.cancel()
                    raise
                if done:
                    break
        head = int(seq_raw or 0)
        reset = head < self._seq or self._renumber
        self._mirror.replace(snapshot, head, counter_reset=reset)  # releases it
        self._renumber = False
        self._set_dim(dim)
        with self._progress:
            self._seq = head
            self._last_id = last_id or b"0-0"
            self._last_link = last_link or b"0-0"
            self._need_load = False
            self._progress.notify_all()
        self.loads += 1
        self._loaded.set()

    def _read_page(self, cursor: Any, width: int | None) -> Any:
        """Read one packed page of the namespace (the raw ``snapshot_page`` reply)."""
        keys = self._keys
        args = (
            keys.prefix,
            self._maxlen,
            cursor,
            _LOAD_CHUNK,
            FORMAT_VERSION,
            keys.namespace,
            "" if width is None else str(width),
        )
        return run_script(self._client, SNAPSHOT_PAGE, (keys.log,), args)

    def _read_records(self, hids: list[str], dim: int | None) -> dict[str, IndexRecord | None]:
        """HMGET the index fields of ``hids`` (the entries a change-log batch names); ``None``
        for gone or corrupt entries."""
        if not hids:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for hid in hids:
            pipe.hmget(self._keys.entry(hid), list(INDEX_FIELDS))
        out: dict[str, IndexRecord | None] = {}
        for hid, row in zip(hids, pipe.execute(raise_on_error=False), strict=True):
            try:
                if isinstance(row, Exception):  # e.g. WRONGTYPE: a foreign key
                    raise CorruptEntry(f"not an entry hash: {row}")
                record = decode_index_record(row, self._keys.namespace, dim)
            except CorruptEntry as exc:
                self._on_corrupt(hid, exc)
                record = None
            out[hid] = record
        return out

    def _tail(self) -> None:
        # current up to now (loaded or tailed without error just before); while this XREAD
        # blocks, any change wakes it at once
        self._last_ok = time.monotonic()
        reply = self._client.xread(
            {self._keys.log: self._last_id}, count=_READ_COUNT, block=self._block_ms
        )
        if not reply:
            return
        events = reply[0][1]
        puts: list[str] = []
        for _event_id, fields in events:
            if fields.get(b"op") == b"put":
                puts.extend(fields.get(b"ids", b"").decode().split())
        dim = self._get_dim()
        if puts:
            dim_raw = self._client.get(self._keys.dim)
            dim = _parse_dim(dim_raw)
        states = self._read_records(list(dict.fromkeys(puts)), dim)
        for event_id, fields in events:
            seq = int(fields.get(b"seq", b"0"))
            if seq != self._seq + 1:
                raise _Gap(f"change log jumped from {self._seq} to {seq}")
            prev = fields.get(b"prev")
            if prev is not None and self._last_link != b"0-0" and prev != self._last_link:
                self._renumber = True
                raise _Gap(
                    f"change {seq} follows {prev!r}, not {self._last_link!r}: "
                    "another history (a failover?)"
                )
            self._apply(fields, states, seq)
            self._seq = seq
            self._last_id = event_id
            self._last_link = fields.get(b"link", event_id)
        self._mirror.advance(self._seq)
        with self._progress:
            self._progress.notify_all()
        if puts:
            self._set_dim(dim)

    def _apply(
        self, fields: dict[bytes, bytes], states: dict[str, IndexRecord | None], seq: int
    ) -> None:
        """Apply one event, numbered ``seq``: the mirror ignores it for an entry this process
        changed later (the states were read a moment ago, before such a change perhaps)."""
        op = fields.get(b"op")
        hids = fields.get(b"ids", b"").decode().split()
        if op == b"clear":
            self._mirror.clear(seq)
            self._on_cleared()  # another process emptied the namespace: no dimension now
        elif op == b"del":
            self._mirror.remove(hids, seq)
        elif op == b"put":
            for hid in hids:
                record = states.get(hid)
                if record is None:
                    self._mirror.remove([hid], seq)
                else:
                    self._mirror.add(hid, record, seq)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        keys = self._keys
        args = (keys.prefix, self._maxlen, repr(self._clock()), _SWEEP_LIMIT)
        removed = int(run_script(self._client, SWEEP, (keys.log,), args))
        if removed:
            self._on_expired(removed)


def _parse_dim(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        dim = int(raw)
    except ValueError:
        return None
    return dim if dim > 0 else None
