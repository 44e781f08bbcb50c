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
the request nor serves an unchecked answer. A cross-encoder or an NLI model fits this shape
where its latency is acceptable.

* :class:`MismatchVerifier` (the default of :class:`~rag_optimize.cache.SemanticCache`):
  vetoes a pair that differs in a detail embeddings are known to blur: a number, a negation,
  or the kind of question (when/where/who/why/how many/how old ...). It is a few regular
  expressions over the two strings (about 12 us a pair on this 2-core machine, 0.3 us when
  both were seen recently), only vetoes, and never adds a hit.

Verifier vetoes are counted in ``CacheStats.verifier_rejections``. With an error budget, the
outcomes it learns from are those of the verified decision (a vetoed candidate is neither
served nor probed), so its certificate covers the cache as it actually serves.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

Verifier = Callable[[str, str], bool]
"""``verifier(query, cached_query) -> bool``: may the answer stored for ``cached_query`` be
served for ``query``?"""

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z0-9]+")
_CARDINALS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_CARDINALS.update(hundred="100", thousand="1000", million="1000000", billion="1000000000")
_NEGATIONS = frozenset(
    "not no never nothing none nobody neither nor without cannot".split()
)
_QUESTION_WORDS = {
    "what": "what", "which": "what", "who": "who", "whom": "who", "whose": "whose",
    "when": "when", "where": "where", "why": "why", "how": "how",
}
# After "how", these words do not change the kind of question ("how do I ..." = "how can I ...").
_HOW_NEUTRAL = frozenset(
    "is are was were do does did can could will would should shall may might must has have "
    "had to i you we they he she it the a an this that these those one my your".split()
)


@dataclass(frozen=True)
class QuerySignature:
    """The details of a query that :class:`MismatchVerifier` compares."""

    numbers: frozenset[str]
    negated: bool
    question: str | None


@lru_cache(maxsize=1024)
def signature(text: str) -> QuerySignature:
    """The numbers (digits, or cardinal words as digits), negation parity, and question kind
    of ``text`` (the first question word; for "how", with the word after it when that word
    names what is asked: "how many", "how old")."""
    lowered = text.casefold().replace("n\u2019t", " not").replace("n't", " not")
    numbers = {n.replace(",", "") for n in _NUMBER.findall(lowered)}
    words = _WORD.findall(lowered)
    numbers.update(_CARDINALS[w] for w in words if w in _CARDINALS)
    negated = sum(w in _NEGATIONS for w in words) % 2 == 1
    question = None
    for i, word in enumerate(words):
        kind = _QUESTION_WORDS.get(word)
        if kind is None:
            continue
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if kind == "how" and nxt and nxt not in _HOW_NEUTRAL:
            kind = f"how {nxt}"
        question = kind
        break
    return QuerySignature(frozenset(numbers), negated, question)


@dataclass(frozen=True)
class MismatchVerifier:
    """Veto a cached answer whose query differs from the new one in a number, a negation, or
    the kind of question.

    Args:
        numbers: veto when the sets of numbers differ ("in 1998" vs "in 2002"; "1,000" and
            "1000" are the same number, "two" and "2" too).
        negation: veto when one query is negated and the other is not ("is X safe" vs "is X
            not safe"; "isn't" counts as "is not").
        question_kind: veto when both queries have a question word and the first ones differ
            ("when did" vs "where did", "how many" vs "how often"; "which" counts as "what").
            A query with no question word ("capital of France") matches any kind.

    A veto costs a miss (the model answers), never a wrong answer, so it errs towards
    vetoing: "two" vs "2" in different roles, or a paraphrase that changes "how many" to
    "what number", is a miss.
    """

    numbers: bool = True
    negation: bool = True
    question_kind: bool = True

    def __call__(self, query: str, cached_query: str) -> bool:
        return self.mismatch(query, cached_query) is None

    def mismatch(self, query: str, cached_query: str) -> str | None:
        """Which detail differs (``"numbers"``, ``"negation"``, ``"question_kind"``), or None."""
        a, b = signature(query), signature(cached_query)
        if self.numbers and a.numbers != b.numbers:
            return "numbers"
        if self.negation and a.negated != b.negated:
            return "negation"
        if (
            self.question_kind
            and a.question is not None
            and b.question is not None
            and a.question != b.question
        ):
            return "question_kind"
        return None


def check_verifier(verifier: object) -> Verifier | None:
    """``verifier`` if it is callable (or None), else a clear error."""
    if verifier is not None and not callable(verifier):
        raise TypeError(
            "verifier must be a callable verifier(query, cached_query) -> bool or None, "
            f"got {type(verifier).__name__}"
        )
    return verifier


def verifier_name(verifier: Verifier | None) -> str | None:
    """How a hit's decision names the verifier that let it through (None: no verifier)."""
    if verifier is None:
        return None
    return str(getattr(verifier, "__name__", type(verifier).__name__))
