"""What the store's operations are made of: plans, the Redis calls they yield, shared rules.

Each operation is written once as a *plan*: a generator that yields :class:`Script`,
:class:`Command` or :class:`Batch` calls and receives their replies. The store's sync driver and
its async driver run the same plans (the httpx pattern), so the two APIs cannot drift. The
search paths (:mod:`~rag_optimize.cache.redis.vsets` on the server, :mod:`~.mirrored` in
process) only build plans; neither knows which driver runs them.

:class:`Shared` is the state both paths read and report into: the namespace, capacity and
size rules, the vector dimension, and the counters of evictions, expirations and corrupt
entries. :func:`prepare_put` checks an entry before any I/O, the same way on every path.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from rag_optimize.cache.entry import CacheEntry
from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.redis.codec import encode_entry, hex_id
from rag_optimize.cache.redis.scripts import LuaScript
from rag_optimize.cache.store import ReportLog, StoreReport
from rag_optimize.errors import InvalidVectorError, StoreError

__all__ = [
    "Batch",
    "Call",
    "Command",
    "EntryRefused",
    "ForeignDimension",
    "Plan",
    "PreparedPut",
    "Script",
    "Shared",
    "changes",
    "is_entry_for",
    "prepare_put",
]

T = TypeVar("T")
logger = logging.getLogger("rag_optimize.cache.redis")


@dataclass(frozen=True)
class Script:
    """Run ``script`` (EVALSHA) with ``keys`` (the first one routes it in a cluster).

    ``read``: a lookup that may run on a replica (``EVALSHA_RO``) when the store reads from
    replicas; its writes (the LRU touch) are ``redis.pcall`` and skipped there."""

    script: LuaScript
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    read: bool = False


@dataclass(frozen=True)
class Command:
    """One Redis command (routed by its key in a cluster); ``read`` as for :class:`Script`."""

    args: tuple[Any, ...]
    read: bool = False


@dataclass(frozen=True)
class Batch:
    """Several single-key commands in one pipeline (no transaction); replies in order."""

    commands: tuple[tuple[Any, ...], ...]


Call = Script | Command | Batch
Plan = Generator[Call, Any, T]

#: Commands the plans send that change nothing (everything else is a change, which a store
#: reading from replicas makes the replicas confirm).
_READ_ONLY = frozenset({"GET", "HGET", "ZCARD", "SCARD", "SCAN", "SMEMBERS", "ROLE"})


def changes(call: Call) -> bool:
    """Whether ``call`` may change the namespace (a script that is not a lookup; a command
    or batch with a command not in the read-only set)."""
    if isinstance(call, Script):
        return not call.read
    commands = call.commands if isinstance(call, Batch) else (call.args,)
    return any(str(c[0]).upper() not in _READ_ONLY for c in commands)


class ForeignDimension(StoreError):
    """The namespace (or scope) holds vectors of another dimension (another model wrote
    them). The cache counts it as a store error and misses or drops the write; the circuit
    breaker does not count it (the server is healthy)."""


class EntryRefused(StoreError):
    """An entry the store will not hold (larger than ``max_value_bytes``, JSON nested past
    what a decoder can read back, a non-finite number). The write is dropped, counted, logged."""


@dataclass
class Shared:
    """State and rules both search paths use. What a call causes goes into the caller's
    :class:`StoreReport`; what nobody called for (the change-log thread) into ``background``."""

    namespace: str
    max_entries: int | None
    ttl_grace_ms: int
    max_value_bytes: int
    background: ReportLog = field(default_factory=ReportLog)
    dim: int | None = None
    own_dim: int | None = None
    _corrupt_seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dim_incidents: IncidentLog = field(
        default_factory=lambda: IncidentLog(logger, "Redis namespace dimension check")
    )

    def corrupt(self, hid: str, exc: Exception, report: StoreReport | None = None) -> None:
        """Count a corrupt or foreign entry once per process (it is skipped, never raised),
        in the caller's ``report``, or (no caller) for ``drain_report``."""
        with self._lock:
            if hid in self._corrupt_seen:
                return
            if len(self._corrupt_seen) > 100_000:
                self._corrupt_seen.clear()
            self._corrupt_seen.add(hid)
        if report is None:
            self.background.add(StoreReport(corrupt=1))
        else:
            report.corrupt += 1

    def expired(self, count: int, report: StoreReport | None = None) -> None:
        """Count entries removed because their TTL passed."""
        if count and report is None:
            self.background.add(StoreReport(expired=count))
        elif count and report is not None:
            report.expired += count

    @staticmethod
    def evicted(count: int, report: StoreReport | None) -> None:
        """Count entries evicted past capacity by the caller's write."""
        if count and report is not None:
            report.evicted += count

    def foreign_dimension(self, got: int, held: int | str) -> StoreError | InvalidVectorError:
        """The error for a vector of dimension ``got`` where ``held`` is stored.

        If this store itself wrote vectors of another dimension, the caller's model changed:
        an input error (:class:`InvalidVectorError`), as for every store. Otherwise another
        model's cache shares the namespace: :class:`ForeignDimension`, which the cache counts
        as a miss or a dropped write; logged once per incident."""
        if self.own_dim is not None and got != self.own_dim:
            return InvalidVectorError(
                f"vector has dimension {got}, this store has written {self.own_dim}-dimensional "
                f"vectors to the Redis namespace {self.namespace!r} (did the model change?)"
            )
        exc = ForeignDimension(
            f"vector has dimension {got}, the Redis namespace {self.namespace!r} holds {held} "
            "(another embedding model wrote it? use another namespace)"
        )
        self._dim_incidents.failure(exc)
        return exc

    def dimension_ok(self) -> None:
        """A vector of the right dimension went through: ends a dimension incident."""
        self._dim_incidents.success()

    def stored(self, dim: int) -> None:
        """This process stored a vector of ``dim``: the namespace holds it, and so does
        this store's own :attr:`RedisStore.dim`."""
        self.dim = self.own_dim = dim
        self._dim_incidents.success()

    def emptied(self) -> None:
        """The namespace was cleared: no dimension any more."""
        self.dim = self.own_dim = None


@dataclass(frozen=True)
class PreparedPut:
    """An entry checked and encoded for a put script."""

    hid: str
    dim: int
    vector: np.ndarray
    fields: dict[bytes, bytes]
    expires: str
    ttl_ms: str

    @property
    def flat_fields(self) -> list[bytes]:
        """``[field, value, ...]`` for HSET inside a script."""
        return [item for pair in self.fields.items() for item in pair]


def is_entry_for(
    entry: CacheEntry | None, scope: str, query_key: str, partition: str
) -> bool:
    """Whether ``entry`` (found by id) is really the one for this exact lookup: an id is a
    digest, the fields stored in the entry are the truth."""
    return (
        entry is not None
        and entry.scope == scope
        and entry.query_key == query_key
        and entry.partition == partition
    )


def prepare_put(entry: CacheEntry, now: float, shared: Shared) -> PreparedPut:
    """Encode ``entry`` or raise :class:`EntryRefused` / :class:`ForeignDimension` (no I/O)."""
    vector = np.asarray(entry.vector, dtype=np.float32)
    dim = int(vector.shape[0])
    if shared.dim is not None and dim != shared.dim:
        raise shared.foreign_dimension(dim, shared.dim)
    try:
        fields = encode_entry(entry, shared.namespace)
    except (ValueError, TypeError, RecursionError) as exc:
        raise EntryRefused(f"entry {entry.id!r} cannot be stored in Redis: {exc}") from exc
    size = len(fields[b"resp"]) + len(fields[b"meta"]) + len(fields[b"q"])
    if size > shared.max_value_bytes:
        raise EntryRefused(
            f"entry {entry.id!r} is {size} bytes of answer and metadata, more than "
            f"max_value_bytes={shared.max_value_bytes}"
        )
    expires = ttl_ms = ""
    if entry.expires_at is not None:
        expires = repr(float(entry.expires_at))
        ttl = max(1, math.ceil((entry.expires_at - now) * 1000)) + shared.ttl_grace_ms
        ttl_ms = str(ttl)
    if entry.partition and not _PARTITION.fullmatch(entry.partition):
        raise EntryRefused(f"entry {entry.id!r} has partition {entry.partition!r}, not a digest")
    return PreparedPut(hex_id(entry.id), dim, vector, fields, expires, ttl_ms)


_PARTITION = re.compile(r"[0-9a-f]{1,64}")

