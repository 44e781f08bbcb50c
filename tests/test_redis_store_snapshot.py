"""The mirror path's snapshot load (packed pages) and what a lookup does while it runs.

Real Redis 7 throughout (the mirror path). The load reads the namespace in pages of about a
thousand entries, each packed by one script; these tests check that a multi-page load gives a
new replica exactly the entries (scope, partition, expiry, threshold, vector) the writer's own
mirror holds, that every kind of bad entry is skipped and counted, never half-kept, and the
documented behaviour of lookups during the load: exact lookups ask Redis and hit; a semantic
lookup waits for the load at most ``startup_wait_ms``, past that it is a counted store error,
never a silent miss.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from rag_optimize.cache.keys import digest
from rag_optimize.cache.redis.codec import encode_vector, hex_id
from rag_optimize.cache.redis.sync import ChangeFollower
from tests.conftest import FakeClock
from tests.redis_server import RedisServer, namespace, redis_server  # noqa: F401
from tests.test_redis_store import (  # noqa: F401
    DIM,
    MakeStore,
    _vec,
    entry_key,
    make_entry,
    make_mirror_store,
    new_cache,
)


def test_a_multi_page_load_gives_a_new_replica_exactly_the_writers_entries(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    writer = make_mirror_store(max_entries=None)
    scopes, partitions = ("", "tenant-a", "tenant \u00e9"), ("", "a1b2c3")  # (digests)
    for i in range(2600):  # three pages and a bit
        fields: dict[str, Any] = {"partition": partitions[i % 2]}
        if i % 3 == 0:
            fields["threshold"] = 0.5 + (i % 7) / 20
        if i % 5 == 0:
            fields["expires_at"] = clock() + 3600 + i
        writer.put(make_entry(f"question {i}", i, scopes[i % 3], **fields), clock())
    reader = make_mirror_store(max_entries=None)
    assert reader._follower.loads == 1 and len(reader._mirror) == 2600
    mine, theirs = writer._mirror, reader._mirror
    assert sorted(theirs._tables) == sorted(mine._tables)  # one table per scope and partition
    for hid in mine.ids():
        info, got = mine.info(hid), theirs.info(hid)
        assert info is not None and got is not None
        assert (got.scope, got.partition, got.expires_at, got.threshold) == (
            info.scope, info.partition, info.expires_at, info.threshold
        )
    for slot, table in mine._tables.items():
        other = theirs._tables[slot]
        assert sorted(other.table_ids()) == sorted(table.table_ids())
        for hid in table.table_ids()[:50]:
            assert np.array_equal(other.vector(hid), table.vector(hid))
    for i in (0, 1, 2, 997, 1000, 2599):
        query = _vec(f"question {i}")
        scope, partition = scopes[i % 3], partitions[i % 2]
        got = reader.search(scope, query, 3, clock(), partition=partition)
        want = writer.search(scope, query, 3, clock(), partition=partition)
        assert got[0] == want[0] and got[0].entry_id == hex_id(digest(scope, f"question {i}"))
        # (lower ranks can hold exact ties of the test embedder, in either order)
        assert [c.similarity for c in got] == [c.similarity for c in want]
    assert reader.drain_report().corrupt == 0


def test_every_kind_of_bad_entry_is_skipped_and_counted_by_the_load(
    make_mirror_store: MakeStore, clock: FakeClock, redis_server: RedisServer  # noqa: F811
) -> None:
    writer = make_mirror_store()
    bad = {
        "nan vector": ("vec", encode_vector(np.full(DIM, np.nan, dtype=np.float32))),
        "long vector": ("vec", encode_vector(np.full(DIM, 0.5, dtype=np.float32))),
        "short vector": ("vec", encode_vector(np.ones(8, dtype=np.float32) / np.sqrt(8))),
        "odd vector bytes": ("vec", b"\x00" * 7),
        "expiry in words": ("ex", b"soon"),
        "expiry not a number": ("ex", b"1e5e5"),
        "infinite threshold": ("thr", b"inf"),
        "scope not utf-8": ("scope", b"\xff\xfe"),
        "old format": ("v", b"0"),
        "foreign namespace": ("ns", b"someone-else"),
    }
    good = [make_entry(f"healthy entry {i}", i) for i in range(3)]
    for entry in good:
        writer.put(entry, clock())
    raw = redis_server.client()
    for query, (field, value) in bad.items():
        entry = make_entry(query, query)
        writer.put(entry, clock())
        raw.hset(entry_key(writer, "", hex_id(entry.id)), field, value)
    not_a_hash = make_entry("not a hash", 0)
    writer.put(not_a_hash, clock())
    key = entry_key(writer, "", hex_id(not_a_hash.id))
    raw.delete(key)
    raw.set(key, b"\x80\x04pickle?")

    reader = make_mirror_store()
    assert sorted(reader._mirror.ids()) == sorted(hex_id(e.id) for e in good)
    assert reader.drain_report().corrupt == len(bad) + 1
    assert reader._follower.loads == 1 and not reader._follower.failing
    for entry in good:
        found = reader.search("", _vec(entry.query), 1, clock())
        assert [c.entry_id for c in found] == [hex_id(entry.id)]


@pytest.fixture
def gated_load(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Snapshot loads block before their first page until the returned event is set."""
    gate = threading.Event()
    real = ChangeFollower._read_page

    def held(self: ChangeFollower, *args: Any) -> Any:
        gate.wait(30)
        return real(self, *args)

    monkeypatch.setattr(ChangeFollower, "_read_page", held)
    return gate


def stored_then_held(make: MakeStore, clock: FakeClock, gate: threading.Event) -> None:
    """One entry written (by a store loaded at once); the next replica's load is then held
    before its first page until ``gate`` is set."""
    gate.set()
    assert new_cache(make(), clock).set("How do I reset my password?", "Settings > Security")
    gate.clear()


def test_lookups_while_a_new_replica_loads_hit_or_are_counted_never_silent(
    make_mirror_store: MakeStore, clock: FakeClock, gated_load: threading.Event  # noqa: F811
) -> None:
    stored_then_held(make_mirror_store, clock, gated_load)
    store = make_mirror_store(startup_wait_ms=50)
    cache = new_cache(store, clock)
    assert store._follower.loads == 0
    exact = cache.get("How do I reset my password?")  # asks Redis: hits during the load
    assert exact is not None and exact.exact and exact.response == "Settings > Security"
    assert cache.get("how can I reset my password quickly") is None
    assert cache.stats.store_errors == 1  # the semantic miss is counted, not silent
    gated_load.set()
    assert store.wait_synced()
    similar = cache.get("how can I reset my password quickly")
    assert similar is not None and not similar.exact
    assert cache.stats.store_errors == 1


def test_a_semantic_lookup_during_the_load_waits_for_it_and_hits(
    make_mirror_store: MakeStore, clock: FakeClock, gated_load: threading.Event  # noqa: F811
) -> None:
    stored_then_held(make_mirror_store, clock, gated_load)
    store = make_mirror_store(startup_wait_ms=60_000, start=False)
    cache = new_cache(store, clock)
    opener = threading.Timer(0.2, gated_load.set)  # the load is let through while we wait
    opener.start()
    try:
        similar = cache.get("how can I reset my password quickly")
    finally:
        opener.cancel()
        gated_load.set()
    assert similar is not None and not similar.exact and similar.response == "Settings > Security"
    assert cache.stats.store_errors == 0 and store._follower.loads == 1


def test_a_fault_mid_load_is_retried_and_never_leaves_a_partial_mirror(
    make_mirror_store: MakeStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    writer = make_mirror_store(max_entries=None)
    for i in range(1500):  # two pages
        writer.put(make_entry(f"question {i}", i), clock())
    real = ChangeFollower._read_page
    calls: list[int] = []
    sizes_seen: list[int] = []

    def flaky(self: ChangeFollower, *args: Any) -> Any:
        calls.append(1)
        sizes_seen.append(len(self._mirror))  # what lookups could see during the load
        if len(calls) == 2:  # the second page of the first load: the connection drops
            raise RedisConnectionError("connection lost mid-load")
        return real(self, *args)

    monkeypatch.setattr(ChangeFollower, "_read_page", flaky)
    reader = make_mirror_store(max_entries=None, cooldown_ms=10)
    assert reader.wait_synced(30)
    assert reader._follower.loads == 1 and len(reader._mirror) == 1500
    assert len(calls) >= 4 and set(sizes_seen) == {0}  # retried; never half a snapshot
    found = reader.search("", _vec("question 1234"), 1, clock())
    assert [c.entry_id for c in found] == [hex_id(digest("", "question 1234"))]


def test_an_id_read_twice_by_the_scan_keeps_its_later_state_once() -> None:
    """ZSCAN may return a member twice (the set was resized during the scan): the later
    read wins, in the entry's first row, and the rows after it stay right."""
    from rag_optimize.cache.redis.snapshot import Snapshot

    width = 4
    a, b, c = (np.eye(width, dtype=np.float32)[i] for i in range(3))
    ids = ["a" * 32, "b" * 32, "c" * 32]
    page = [b"7", b"4", (ids[0] + ids[1]).encode(), [encode_vector(a), encode_vector(b)],
            [b"", b""], b"0 - -;0 - 0.8", []]
    again = [b"0", b"4", (ids[1] + ids[2]).encode(), [encode_vector(c), encode_vector(c)],
             [b"t", b""], b"0 123.5 -;0 - -", []]
    snapshot, corrupt = Snapshot(1, None), []
    assert snapshot.add_page(page, lambda hid, exc: corrupt.append(hid)) == b"7"
    assert snapshot.add_page(again, lambda hid, exc: corrupt.append(hid)) == b"0"
    assert corrupt == [] and snapshot.ids == ids  # grew past its first size, b once
    assert np.array_equal(snapshot.matrix, np.stack([a, c, c]))
    assert snapshot.slots == [("", ""), ("t", "")]
    assert snapshot.expires == [None, 123.5, None] and snapshot.thresholds == [None, None, None]


def test_an_async_lookup_during_the_load_waits_off_the_event_loop_and_is_counted(
    make_mirror_store: MakeStore, clock: FakeClock, gated_load: threading.Event,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``aget`` on a replica still loading: the wait for the load never blocks the event
    loop (every other task would stall with it), and past ``startup_wait_ms`` the lookup is
    a counted store error, never a silent miss; once loaded it hits."""
    import asyncio

    stored_then_held(make_mirror_store, clock, gated_load)
    store = make_mirror_store(startup_wait_ms=50)
    cache = new_cache(store, clock)
    blocking_waits: list[float] = []
    real = ChangeFollower.wait_loaded

    def recorded(self: ChangeFollower, timeout: float) -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a worker thread: waiting there is what should happen
            pass
        else:
            if timeout > 0:
                blocking_waits.append(timeout)
        return real(self, timeout)

    monkeypatch.setattr(ChangeFollower, "wait_loaded", recorded)

    async def lookup() -> Any:
        return await cache.aget("how can I reset my password quickly")

    assert asyncio.run(lookup()) is None
    assert cache.stats.store_errors == 1  # counted
    assert blocking_waits == []  # every wait for the load ran off the event loop
    gated_load.set()
    assert store.wait_synced()
    similar = asyncio.run(lookup())
    assert similar is not None and not similar.exact and similar.response == "Settings > Security"
    assert cache.stats.store_errors == 1
