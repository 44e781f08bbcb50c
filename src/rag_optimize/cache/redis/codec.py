"""How cache entries are laid out in Redis: key names and the hash codec.

Everything read back from Redis is treated as untrusted bytes: JSON for the response and
metadata (never pickle), little-endian float32 for the vector, plain decimal text for
numbers. A hash that does not decode cleanly (another program's key, a newer format, a
vector of the wrong dimension, bad JSON) raises :class:`CorruptEntry`, which the store counts
in ``corrupt_entries`` and skips.

Key layout for namespace ``ns`` (the braces are a Redis Cluster hash tag, so every key of one
namespace lives in one slot and the Lua scripts may touch them together)::

    {ns}:e:<id>     hash   one entry (fields below)
    {ns}:lru        zset   entry id -> last access time (eviction order)
    {ns}:exp        zset   entry id -> expiry time (only entries with a TTL)
    {ns}:s:<sd>     set    entry ids of one scope; sd = digest(scope)
    {ns}:dim        string vector dimension of the namespace
    {ns}:seq        string change counter (gap detection for the change log)
    {ns}:log        stream change log: put / del / clear events
    {ns}:last       string link of the latest event (each event names the one before)

``<id>`` is always 32 hex digits (the cache's entry ids already are; anything else is hashed)
and scopes only ever appear hashed in key names, so no user text can name or forge a key.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag_optimize.cache.decision.words import QueryWords, WordsCorrupt
from rag_optimize.cache.entry import CacheEntry
from rag_optimize.cache.keys import digest
from rag_optimize.embedding.vectors import FloatVector
from rag_optimize.errors import ConfigurationError

FORMAT_VERSION = b"1"
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

#: Hash fields the local vector index needs (read on load and on every change event).
INDEX_FIELDS = (b"v", b"ns", b"scope", b"vec", b"ex", b"thr", b"pt")


class CorruptEntry(Exception):
    """A Redis hash that is not a valid entry of this namespace (internal; never escapes)."""


def check_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is safe inside key names and glob patterns."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ConfigurationError(
            "namespace must be 1-64 characters of letters, digits, '_', '.', ':' or '-', "
            f"got {namespace!r}"
        )
    return namespace


def hex_id(entry_id: str) -> str:
    """The key-safe id of an entry: itself if already 32 hex digits, else its digest."""
    return entry_id if _HEX_ID.fullmatch(entry_id) else digest(entry_id)


@functools.lru_cache(maxsize=1024)
def scope_digest(scope: str) -> str:
    """The key-safe name of a scope (remembered for the last 1,024 scopes: a lookup needs
    it three times)."""
    return digest("scope", scope)


@dataclass(frozen=True)
class Keys:
    """Key names of one namespace."""

    namespace: str

    @property
    def prefix(self) -> str:
        """``{namespace}``: the common prefix and Redis Cluster hash tag."""
        return "{" + self.namespace + "}"

    def entry(self, hid: str) -> str:
        return f"{self.prefix}:e:{hid}"

    def scope(self, sd: str) -> str:
        return f"{self.prefix}:s:{sd}"

    @property
    def lru(self) -> str:
        return f"{self.prefix}:lru"

    @property
    def exp(self) -> str:
        return f"{self.prefix}:exp"

    @property
    def dim(self) -> str:
        return f"{self.prefix}:dim"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def log(self) -> str:
        return f"{self.prefix}:log"

    @property
    def last(self) -> str:
        return f"{self.prefix}:last"

    @property
    def pattern(self) -> str:
        """Glob matching every key of the namespace (namespace chars are glob-safe)."""
        return f"{self.prefix}:*"


def encode_vector(vector: FloatVector) -> bytes:
    """Little-endian float32 bytes (portable across machines)."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_vector(raw: bytes, dim: int | None) -> FloatVector:
    """A unit float32 vector from :func:`encode_vector` bytes, validated."""
    if not raw or len(raw) % 4:
        raise CorruptEntry(f"vector field has {len(raw)} bytes, not a float32 array")
    vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dim is not None and vec.shape[0] != dim:
        raise CorruptEntry(f"vector has dimension {vec.shape[0]}, namespace holds {dim}")
    if not np.all(np.isfinite(vec)):
        raise CorruptEntry("vector contains NaN or inf")
    norm = float(np.linalg.norm(vec))
    if abs(norm - 1.0) > 1e-3:
        raise CorruptEntry(f"vector is not unit length (norm {norm:.4f})")
    return vec


def _num(value: float | None) -> bytes:
    return b"" if value is None else repr(float(value)).encode()


def optional_float(raw: bytes | None, field: str) -> float | None:
    """A stored number (``None`` when absent or empty); raises :class:`CorruptEntry` for
    text that is not a finite number."""
    if raw is None or raw == b"":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise CorruptEntry(f"field {field!r} is not a number") from exc
    if not math.isfinite(value):
        raise CorruptEntry(f"field {field!r} is not finite")
    return value


def _text(raw: bytes | None, field: str) -> str:
    if raw is None:
        raise CorruptEntry(f"field {field!r} is missing")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptEntry(f"field {field!r} is not UTF-8") from exc


def _json(raw: bytes | None, field: str) -> Any:
    text = _text(raw, field)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise CorruptEntry(f"field {field!r} is not valid JSON") from exc
    except RecursionError as exc:  # nested deeper than the decoder can follow
        raise CorruptEntry(f"field {field!r} is JSON nested too deep to read") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def encode_entry(entry: CacheEntry, namespace: str) -> dict[bytes, bytes]:
    """The hash fields of ``entry`` (response and metadata must be JSON-serialisable; the
    query's word vectors, when it has them, in ``wm``/``wv``)."""
    fields = {
        b"v": FORMAT_VERSION,
        b"ns": namespace.encode(),
        b"id": entry.id.encode(),
        b"scope": entry.scope.encode(),
        b"sd": scope_digest(entry.scope).encode(),
        b"q": entry.query.encode(),
        b"qk": entry.query_key.encode(),
        b"vec": encode_vector(entry.vector),
        b"resp": json.dumps(entry.response, allow_nan=False).encode(),
        b"meta": json.dumps(entry.metadata, allow_nan=False).encode(),
        b"cr": _num(entry.created_at),
        b"ex": _num(entry.expires_at),
        b"thr": _num(entry.threshold),
        b"pt": entry.partition.encode(),
    }
    if entry.words is not None:
        fields[b"wm"], fields[b"wv"] = entry.words.to_fields()
    return fields


def _words(fields: dict[bytes, bytes]) -> QueryWords | None:
    """The stored word vectors, or ``None`` when absent or not decodable (only the
    decision's shortcut is lost; the entry itself stays good)."""
    header, blob = fields.get(b"wm"), fields.get(b"wv")
    if header is None or blob is None:
        return None
    try:
        return QueryWords.from_fields(header, blob)
    except WordsCorrupt:
        return None


def _check_header(fields: dict[bytes, bytes], namespace: str) -> None:
    if fields.get(b"v") != FORMAT_VERSION:
        raise CorruptEntry(f"unknown entry format {fields.get(b'v')!r}")
    if fields.get(b"ns") != namespace.encode():
        raise CorruptEntry(f"entry belongs to namespace {fields.get(b'ns')!r}")


def decode_entry(
    fields: dict[bytes, bytes],
    namespace: str,
    dim: int | None,
    *,
    vector: FloatVector | None = None,
) -> CacheEntry:
    """A :class:`CacheEntry` from its hash fields; raises :class:`CorruptEntry`.
    ``vector``: the entry's vector, already decoded and checked from this very ``vec`` field
    (a search ranked it), so it is not decoded again."""
    _check_header(fields, namespace)
    metadata = _json(fields.get(b"meta"), "meta")
    if not isinstance(metadata, dict):
        raise CorruptEntry("field 'meta' is not a JSON object")
    created = optional_float(fields.get(b"cr"), "cr")
    return CacheEntry(
        id=_text(fields.get(b"id"), "id"),
        scope=_text(fields.get(b"scope"), "scope"),
        query=_text(fields.get(b"q"), "q"),
        query_key=_text(fields.get(b"qk"), "qk"),
        vector=decode_vector(fields.get(b"vec", b""), dim) if vector is None else vector,
        response=_json(fields.get(b"resp"), "resp"),
        metadata=metadata,
        created_at=0.0 if created is None else created,
        expires_at=optional_float(fields.get(b"ex"), "ex"),
        threshold=optional_float(fields.get(b"thr"), "thr"),
        partition=_text(fields.get(b"pt", b""), "pt"),
        words=_words(fields),
    )


@dataclass(frozen=True)
class IndexRecord:
    """What the local vector index keeps of an entry."""

    scope: str
    vector: FloatVector
    expires_at: float | None
    threshold: float | None
    partition: str = ""


def decode_index_record(
    values: list[bytes | None], namespace: str, dim: int | None
) -> IndexRecord | None:
    """Decode an ``HMGET`` of :data:`INDEX_FIELDS`; ``None`` if the hash does not exist."""
    if all(v is None for v in values):
        return None
    fields = {k: v for k, v in zip(INDEX_FIELDS, values, strict=True) if v is not None}
    _check_header(fields, namespace)
    return IndexRecord(
        scope=_text(fields.get(b"scope"), "scope"),
        vector=decode_vector(fields.get(b"vec", b""), dim),
        expires_at=optional_float(fields.get(b"ex"), "ex"),
        threshold=optional_float(fields.get(b"thr"), "thr"),
        partition=_text(fields.get(b"pt", b""), "pt"),
    )


def pairs_to_dict(flat: list[bytes]) -> dict[bytes, bytes]:
    """``[k1, v1, k2, v2, ...]`` (an HGETALL reply from a script) as a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
