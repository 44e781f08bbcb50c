"""Local 1-bit codes on the Redis 8 path (``RedisStore(local_codes=True)``), real servers.

Two stores on one namespace behave like two processes (separate connections, separate local
tables, separate loader threads). The reader's table is loaded in its asking thread
(``codes.inline``) where a test needs to know when it switches; the background loader is
tested on its own. "Local" lookups are recognised by the server's own command counts: a
lookup that takes its candidates from the table runs no ``VSIM``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rag_optimize import ConfigurationError, RedisStore, SemanticCache
from rag_optimize.cache.entry import CacheEntry
from rag_optimize.cache.keys import entry_id
from rag_optimize.cache.redis.codec import scope_digest
from rag_optimize.cache.redis.codes import MAX_NEW
from rag_optimize.cache.redis.vsets import VectorSetKeys
from tests.conftest import FakeClock
from tests.redis_server import (  # noqa: F401
    RedisServer,
    namespace,
    redis8_bin,
    redis8_server,
    redis_cluster,
    wait_until,
)

DIM = 64


class Vectors:
    """Random unit vectors by name: different names are far apart (dim 64 by default)."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.rng = np.random.default_rng(7)
        self.known: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.known:
            v = self.rng.standard_normal(self.dim).astype(np.float32)
            self.known[name] = v / np.linalg.norm(v)
        return self.known[name]


class Embedder:
    """Embeds a query to its named vector (``"near <name>"``: a near-duplicate of it)."""

    def __init__(self, vectors: Vectors) -> None:
        self.vectors = vectors
        self.rng = np.random.default_rng(11)

    def embed_query(self, text: str) -> list[float]:
        name = text.removeprefix("near ")
        v = self.vectors(name)
        if text.startswith("near "):
            dim = self.vectors.dim
            v = v + 0.15 / np.sqrt(dim) * self.rng.standard_normal(dim).astype(np.float32)
            v = v / np.linalg.norm(v)
        return [float(x) for x in v]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


@pytest.fixture
def vectors() -> Vectors:
    return Vectors()


@pytest.fixture
def make(redis8_server: RedisServer, namespace: str, clock: FakeClock) -> Iterator[Any]:  # noqa: F811
    stores: list[RedisStore] = []

    def build(server: RedisServer | None = None, inline: bool = True, **options: Any) -> RedisStore:
        options.setdefault("clock", clock)
        options.setdefault("timeout_ms", 1000)
        options.setdefault("max_entries", None)
        store = RedisStore((server or redis8_server).url, namespace, **options).start()
        assert store.search_path == "server"
        if inline and store._path.codes is not None:
            store._path.codes.inline = True
        stores.append(store)
        return store

    yield build
    for store in stores:
        store.close()


def put(store: RedisStore, vectors: Vectors, name: str, now: float, scope: str = "",
        answer: Any = None, **fields: Any) -> str:
    hid = entry_id(scope, name)
    store.put(CacheEntry(
        id=hid, scope=scope, query=name, query_key=name, vector=vectors(name),
        response=name if answer is None else answer, created_at=now, **fields,
    ), now)
    return hid


def found(store: RedisStore, vectors: Vectors, name: str, now: float, scope: str = "") -> list[str]:
    return [c.entry_id for c in store.search(scope, vectors(name), 3, now)
            if c.similarity > 0.99]


def vsims(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.lower() == "cmdstat_vsim")


def table(store: RedisStore, scope: str = "") -> Any:
    return store._path.codes.table(scope_digest(scope))


def fill(store: RedisStore, vectors: Vectors, n: int, now: float, scope: str = "") -> list[str]:
    return [put(store, vectors, f"row {i}", now, scope) for i in range(n)]


def loaded(reader: RedisStore, vectors: Vectors, now: float, scope: str = "") -> Any:
    """The reader's first lookup in ``scope`` (``VSIM``; loads the table), then its table."""
    reader.search(scope, vectors("nothing"), 3, now)
    t = table(reader, scope)
    assert t is not None
    return t


def pair(make: Any, vectors: Vectors, clock: FakeClock, n: int) -> tuple[Any, ...]:
    """A writer with ``n`` entries, a reader with the scope's table loaded: (w, r, now, t)."""
    writer, reader = make(), make()
    now = clock()
    fill(writer, vectors, n, now)
    t = loaded(reader, vectors, now)
    assert t.n == n
    return writer, reader, now, t


def test_writes_of_another_store_are_found_by_the_next_lookup_and_kept(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock  # noqa: F811
) -> None:
    writer, reader, now, t = pair(make, vectors, clock, 200)
    before = vsims(redis8_server)
    for i in range(5):
        hid = put(writer, vectors, f"new {i}", now)
        assert found(reader, vectors, f"new {i}", now) == [hid]  # the very next lookup
    # the table took them in: found again, still without VSIM, and old rows too
    for i in range(5):
        assert found(reader, vectors, f"new {i}", now) == [entry_id("", f"new {i}")]
    assert found(reader, vectors, "row 17", now) == [entry_id("", "row 17")]
    assert t.n == 205 and vsims(redis8_server) == before


def test_removed_entries_are_never_served_by_the_other_store(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock  # noqa: F811
) -> None:
    writer, reader = make(), make()
    now = clock()
    fill(writer, vectors, 50, now, "s")
    put(writer, vectors, "short lived", now, "s", expires_at=now + 10.0)
    fill(writer, vectors, 20, now, "other")
    t = loaded(reader, vectors, now, "s")
    assert t.n == 51
    before = vsims(redis8_server)
    writer.delete([entry_id("s", "row 3")])
    assert found(reader, vectors, "row 3", now, "s") == []
    assert t.dead == 1
    assert found(reader, vectors, "short lived", now + 11, "s") == []  # expired (cache clock)
    writer.delete_where("s", "nothing", ["x"])  # removes nothing
    assert found(reader, vectors, "row 4", now, "s") == [entry_id("s", "row 4")]
    assert vsims(redis8_server) == before  # all of that from the table
    writer.invalidate("s")
    for i in (4, 5, 49):
        assert found(reader, vectors, f"row {i}", now, "s") == []
    loaded(reader, vectors, now, "other")
    writer.clear()
    assert found(reader, vectors, "row 1", now, "other") == []
    hid = put(writer, vectors, "after clear", now, "s")
    assert found(reader, vectors, "after clear", now, "s") == [hid]
    assert found(reader, vectors, "row 4", now, "s") == []


def test_evictions_by_the_other_store_are_never_served(
    make: Any, vectors: Vectors, redis8_server: RedisServer, namespace: str,  # noqa: F811
    clock: FakeClock,
) -> None:
    writer, reader = make(max_entries=20), make(max_entries=20)
    now = clock()
    fill(writer, vectors, 20, now)
    loaded(reader, vectors, now)
    for i in range(20, 30):  # evicts 10 (the least recently used)
        put(writer, vectors, f"row {i}", now)
    raw, keys = redis8_server.client(), VectorSetKeys(namespace)
    gone = 0
    for i in range(30):
        hid = entry_id("", f"row {i}")
        held = raw.exists(keys.entry(scope_digest(""), hid))  # no LRU touch
        assert found(reader, vectors, f"row {i}", now) == ([hid] if held else [])
        gone += not held
    assert gone == 10


def test_an_overwrite_serves_the_new_answer(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock  # noqa: F811
) -> None:
    writer, reader = make(), make()
    cache = SemanticCache(Embedder(vectors), threshold=0.9, store=reader, clock=clock,
                          verifier=None)
    now = clock()
    fill(writer, vectors, 30, now)
    put(writer, vectors, "q", now, answer="old")
    loaded(reader, vectors, now)
    hit = cache.get("near q")
    assert hit is not None and hit.response == "old"
    put(writer, vectors, "q", now, answer="new")
    for _ in range(3):
        hit = cache.get("near q")
        assert hit is not None and hit.response == "new"
    # the entry moved to another vector: the old one's near-duplicates no longer hit
    writer.put(CacheEntry(id=entry_id("", "q"), scope="", query="q", query_key="q",
                          vector=vectors("elsewhere"), response="moved", created_at=now), now)
    assert cache.get("near q") is None
    hit = cache.get("near elsewhere")
    assert hit is not None and hit.response == "moved"
    assert table(reader).dead >= 1  # the overwritten rows


def test_a_new_store_on_a_full_namespace_hits_at_once_then_switches_to_the_table(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock  # noqa: F811
) -> None:
    writer = make()
    now = clock()
    fill(writer, vectors, 3000, now)
    reader = make(inline=False)  # the background loader
    assert found(reader, vectors, "row 2999", now) == [entry_id("", "row 2999")]  # VSIM
    assert wait_until(lambda: table(reader) is not None, timeout=20)
    assert table(reader).n == 3000
    before = vsims(redis8_server)
    for i in (0, 1500, 2999):
        assert found(reader, vectors, f"row {i}", now) == [entry_id("", f"row {i}")]
    assert vsims(redis8_server) == before
    assert reader.status()["local_rows"] == 3000


def test_a_burst_of_writes_falls_back_to_vsim_and_catches_up(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock  # noqa: F811
) -> None:
    writer, reader, now, t = pair(make, vectors, clock, 100)
    burst = [put(writer, vectors, f"burst {i}", now) for i in range(MAX_NEW + 40)]
    before = vsims(redis8_server)
    assert found(reader, vectors, "burst 3", now) == [burst[3]]  # VSIM: the table is behind
    assert vsims(redis8_server) == before + 1
    assert t.n == 100 + len(burst)  # caught up (in the asking thread here)
    before = vsims(redis8_server)
    for i in range(len(burst)):
        assert found(reader, vectors, f"burst {i}", now) == [burst[i]]
    assert vsims(redis8_server) == before


def test_entries_without_a_write_sequence_are_given_one_and_the_table_comes_back(
    make: Any, vectors: Vectors, redis8_server: RedisServer, namespace: str,  # noqa: F811
    clock: FakeClock,
) -> None:
    """An evicted sequence set (or an older version's writes): that lookup runs VSIM (right
    answer), the entries get sequences again and the table serves the next lookups."""
    writer, reader, now, _ = pair(make, vectors, clock, 40)
    prefix = VectorSetKeys(namespace).prefix(scope_digest(""))
    raw = redis8_server.client()
    raw.delete(prefix + ":s")
    before = vsims(redis8_server)
    assert found(reader, vectors, "row 5", now) == [entry_id("", "row 5")]
    assert vsims(redis8_server) == before + 1  # 'lost': VSIM in the same call
    assert raw.zcard(prefix + ":s") == 40
    assert reader.status()["local_repaired_entries"] == 40
    assert table(reader) is not None and table(reader).n == 40
    assert found(reader, vectors, "row 6", now) == [entry_id("", "row 6")]
    put(writer, vectors, "row new", now)  # a later write follows the repaired sequences
    assert found(reader, vectors, "row new", now) == [entry_id("", "row new")]
    assert vsims(redis8_server) == before + 1  # both from the table


def test_a_scope_whose_lru_set_was_evicted_too_is_repaired_from_the_id_map(
    make: Any, vectors: Vectors, redis8_server: RedisServer, namespace: str,  # noqa: F811
    clock: FakeClock,
) -> None:
    """Sequence set and LRU set both evicted (``allkeys-*``): the scan of the LRU set lists
    nothing, so the entries are taken from the namespace's id map: they get sequences and
    their LRU places back (at their creation times), and the table serves again."""
    writer, reader, now, _ = pair(make, vectors, clock, 40)
    prefix = VectorSetKeys(namespace).prefix(scope_digest(""))
    raw = redis8_server.client()
    raw.delete(prefix + ":s", prefix + ":lru")
    before = vsims(redis8_server)
    assert found(reader, vectors, "row 5", now) == [entry_id("", "row 5")]  # VSIM, repair
    assert vsims(redis8_server) == before + 1
    assert reader.status()["local_repaired_entries"] == 40
    assert reader.status()["local_relisted_entries"] == 40
    assert raw.zcard(prefix + ":s") == 40
    relisted = dict(raw.zrange(prefix + ":lru", 0, -1, withscores=True))
    assert set(relisted) == {entry_id("", f"row {i}").encode() for i in range(40)}
    assert set(relisted.values()) == {now}  # each at its creation time
    assert table(reader) is not None and table(reader).n == 40
    assert found(reader, vectors, "row 6", now) == [entry_id("", "row 6")]
    assert vsims(redis8_server) == before + 1  # from the table again


def test_a_scope_that_cannot_be_repaired_stays_on_vsim_without_rescanning(
    make: Any, vectors: Vectors, redis8_server: RedisServer, namespace: str,  # noqa: F811
    clock: FakeClock,
) -> None:
    """With the LRU set and the id map evicted too, the entries cannot be listed: lookups
    stay right (VSIM) and the scope is not rescanned on every lookup."""
    writer, reader, now, _ = pair(make, vectors, clock, 40)
    keys = VectorSetKeys(namespace)
    prefix = keys.prefix(scope_digest(""))
    raw = redis8_server.client()
    raw.delete(prefix + ":s", prefix + ":lru", keys.ids)
    raw.config_resetstat()
    before = vsims(redis8_server)
    for i in range(5):
        assert found(reader, vectors, f"row {i}", now) == [entry_id("", f"row {i}")]
    assert vsims(redis8_server) == before + 5
    assert reader.status()["local_repaired_entries"] == 0
    ran = raw.info("commandstats")
    # one repair (an empty LRU set, then an empty id map), not one per lookup
    assert ran.get("cmdstat_zscan", {}).get("calls", 0) == 1
    assert ran.get("cmdstat_hscan", {}).get("calls", 0) == 1
    assert table(reader) is None  # no table until the retry, not a repair per lookup


def test_scopes_stay_apart_under_random_operations_of_two_stores(
    make: Any, vectors: Vectors, clock: FakeClock
) -> None:
    a, b = make(), make()
    rng = random.Random(3)
    now = clock()
    scopes = [f"scope {i}" for i in range(20)]
    live: dict[str, dict[str, str]] = {s: {} for s in scopes}  # scope -> name -> id
    names = [f"n{i}" for i in range(60)]
    checked = 0
    for step in range(1500):
        store = a if rng.random() < 0.5 else b
        scope = rng.choice(scopes)
        op = rng.random()
        if op < 0.45:
            name = rng.choice(names)
            live[scope][name] = put(store, vectors, name, now, scope)
        elif op < 0.55 and live[scope]:
            name = rng.choice(sorted(live[scope]))
            store.delete([live[scope].pop(name)])
        elif op < 0.57:
            store.invalidate(scope)
            live[scope].clear()
        else:
            name = rng.choice(names)
            got = [c.entry_id for c in store.search(scope, vectors(name), 3, now)]
            assert set(got) <= set(live[scope].values()), (step, scope, name)
            if name in live[scope]:
                assert got and got[0] == live[scope][name], (step, scope, name)
                checked += 1
    assert checked > 50
    assert a.status()["local_tables"] >= 15 and b.status()["local_tables"] >= 15


def test_fail_open_when_the_server_dies_while_loading_and_the_table_is_rebuilt(
    make: Any, vectors: Vectors, clock: FakeClock
) -> None:
    server = RedisServer(binary=redis8_bin()).start()
    try:
        writer = make(server)
        now = clock()
        fill(writer, vectors, 3000, now)
        reader = make(server, inline=False, failure_threshold=1000)
        cache = SemanticCache(Embedder(vectors), threshold=0.9, store=reader, clock=clock,
                              verifier=None)
        cache.get("near row 1")  # starts the load in the background
        server.kill()
        for i in range(5):
            assert cache.get(f"near row {i}") is None  # no exception: misses
        server.restart()  # empty (no persistence)
        assert wait_until(lambda: _writes(writer, vectors, now), timeout=20)
        assert wait_until(lambda: cache.get("near fresh 2") is not None, timeout=20)
        # lookups (VSIM meanwhile) ask for the table again once the pause after the
        # failed load is over
        assert wait_until(lambda: cache.get("near fresh 3") is not None
                          and table(reader) is not None and table(reader).n >= 5, timeout=20)
        before = vsims(server)
        for i in range(5):  # from the rebuilt table: no VSIM
            assert found(reader, vectors, f"fresh {i}", now) == [entry_id("", f"fresh {i}")]
        assert vsims(server) == before
        assert cache.get("near row 1") is None  # the old data is gone with the server
        assert cache.stats.store_errors >= 1
    finally:
        server.stop()


def _writes(store: RedisStore, vectors: Vectors, now: float) -> bool:
    try:
        for i in range(5):
            put(store, vectors, f"fresh {i}", now)
    except Exception:  # noqa: BLE001 - the server is still coming back
        return False
    return True


def test_local_codes_is_validated_and_can_be_turned_off(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock  # noqa: F811
) -> None:
    with pytest.raises(ConfigurationError, match="local_codes"):
        RedisStore(local_codes="yes")  # type: ignore[arg-type]
    off = make(local_codes=False)
    now = clock()
    fill(off, vectors, 10, now)
    before = vsims(redis8_server)
    assert found(off, vectors, "row 3", now) == [entry_id("", "row 3")]
    assert vsims(redis8_server) == before + 1 and off._path.codes is None
    assert "local_tables" not in off.status()


def test_tables_are_bounded_and_scopes_past_the_bound_use_vsim(
    make: Any, vectors: Vectors, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag_optimize.cache.redis import codes

    monkeypatch.setattr(codes, "MAX_TABLES", 3)
    writer, reader = make(), make()
    now = clock()
    scopes = [f"s{i}" for i in range(5)]
    for scope in scopes:
        fill(writer, vectors, 10, now, scope)
    for _ in range(2):
        for scope in scopes:
            assert found(reader, vectors, "row 4", now, scope) == [entry_id(scope, "row 4")]
    assert reader.status()["local_tables"] == 3  # the others stay on VSIM: all recent
    monkeypatch.setattr(codes, "_IDLE_S", 0.0)  # now every table counts as idle
    for scope in scopes:
        assert found(reader, vectors, "row 5", now, scope) == [entry_id(scope, "row 5")]
        assert reader.status()["local_tables"] <= 3
    assert table(reader, "s4") is not None  # an idle table made room for it


def test_local_codes_do_not_import_faiss_and_rank_as_it_does(
    redis8_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    """faiss costs ~50 MB of RSS to import: the local tables use it only if already loaded."""
    import subprocess
    import sys

    from rag_optimize.index.quantization import (
        _numpy_nearest,
        hamming_nearest,
        hamming_nearest_columns,
    )

    script = f"""
import sys, numpy as np
from rag_optimize import RedisStore
from rag_optimize.cache.entry import CacheEntry
store = RedisStore({redis8_server.url!r}, {namespace + "-faiss"!r}, timeout_ms=1000).start()
store._path.codes.inline = True
v = np.ones(64, dtype=np.float32) / 8
store.put(CacheEntry(id="0" * 32, scope="", query="q", query_key="q", vector=v,
                     response="a"), 1.0)
for _ in range(2):
    assert store.search("", v, 1, 1.0)[0].entry_id == "0" * 32
assert store.status()["local_tables"] == 1
print("faiss" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (70_000, 16), dtype=np.uint8)  # more than one scan block
    columns = np.ascontiguousarray(codes.view(np.uint64).T)  # the local tables' layout
    valid = rng.random(70_000) > 0.2
    for i in range(20):
        query = codes[i : i + 1]
        for mask in (None, valid):
            slow = _numpy_nearest(codes, query, 10, mask)  # what a process without faiss runs
            fast = hamming_nearest(codes, query, 10, mask)
            by_column = hamming_nearest_columns(columns, query, 10, mask)
            assert len(slow) == len(fast) == len(by_column) == 10
            if mask is not None:
                assert mask[by_column].all()
            dist = np.unpackbits(codes ^ query, axis=1).sum(axis=1)
            expected = sorted(dist[slow].tolist())
            assert expected == sorted(dist[fast].tolist()) == sorted(dist[by_column].tolist())


def test_local_codes_load_and_serve_on_a_cluster(
    redis_cluster: Any, vectors: Vectors, namespace: str, clock: FakeClock  # noqa: F811
) -> None:
    """Each scope's table loads through the cluster (its keys in the scope's slot)."""
    writer = RedisStore(redis_cluster.urls[0], namespace, max_entries=None, timeout_ms=2000,
                        clock=clock).start()
    reader = RedisStore(redis_cluster.urls[1], namespace, max_entries=None, timeout_ms=2000,
                        clock=clock).start()
    try:
        now = clock()
        scopes = [f"c{i}" for i in range(6)]
        for scope in scopes:
            fill(writer, vectors, 20, now, scope)
        for scope in scopes:  # VSIM meanwhile; each starts its scope's load
            assert found(reader, vectors, "row 1", now, scope) == [entry_id(scope, "row 1")]
        assert wait_until(lambda: reader.status()["local_tables"] == len(scopes), timeout=20)
        hid = put(writer, vectors, "late", now, "c3")
        assert found(reader, vectors, "late", now, "c3") == [hid]
        for scope in scopes:
            for i in (0, 7, 19):
                want = [entry_id(scope, f"row {i}")]
                assert found(reader, vectors, f"row {i}", now, scope) == want
        assert reader.status()["local_rows"] == 6 * 20 + 1
    finally:
        writer.close()
        reader.close()


def test_a_semantic_hit_from_the_table_is_one_round_trip(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock  # noqa: F811
) -> None:
    """The nearest candidate goes first, so the script's one whole entry is the answer."""
    writer, reader, now, _ = pair(make, vectors, clock, 2000)
    reader.close()
    reader = make(exact_first=False)
    cache = SemanticCache(Embedder(vectors), threshold=0.9, store=reader, clock=clock,
                          verifier=None)
    assert cache.get("near row 0") is not None  # loads the table (in this thread)
    stats = redis8_server.client()
    stats.config_resetstat()
    for i in range(1, 41):
        hit = cache.get(f"near row {i * 37}")
        assert hit is not None and hit.response == f"row {i * 37}"
    ran = {k.lower(): int(v["calls"]) for k, v in stats.info("commandstats").items()}
    assert ran.get("cmdstat_evalsha") == 40 and "cmdstat_vsim" not in ran, ran


def test_a_tables_id_bitmap_never_forgets_an_id_it_held() -> None:
    """``may_hold`` is False only for ids the table never had: through growth (the bitmap
    is rebuilt larger) and deaths; most absent ids read False."""
    from rag_optimize.cache.redis.codes import LocalTable

    rng = np.random.default_rng(3)
    t = LocalTable(DIM, np.zeros(DIM, dtype=np.float32), 10, b"g")
    hids = [rng.bytes(16).hex() for _ in range(20_000)]
    blob = np.ones(DIM, dtype="<f4").tobytes()
    start = t.seen.nbytes
    for lo in range(0, len(hids), 700):
        with t.lock:
            t.add(hids[lo : lo + 700], [blob] * len(hids[lo : lo + 700]))
    assert t.seen.nbytes > start  # grown at least once
    with t.lock:
        t.kill(0)
    assert all(t.may_hold(h) for h in hids)  # the dead one too: a "maybe"
    absent = [rng.bytes(16).hex() for _ in range(5_000)]
    assert sum(t.may_hold(h) for h in absent) < 0.1 * len(absent)
    assert not t.may_hold("zz") and not t.may_hold("00" * 8)  # not an id


def test_candidates_far_past_the_nearest_are_not_sent_but_the_first_k_plus_one_are() -> None:
    """Rows past ``least`` are dropped only beyond the margin from the nearest row: a lone
    near-duplicate among random rows leaves ``least`` candidates; a query inside a cluster of
    near rows keeps every one of the ``count``; the kept rows are a prefix of the full list."""
    from rag_optimize.cache.redis.codes import LocalTable, prune_margin

    dim = 384
    rng = np.random.default_rng(5)

    def unit(m: np.ndarray) -> np.ndarray:
        return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)

    far = unit(rng.standard_normal((2_000, dim)))
    centre = unit(rng.standard_normal(dim))
    cluster = unit(centre + 0.15 * unit(rng.standard_normal((40, dim))))
    rows = np.concatenate([far, cluster])
    t = LocalTable(dim, np.zeros(dim, dtype=np.float32), len(rows), b"g")
    with t.lock:
        t.add([f"{i:032x}" for i in range(len(rows))], [r.tobytes() for r in rows])
    assert prune_margin(dim) == 56
    lone = unit(far[17] + 0.1 * unit(rng.standard_normal(dim)))
    full = t.nearest(lone, 20)[0]
    pruned = t.nearest(lone, 20, 5)[0]
    assert len(full) == 20 and pruned == full[:5] and pruned[0] == 17
    inside = unit(centre + 0.05 * unit(rng.standard_normal(dim)))
    full = t.nearest(inside, 20)[0]
    assert t.nearest(inside, 20, 5)[0] == full and set(full) <= set(range(2_000, 2_040))
    # a clear miss (nearest row past the reach by more than the margin) sends only ``least``
    near = t.nearest(inside, 20, 5)[4]
    assert near is not None
    t.reach = near - prune_margin(dim)  # just within: every row within the margin is sent
    assert t.nearest(inside, 20, 5)[0] == full and t.wants_whole(near)
    t.reach -= 1  # just past: a clear miss
    assert t.nearest(inside, 20, 5)[0] == full[:5] and not t.wants_whole(near)
    assert t.nearest(inside, 20)[0] == full  # without ``least``, every row asked for


def test_a_clear_miss_reads_no_entry_whole_and_marks_none_used(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock,  # noqa: F811
    namespace: str,  # noqa: F811
) -> None:
    """Once the cache has read an entry the table found, a lookup whose nearest row is far
    past every such lookup's asks for no entry whole: the miss reads index records only and
    marks nothing used (as the in-process store, whose search touches nothing). At dim 384
    (at dim 64 a random query's nearest of 2,000 rows is within the margin of a hit's)."""
    vectors = Vectors(384)
    writer, reader, now, t = pair(make, vectors, clock, 2000)
    cache = SemanticCache(Embedder(vectors), threshold=0.9, store=reader, clock=clock,
                          verifier=None)
    assert t.reach is None
    assert cache.get("near row 5").response == "row 5"  # type: ignore[union-attr]
    assert t.reach is not None
    client = redis8_server.client()
    lru = VectorSetKeys(namespace).lru(scope_digest(""))
    before = dict(client.zrange(lru, 0, -1, withscores=True))
    clock.advance(60)  # a touch now would raise a score
    client.config_resetstat()
    for i in range(20):
        assert cache.get(f"fresh question {i}") is None
    ran = {k.lower(): int(v["calls"]) for k, v in client.info("commandstats").items()}
    # every miss took its candidates from the table, and read no entry whole
    assert "cmdstat_vsim" not in ran and "cmdstat_hgetall" not in ran, ran
    # nor more index records than the k + 1 candidates the cache needs (a row as far as a
    # random query's nearest is within the margin of 20 others: all were read before)
    assert ran["cmdstat_hmget"] == 20 * (cache.candidates + 1), ran
    assert dict(client.zrange(lru, 0, -1, withscores=True)) == before
    # a hit marks its entry used, with the store's next call to the scope
    served_at = clock()
    assert cache.get("near row 7").response == "row 7"  # type: ignore[union-attr]
    assert client.zscore(lru, entry_id("", "row 7")) == now
    clock.advance(1)
    assert cache.get("fresh question 99") is None
    assert client.zscore(lru, entry_id("", "row 7")) == served_at


def test_only_what_the_cache_serves_is_marked_used(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock,  # noqa: F811
    namespace: str,  # noqa: F811
) -> None:
    """A search reads its nearest entry whole and marks nothing: a miss that read one (not
    a clear miss: no reach yet) leaves the LRU set as it was, as in the in-process store.
    Served entries are marked by the scope's next call (a lookup, a put), or at close."""
    writer, reader, now, t = pair(make, vectors, clock, 50)
    cache = SemanticCache(Embedder(vectors), threshold=0.9, store=reader, clock=clock,
                          verifier=None)
    client = redis8_server.client()
    lru = VectorSetKeys(namespace).lru(scope_digest(""))
    before = dict(client.zrange(lru, 0, -1, withscores=True))
    clock.advance(10)
    client.config_resetstat()
    assert t.reach is None  # every lookup reads its nearest entry whole
    assert cache.get("a question near none of them") is None
    assert int(client.info("commandstats")["cmdstat_hgetall"]["calls"]) == 1
    assert dict(client.zrange(lru, 0, -1, withscores=True)) == before
    # served, then marked by the next call to the scope: here a put
    served_at = clock()
    assert cache.get("near row 3").response == "row 3"  # type: ignore[union-attr]
    assert client.zscore(lru, entry_id("", "row 3")) == now
    clock.advance(1)
    assert cache.set("another question", "another answer")
    assert client.zscore(lru, entry_id("", "row 3")) == served_at
    # served, then marked at close
    clock.advance(1)
    served_at = clock()
    assert cache.get("near row 4").response == "row 4"  # type: ignore[union-attr]
    assert client.zscore(lru, entry_id("", "row 4")) == now
    reader.close()
    assert client.zscore(lru, entry_id("", "row 4")) == served_at


def _marked_within(client: Any, lru: str, hid: str, score: float, seconds: float) -> float:
    """Seconds until ``hid``'s LRU score is ``score`` (polled; ``inf`` if not within)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if client.zscore(lru, hid) == score:
            return time.monotonic() - t0
        time.sleep(0.02)
    return float("inf")


def _served_scope(
    make: Any, vectors: Vectors, server: RedisServer, clock: FakeClock, ns: str
) -> tuple[Any, SemanticCache, Any, str, float]:
    """A reader of 50 entries with its table loaded, its cache, a client of the server,
    the scope's LRU key and the time the entries were written (the clock 10 s past it)."""
    _writer, reader, now, _t = pair(make, vectors, clock, 50)
    cache = SemanticCache(Embedder(vectors), threshold=0.9, store=reader, clock=clock,
                          verifier=None)
    clock.advance(10)
    return reader, cache, server.client(), VectorSetKeys(ns).lru(scope_digest("")), now


def test_a_served_entry_is_marked_within_a_second_without_another_call(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock,  # noqa: F811
    namespace: str,  # noqa: F811
) -> None:
    """No later call to the scope: the store's timer writes the mark within
    ``WRITE_WITHIN_S`` (else another process's put could evict, as least recently used, the
    entry this one just served). Sync and async lookups alike; nothing runs once closed."""
    from rag_optimize.cache.redis.marks import WRITE_WITHIN_S

    reader, cache, client, lru, now = _served_scope(make, vectors, redis8_server, clock, namespace)
    served_at = clock()
    assert cache.get("near row 3").response == "row 3"  # type: ignore[union-attr]
    assert client.zscore(lru, entry_id("", "row 3")) == now  # not by the search itself
    assert _marked_within(client, lru, entry_id("", "row 3"), served_at, 5) <= WRITE_WITHIN_S + 1

    clock.advance(10)
    served_at = clock()

    async def serve() -> None:
        hit = await cache.aget("near row 4")
        assert hit is not None and hit.response == "row 4"

    asyncio.run(serve())
    assert _marked_within(client, lru, entry_id("", "row 4"), served_at, 5) <= WRITE_WITHIN_S + 1

    clock.advance(10)
    assert cache.get("near row 5").response == "row 5"  # type: ignore[union-attr]
    reader.close()  # writes the mark itself, and stops the timer
    marked = client.zscore(lru, entry_id("", "row 5"))
    assert marked == clock()
    client.zadd(lru, {entry_id("", "row 5"): now})
    time.sleep(WRITE_WITHIN_S + 0.3)
    assert client.zscore(lru, entry_id("", "row 5")) == now  # no flush after close


def test_the_marks_timer_waits_while_redis_fails(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock,  # noqa: F811
    namespace: str,  # noqa: F811
) -> None:
    """While the breaker reports a fault, the timer writes nothing (no background call meets
    the fault, none counts against the breaker); the scope's next call carries the marks."""
    from rag_optimize.cache.redis.marks import WRITE_WITHIN_S

    reader, cache, client, lru, now = _served_scope(make, vectors, redis8_server, clock, namespace)
    served_at = clock()
    assert cache.get("near row 6").response == "row 6"  # type: ignore[union-attr]
    reader.breaker.failure()  # as a failed call would leave it
    assert not reader.breaker.healthy
    time.sleep(WRITE_WITHIN_S + 0.3)
    assert client.zscore(lru, entry_id("", "row 6")) == now
    reader.breaker.success()
    clock.advance(1)
    assert cache.get("fresh question 1") is None
    assert client.zscore(lru, entry_id("", "row 6")) == served_at


def test_a_hit_past_the_reach_is_still_served_and_widens_it(
    make: Any, vectors: Vectors, redis8_server: RedisServer, clock: FakeClock,  # noqa: F811
) -> None:
    """Skipping the whole entry never changes an answer: the cache's read of it is one call
    more, and the table's reach then covers such lookups."""
    writer, reader, now, t = pair(make, vectors, clock, 2000)
    cache = SemanticCache(Embedder(vectors), threshold=0.9, store=reader, clock=clock,
                          verifier=None)
    t.reach = -1_000  # every lookup's nearest row is past it: none asks for an entry whole
    client = redis8_server.client()
    client.config_resetstat()
    hit = cache.get("near row 11")
    assert hit is not None and hit.response == "row 11"
    ran = {k.lower(): int(v["calls"]) for k, v in client.info("commandstats").items()}
    assert ran.get("cmdstat_evalsha") == 2, ran  # the lookup, then the fetch
    assert t.reach >= 0
    client.config_resetstat()
    assert cache.get("near row 12").response == "row 12"  # type: ignore[union-attr]
    ran = {k.lower(): int(v["calls"]) for k, v in client.info("commandstats").items()}
    assert ran.get("cmdstat_evalsha") == 1, ran  # whole again: one round trip


def test_an_async_store_marks_what_it_served_when_it_closes(
    vectors: Vectors, redis8_server: RedisServer, clock: FakeClock,  # noqa: F811
    namespace: str,  # noqa: F811
) -> None:
    """``aclose`` (here the end of ``async with``) writes the marks of entries served since
    their scope's last call, on the loop's own client."""
    client = redis8_server.client()
    lru = VectorSetKeys(namespace).lru(scope_digest(""))

    async def serve() -> float:
        async with RedisStore(redis8_server.url, namespace, clock=clock,
                              timeout_ms=1000) as store:
            cache = SemanticCache(Embedder(vectors), threshold=0.9, store=store, clock=clock,
                                  verifier=None)
            assert await cache.aset("row 1", "one")
            [(hid, written)] = client.zrange(lru, 0, -1, withscores=True)
            clock.advance(5)
            hit = await cache.aget("near row 1")
            assert hit is not None and hit.response == "one" and not hit.exact
            assert client.zscore(lru, hid) == written
            return clock()

    served_at = asyncio.run(serve())
    [(_, marked)] = client.zrange(lru, 0, -1, withscores=True)
    assert marked == served_at


def test_served_marks_are_plain_scores_never_lowered_and_bounded() -> None:
    """The marks argument holds Redis scores (a numpy float is written as a number), keeps
    the latest time of an entry served twice, and holds at most ``PER_SET`` per set."""
    from rag_optimize.cache.redis.marks import PER_SET, ServedMarks

    marks = ServedMarks()
    marks.add("sd", "a" * 32, np.float64(5.0))  # type: ignore[arg-type]
    marks.add("sd", "a" * 32, 3.0)
    assert marks.take("sd") == "5.0 " + "a" * 32
    assert marks.take("sd") == ""
    for i in range(PER_SET + 10):
        marks.add("sd", f"{i:032x}", float(i))
    pairs = marks.take("sd").split()
    assert len(pairs) == 2 * PER_SET
    assert [float(x) for x in pairs[::2]] == [float(i) for i in range(10, PER_SET + 10)]
    marks.add("one", "b" * 32, 1.0)
    marks.add("two", "c" * 32, 2.0)
    assert marks.take_all() == {"one": ["1.0", "b" * 32], "two": ["2.0", "c" * 32]}
    assert marks.take_all() == {}
