"""How a call becomes a lookup key: the query, the scope and the exact-match partition.

A key has three parts, each with its own job:

* the **query** (normalised by :func:`normalise_query`): compared by meaning, and exactly for
  the no-embedding fast path;
* the **scope** (tenant, user, ...): a plain str the app chooses; ``invalidate(scope)`` drops
  all of it;
* the **exact part** (model identity, system prompt, tools, other inputs): anything that must
  match exactly for an answer to be reusable, given as ``exact=`` and hashed canonically by
  :func:`exact_digest` into the entry's *partition*. Entries of different partitions never
  answer each other, by meaning or exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from rag_optimize.errors import InvalidTypeError
from rag_optimize.validation import check_query

__all__ = [
    "DEFAULT_SCOPE",
    "ExactPart",
    "check_query",
    "check_scope",
    "digest",
    "entry_id",
    "exact_digest",
    "normalise_query",
]

DEFAULT_SCOPE = ""

ExactPart = str | Sequence[object] | Mapping[str, object] | None
"""What ``exact=`` accepts: a str, or a JSON-able sequence or mapping (hashed canonically:
mapping key order does not matter, sequence order does), or ``None`` for no exact part."""


def normalise_query(query: str) -> str:
    """The exact-match key of a query: whitespace collapsed, case folded.

    Two queries with the same key are answered from a hash lookup without embedding.
    """
    return " ".join(query.split()).casefold()


def check_scope(scope: object) -> str:
    """Return the scope as a string; ``None`` is the default (shared) scope."""
    if scope is None:
        return DEFAULT_SCOPE
    if not isinstance(scope, str):
        raise InvalidTypeError(f"scope must be a str or None, got {type(scope).__name__}")
    return scope


def digest(*parts: str) -> str:
    """A short, collision-resistant hex digest of ``parts`` (unambiguous concatenation)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def exact_digest(exact: object) -> str:
    """The partition of an exact part: ``""`` for ``None``, else a 32-hex-digit digest.

    A str is hashed as is; a sequence or mapping as canonical JSON (sorted keys, no
    whitespace), so ``{"model": m, "tools": t}`` names the same partition in every process.
    A str and a one-element list holding it are different partitions.
    """
    if exact is None:
        return ""
    if isinstance(exact, str):
        return digest("exact:str", exact)
    if isinstance(exact, (bytes, bytearray)) or not isinstance(exact, (Sequence, Mapping)):
        raise InvalidTypeError(
            f"exact must be a str, a sequence, a mapping or None, got {type(exact).__name__}"
        )
    try:
        text = json.dumps(
            exact if isinstance(exact, Mapping) else list(exact),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(
            f"exact must hold only JSON values (str keys, str/number/bool/None, lists, dicts): "
            f"{exc}"
        ) from exc
    return digest("exact:json", text)


def entry_id(scope: str, query_key: str, partition: str = "") -> str:
    """The id of the entry for ``query_key`` in ``scope`` and ``partition``.

    Deterministic, so a store can find an exact repeat by id in one step; without a partition
    it is ``digest(scope, query_key)`` (the ids of entries written before partitions existed).
    """
    if not partition:
        return digest(scope, query_key)
    return digest(scope, query_key, partition)
