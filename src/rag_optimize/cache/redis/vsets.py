"""The server-side search path: one Redis vector set per scope (Redis 8+, ``VADD``/``VSIM``).

A lookup is one round trip (:meth:`VectorSetPath.lookup`): a Lua script checks the query's
exact key and returns that entry if it is there; otherwise it runs ``VSIM`` on the scope's
vector set, reads the candidates' index fields (the nearest live one whole, so the answer
needs no second call) and returns them. The store rescores
the candidates exactly from their stored float32 vectors (one matrix product), so the
server's quantization (``Q8`` by default) can only cost recall, never change a similarity the
cache decides on. A new replica serves hits from its first lookup: nothing has to be loaded.

**Local codes** (``RedisStore(local_codes=True)``, :mod:`~rag_optimize.cache.redis.codes`):
``VSIM`` needs EF 800 at 100k entries for 99% near-duplicate recall on random vectors. So a
process may also keep, per scope and partition it looks up, a table of 1-bit codes and ids
(no vectors; about 65 bytes an entry at dim 384); the lookup then sends the table's Hamming
candidates with the table's write sequence number, and the same script (a) reads those
candidates' index fields instead of running ``VSIM`` and (b) returns the entries whose write
sequence is past the table's (at most :data:`~rag_optimize.cache.redis.codes.MAX_NEW`, with
their vectors), which are candidates too and join the table: the table is current as of the
script, by any process's writes, with no change log to poll. A lookup whose nearest row is
far past those of the lookups the cache read from asks for no entry whole (a clear miss:
:meth:`~rag_optimize.cache.redis.codes.LocalTable.wants_whole`). The script runs ``VSIM`` instead
(same call) when the table's generation is not the scope's (the scope was emptied: its
counter started again), when more entries are newer, or when the scope holds entries
without a write sequence (written by an older version, or the sequence set was evicted:
the store's loader thread then gives them sequences, one ``ZSCAN`` step of the scope's LRU set
at a time, and loads the table again; at most every 30 s per scope). Candidates whose entry
is gone are simply absent from the reply.

Key layout for namespace ``ns``; ``sd`` = digest of the scope. Every key of one scope shares
the hash tag ``{ns/sd}``, so each script touches one cluster slot while a namespace spreads
over the cluster, one scope per slot::

    {ns/sd}:e:<id>   hash     one entry (the same fields as on the mirror path)
    {ns/sd}:v[:pt]   vset     entry id -> vector (quantized), one per partition ``pt``
    {ns/sd}:parts    set      the partitions of the scope in use
    {ns/sd}:lru      zset     entry id -> last use (eviction order, per scope)
    {ns/sd}:exp      zset     entry id -> expiry time (entries with a TTL)
    {ns/sd}:s[:pt]   zset     entry id -> write sequence, one per partition (local codes)
    {ns/sd}:seqn     string   the scope's write sequence counter (INCR by every put)
    {ns/sd}:gen      string   the counter's generation (new whenever the counter starts again)
    {ns/}:scopes     set      the scope digests in use (for clear, count, delete_where)
    {ns/}:ids        hash     entry id -> scope digest (fetch/delete by bare id)
    {ns/}:dim        string   vector dimension of the namespace

A least-privilege ACL user needs the key pattern ``~{ns/*`` (every key above starts with it).

Capacity: ``max_entries`` bounds each scope (a global LRU would need one slot for the whole
namespace); past it the scope's least recently used entry is evicted atomically. "Used" is
what the cache served, as in the in-process store: an exact hit is marked by its lookup; a
search marks nothing (it cannot know which candidate, if any, the cache will serve), and the
entry the cache then reads from its reply is marked by the store's next call to the scope
(a lookup or a put, which marks before it evicts), by the store's timer within a second
(:data:`.marks.WRITE_WITHIN_S`) or when the store closes. Under replica reads (a replica
cannot write) every served entry waits for the scope's next put or the timer. Expired
entries of a scope are deleted by the next write to that scope (and skipped by every read);
Redis TTL (the entry's TTL plus a grace) frees entries nobody writes near.

Reads work when Redis refuses writes (``maxmemory`` with ``noeviction``): the LRU touch and
the removal of stale members are ``redis.pcall`` inside the read scripts, so a refused write
is skipped and the read still answers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.cache.keys import entry_id
from rag_optimize.cache.redis.codec import (
    FORMAT_VERSION,
    INDEX_FIELDS,
    CorruptEntry,
    decode_entry,
    decode_index_record,
    decode_vector,
    encode_vector,
    hex_id,
    optional_float,
    pairs_to_dict,
    scope_digest,
)
from rag_optimize.cache.redis.codes import MAX_NEW, Ask, LocalCodes, LocalTable
from rag_optimize.cache.redis.marks import TOUCH_SERVED_LUA, ServedMarks
from rag_optimize.cache.redis.plans import (
    Batch,
    Command,
    Plan,
    Script,
    Shared,
    is_entry_for,
    prepare_put,
)
from rag_optimize.cache.redis.scripts import FETCH, META_MATCHES, LuaScript
from rag_optimize.cache.store import StoreReport
from rag_optimize.embedding.vectors import FloatVector

__all__ = ["Quantization", "VectorSetPath", "VectorSetKeys"]

#: How the server stores vectors: ``"q8"`` (int8, 4x smaller, the default), ``"float32"``
#: (``NOQUANT``), ``"binary"`` (1 bit a dimension; candidates are rescored exactly anyway).
Quantization = Literal["q8", "float32", "binary"]
_QUANT = {"q8": "Q8", "float32": "NOQUANT", "binary": "BIN"}

_CHUNK = 100  # entries per script call when dropping: VREM from HNSW is not free
_MAX_ROUNDS = 100_000
_SWEEP_PER_PUT = 16
_EXTRA = 1  # a candidate beyond k, so one expired or corrupt entry does not shorten the answer
# HNSW effort (BENCHMARKS.md, random 384-d vectors, Q8, M 16, built with EF 40, COUNT 5):
# VSIM with EF 50 found the near-duplicate for 99.5% of queries at 10k; at 100k EF 400 found
# 98.0-98.9%, EF 600 99.25%, EF 800 400/400 (benchmarks/cache_redis_options.py; real MiniLM
# rows are easier: EF 400 found 94/94 there). So the search effort grows with the set,
# linearly from EF 50 at 12,500 entries to EF 800 at 100k (EF = 50 + (n - 12,500) / 116,
# within [50, 800]). VADD builds with EF 40 (Redis's default 200 made inserts 4x slower).
_SEARCH_EF_MIN = 50
_SEARCH_EF_MAX = 800
_SEARCH_EF_FROM = 12_500
_SEARCH_EF_PER = 116
_BUILD_EF = 40
# Entries a search read whole for the fetch that follows it in the same lookup (a miss leaves
# its entry here until pushed out): bounded by the lookups in flight, not by the namespace.
# 1024 held ~2 KB each of a replica's memory for nothing (BENCHMARKS.md, issue 14 RSS).
_PREFETCH = 128
# candidates of recent lookups whose fetch would widen their table's reach: only lookups
# farther than the reach are kept, and a fetch follows its lookup in the same call chain, so
# this bounds the lookups in flight at once (4 candidates each), not the namespace
_ASKED = 64
# local codes: rows a lookup ranks at least; past the first k + 1, those farther than
# codes.prune_margin from the nearest are not sent (BENCHMARKS.md, issue 14)
_CANDIDATES = 16
# Recent entry id -> scope, for a fetch by bare id after a search (a forgotten one costs one
# HGET of the id map). Small on purpose: its thousands of small strings, spread over the heap
# between the lookups' large replies, kept pages from being freed: at 4,096 a replica's RSS
# grew 3.6 MB over 1,000 lookups, at 256 0.4 MB (BENCHMARKS.md, issue 14).
_WHERE = 256
_LISTED_STEP = 1_000  # map pairs per server-side HSCAN step (about 1 ms of the server)

_COMMON = r"""
local P = ARGV[1]
local LRU, EXP, PARTS = P .. ':lru', P .. ':exp', P .. ':parts'
local function ekey(id) return P .. ':e:' .. id end
-- one vector set per partition of the scope ('' = no exact part)
local function vkey(pt) if pt == '' then return P .. ':v' end return P .. ':v:' .. pt end
-- write sequence of the entries of each partition (local codes follow it), the scope's
-- sequence counter and its generation (a new one whenever the counter starts again)
local function skey(pt) if pt == '' then return P .. ':s' end return P .. ':s:' .. pt end
local SEQN, GEN = P .. ':seqn', P .. ':gen'
-- the scope's next write sequence (a new generation whenever the counter starts again)
local function next_seq()
  local seq = redis.call('INCR', SEQN)
  if seq == 1 or redis.call('EXISTS', GEN) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', GEN, t[1] .. '.' .. t[2] .. ':' .. seq)
  end
  return seq
end
local function remove(id)
  local pt = redis.pcall('HGET', ekey(id), 'pt')
  if type(pt) ~= 'string' then pt = '' end
  local n = redis.call('DEL', ekey(id))
  redis.call('ZREM', LRU, id)
  redis.call('ZREM', EXP, id)
  redis.pcall('VREM', vkey(pt), id)
  redis.call('ZREM', skey(pt), id)
  return n
end
""" + TOUCH_SERVED_LUA

# ARGV: P, id, dim, now, expires|'', ttl_ms|'', max|'', quant, blob, build_ef, partition,
#       touches ('score id score id ...': entries this process served since its last call to
#       the scope, marked used before any eviction), field, value, ...
#       -> {'dim', held} on a dimension clash, else
#       {'ok', evicted, expired, victim ids...}
_PUT = r"""
local id, dim, now = ARGV[2], ARGV[3], ARGV[4]
local expires, ttl, maxn, quant, blob = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local V = vkey(ARGV[11])
if redis.call('EXISTS', V) == 1 then
  local held = redis.call('VDIM', V)
  if tostring(held) ~= dim then return {'dim', tostring(held)} end
end
-- a memory-using write first: under maxmemory noeviction it fails here, before any change
-- (once a script has written, Redis lets its later writes through past maxmemory)
redis.call('ZADD', LRU, 'XX', now, id)
touch_served(LRU, ARGV[12], {})
local victims, evicted, expired = {}, 0, 0
for _, old in ipairs(redis.call('ZRANGEBYSCORE', EXP, '-inf', now, 'LIMIT', 0, 16)) do
  if old ~= id then
    remove(old)
    expired = expired + 1
    victims[#victims + 1] = old
  end
end
local k = ekey(id)
redis.call('DEL', k)
redis.call('HSET', k, unpack(ARGV, 13))
redis.call('SADD', PARTS, ARGV[11])
redis.call('VADD', V, 'FP32', blob, id, quant, 'EF', ARGV[10])
redis.call('ZADD', skey(ARGV[11]), next_seq(), id)
if ttl ~= '' then
  redis.call('PEXPIRE', k, ttl)
  redis.call('ZADD', EXP, expires, id)
else
  redis.call('ZREM', EXP, id)
end
redis.call('ZREM', LRU, id)
if maxn ~= '' then
  local room = tonumber(maxn) - 1
  local over = redis.call('ZCARD', LRU) - room
  if over > 0 then
    local popped = redis.call('ZPOPMIN', LRU, over)
    for i = 1, #popped, 2 do
      if remove(popped[i]) == 1 then evicted = evicted + 1 else expired = expired + 1 end
      victims[#victims + 1] = popped[i]
    end
  end
end
redis.call('ZADD', LRU, now, id)
local out = {'ok', evicted, expired}
for _, v in ipairs(victims) do out[#out + 1] = v end
return out
"""

# ARGV: P, blob, count, now, 'min:max:from:per' (EF = min + (VCARD - from) / per, clamped),
#       partition, exact id|'', touches ('score id ...': entries this process served since
#       its last call to the scope, marked used now; :meth:`VectorSetPath.fetch`), then for
#       local codes (:mod:`.codes`; absent or '' = none):
#       '=' .. the table's generation, its sequence number, max new, whole ('1' or '0':
#       whether the first live candidate comes whole), candidate id, ...
#       -> {'exact', HGETALL...} when the exact id is a hash (a lookup's exact part, checked
#          first: then no vector search runs) | {'!type', kind} for a foreign key there
#        | {'dim', message}
#        | {'ok', {id, HGETALL...} of the first candidate, id, score, values, ...} (VSIM)
#        | {'vsim', why, <the 'ok' reply without its tag>} (local codes asked, VSIM ran:
#          why = 'gen' the table is of another generation, 'behind' more than max new
#          entries were written since, 'lost' entries without a write sequence)
#        | {'local', {seq counter, {new id, seq, ...}, {gone id, ...}}, <'ok' reply untagged>}
#          (the candidates, then the entries written since the table's sequence number)
# ``values`` is HMGET of the index fields (v ns scope vec ex thr pt), or {'!type', kind} for a
# key of another type. Only the first candidate comes whole: the cache nearly always reads
# that one, and a reply of index fields is half the size to send and to parse. With local
# codes the caller may ask for none whole (a clear miss: :meth:`.codes.LocalTable.wants_whole`);
# then ``{id, HGETALL...}`` is ``{}``. A search marks no candidate used (as the in-process
# store's): the entry the cache then serves is marked with the store's next call to the scope
# (the touches above), an exact hit at once.
_SEARCH = r"""
local V = vkey(ARGV[6])
if ARGV[7] ~= '' then
  local k = ekey(ARGV[7])
  local kind = redis.call('TYPE', k).ok
  if kind == 'hash' then
    touch_served(LRU, ARGV[8], {ARGV[4], ARGV[7]})
    local h = redis.call('HGETALL', k)
    table.insert(h, 1, 'exact')
    return h
  elseif kind ~= 'none' then
    return {'!type', kind}
  end
end
local out, whole, gone = {'ok', {}}, false, {}
local want = true  -- the first live candidate comes whole
local S = skey(ARGV[6])
local function collect(id, score)
  local k = ekey(id)
  local h = redis.pcall('HMGET', k, 'v', 'ns', 'scope', 'vec', 'ex', 'thr', 'pt')
  if h.err then  -- a key of another type: decodes as a corrupt entry
    out[#out + 1] = id
    out[#out + 1] = score
    out[#out + 1] = {'!type', redis.call('TYPE', k).ok}
  elseif not h[1] and not h[4] and redis.call('EXISTS', k) == 0 then
    -- gone (deleted, or freed by Redis TTL: drop the stale member if writes work)
    gone[#gone + 1] = id
    redis.pcall('VREM', V, id)
    redis.pcall('ZREM', LRU, id)
    redis.pcall('ZREM', EXP, id)
    redis.pcall('ZREM', S, id)
  else
    if want and not whole then
      -- the nearest live candidate comes whole: the cache reads it with no second call
      whole = redis.call('HGETALL', k)
      table.insert(whole, 1, id)
      out[2] = whole
    end
    out[#out + 1] = id
    out[#out + 1] = score
    out[#out + 1] = h
  end
end
local function touched() touch_served(LRU, ARGV[8], {}) end
local why = false
if (ARGV[9] or '') ~= '' then
  local gen = redis.call('GET', GEN) or ''
  local last = tonumber(ARGV[10])
  local seqn = tonumber(redis.call('GET', SEQN) or '0')
  local size = redis.pcall('VCARD', V)
  if type(size) ~= 'number' then size = 0 end
  if '=' .. gen ~= ARGV[9] or seqn < last then
    why = 'gen'
  elseif redis.call('ZCARD', S) ~= size then
    why = 'lost'
  else
    local most = tonumber(ARGV[11])
    local new = redis.call('ZRANGEBYSCORE', S, '(' .. ARGV[10], '+inf', 'WITHSCORES',
                           'LIMIT', 0, most + 1)
    if #new > 2 * most then
      why = 'behind'
    else
      local seen = {}
      want = ARGV[12] == '1'
      for i = 13, #ARGV do
        if not seen[ARGV[i]] then seen[ARGV[i]] = true; collect(ARGV[i], '0') end
      end
      for i = 1, #new, 2 do
        if not seen[new[i]] then seen[new[i]] = true; collect(new[i], '0') end
      end
      touched()
      table.remove(out, 1)
      table.insert(out, 1, {seqn, new, gone})
      table.insert(out, 1, 'local')
      return out
    end
  end
end
local lo, hi, from, per = string.match(ARGV[5], '(%d+):(%d+):(%d+):(%d+)')
lo, hi, from, per = tonumber(lo), tonumber(hi), tonumber(from), tonumber(per)
local size = redis.pcall('VCARD', V)
if type(size) ~= 'number' then size = 0 end
local ef = math.max(lo, math.min(hi, lo + math.floor((size - from) / per)))
local ok, found = pcall(redis.call, 'VSIM', V, 'FP32', ARGV[2], 'WITHSCORES',
                        'COUNT', tonumber(ARGV[3]), 'EF', ef)
if not ok then
  local msg = type(found) == 'table' and (found.err or '') or tostring(found)
  if string.find(msg, 'dimension') then return {'dim', msg} end
  return redis.error_reply(msg)
end
for i = 1, #found, 2 do collect(found[i], found[i + 1]) end
touched()
if why then
  out[1] = why
  table.insert(out, 1, 'vsim')
end
return out
"""

# ARGV: P, partition, after, count -> {generation|'', sequence counter, entries, scanned,
#       last sequence scanned, id, seq, vec, ...}: the next ``count`` entries of the
#       partition in write order after sequence ``after`` (those whose hash is gone skipped)
_PAGE = r"""
local S = skey(ARGV[2])
local page = redis.call('ZRANGEBYSCORE', S, '(' .. ARGV[3], '+inf', 'WITHSCORES',
                        'LIMIT', 0, tonumber(ARGV[4]))
local out = {redis.call('GET', GEN) or '', redis.call('GET', SEQN) or '0',
             redis.call('ZCARD', S), #page / 2, ARGV[3]}
for i = 1, #page, 2 do
  out[5] = page[i + 1]
  local vec = redis.pcall('HGET', ekey(page[i]), 'vec')
  if type(vec) == 'string' then
    out[#out + 1] = page[i]
    out[#out + 1] = page[i + 1]
    out[#out + 1] = vec
  end
end
return out
"""

# ARGV: P, partition, cursor, count -> {next cursor, sequences added, still lost 1|0}: one
# ZSCAN step of the scope's LRU set; an entry of this partition's vector set without a write
# sequence (its sequence set was evicted, or it was written before sequences existed) gets
# the next one, so local tables can follow it again (:meth:`VectorSetPath.repair`). After the
# last step, "still lost" says whether the vector set holds members the scan did not list
# (the LRU set was evicted too: :data:`_REPAIR_IDS` then takes them from the id map).
_REPAIR = r"""
local V, S = vkey(ARGV[2]), skey(ARGV[2])
local step = redis.call('ZSCAN', LRU, ARGV[3], 'COUNT', tonumber(ARGV[4]))
local added = 0
for i = 1, #step[2], 2 do
  local id = step[2][i]
  if not redis.call('ZSCORE', S, id) and redis.call('VISMEMBER', V, id) == 1 then
    redis.call('ZADD', S, next_seq(), id)
    added = added + 1
  end
end
local lost = 0
if step[1] == '0' then
  local size = redis.pcall('VCARD', V)
  if type(size) == 'number' and redis.call('ZCARD', S) ~= size then lost = 1 end
end
return {step[1], added, lost}
"""

# ARGV: P, partition, id, ... (ids the namespace's id map lists for the scope) ->
#       {sequences added, LRU members restored}: the repair for a scope whose LRU set was
# evicted as well: a member of the partition's vector set without a write sequence gets the
# next one, and an entry the LRU set does not list is listed again (at its creation time, so
# eviction by ``max_entries`` works again and takes it first)
_REPAIR_IDS = r"""
local V, S = vkey(ARGV[2]), skey(ARGV[2])
local added, listed = 0, 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('EXISTS', ekey(id)) == 1 then
    if not redis.call('ZSCORE', LRU, id) then
      local created = tonumber(redis.pcall('HGET', ekey(id), 'cr')) or 0
      redis.call('ZADD', LRU, created, id)
      listed = listed + 1
    end
    if redis.call('VISMEMBER', V, id) == 1 and not redis.call('ZSCORE', S, id) then
      redis.call('ZADD', S, next_seq(), id)
      added = added + 1
    end
  end
end
return {added, listed}
"""

# ARGV: P, id, ... -> how many of these entries existed
_DELETE = r"""
local n = 0
for i = 2, #ARGV do n = n + remove(ARGV[i]) end
return n
"""

# ARGV: P, limit -> {removed, left, ids...}: pops a chunk of the scope (LRU order)
_DROP = r"""
local popped = redis.call('ZPOPMIN', LRU, tonumber(ARGV[2]))
local n, out = 0, {0, 0}
for i = 1, #popped, 2 do
  n = n + remove(popped[i])
  out[#out + 1] = popped[i]
end
local left = redis.call('ZCARD', LRU)
if left == 0 then
  for _, pt in ipairs(redis.call('SMEMBERS', PARTS)) do
    redis.call('DEL', vkey(pt), skey(pt))
  end
  redis.call('DEL', PARTS, EXP, SEQN, GEN)
end
out[1], out[2] = n, left
return out
"""

# ARGV: P, cursor, count, metadata_key, value, ... -> {next cursor, removed ids}
_DELETE_WHERE = META_MATCHES + r"""
local cursor, count, mkey = ARGV[2], ARGV[3], ARGV[4]
local wanted = {}
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local reply = redis.call('ZSCAN', LRU, cursor, 'COUNT', count)
local members, ids = reply[2], {}
for i = 1, #members, 2 do
  local id = members[i]
  if meta_matches(ekey(id), mkey, wanted) then
    remove(id)
    ids[#ids + 1] = id
  end
end
return {reply[1], ids}
"""

# ARGV: P, metadata_key, n, value_1..value_n, id, ... -> the ids removed (their metadata
# matched): the id-map pass of delete_where, for entries the scope's LRU set no longer lists
_DELETE_LISTED_WHERE = META_MATCHES + r"""
local mkey, n = ARGV[2], tonumber(ARGV[3])
local wanted, ids = {}, {}
for i = 4, 3 + n do wanted[ARGV[i]] = true end
for i = 4 + n, #ARGV do
  if meta_matches(ekey(ARGV[i]), mkey, wanted) then
    remove(ARGV[i])
    ids[#ids + 1] = ARGV[i]
  end
end
return ids
"""


def _script(name: str, body: str) -> LuaScript:
    return LuaScript("vset_" + name, _COMMON + body)


PUT = _script("put", _PUT)
SEARCH = _script("search", _SEARCH)
PAGE = _script("page", _PAGE)
REPAIR = _script("repair", _REPAIR)
REPAIR_IDS = _script("repair_ids", _REPAIR_IDS)
DELETE = _script("delete", _DELETE)
DROP = _script("drop", _DROP)
DELETE_WHERE = _script("delete_where", _DELETE_WHERE)
DELETE_LISTED_WHERE = _script("delete_listed_where", _DELETE_LISTED_WHERE)
# KEYS: the id map; ARGV: cursor, count, scope digest|'' -> {next cursor, id, sd, ...}: one
# HSCAN step of the map, filtered on the server (only that scope's pairs cross the wire)
LISTED = LuaScript("vset_listed", r"""
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local found, out = reply[2], {reply[1]}
for i = 1, #found, 2 do
  if ARGV[3] == '' or found[i + 1] == ARGV[3] then
    out[#out + 1] = found[i]
    out[#out + 1] = found[i + 1]
  end
end
return out
""")


class VectorSetKeys:
    """Key names of one namespace on the server-side path (see the module docstring)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.meta = "{" + namespace + "/}"
        self.scopes = self.meta + ":scopes"
        self.ids = self.meta + ":ids"
        self.dim = self.meta + ":dim"
        self.acl_pattern = "{" + namespace + "/*"

    def prefix(self, sd: str) -> str:
        """``{ns/sd}``: the common prefix and cluster hash tag of one scope's keys."""
        return "{" + self.namespace + "/" + sd + "}"

    def lru(self, sd: str) -> str:
        return self.prefix(sd) + ":lru"

    def entry(self, sd: str, hid: str) -> str:
        return self.prefix(sd) + ":e:" + hid

    def vset(self, sd: str, partition: str = "") -> str:
        return self.prefix(sd) + ":v" + (":" + partition if partition else "")


class VectorSetPath:
    """Plans for a server with vector sets; thread-safe (the only local state is two small
    bounded maps: entries a search just read, and which scope recent entry ids live in)."""

    def __init__(
        self,
        shared: Shared,
        quantization: Quantization = "q8",
        codes: Callable[[VectorSetPath], LocalCodes] | None = None,
        *,
        touch_on_lookups: bool = True,
    ) -> None:
        self.shared = shared
        #: whether a lookup's call carries the marks of entries served since (``False`` when
        #: lookups run on a replica, which cannot write: the scope's next put carries them)
        self.touch_on_lookups = touch_on_lookups
        self.keys = VectorSetKeys(shared.namespace)
        self.quant = _QUANT[quantization]
        #: the local 1-bit tables (:mod:`.codes`), or ``None`` for ``VSIM`` only
        self.codes: LocalCodes | None = None if codes is None else codes(self)
        self._lock = threading.Lock()
        # (entry id, lookup time) -> (its scope, its hash fields, its vector as ranked, or None)
        self._prefetched: OrderedDict[
            tuple[str, float], tuple[str, dict[bytes, bytes], np.ndarray | None]
        ] = OrderedDict()
        # by scope digest: entries the cache read from a search's reply (or from a replica),
        # marked used by the next call to their scope (:meth:`fetch`, :meth:`flush_touches`)
        self.marks = ServedMarks()
        # (entry id, lookup time) -> (the local table that proposed it, the lookup's nearest
        # row distance), for the candidates a lookup just returned
        self._asked: OrderedDict[tuple[str, float], tuple[LocalTable, int | None]] = OrderedDict()
        self._where: OrderedDict[str, str] = OrderedDict()

    def load_dim(self, client: Any) -> None:
        """Read the namespace's dimension once at start (entries are checked against it)."""
        raw = client.get(self.keys.dim)
        if raw is not None and raw.isdigit() and int(raw) > 0:
            self.shared.dim = int(raw)

    # ------------------------------------------------------------------ lookups
    def get_exact(
        self, scope: str, query_key: str, now: float, partition: str, report: StoreReport | None
    ) -> Plan[CacheEntry | None]:
        hid = entry_id(scope, query_key, partition)
        entry = yield from self._fetch_in(scope_digest(scope), hid, now, report)
        return entry if is_entry_for(entry, scope, query_key, partition) else None

    def search(
        self,
        scope: str,
        vector: FloatVector,
        k: int,
        now: float,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> Plan[list[Candidate]]:
        query = self._query(vector)
        call, ask = self._search_call(scope, query, k, now, partition, "")
        reply = yield call
        reply = self._unwrap(reply, ask)
        return self._candidates(reply, ask, scope, query, k, now, partition, report)

    def lookup(
        self,
        scope: str,
        query_key: str,
        vector: FloatVector,
        k: int,
        now: float,
        partition: str = "",
        report: StoreReport | None = None,
    ) -> Plan[tuple[CacheEntry | None, list[Candidate]]]:
        """The exact entry of ``query_key`` if live, else the nearest candidates: one script
        call (the exact key is checked first, on the server, and the vector search runs
        only when it is absent). Rare cases (the exact entry expired or corrupt) take a
        second call, the plain search."""
        query = self._query(vector)
        sd = scope_digest(scope)
        hid = entry_id(scope, query_key, partition)
        call, ask = self._search_call(scope, query, k, now, partition, hid)
        reply = yield call
        if reply and reply[0] in (b"exact", b"!type"):
            raw = reply[1:] if reply[0] == b"exact" else reply
            entry = yield from self._entry_from(sd, hid, raw, now, report)
            if is_entry_for(entry, scope, query_key, partition):
                return entry, []
            call, ask = self._search_call(scope, query, k, now, partition, "")
            reply = yield call
        reply = self._unwrap(reply, ask)
        return None, self._candidates(reply, ask, scope, query, k, now, partition, report)

    def _query(self, vector: FloatVector) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float32)
        if self.shared.dim is not None and query.shape[0] != self.shared.dim:
            raise self.shared.foreign_dimension(int(query.shape[0]), self.shared.dim)
        return query

    def _search_call(
        self, scope: str, query: np.ndarray, k: int, now: float, partition: str, exact: str
    ) -> tuple[Script, Ask | None]:
        """The search script call; with local codes, the table's candidates go with it."""
        sd = scope_digest(scope)
        args: tuple[Any, ...] = (
            self.keys.prefix(sd), encode_vector(query), k + _EXTRA, repr(float(now)),
            f"{_SEARCH_EF_MIN}:{_SEARCH_EF_MAX}:{_SEARCH_EF_FROM}:{_SEARCH_EF_PER}",
            partition, exact, self.marks.take(sd) if self.touch_on_lookups else "",
        )
        ask = None
        if self.codes is not None:
            ask = self.codes.ask(
                sd, partition, query, max(_CANDIDATES, 4 * (k + _EXTRA)), k + _EXTRA
            )
            if ask is not None:
                whole = b"1" if ask.table.wants_whole(ask.near) else b"0"
                args = (*args, b"=" + ask.gen, ask.last, MAX_NEW, whole, *ask.hids)
        return Script(SEARCH, (self.keys.lru(sd),), args, read=True), ask

    def _unwrap(self, reply: list[Any], ask: Ask | None) -> list[Any]:
        """A search reply in the plain ``VSIM`` form; a local-codes reply updates the table
        (entries written since it, rows of entries gone) on the way."""
        if not reply or reply[0] not in (b"local", b"vsim") or ask is None:
            return reply
        if self.codes is None:
            return reply
        if reply[0] == b"vsim":
            self.codes.fell_back(ask, reply[1])
            return [b"ok", *reply[2:]]
        seqn, flat, gone = reply[1]
        new = [(flat[i].decode(), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        fresh = {hid for hid, _ in new}
        blobs: dict[str, bytes] = {}
        if fresh:
            for i in range(3, len(reply) - 2, 3):
                hid, values = reply[i].decode(), reply[i + 2]
                if hid in fresh and len(values) == len(INDEX_FIELDS) and values[3] is not None:
                    blobs[hid] = values[3]
        self.codes.answered(ask, int(seqn), new, blobs, {g.decode() for g in gone})
        return [b"ok", *reply[2:]]

    def page(self, sd: str, partition: str, after: int, count: int) -> Script:
        """The call reading one page of a partition's entries in write order (:mod:`.codes`)."""
        return Script(
            PAGE, (self.keys.lru(sd),), (self.keys.prefix(sd), partition, after, count),
            read=True,
        )

    def repair(self, sd: str, partition: str, cursor: bytes, count: int) -> Script:
        """The call giving write sequences to one step of a scope's entries that lack one
        (:mod:`.codes`: a table can only follow entries with a sequence)."""
        return Script(
            REPAIR, (self.keys.lru(sd),), (self.keys.prefix(sd), partition, cursor, count)
        )

    def listed(self, sd: str, cursor: int) -> Script:
        """One step of the namespace's id map, the pairs of scope ``sd`` only (the repair of
        a scope whose LRU set was evicted: :meth:`repair_ids`); reply ``{cursor, id, sd, ...}``."""
        return Script(LISTED, (self.keys.ids,), (cursor, _LISTED_STEP, sd), read=True)

    def repair_ids(self, sd: str, partition: str, hids: list[str]) -> Script:
        """The call giving write sequences (and LRU membership) back to these entries of a
        scope, listed by the id map; reply ``{sequences added, LRU members restored}``."""
        return Script(
            REPAIR_IDS, (self.keys.lru(sd),), (self.keys.prefix(sd), partition, *hids)
        )

    def _candidates(
        self,
        reply: list[Any],
        ask: Ask | None,
        scope: str,
        query: np.ndarray,
        k: int,
        now: float,
        partition: str,
        report: StoreReport | None,
    ) -> list[Candidate]:
        if reply[0] == b"dim":
            raise self.shared.foreign_dimension(int(query.shape[0]), reply[1].decode())
        sd = scope_digest(scope)
        # decode only what ranking needs (vector, expiry, threshold), all candidates at once;
        # the full entry (JSON) is decoded by fetch() for the candidate the cache reads
        hids, matrix, thresholds = self._rank(reply, query, scope, partition, now, report)
        similarities = matrix @ query
        order = np.argsort(-similarities, kind="stable")[:k]
        whole = reply[1]
        first = whole[0].decode() if whole else None
        # a fetch of a candidate widens the table's reach when this lookup lies past it
        asked = None
        if ask is not None and ask.near is not None:
            reach = ask.table.reach
            if reach is None or ask.near > reach:
                asked = (ask.table, ask.near)
        out = []
        with self._lock:
            for row in order.tolist():
                hid = hids[row]
                self._remember(hid, sd)
                if hid == first:
                    fields = pairs_to_dict(whole[1:])
                    # the vector just checked and ranked, when the whole entry holds the
                    # same bytes (it does: one script read both), is not decoded again
                    ranked = matrix[row]
                    same = fields.get(b"vec") == ranked.tobytes()
                    self._prefetched[(hid, float(now))] = (
                        sd, fields, ranked.astype(np.float32) if same else None
                    )
                    self._prefetched.move_to_end((hid, float(now)))
                out.append(Candidate(hid, float(similarities[row]), thresholds[row]))
                if asked is not None:
                    self._asked[(hid, float(now))] = asked
                    self._asked.move_to_end((hid, float(now)))
            while len(self._prefetched) > _PREFETCH:
                self._prefetched.popitem(last=False)
            while len(self._asked) > _ASKED:
                self._asked.popitem(last=False)
        self.shared.dimension_ok()
        return out

    def _rank(
        self,
        reply: list[Any],
        query: np.ndarray,
        scope: str,
        partition: str,
        now: float,
        report: StoreReport | None,
    ) -> tuple[list[str], np.ndarray, list[float | None]]:
        """The live candidates of a search reply with their stored float32 vectors (one row
        each, checked: the caller's one matrix product gives the exact similarities) and
        thresholds; corrupt or foreign ones are counted and skipped, expired ones skipped."""
        namespace, wanted = self.shared.namespace.encode(), (scope.encode(), partition.encode())
        width = 4 * int(query.shape[0])
        hids: list[str] = []
        blobs: list[bytes] = []
        thresholds: list[float | None] = []
        for i in range(2, len(reply) - 2, 3):
            hid, values = reply[i].decode(), reply[i + 2]
            try:
                if len(values) != len(INDEX_FIELDS):
                    raise CorruptEntry(f"key of type {values[-1]!r}, not an entry hash")
                version, ns, got_scope, blob, expires, threshold, got_pt = values
                if version != FORMAT_VERSION or ns != namespace:
                    decode_index_record(values, self.shared.namespace, None)  # says why
                if (got_scope, got_pt or b"") != wanted or blob is None or len(blob) != width:
                    raise CorruptEntry("entry of another scope, partition or dimension")
                expires_at = optional_float(expires, "ex")
                limit = optional_float(threshold, "thr")
            except CorruptEntry as exc:
                self.shared.corrupt(hid, exc, report)
                continue
            if expires_at is not None and expires_at <= now:
                continue
            hids.append(hid)
            blobs.append(blob)
            thresholds.append(limit)
        if not blobs:
            return [], np.zeros((0, width // 4), dtype=np.float32), []
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
        good = np.isfinite(norms) & (np.abs(norms - 1.0) <= 1e-3)  # NaN/inf make norms so
        if not good.all():
            for row in np.flatnonzero(~good).tolist():
                try:
                    decode_vector(blobs[row], None)
                except CorruptEntry as exc:
                    self.shared.corrupt(hids[row], exc, report)
            keep = np.flatnonzero(good).tolist()
            matrix = matrix[good]
            hids = [hids[r] for r in keep]
            thresholds = [thresholds[r] for r in keep]
        return hids, matrix, thresholds

    def fetch(
        self, entry_id: str, now: float, report: StoreReport | None = None
    ) -> Plan[CacheEntry | None]:
        hid = hex_id(entry_id)
        with self._lock:
            prefetched = self._prefetched.pop((hid, float(now)), None)
            asked = self._asked.pop((hid, float(now)), None)
        if asked is not None:
            asked[0].read(asked[1])
        if prefetched is not None:  # read by the search of this very lookup
            served, fields, vector = prefetched
            try:
                entry = decode_entry(fields, self.shared.namespace, self.shared.dim, vector=vector)
            except CorruptEntry as exc:
                self.shared.corrupt(hid, exc, report)
                return None
            # marked used by the next call to its scope: the search that read it could not
            # know whether the cache would (the in-process store marks what it fetches)
            self.marks.add(served, hid, now)
            return entry
        sd = yield from self._scope_of(hid)
        if sd is None:
            return None
        return (yield from self._fetch_in(sd, hid, now, report))

    def _fetch_in(
        self, sd: str, hid: str, now: float, report: StoreReport | None
    ) -> Plan[CacheEntry | None]:
        raw = yield Script(
            FETCH, (self.keys.lru(sd),), (self.keys.prefix(sd), 0, hid, repr(now)), read=True
        )
        return (yield from self._entry_from(sd, hid, raw, now, report))

    def _entry_from(
        self, sd: str, hid: str, raw: list[bytes], now: float, report: StoreReport | None
    ) -> Plan[CacheEntry | None]:
        """The live entry of an HGETALL reply; an expired one is removed (and counted), a
        corrupt one counted and skipped."""
        if not raw:
            return None
        try:
            entry = decode_entry(pairs_to_dict(raw), self.shared.namespace, self.shared.dim)
        except CorruptEntry as exc:
            self.shared.corrupt(hid, exc, report)
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            removed = yield Script(DELETE, (self.keys.lru(sd),), (self.keys.prefix(sd), hid))
            if removed:
                self.shared.expired(int(removed), report)
                yield Command(("HDEL", self.keys.ids, hid))
            return None
        with self._lock:
            self._remember(hid, sd)
        if not self.touch_on_lookups:  # read on a replica, whose script could not mark it
            self.marks.add(sd, hid, now)
        return entry

    def _scope_of(self, hid: str) -> Plan[str | None]:
        with self._lock:
            sd = self._where.get(hid)
        if sd is None:
            raw = yield Command(("HGET", self.keys.ids, hid), read=True)
            sd = raw.decode() if raw else None
        return sd

    def _remember(self, hid: str, sd: str) -> None:  # call with self._lock held
        self._where[hid] = sd
        self._where.move_to_end(hid)
        while len(self._where) > _WHERE:
            self._where.popitem(last=False)

    def flush_touches(self) -> Plan[None]:
        """Mark used every entry served and not yet marked (at close: no later call to its
        scope may come from this store)."""
        for sd, marks in self.marks.take_all().items():
            yield Command(("ZADD", self.keys.lru(sd), "XX", "GT", *marks))

    # ------------------------------------------------------------------- writes
    def put(self, entry: CacheEntry, now: float, report: StoreReport | None) -> Plan[None]:
        shared = self.shared
        prepared = prepare_put(entry, now, shared)
        if shared.dim is None:
            held = yield Command(("GET", self.keys.dim))
            if held is not None and int(held) != prepared.dim:
                shared.dim = int(held)
                raise shared.foreign_dimension(prepared.dim, int(held))
        sd = scope_digest(entry.scope)
        args = (
            self.keys.prefix(sd),
            prepared.hid,
            str(prepared.dim),
            repr(float(now)),
            prepared.expires,
            prepared.ttl_ms,
            "" if shared.max_entries is None else str(shared.max_entries),
            self.quant,
            encode_vector(prepared.vector),
            _BUILD_EF,
            entry.partition,
            self.marks.take(sd),
            *prepared.flat_fields,
        )
        reply = yield Script(PUT, (self.keys.lru(sd),), args)
        if reply[0] == b"dim":
            raise shared.foreign_dimension(prepared.dim, reply[1].decode())
        shared.evicted(int(reply[1]), report)
        shared.expired(int(reply[2]), report)
        victims = [v.decode() for v in reply[3:]]
        # namespace bookkeeping lives in another slot: a second call (idempotent)
        commands: list[tuple[Any, ...]] = [
            ("HSET", self.keys.ids, prepared.hid, sd),
            ("SADD", self.keys.scopes, sd),
            ("SET", self.keys.dim, str(prepared.dim), "NX"),
        ]
        if victims:
            commands.append(("HDEL", self.keys.ids, *victims))
        yield Batch(tuple(commands))
        with self._lock:
            self._remember(prepared.hid, sd)
        shared.stored(prepared.dim)

    def delete(self, entry_ids: list[str]) -> Plan[int]:
        total = 0
        for hid in dict.fromkeys(hex_id(i) for i in entry_ids):
            sd = yield from self._scope_of(hid)
            if sd is None:
                continue
            total += int((yield Script(DELETE, (self.keys.lru(sd),), (self.keys.prefix(sd), hid))))
            yield Command(("HDEL", self.keys.ids, hid))
            self._forget([hid])
        return total

    def invalidate(self, scope: str) -> Plan[int]:
        sd = scope_digest(scope)
        return (yield from self._drop_scope(sd)) + (yield from self._drop_listed(sd))

    def _drop_scope(self, sd: str) -> Plan[int]:
        total = 0
        for _ in range(_MAX_ROUNDS):
            reply = yield Script(DROP, (self.keys.lru(sd),), (self.keys.prefix(sd), _CHUNK))
            total += int(reply[0])
            ids = [i.decode() for i in reply[2:]]
            if ids:
                yield Command(("HDEL", self.keys.ids, *ids))
                self._forget(ids)
            if not int(reply[1]):
                break
        return total

    def _drop_listed(self, only: str | None) -> Plan[int]:
        """A second pass after :meth:`_drop_scope`: the entries the namespace's id map still
        names (for scope ``only``, or for every scope). Under an ``allkeys-*`` maxmemory
        policy Redis may evict a scope's LRU set, which that pass walks, and leave its entry
        hashes (still answerable by their exact key); the id map is another key, so they are
        found here. One scan of the map, whatever the number of scopes."""

        def drop(sd: str, chunk: list[str]) -> Plan[tuple[int, list[str]]]:
            removed = yield Script(DELETE, (self.keys.lru(sd),), (self.keys.prefix(sd), *chunk))
            return int(removed), chunk  # every listed id leaves the map, gone or not

        return (yield from self._listed(only, drop))

    def _listed(
        self, only: str | None, act: Callable[[str, list[str]], Plan[tuple[int, list[str]]]]
    ) -> Plan[int]:
        """Run ``act`` on every chunk of entry ids the namespace's id map lists (of scope
        ``only``, or of every scope), one scope per chunk. ``act`` returns how many entries
        it removed and which ids leave the map (and this process's memory of them); the
        sum of the counts is returned."""
        total, cursor = 0, 0
        for _ in range(_MAX_ROUNDS):
            reply = yield Script(LISTED, (self.keys.ids,), (cursor, _LISTED_STEP, only or ""))
            cursor = reply[0]
            by_scope: dict[str, list[str]] = {}
            for i in range(1, len(reply) - 1, 2):
                by_scope.setdefault(reply[i + 1].decode(), []).append(reply[i].decode())
            for sd, hids in by_scope.items():
                for start in range(0, len(hids), _CHUNK):
                    chunk = hids[start : start + _CHUNK]
                    removed, unlisted = yield from act(sd, chunk)
                    total += removed
                    if unlisted:
                        yield Command(("HDEL", self.keys.ids, *unlisted))
                        self._forget(unlisted)
            if int(cursor) == 0:
                break
        return total

    def delete_where(
        self, scope: str | None, metadata_key: str, values: list[str]
    ) -> Plan[int]:
        if not values:
            return 0
        if scope is None:
            scopes = yield from self._scopes()
        else:
            scopes = [scope_digest(scope)]
        total = 0
        for sd in scopes:
            cursor: Any = b"0"
            for _ in range(_MAX_ROUNDS):
                cursor, ids = yield Script(
                    DELETE_WHERE,
                    (self.keys.lru(sd),),
                    (self.keys.prefix(sd), cursor, _CHUNK, metadata_key, *values),
                )
                hids = [i.decode() for i in ids]
                if hids:
                    yield Command(("HDEL", self.keys.ids, *hids))
                    self._forget(hids)
                total += len(hids)
                if cursor in (b"0", 0, "0"):
                    break

        def drop_matching(sd: str, chunk: list[str]) -> Plan[tuple[int, list[str]]]:
            removed = yield Script(
                DELETE_LISTED_WHERE,
                (self.keys.lru(sd),),
                (self.keys.prefix(sd), metadata_key, len(values), *values, *chunk),
            )
            ids = [i.decode() for i in removed]
            return len(ids), ids

        # a second pass over the id map: entries a scope's LRU set no longer lists (evicted
        # under ``allkeys-*``) still answer by their exact key, so they must go too
        only = None if scope is None else scopes[0]
        return total + (yield from self._listed(only, drop_matching))

    def clear(self) -> Plan[None]:
        for sd in (yield from self._scopes()):
            yield from self._drop_scope(sd)
        yield from self._drop_listed(None)
        yield Batch((("DEL", self.keys.ids), ("DEL", self.keys.scopes), ("DEL", self.keys.dim)))
        with self._lock:
            self._where.clear()
            self._prefetched.clear()
            self._asked.clear()
            self.marks.clear()
        if self.codes is not None:
            self.codes.forget()
        self.shared.emptied()

    def count(self) -> Plan[int]:
        scopes = yield from self._scopes()
        if not scopes:
            return 0
        counts = yield Batch(tuple(("ZCARD", self.keys.lru(sd)) for sd in scopes))
        return sum(int(c) for c in counts)

    def _scopes(self) -> Plan[list[str]]:
        members = yield Command(("SMEMBERS", self.keys.scopes))
        return sorted(m.decode() for m in members)

    def _forget(self, hids: list[str]) -> None:
        with self._lock:
            for hid in hids:
                self._where.pop(hid, None)
