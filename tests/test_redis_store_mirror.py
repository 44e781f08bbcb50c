"""The mirror path's local copy stays right when this process's writes and the change log cross.

Two writers change a process's mirror: its own writes (at once) and the change-log follower
(events of every process, a moment later, with entry states read a moment before they are
applied). Each test here stops the follower thread and drives it by hand, running one of this
process's writes at the exact point the race needs (between the follower's read of the entry
states and its apply; during a snapshot load; between a fetch's read and its result), so the
interleaving is forced, never waited for. Real Redis 7 (the mirror path) throughout.

The last test is the randomized version: writer threads and a second store racing the
follower with forced snapshot reloads, checking after every write that this process sees its
own write at once (a miss costs a model call; a deleted entry kept costs a fetch).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from rag_optimize import ConfigurationError, InvalidTypeError, RedisStore
from rag_optimize.cache.redis.codec import hex_id
from rag_optimize.cache.redis.options import MirrorOptions
from tests.conftest import FakeClock
from tests.redis_server import RedisServer, namespace, redis_server  # noqa: F401
from tests.test_redis_store import MakeStore, _vec, make_entry, make_mirror_store  # noqa: F401


def paused(store: RedisStore) -> Any:
    """The store's follower with its thread stopped (loaded once): the test drives it."""
    follower = store._follower
    follower.stop()
    assert follower.loads >= 1 and not follower._thread.is_alive()
    return follower


def after_state_read(
    follower: Any, action: Callable[[], None], reader: str = "_read_records"
) -> None:
    """Run ``action`` once, right after the follower's next read of entry states (before it
    applies the events it read them for); ``reader="_read_page"``: after the next page of a
    snapshot load (before the snapshot is swapped in)."""
    real = getattr(follower, reader)

    def read_then_act(*args: Any) -> Any:
        out = real(*args)
        setattr(follower, reader, real)
        action()
        return out

    setattr(follower, reader, read_then_act)


def test_the_follower_cannot_bring_back_an_entry_this_process_deleted(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    store = make_mirror_store()
    follower = paused(store)
    entry = make_entry("where is my parcel", "in transit")
    store.put(entry, clock())
    # the follower reads the put event and the entry's state (present); then this process
    # deletes it; then the follower applies the put it read
    after_state_read(follower, lambda: store.delete([entry.id]))
    follower._tail()
    assert hex_id(entry.id) not in store._mirror
    assert store.search("", _vec("where is my parcel"), 4, clock()) == []
    follower._tail()  # the delete's own event
    assert hex_id(entry.id) not in store._mirror


def test_the_follower_cannot_remove_an_entry_this_process_wrote_again(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    store = make_mirror_store()
    follower = paused(store)
    entry = make_entry("opening hours", "9 to 5")
    store.put(entry, clock())
    store.delete([entry.id])
    # the follower reads put + delete and the state (gone); this process writes it again;
    # then the follower applies the old put (as "gone") and the old delete
    after_state_read(follower, lambda: store.put(entry, clock()))
    follower._tail()
    found = store.search("", _vec("opening hours"), 1, clock())
    assert [c.entry_id for c in found] == [hex_id(entry.id)]
    follower._tail()  # the second put's own event
    assert hex_id(entry.id) in store._mirror


def test_a_clear_event_keeps_what_this_process_wrote_after_the_clear(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    store = make_mirror_store()
    follower = paused(store)
    store.put(make_entry("before the clear", 1), clock())
    follower._tail()
    store.clear()
    after = make_entry("after the clear", 2)
    after_state_read(follower, lambda: store.put(after, clock()))
    follower._tail()  # applies the clear event, read before the put
    assert [c.entry_id for c in store.search("", _vec("after the clear"), 4, clock())] == [
        hex_id(after.id)
    ]
    assert len(store._mirror) == 1


def test_writes_during_a_snapshot_load_survive_the_swap(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    store = make_mirror_store()
    follower = paused(store)
    kept, doomed, late = (make_entry(q, q) for q in ("kept one", "doomed one", "late one"))
    store.put(kept, clock())
    store.put(doomed, clock())

    def write_mid_load() -> None:  # the scan has read its chunk; the swap has not happened
        store.put(late, clock())
        store.delete([doomed.id])

    after_state_read(follower, write_mid_load, "_read_page")
    follower._load()
    assert hex_id(late.id) in store._mirror and hex_id(kept.id) in store._mirror
    assert hex_id(doomed.id) not in store._mirror
    follower._tail()  # events after the snapshot's head: the same changes again
    assert sorted(store._mirror.ids()) == sorted([hex_id(kept.id), hex_id(late.id)])


def test_a_fetch_that_found_nothing_keeps_an_entry_written_meanwhile(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    store = make_mirror_store()
    paused(store)
    entry = make_entry("new product line", "launching in May")
    path = store._path
    plan = path.fetch(entry.id, clock())
    next(plan)  # the fetch script is on its way (Redis holds nothing yet)
    store.put(entry, clock())  # another thread writes the entry, then the empty reply lands
    with pytest.raises(StopIteration):
        plan.send([])
    assert hex_id(entry.id) in store._mirror
    # with nothing written meanwhile, an entry Redis no longer has is dropped
    plan = path.fetch(entry.id, clock())
    next(plan)
    with pytest.raises(StopIteration):
        plan.send([])
    assert hex_id(entry.id) not in store._mirror


def test_own_writes_are_seen_at_once_while_the_log_and_reloads_race(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    store, other = make_mirror_store(staleness_ms=5), make_mirror_store()
    violations: list[str] = []
    stop = threading.Event()

    def writer(name: str, seed: int) -> None:
        rng = random.Random(seed)
        entries = [make_entry(f"{name} question {i}", i) for i in range(6)]
        for _ in range(150):
            entry = rng.choice(entries)
            if rng.random() < 0.6:
                store.put(entry, clock())
                if hex_id(entry.id) not in store._mirror:
                    violations.append(f"own put of {entry.query!r} missing")
            else:
                store.delete([entry.id])
                if hex_id(entry.id) in store._mirror:
                    violations.append(f"own delete of {entry.query!r} still there")

    def traffic() -> None:  # another process's writes keep the follower busy
        rng = random.Random(7)
        while not stop.is_set():
            other.put(make_entry(f"other {rng.randrange(20)}", 0), clock())

    def reloads() -> None:  # snapshot swaps at arbitrary moments
        while not stop.wait(0.003):
            store._follower._need_load = True

    threads = [threading.Thread(target=writer, args=(f"w{i}", i)) for i in range(3)]
    helpers = [threading.Thread(target=traffic), threading.Thread(target=reloads)]
    for t in threads + helpers:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in helpers:
        t.join()
    assert store._follower.loads > 2  # the swaps did happen
    assert violations == []
    assert store.wait_synced()
    held = {m.decode() for m, _ in store._client.zscan_iter("{" + store.namespace + "}:lru")}
    assert set(store._mirror.ids()) == held  # converged to exactly what Redis holds


def test_an_int8_mirror_scores_exactly_like_a_float32_one(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    small = make_mirror_store(mirror=MirrorOptions(storage="int8"))
    full = make_mirror_store(mirror=MirrorOptions(storage="float32"))
    for i in range(40):
        small.put(make_entry(f"how do I configure feature {i}", i), clock())
    assert full.wait_synced()
    table = next(iter(small._mirror._tables.values()))
    assert table.storage == "int8" and len(table) == 40
    for i in range(0, 40, 3):
        query = _vec(f"how can I configure feature {i} quickly")
        approx = small._mirror.search("", query, 3, clock())
        rescored, exact = small.search("", query, 3, clock()), full.search("", query, 3, clock())
        assert rescored[0].entry_id == exact[0].entry_id  # (lower ranks may hold exact ties)
        # the rescored scores are the float32 ones; the mirror's own int8 scores are not
        assert [c.similarity for c in rescored] == pytest.approx(
            [c.similarity for c in exact], abs=1e-6
        )
        assert approx[0].similarity != exact[0].similarity


def test_mirror_storage_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="storage must be 'int8' or 'float32'"):
        MirrorOptions(storage="float16")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="index must be"):
        MirrorOptions(index="binary")  # type: ignore[arg-type]


def test_bad_arguments_are_project_errors_that_are_still_type_errors(
    make_mirror_store: MakeStore, clock: FakeClock  # noqa: F811
) -> None:
    store = make_mirror_store()
    calls = [
        lambda: store.delete_where(None, "source_ids", "d1"),  # a str, not a list of str
        lambda: store.delete_where(7, "source_ids", ["d1"]),
        lambda: store.delete("0" * 32),
        lambda: store.delete([b"raw bytes id"]),
        lambda: store.fetch(12345, clock()),
        lambda: store.invalidate(None),
        lambda: store.get_exact("", 3.5, clock()),
    ]
    for call in calls:
        with pytest.raises(InvalidTypeError) as caught:
            call()
        assert isinstance(caught.value, TypeError)  # old callers caught TypeError
    assert store.count() == 0
