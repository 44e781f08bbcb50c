"""Verifiers: a second opinion on a candidate before the cache serves it.

A sentence embedding scores two questions that differ in one small word as near-identical:
with all-MiniLM-L6-v2, "who won the world cup in 1998" and "... in 2002", or "when did X
die" and "where did X die", reach a cosine of 0.97-0.995, above any threshold that still
serves paraphrases. Such a pair asks a different question, and no threshold on that one
number can tell it from a paraphrase. A verifier looks at the two query texts themselves and
can veto the candidate; the cache then considers the next one (or misses).

A verifier is any callable ``verifier(query, cached_query) -> bool`` (True: the cached
answer may be served for ``query``). It runs on the lookup path, once per candidate above
the threshold, so it must be fast. A verifier that raises counts as a veto (the lookup
misses; ``CacheStats.verifier_errors``, logged once per incident): the cache neither fails
the request nor serves an unchecked answer. A verifier may also have
``explain(query, cached_query) -> Mapping`` saying why it decided (the cache records it on a
hit). ``verifier=`` also takes a sequence of verifiers: :class:`AllOf` asks them in order and
the first veto wins.

* :class:`~rag_optimize.cache.decision.pipeline.DecisionPipeline` (the default of
  :class:`~rag_optimize.cache.SemanticCache`): named signals, rules and token alignment.
* :class:`MismatchVerifier`: the rule stage alone, three of its signals (numbers, negation,
  question intent), a few microseconds a pair, no model.

Verifier vetoes are counted in ``CacheStats.verifier_rejections``. With an error budget, the
outcomes it learns from are those of the verified decision (a vetoed candidate is neither
served nor probed), so its certificate covers the cache as it actually serves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rag_optimize.cache.decision.signals import (
    NegationSignal,
    NumbersSignal,
    QuestionIntentSignal,
    analyse,
)
from rag_optimize.errors import InvalidTypeError

__all__ = [
    "AllOf",
    "MismatchVerifier",
    "QuerySignature",
    "Verifier",
    "check_verifier",
    "signature",
    "verifier_name",
]

Verifier = Callable[[str, str], bool]
"""``verifier(query, cached_query) -> bool``: may the answer stored for ``cached_query`` be
served for ``query``?"""


@dataclass(frozen=True)
class QuerySignature:
    """The details of a query that :class:`MismatchVerifier` compares."""

    numbers: frozenset[str]
    negated: bool
    question: str | None


def signature(text: str) -> QuerySignature:
    """The numbers (digits, or number words as digits), negation parity, and question intent
    of ``text`` (see :mod:`~rag_optimize.cache.decision.signals`)."""
    found = analyse(text)
    return QuerySignature(found.numbers, found.negated, found.intent)


_DETAILS = (("numbers", NumbersSignal()), ("negation", NegationSignal()),
            ("question_kind", QuestionIntentSignal()))


@dataclass(frozen=True)
class MismatchVerifier:
    """Veto a cached answer whose query differs from the new one in a number, a negation, or
    the question's intent: the rule stage of the decision, without a model.

    Args:
        numbers: veto when the sets of numbers differ ("in 1998" vs "in 2002"; "1,000" and
            "1000" are the same number, "two" and "2" too).
        negation: veto when one query is negated and the other is not ("is X safe" vs "is X
            not safe"; "isn't" counts as "is not").
        question_kind: veto when both queries have a question intent and they differ ("when
            did" vs "where did", "how many" vs "how often"). Intents are classes of
            equivalent forms ("what time" = "when", "how do I" = "what is the way to"); a
            query with no question word ("capital of France") matches any intent.

    A veto costs a miss (the model answers), never a wrong answer, so it errs towards
    vetoing.
    """

    numbers: bool = True
    negation: bool = True
    question_kind: bool = True

    def __call__(self, query: str, cached_query: str) -> bool:
        return self.mismatch(query, cached_query) is None

    def mismatch(self, query: str, cached_query: str) -> str | None:
        """Which detail differs (``"numbers"``, ``"negation"``, ``"question_kind"``), or None."""
        a, b = analyse(query), analyse(cached_query)
        for name, signal in _DETAILS:
            if getattr(self, name) and signal.check(a, b) is not None:
                return name
        return None

    def explain(self, query: str, cached_query: str) -> Mapping[str, Any]:
        """The detail that differs, JSON-ready."""
        detail = self.mismatch(query, cached_query)
        return {"decision": "serve" if detail is None else "veto", "vetoed_by": detail}


class AllOf:
    """Several verifiers in order: the first veto wins (later ones are not asked)."""

    def __init__(self, verifiers: Sequence[Verifier]) -> None:
        self.verifiers = tuple(verifiers)
        self.__name__ = "AllOf(" + ", ".join(_name(v) for v in self.verifiers) + ")"

    def __repr__(self) -> str:
        return self.__name__

    def __call__(self, query: str, cached_query: str) -> bool:
        return all(v(query, cached_query) for v in self.verifiers)

    def explain(self, query: str, cached_query: str) -> Mapping[str, Any]:
        """Each verifier's verdict (and its own ``explain`` when it has one), up to the first
        veto."""
        steps: list[dict[str, Any]] = []
        for verifier in self.verifiers:
            step: dict[str, Any] = {"verifier": _name(verifier)}
            try:
                allowed = bool(verifier(query, cached_query))
                if hasattr(verifier, "explain"):
                    step["detail"] = dict(verifier.explain(query, cached_query))
            except Exception as exc:  # noqa: BLE001 - explain reports, never fails
                allowed = False
                step["error"] = f"{type(exc).__name__}: {exc}"
            step["allowed"] = allowed
            steps.append(step)
            if not allowed:
                return {"decision": "veto", "vetoed_by": step["verifier"], "verifiers": steps}
        return {"decision": "serve", "vetoed_by": None, "verifiers": steps}


def _name(verifier: object) -> str:
    return str(getattr(verifier, "__name__", type(verifier).__name__))


def check_verifier(verifier: object) -> Verifier | None:
    """``verifier`` if it is callable (or None); a list or tuple of callables becomes
    :class:`AllOf` (first veto wins); anything else is a clear error."""
    if isinstance(verifier, (list, tuple)):
        for i, item in enumerate(verifier):
            if not callable(item):
                raise InvalidTypeError(
                    f"verifier[{i}] must be a callable verifier(query, cached_query) -> bool, "
                    f"got {type(item).__name__}"
                )
        if not verifier:
            raise InvalidTypeError(
                "verifier must not be an empty sequence (use None for no verifier)"
            )
        return verifier[0] if len(verifier) == 1 else AllOf(verifier)
    if verifier is not None and not callable(verifier):
        raise InvalidTypeError(
            "verifier must be a callable verifier(query, cached_query) -> bool, a sequence "
            f"of them, or None; got {type(verifier).__name__}"
        )
    return verifier


def verifier_name(verifier: Verifier | None) -> str | None:
    """How a hit's decision names the verifier that let it through (None: no verifier)."""
    if verifier is None:
        return None
    return _name(verifier)

