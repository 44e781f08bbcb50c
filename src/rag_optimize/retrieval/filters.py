"""Metadata filters: a small typed expression applied inside every branch before top-k.

A filter selects documents by their metadata. It is evaluated against an index's documents
as one boolean mask (vectorised over :class:`~rag_optimize.index.documents.MetadataColumn`
arrays, cached per store until it changes) and each index searches only the allowed rows,
so a filtered search returns exactly the top-k matching documents: never fewer because
matches were cut after a global top-k, never a filtered-out document with score 0.

Build filters from the classes or from the dictionary form LangChain vector stores use
(MongoDB-style operators)::

    Eq("tenant", "acme") & Range("year", gte=2020)
    {"tenant": "acme", "year": {"$gte": 2020}}
    {"$or": [{"lang": {"$in": ["en", "de"]}}, {"reviewed": True}]}

Values are strings, numbers or booleans; a list-valued field matches when one of its
elements does (as in MongoDB). ``Ne``/``NotIn``/``Not`` match documents without the field;
the others never do. Ranges compare numbers, or strings (ISO dates sort correctly). A field
no document has, an unknown operator or a bad value raises :class:`ConfigurationError`
naming it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag_optimize.errors import ConfigurationError
from rag_optimize.index.documents import DocumentStore, Mask, Scalar

__all__ = [
    "And",
    "Eq",
    "Filter",
    "In",
    "Ne",
    "Not",
    "NotIn",
    "Or",
    "Range",
    "filter_mask",
    "parse_filter",
]


def _scalar(field: str, value: object) -> Scalar:
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ConfigurationError(
        f"filter value for {field!r} must be a string, number or boolean, got {value!r}"
    )


class Filter:
    """Base of filter expressions; combine with ``&``, ``|`` and ``~``."""

    def mask(self, store: DocumentStore) -> Mask:
        """Boolean mask over ``store``'s rows: True where the document matches."""
        raise NotImplementedError

    def fields(self) -> frozenset[str]:
        """Every metadata field the expression reads."""
        raise NotImplementedError

    def __and__(self, other: Filter) -> Filter:
        return And((self, other))

    def __or__(self, other: Filter) -> Filter:
        return Or((self, other))

    def __invert__(self) -> Filter:
        return Not(self)


@dataclass(frozen=True)
class _Field(Filter):
    field: str

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not self.field:
            raise ConfigurationError(f"filter field must be a non-empty string, got {self.field!r}")

    def fields(self) -> frozenset[str]:
        return frozenset({self.field})


@dataclass(frozen=True)
class Eq(_Field):
    """``field == value`` (for a list field: one element equals ``value``)."""

    value: Scalar

    def __post_init__(self) -> None:
        super().__post_init__()
        _scalar(self.field, self.value)

    def mask(self, store: DocumentStore) -> Mask:
        return store.column(self.field).equal(self.value)


@dataclass(frozen=True)
class Ne(_Field):
    """Not ``field == value``; documents without the field match."""

    value: Scalar

    def __post_init__(self) -> None:
        super().__post_init__()
        _scalar(self.field, self.value)

    def mask(self, store: DocumentStore) -> Mask:
        return ~store.column(self.field).equal(self.value)


@dataclass(frozen=True)
class In(_Field):
    """``field`` equals one of ``values``."""

    values: tuple[Scalar, ...]

    def __init__(self, field: str, values: Iterable[Scalar]) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConfigurationError(f"filter 'in' on {field!r} needs a list, got {values!r}")
        object.__setattr__(self, "field", field)
        object.__setattr__(self, "values", tuple(_scalar(field, v) for v in values))
        super().__post_init__()

    def mask(self, store: DocumentStore) -> Mask:
        return store.column(self.field).isin(self.values)


class NotIn(In):
    """``field`` equals none of ``values``; documents without the field match."""

    def mask(self, store: DocumentStore) -> Mask:
        return ~super().mask(store)


@dataclass(frozen=True)
class Range(_Field):
    """``gt``/``gte`` < ``field`` < ``lt``/``lte`` (numbers, or strings with string bounds)."""

    gt: Scalar | None = None
    gte: Scalar | None = None
    lt: Scalar | None = None
    lte: Scalar | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        bounds = {k: v for k, v in self._bounds().items() if v is not None}
        if not bounds:
            raise ConfigurationError(f"range filter on {self.field!r} needs a bound")
        if (
            self.gt is not None
            and self.gte is not None
            or (self.lt is not None and self.lte is not None)
        ):
            raise ConfigurationError(f"range filter on {self.field!r}: give gt or gte, lt or lte")
        kinds = set()
        for name, value in bounds.items():
            if isinstance(_scalar(self.field, value), bool):
                raise ConfigurationError(f"range bound {name} on {self.field!r} cannot be a bool")
            kinds.add(str if isinstance(value, str) else float)
        if len(kinds) > 1:
            raise ConfigurationError(
                f"range bounds on {self.field!r} mix strings and numbers: {bounds}"
            )

    def _bounds(self) -> dict[str, Scalar | None]:
        return {"gt": self.gt, "gte": self.gte, "lt": self.lt, "lte": self.lte}

    def mask(self, store: DocumentStore) -> Mask:
        low = self.gte if self.gte is not None else self.gt
        high = self.lte if self.lte is not None else self.lt
        return store.column(self.field).between(
            low, self.gte is not None, high, self.lte is not None
        )


@dataclass(frozen=True)
class And(Filter):
    """Every one of ``filters`` matches."""

    filters: tuple[Filter, ...]

    def __post_init__(self) -> None:
        _check_children(self.filters, "and")

    def mask(self, store: DocumentStore) -> Mask:
        out = np.ones(len(store), dtype=np.bool_)
        for child in self.filters:
            out &= child.mask(store)
        return out

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(f.fields() for f in self.filters))


@dataclass(frozen=True)
class Or(Filter):
    """At least one of ``filters`` matches."""

    filters: tuple[Filter, ...]

    def __post_init__(self) -> None:
        _check_children(self.filters, "or")

    def mask(self, store: DocumentStore) -> Mask:
        out = np.zeros(len(store), dtype=np.bool_)
        for child in self.filters:
            out |= child.mask(store)
        return out

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(f.fields() for f in self.filters))


@dataclass(frozen=True)
class Not(Filter):
    """``inner`` does not match."""

    inner: Filter

    def __post_init__(self) -> None:
        _check_children((self.inner,), "not")

    def mask(self, store: DocumentStore) -> Mask:
        return ~self.inner.mask(store)

    def fields(self) -> frozenset[str]:
        return self.inner.fields()


def _check_children(children: tuple[Filter, ...], name: str) -> None:
    if not children:
        raise ConfigurationError(f"filter {name!r} needs at least one condition")
    for child in children:
        if not isinstance(child, Filter):
            raise ConfigurationError(f"filter {name!r} takes filters, got {child!r}")


_RANGE_OPS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}
_FIELD_OPS = ("$eq", "$ne", "$in", "$nin", *_RANGE_OPS)


def _parse_field(field: str, spec: object) -> Filter:
    if not isinstance(spec, Mapping):
        return Eq(field, _scalar(field, spec))
    if not spec:
        raise ConfigurationError(f"filter on {field!r} has no operator")
    parts: list[Filter] = []
    bounds: dict[str, Any] = {}
    for op, value in spec.items():
        if op == "$eq":
            parts.append(Eq(field, value))
        elif op == "$ne":
            parts.append(Ne(field, value))
        elif op == "$in":
            parts.append(In(field, value))
        elif op == "$nin":
            parts.append(NotIn(field, value))
        elif op in _RANGE_OPS:
            bounds[_RANGE_OPS[op]] = value
        else:
            raise ConfigurationError(
                f"unknown filter operator {op!r} on {field!r}: use one of {', '.join(_FIELD_OPS)}"
            )
    if bounds:
        parts.append(Range(field, **bounds))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _parse_list(op: str, spec: object) -> tuple[Filter, ...]:
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ConfigurationError(f"filter {op!r} needs a non-empty list, got {spec!r}")
    return tuple(_parse(item) for item in spec)


def _parse(spec: object) -> Filter:
    if isinstance(spec, Filter):
        return spec
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigurationError(f"a filter is a Filter or a non-empty dict, got {spec!r}")
    parts: list[Filter] = []
    for key, value in spec.items():
        if key == "$and":
            parts.append(And(_parse_list(key, value)))
        elif key == "$or":
            parts.append(Or(_parse_list(key, value)))
        elif key == "$not":
            parts.append(Not(_parse(value)))
        elif isinstance(key, str) and key.startswith("$"):
            raise ConfigurationError(
                f"unknown filter operator {key!r}: use $and, $or, $not or a field name"
            )
        else:
            parts.append(_parse_field(str(key), value))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def parse_filter(spec: Filter | Mapping[str, Any] | None) -> Filter | None:
    """A :class:`Filter` from a filter or its dictionary form; ``None`` stays ``None``."""
    return None if spec is None else _parse(spec)


def filter_mask(spec: Filter, store: DocumentStore) -> Mask:
    """The rows of ``store`` that ``spec`` allows; an unknown field raises, naming it.

    Masks are cached on the store until it changes, so a repeated filter (a tenant, a
    document type) costs a dictionary lookup.
    """
    known = store.fields()
    unknown = sorted(spec.fields() - known)
    if unknown:
        raise ConfigurationError(
            f"unknown filter field(s) {unknown}: the documents' metadata fields are {sorted(known)}"
        )
    mask: Mask = store.memo(("filter", spec), lambda: spec.mask(store))
    return mask
