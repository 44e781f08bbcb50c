"""The rule signals of the cache decision: each one a small check that can veto a candidate.

Stage 1 of a lookup (the vector search) proposes a stored query whose sentence embedding is
close to the new one. A sentence vector blurs the small words that change the question:
"Does the premium plan increase the storage limit?" and "... decrease ..." score a cosine of
0.99 with all-MiniLM-L6-v2, above real paraphrases. Each signal here looks at the two texts
for one such detail and either passes or vetoes, with a reason:

``numbers``
    the sets of numbers differ ("in 1998" vs "in 2002"; "1,000" = "1000", "two" = "2").
``negation``
    one text is negated and the other not ("isn't" counts as "is not").
``question_intent``
    both questions have an intent and they differ ("when" vs "where"); the intents are
    classes of equivalent forms from ``data/question_forms.tsv``, so "what time" and "when",
    or "how do I" and "what is the way to", do not veto each other.
``polarity``
    one text holds a word and the other its opposite (``data/opposites.tsv``:
    increase/decrease, promotes/prevents, enable/disable, first/last, ...).
``dates``
    the texts name different days, months, holidays or parts of the day (``data/dates.tsv``).
``units``
    both texts name units of measure or currencies and not the same ones (``data/units.tsv``).

A signal only vetoes; it never turns a miss into a hit. Every check is symmetric (swapping
the two texts gives the same vote) and reads a per-text :class:`Analysis` that is computed
once per text and kept in a small LRU, so a pair costs a few microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

from rag_optimize.cache.decision.lexicon import Lexicon, default_lexicon, words_of

__all__ = [
    "Analysis",
    "RULE_SIGNALS",
    "Signal",
    "analyse",
]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CARDINALS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_CARDINALS.update(
    thirty="30", forty="40", fifty="50", sixty="60", seventy="70", eighty="80", ninety="90",
    hundred="100", thousand="1000", million="1000000", billion="1000000000",
    first="1", third="3", fourth="4", fifth="5", sixth="6", seventh="7", eighth="8",
    ninth="9", tenth="10", twice="2", thrice="3", half="0.5", dozen="12",
)
_NEGATIONS = frozenset("not no non never nothing none nobody neither nor without".split())
# After "how", these words do not change the kind of question ("how do I" = "how can I").
_HOW_NEUTRAL = frozenset(
    "is are was were do does did can could will would should shall may might must has have "
    "had to i you we they he she it the a an this that these those one my your".split()
)
# Date forms that are also ordinary words ("May I ...", "I sat ..."): they name a date only
# when capitalised inside the sentence ("open on Sat", "in May").
_AMBIGUOUS_DATES = frozenset(
    "may march sun sat wed mon tue tues thu thur thurs fri jan feb apr jun jul aug sep sept "
    "oct nov dec".split()
)
_SYMBOLS = frozenset("$€£¥%°")
_ORIGINAL_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.'’][A-Za-z0-9]+)*|[$€£¥%°]")
_SUFFIXES = (
    ("ing", ("", "e", "-")), ("ed", ("", "e", "-")), ("est", ("", "e", "-")),
    ("er", ("", "e", "-")), ("es", ("", "e")), ("s", ("",)), ("ly", ("",)), ("d", ("",)),
)
# A word made from another by a negating prefix is its opposite (lock/unlock, valid/invalid).
_NEGATING_PREFIXES = ("un", "non", "dis", "in", "im", "ir", "il")


@dataclass(frozen=True)
class Analysis:
    """What the rule signals read from one text (computed once per text, see :func:`analyse`)."""

    text: str
    words: tuple[str, ...]
    numbers: frozenset[str]
    negated: bool
    intent: str | None
    form_words: frozenset[str]
    polar: frozenset[tuple[str, ...]]
    dates: frozenset[str]
    units: frozenset[str]


def _phrases(words: tuple[str, ...], longest: int = 3) -> Iterable[tuple[int, tuple[str, ...]]]:
    for i in range(len(words)):
        for n in range(min(longest, len(words) - i), 0, -1):
            yield i, words[i : i + n]


def _base_forms(word: str) -> Iterable[str]:
    """``word`` and the base forms its usual inflections could come from."""
    yield word
    for suffix, endings in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            for ending in endings:
                if ending == "-":
                    if len(stem) >= 4 and stem[-1] == stem[-2]:
                        yield stem[:-1]  # stopped -> stop, planning -> plan
                else:
                    yield stem + ending


def _intent(words: tuple[str, ...], lexicon: Lexicon) -> tuple[str | None, frozenset[str]]:
    """The question's intent and the words of the form that named it."""
    forms = lexicon.question_forms
    longest = lexicon.longest_form
    for i in range(len(words)):
        for n in range(min(longest, len(words) - i), 0, -1):
            intent = forms.get(words[i : i + n])
            if intent is None:
                continue
            if n == 1 and words[i] == "how" and i + 1 < len(words):
                nxt = words[i + 1]
                if nxt not in _HOW_NEUTRAL:
                    # "how strong": a form the list does not name
                    return f"how {nxt}", frozenset(words[i : i + 2])
            return intent, frozenset(words[i : i + n])
    return None, frozenset()


def _concepts(
    words: tuple[str, ...],
    original: tuple[str, ...],
    table: dict[tuple[str, ...], str],
    *,
    ambiguous: frozenset[str] = frozenset(),
    need_number_below: int = 0,
) -> frozenset[str]:
    """The canonical names of ``table``'s phrases found in ``words``. A word in ``ambiguous``
    counts only when capitalised past the first word; a form shorter than
    ``need_number_below`` letters (or a symbol) only next to a number ("5 m", "$ 20")."""
    found: set[str] = set()
    skip_until = 0
    for i, phrase in _phrases(words):
        if i < skip_until:
            continue
        canonical = table.get(phrase)
        if canonical is None:
            continue
        if len(phrase) == 1:
            word = phrase[0]
            if word in ambiguous and not (
                0 < i < len(original)
                and original[i].lower() == word
                and original[i][:1].isupper()
            ):
                continue
            if need_number_below and (len(word) < need_number_below or word in _SYMBOLS):
                near = [words[j] for j in (i - 1, i + 1) if 0 <= j < len(words)]
                if not any(_NUMBER.fullmatch(w) for w in near):
                    continue
        found.add(canonical)
        skip_until = i + len(phrase)
    return frozenset(found)


def _polar(words: tuple[str, ...], lexicon: Lexicon) -> frozenset[tuple[str, ...]]:
    opposites = lexicon.opposites
    found: set[tuple[str, ...]] = set()
    for i, word in enumerate(words):
        if i + 1 < len(words) and (word, words[i + 1]) in opposites:
            found.add((word, words[i + 1]))
        found.update((base,) for base in _base_forms(word) if (base,) in opposites)
    return frozenset(found)


def _prefixed_opposite(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, str] | None:
    """A word only one text holds that is, with a negating prefix removed, a word only the
    other text holds ("unlock" / "lock"), or None."""
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    for x, y in ((only_a, only_b), (only_b, only_a)):
        for word in sorted(x):
            for prefix in _NEGATING_PREFIXES:
                rest = word[len(prefix) :]
                if word.startswith(prefix) and len(rest) >= 4 and rest in y:
                    return word, rest
    return None


def analyse(text: str, lexicon: Lexicon | None = None) -> Analysis:
    """The :class:`Analysis` of ``text`` against ``lexicon`` (default: the packaged lists);
    kept in an LRU of recent texts for the packaged lists."""
    if lexicon is None or lexicon is default_lexicon():
        return _analyse_default(text)
    return _analyse(text, lexicon)


@lru_cache(maxsize=4096)
def _analyse_default(text: str) -> Analysis:
    return _analyse(text, default_lexicon())


def _analyse(text: str, lexicon: Lexicon) -> Analysis:
    words = words_of(text)
    replaced = text.replace("n\u2019t", " not").replace("n't", " not").replace("annot", "an not")
    original = tuple(_ORIGINAL_TOKEN.findall(replaced))
    numbers = {n.replace(",", "") for n in _NUMBER.findall(text.casefold())}
    numbers.update(_CARDINALS[w] for w in words if w in _CARDINALS)
    negated = sum(w in _NEGATIONS for w in words) % 2 == 1
    intent, form_words = _intent(words, lexicon)
    return Analysis(
        text=text,
        words=words,
        numbers=frozenset(numbers),
        negated=negated,
        intent=intent,
        form_words=form_words,
        polar=_polar(words, lexicon),
        dates=_concepts(words, original, lexicon.dates, ambiguous=_AMBIGUOUS_DATES),
        units=_concepts(words, original, lexicon.units, need_number_below=4),
    )


@runtime_checkable
class Signal(Protocol):
    """One named check: ``check(a, b)`` returns why the pair is vetoed, or None to pass."""

    name: str

    def check(self, a: Analysis, b: Analysis) -> str | None:
        """The reason to veto serving ``b``'s answer for ``a`` (or the reverse), or None."""
        ...


def _show(values: Iterable[object]) -> str:
    return "{" + ", ".join(sorted(str(v) for v in values)) + "}"


class NumbersSignal:
    """Veto when the two texts hold different sets of numbers."""

    name = "numbers"

    def check(self, a: Analysis, b: Analysis) -> str | None:
        if a.numbers == b.numbers:
            return None
        return f"numbers {_show(a.numbers)} vs {_show(b.numbers)}"


class NegationSignal:
    """Veto when one text is negated (odd number of negations) and the other is not."""

    name = "negation"

    def check(self, a: Analysis, b: Analysis) -> str | None:
        if a.negated == b.negated:
            return None
        return f"negated: {a.negated} vs {b.negated}"


class QuestionIntentSignal:
    """Veto when both texts ask a question of a known intent and the intents differ."""

    name = "question_intent"

    def check(self, a: Analysis, b: Analysis) -> str | None:
        if a.intent is None or b.intent is None or a.intent == b.intent:
            return None
        return f"intent {a.intent!r} vs {b.intent!r}"


class PolaritySignal:
    """Veto when a word of one text has its opposite in the other (and not itself)."""

    name = "polarity"

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self._lexicon = lexicon

    def check(self, a: Analysis, b: Analysis) -> str | None:
        opposites = (self._lexicon or default_lexicon()).opposites
        only_a, only_b = a.polar - b.polar, b.polar - a.polar
        for x in sorted(only_a):
            for y in sorted(opposites[x] & only_b):
                return f"opposites {' '.join(x)!r} vs {' '.join(y)!r}"
        prefixed = _prefixed_opposite(a.words, b.words)
        if prefixed is not None:
            return f"opposites {prefixed[0]!r} vs {prefixed[1]!r}"
        return None


class DatesSignal:
    """Veto when the texts name different sets of days, months, holidays or day parts."""

    name = "dates"

    def check(self, a: Analysis, b: Analysis) -> str | None:
        if a.dates == b.dates:
            return None
        return f"dates {_show(a.dates)} vs {_show(b.dates)}"


class UnitsSignal:
    """Veto when both texts name units and not the same ones."""

    name = "units"

    def check(self, a: Analysis, b: Analysis) -> str | None:
        if not a.units or not b.units or a.units == b.units:
            return None
        return f"units {_show(a.units)} vs {_show(b.units)}"


RULE_SIGNALS: dict[str, type[Signal]] = {
    "numbers": NumbersSignal,
    "negation": NegationSignal,
    "question_intent": QuestionIntentSignal,
    "polarity": PolaritySignal,
    "dates": DatesSignal,
    "units": UnitsSignal,
}
"""The rule signals by name, cheapest first."""
