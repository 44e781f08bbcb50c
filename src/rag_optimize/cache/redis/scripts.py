"""The Lua scripts behind :class:`~rag_optimize.cache.redis.store.RedisStore`.

Every change is one script, so the entry hash, the LRU and expiry sorted sets, the scope set
and the change log move together: two processes evicting at the same time cannot both
remove an entry for one slot (no over-eviction), and no reader sees an entry the log does
not announce. Plain Redis 6.2+ commands only (no modules).

Every script gets ``ARGV[1]`` = key prefix ``{ns}`` and ``ARGV[2]`` = approximate stream
length; the first declared key is always the change log. Per-entry keys are built inside
the scripts; they share the namespace's hash tag, so they live in the same cluster slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from rag_optimize.cache.redis.direct import aexecute, execute
from rag_optimize.cache.redis.marks import TOUCH_SERVED_LUA

_COMMON = r"""
local P = ARGV[1]
local MAXLEN = ARGV[2]
local function ekey(id) return P .. ':e:' .. id end
-- HGET that treats a key of another type (a foreign key) as a missing field
local function hget(k, f)
  local v = redis.pcall('HGET', k, f)
  if type(v) == 'table' and v.err then return false end
  return v
end
local function remove(id)
  local k = ekey(id)
  local sd = hget(k, 'sd')
  local n = redis.call('DEL', k)
  redis.call('ZREM', P .. ':lru', id)
  redis.call('ZREM', P .. ':exp', id)
  if sd then redis.call('SREM', P .. ':s:' .. sd, id) end
  return n
end
-- announce a change; returns its number (the version the writer's own mirror records), or
-- false: under maxmemory noeviction Redis refuses the log write (pcall), other processes then
-- learn of a removal when their fetch finds the entry gone (reads stay right).
-- 'link' chains the history: a digest of the link before (P:last, the event's 'prev'), its
-- number, op and ids. Numbers alone cannot tell two histories apart (a promoted replica that
-- missed the old master's last changes numbers its own next changes the same), nor can log
-- ids (two servers may stamp the same millisecond); links can: a reader whose last link is
-- not 'prev' reloads. (An event written before links has none: its log id stands for it.)
local function emit(op, ids)
  local seq = redis.pcall('INCR', P .. ':seq')
  if type(seq) == 'table' then return false end
  local prev = redis.call('GET', P .. ':last') or '0-0'
  local joined = table.concat(ids, ' ')
  local link = redis.sha1hex(prev .. '|' .. seq .. '|' .. op .. '|' .. joined)
  local id = redis.pcall('XADD', P .. ':log', 'MAXLEN', '~', MAXLEN, '*',
              'op', op, 'seq', seq, 'ids', joined, 'prev', prev, 'link', link)
  if type(id) == 'string' then redis.pcall('SET', P .. ':last', link) end
  return seq
end
local function counter() return tonumber(redis.call('GET', P .. ':seq')) or 0 end
""" + TOUCH_SERVED_LUA

# ARGV: P, MAXLEN, id, sd, dim, now, expires|'', ttl_ms|'', max_entries|'', marks ('score id
#       ...': entries this process served from a replica since its last put, marked before
#       any eviction; :mod:`.marks`), field, value, ...
# -> {'dim', stored_dim} on a dimension clash, else
#    {'ok', evicted, already_gone, put seq|false, eviction seq|false, {evicted ids}}
_PUT = r"""
local id, sd, dim, now = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local expires, ttl, maxn = ARGV[7], ARGV[8], ARGV[9]
local stored = redis.call('GET', P .. ':dim')
if stored and stored ~= dim then return {'dim', stored} end
-- a memory-using write first: under maxmemory noeviction it fails here, before any change
-- (once a script has written, Redis lets its later writes through past maxmemory)
redis.call('ZADD', P .. ':lru', 'XX', now, id)
touch_served(P .. ':lru', ARGV[10], {})
if not stored then redis.call('SET', P .. ':dim', dim) end
local k = ekey(id)
local oldsd = hget(k, 'sd')
if oldsd and oldsd ~= sd then redis.call('SREM', P .. ':s:' .. oldsd, id) end
redis.call('DEL', k)
redis.call('HSET', k, unpack(ARGV, 11))
if ttl ~= '' then
  redis.call('PEXPIRE', k, ttl)
  redis.call('ZADD', P .. ':exp', expires, id)
else
  redis.call('ZREM', P .. ':exp', id)
end
redis.call('ZREM', P .. ':lru', id)
local evicted, gone, victims = 0, 0, {}
if maxn ~= '' then
  local room = tonumber(maxn) - 1
  while redis.call('ZCARD', P .. ':lru') > room do
    local popped = redis.call('ZPOPMIN', P .. ':lru', redis.call('ZCARD', P .. ':lru') - room)
    for i = 1, #popped, 2 do
      local victim = popped[i]
      if remove(victim) == 1 then evicted = evicted + 1 else gone = gone + 1 end
      victims[#victims + 1] = victim
    end
  end
end
redis.call('ZADD', P .. ':lru', now, id)
redis.call('SADD', P .. ':s:' .. sd, id)
local del_seq = false
if #victims > 0 then del_seq = emit('del', victims) end
return {'ok', evicted, gone, emit('put', {id}), del_seq, victims}
"""

# ARGV: P, MAXLEN (unused), id, now -> the entry's HGETALL (empty if absent); touches LRU
# order. Shared by both search paths (the key names agree: P:e:<id>, P:lru).
_FETCH = r"""
local id, now = ARGV[3], ARGV[4]
local kind = redis.call('TYPE', ekey(id)).ok
if kind ~= 'hash' then
  if kind == 'none' then return {} end
  return {'!type', kind}  -- a foreign key: decodes as a corrupt entry
end
local h = redis.call('HGETALL', ekey(id))
-- the LRU touch is a write: when Redis refuses writes (maxmemory noeviction) skip it, still read
if #h > 0 then redis.pcall('ZADD', P .. ':lru', 'XX', 'GT', now, id) end
return h
"""

# ARGV: P, MAXLEN, id, ... -> {how many of these entries existed, seq|false}
_DELETE = r"""
local ids, n = {}, 0
for i = 3, #ARGV do
  n = n + remove(ARGV[i])
  ids[#ids + 1] = ARGV[i]
end
local seq = false
if #ids > 0 then seq = emit('del', ids) end
return {n, seq}
"""

# ARGV: P, MAXLEN, now, limit -> number of expired entries removed
_SWEEP = r"""
local ids = redis.call('ZRANGEBYSCORE', P .. ':exp', '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do remove(id) end
if #ids > 0 then emit('del', ids) end
return #ids
"""

# ARGV: P, MAXLEN, sd, limit -> {removed, left in scope set, seq}: every entry of the scope
# written before change seq is gone once left is 0
_INVALIDATE = r"""
local sd = ARGV[3]
local ids = redis.call('SPOP', P .. ':s:' .. sd, tonumber(ARGV[4]))
local n = 0
for _, id in ipairs(ids) do
  local owner = hget(ekey(id), 'sd')
  if owner == false or owner == sd then n = n + remove(id) end
end
local seq = false
if #ids > 0 then seq = emit('del', ids) end
return {n, redis.call('SCARD', P .. ':s:' .. sd), seq or counter()}
"""

# ARGV: P, MAXLEN, sd, id, ... -> {removed, seq|false}: removes those of these entries that
# still exist and belong to scope sd (invalidate's second pass, over the ids a mirror holds:
# the scope set can be gone while its entries are not, e.g. evicted under allkeys-lru)
_INVALIDATE_IDS = r"""
local sd, ids, n = ARGV[3], {}, 0
for i = 4, #ARGV do
  local id = ARGV[i]
  if hget(ekey(id), 'sd') == sd then
    n = n + remove(id)
    ids[#ids + 1] = id
  end
end
local seq = false
if #ids > 0 then seq = emit('del', ids) end
return {n, seq}
"""

#: Lua: whether the entry hash ``k`` has ``metadata[mkey]`` equal to, or a list containing, a
#: value in the set ``wanted`` (bad JSON or another key type: no). Shared by both layouts.
META_MATCHES = r"""
local function meta_matches(k, mkey, wanted)
  local meta = redis.pcall('HGET', k, 'meta')
  if type(meta) ~= 'string' then return false end
  local ok, obj = pcall(cjson.decode, meta)
  if not ok or type(obj) ~= 'table' then return false end
  local v = obj[mkey]
  if type(v) == 'string' then return wanted[v] == true end
  if type(v) == 'table' then
    for _, item in ipairs(v) do
      if type(item) == 'string' and wanted[item] then return true end
    end
  end
  return false
end
"""

# ARGV: P, MAXLEN, sd|'', cursor, count, metadata_key, value, ...
# -> {next cursor, removed ids, seq|false}
_DELETE_WHERE = META_MATCHES + r"""
local sd, cursor, count, mkey = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local wanted = {}
for i = 7, #ARGV do wanted[ARGV[i]] = true end
local reply, step
if sd ~= '' then
  reply = redis.call('SSCAN', P .. ':s:' .. sd, cursor, 'COUNT', count)
  step = 1
else
  reply = redis.call('ZSCAN', P .. ':lru', cursor, 'COUNT', count)
  step = 2
end
local members, ids = reply[2], {}
for i = 1, #members, step do
  local id = members[i]
  if meta_matches(ekey(id), mkey, wanted) then
    remove(id)
    ids[#ids + 1] = id
  end
end
local seq = false
if #ids > 0 then seq = emit('del', ids) end
return {reply[1], ids, seq}
"""

# ARGV: P, MAXLEN, sd|'', metadata_key, number of values, value, ..., id, ...
# -> {removed ids, seq|false}: delete_where's second pass over the ids a mirror holds (the
# set the first pass scanned can be gone while its entries are not, e.g. evicted)
_DELETE_WHERE_IDS = META_MATCHES + r"""
local sd, mkey, nv = ARGV[3], ARGV[4], tonumber(ARGV[5])
local wanted = {}
for i = 6, 5 + nv do wanted[ARGV[i]] = true end
local ids = {}
for i = 6 + nv, #ARGV do
  local id = ARGV[i]
  local k = ekey(id)
  if (sd == '' or hget(k, 'sd') == sd) and meta_matches(k, mkey, wanted) then
    remove(id)
    ids[#ids + 1] = id
  end
end
local seq = false
if #ids > 0 then seq = emit('del', ids) end
return {ids, seq}
"""

# ARGV: P, MAXLEN, id, ... -> the float32 vector blob of each entry (false: gone or foreign);
# a read only (int8 mirror candidates are rescored from these)
_VECTORS = r"""
local out = {}
for i = 3, #ARGV do
  local v = hget(ekey(ARGV[i]), 'vec')
  out[#out + 1] = v or false
end
return out
"""

# ARGV: P, MAXLEN -> {seq, last log entry id or false, dim, entries}: where a snapshot starts, read
# atomically (a script, not MULTI: Redis refuses transactions when it is out of memory)
_HEAD = r"""
local last = redis.call('XREVRANGE', P .. ':log', '+', '-', 'COUNT', 1)
local id, link = false, false
if #last > 0 then
  id, link = last[1][1], last[1][1]
  local f = last[1][2]
  for i = 1, #f, 2 do if f[i] == 'link' then link = f[i + 1] end end
end
return {redis.call('GET', P .. ':seq'), id, redis.call('GET', P .. ':dim'),
        redis.call('ZCARD', P .. ':lru'), link}
"""

# ARGV: P, MAXLEN (unused), cursor, count, format version, namespace, width|''
# -> {next cursor, width|'', ids, vectors, slot keys, rows, bad}: one page of a snapshot,
# packed so the reader parses a handful of replies per page instead of seven per entry:
#   ids      the page's good entry ids, 32 characters each, concatenated
#   vectors  their float32 vector bytes (width * 4 bytes each), one reply per entry: joining
#            a megabyte in Lua costs more than the whole rest of the page (measured)
#   keys     flat {scope, partition, ...}: the distinct (scope, partition) pairs of the page
#   rows     per good entry "<key index> <ex|-> <thr|->", joined by ';'
#   bad      flat {id, reason, ...}: entries that are not valid entries of this namespace
# Gone entries (an id in the LRU set whose hash expired) are left out. ``width`` is the vector
# dimension: given by the caller, or taken from the first vector when it passes ''. A read only.
_SNAPSHOT_PAGE = r"""
local cursor, count, version, ns, width = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
width = tonumber(width)
local reply = redis.call('ZSCAN', P .. ':lru', cursor, 'COUNT', count)
local members = reply[2]
local ids, vecs, keys, slot_of, rows, bad = {}, {}, {}, {}, {}, {}
local function num(v)
  if not v or v == '' then return '-' end
  if string.find(v, '^[-+0-9.eEinfatyINFATY]+$') then return v end
  return nil
end
for i = 1, #members, 2 do
  local id = members[i]
  local h = redis.pcall('HMGET', ekey(id), 'v', 'ns', 'scope', 'vec', 'ex', 'thr', 'pt')
  local why = nil
  if type(h) == 'table' and h.err then
    why = 'not an entry hash: ' .. h.err
  elseif not (h[1] or h[2] or h[3] or h[4] or h[5] or h[6] or h[7]) then
    why = false  -- gone
  elseif #id ~= 32 then
    why = 'not an entry id'
  elseif h[1] ~= version then
    why = 'unknown entry format ' .. tostring(h[1])
  elseif h[2] ~= ns then
    why = 'entry belongs to namespace ' .. tostring(h[2])
  elseif not h[3] then
    why = "field 'scope' is missing"
  elseif not h[4] or #h[4] == 0 or #h[4] % 4 ~= 0 then
    why = 'vector field has ' .. (h[4] and #h[4] or 0) .. ' bytes, not a float32 array'
  elseif width and #h[4] ~= 4 * width then
    why = 'vector has dimension ' .. (#h[4] / 4) .. ', namespace holds ' .. width
  elseif not num(h[5]) then
    why = "field 'ex' is not a number"
  elseif not num(h[6]) then
    why = "field 'thr' is not a number"
  end
  if why == nil then
    width = width or #h[4] / 4
    local pt = h[7] or ''
    local key = #h[3] .. ':' .. h[3] .. pt  -- length first: no two pairs share a key
    local slot = slot_of[key]
    if not slot then
      keys[#keys + 1] = h[3]
      keys[#keys + 1] = pt
      slot = #keys / 2 - 1
      slot_of[key] = slot
    end
    ids[#ids + 1] = id
    vecs[#vecs + 1] = h[4]
    rows[#rows + 1] = slot .. ' ' .. num(h[5]) .. ' ' .. num(h[6])
  elseif why then
    bad[#bad + 1] = id
    bad[#bad + 1] = why
  end
end
return {reply[1], width and tostring(width) or '', table.concat(ids), vecs, keys,
        table.concat(rows, ';'), bad}
"""

# ARGV: P, MAXLEN -> announces that the namespace was emptied; returns the clear's seq|false
_CLEARED = r"""
redis.call('DEL', P .. ':dim')
return emit('clear', {})
"""


@dataclass(frozen=True)
class LuaScript:
    """A script body with its SHA1, run with EVALSHA (EVAL on NOSCRIPT)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())  # noqa: S324


def _script(name: str, body: str) -> LuaScript:
    return LuaScript(name, _COMMON + body)


PUT = _script("put", _PUT)
FETCH = _script("fetch", _FETCH)
DELETE = _script("delete", _DELETE)
SWEEP = _script("sweep", _SWEEP)
INVALIDATE = _script("invalidate", _INVALIDATE)
INVALIDATE_IDS = _script("invalidate_ids", _INVALIDATE_IDS)
DELETE_WHERE = _script("delete_where", _DELETE_WHERE)
DELETE_WHERE_IDS = _script("delete_where_ids", _DELETE_WHERE_IDS)
CLEARED = _script("cleared", _CLEARED)
HEAD = _script("head", _HEAD)
VECTORS = _script("vectors", _VECTORS)
SNAPSHOT_PAGE = _script("snapshot_page", _SNAPSHOT_PAGE)


def _eval_names(read_only: bool) -> tuple[str, str]:
    """The (EVALSHA, EVAL) command names, their ``_RO`` forms for a read on a replica."""
    return ("EVALSHA_RO", "EVAL_RO") if read_only else ("EVALSHA", "EVAL")


def run_script(
    client: Any,
    script: LuaScript,
    keys: tuple[str, ...],
    args: tuple[Any, ...],
    *,
    read_only: bool = False,
) -> Any:
    """Run ``script`` on a sync redis-py client (EVALSHA, loading it once per server);
    ``read_only``: as ``EVALSHA_RO`` (runs on a replica; the script's writes fail, which the
    lookup scripts' ``redis.pcall`` skips). The store's own clients send it on a pooled
    connection directly (:mod:`.direct`)."""
    from redis.exceptions import NoScriptError

    evalsha, eval_ = _eval_names(read_only)
    try:
        return execute(client, evalsha, script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return execute(client, eval_, script.source, len(keys), *keys, *args)


async def arun_script(
    client: Any,
    script: LuaScript,
    keys: tuple[str, ...],
    args: tuple[Any, ...],
    *,
    read_only: bool = False,
) -> Any:
    """Async twin of :func:`run_script` for a ``redis.asyncio`` client."""
    from redis.exceptions import NoScriptError

    evalsha, eval_ = _eval_names(read_only)
    try:
        return await aexecute(client, evalsha, script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await aexecute(client, eval_, script.source, len(keys), *keys, *args)
