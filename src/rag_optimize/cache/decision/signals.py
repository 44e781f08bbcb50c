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
    increase/decrease, raise/lower, promotes/prevents, enable/disable, first/last, ...;
    comparatives from their base form: heavier/lighter, greater/smaller; "less X" is the
    opposite of "X" and of "X-er"), or two words that differ in an opposite prefix
    (``data/opposite_prefixes.tsv``: upload/download, lock/unlock). Mentions are counted, so
    "upregulation of A causes downregulation of B" vs "... upregulation of B" is vetoed too.
``order``
    the two texts hold the same relation with its two sides swapped ("A inhibits B" vs "B
    inhibits A", "A is larger than B" vs "B is larger than A"); a passive on one side only
    ("B is inhibited by A") swaps them back, and relations listed symmetric in
    ``data/order_words.tsv`` ("associated with", "and") never veto.
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
from collections import Counter
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
    # heavier/heaviest -> heavy, easily -> easy, studies/studied -> study, dramatically
    ("ier", ("y",)), ("iest", ("y",)), ("ily", ("y",)), ("ies", ("y",)), ("ied", ("y",)),
    ("ally", ("",)),
)
# "less X": the opposite of "X" (the sign of the mention is flipped, the word is consumed).
_DIMINISHERS = frozenset(("less", "fewer", "least"))
_PASSIVE_MARK = "by"
_BE = frozenset("is are was were be been being am get gets got".split())
_ORDER_BLOCK = 4  # the longest side of a relation the order signal compares, in shared words
_QUOTES = frozenset('"\u201c\u201d')
# Degree words modify a relation ("more beneficial"); they are never one of its sides.
_DEGREE = frozenset("more most less least fewer much many very".split())


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
    polar_counts: Counter[tuple[tuple[str, ...], int]]
    """Each opposite-list mention with its sign (-1 after "less"/"fewer"), counted."""
    diminished: frozenset[str]
    """Words right after "less"/"fewer"/"least" ("less likely": "likely")."""
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


_TENS = frozenset("twenty thirty forty fifty sixty seventy eighty ninety".split())
_UNITS = frozenset("one two three four five six seven eight nine".split())


def _number_words(words: tuple[str, ...]) -> Iterable[str]:
    """The numbers that number words name, as digits ("fifty-seven" and "fifty seven": 57)."""
    i = 0
    while i < len(words):
        word = words[i]
        if word in _TENS and i + 1 < len(words) and words[i + 1] in _UNITS:
            yield str(int(_CARDINALS[word]) + int(_CARDINALS[words[i + 1]]))
            i += 2
            continue
        if word in _CARDINALS:
            yield _CARDINALS[word]
        i += 1


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


def _polar(
    words: tuple[str, ...], lexicon: Lexicon
) -> Counter[tuple[tuple[str, ...], int]]:
    """The opposite-list mentions of ``words`` with their sign: +1, or -1 right after a
    diminisher ("less expensive": ("expensive",), -1; the diminisher is then not counted)."""
    opposites = lexicon.opposites
    found: Counter[tuple[tuple[str, ...], int]] = Counter()
    skip = -1
    for i, word in enumerate(words):
        if i == skip:
            continue
        if word in _DIMINISHERS and i + 1 < len(words):
            after = {(base,) for base in _base_forms(words[i + 1]) if (base,) in opposites}
            if after:
                found.update((phrase, -1) for phrase in after)
                skip = i + 1
                continue
        if i + 1 < len(words) and (word, words[i + 1]) in opposites:
            found[((word, words[i + 1]), 1)] += 1
        for base in {b for b in _base_forms(word) if (b,) in opposites}:
            found[((base,), 1)] += 1
    return found


def _opposed_mention(
    a: Counter[tuple[tuple[str, ...], int]],
    b: Counter[tuple[tuple[str, ...], int]],
    opposites: dict[tuple[str, ...], frozenset[tuple[str, ...]]],
) -> tuple[str, str] | None:
    """A mention ``a`` holds more often than ``b`` while ``b`` holds one of its opposites more
    often than ``a`` (an opposite: an opposite word with the same sign, or the same word with
    the other sign), as two readable strings, or None."""

    def show(phrase: tuple[str, ...], sign: int) -> str:
        return ("less " if sign < 0 else "") + " ".join(phrase)

    for (phrase, sign), count in sorted(a.items()):
        if count <= b[(phrase, sign)]:
            continue
        rivals = [(other, sign) for other in sorted(opposites.get(phrase, ()))]
        rivals.append((phrase, -sign))
        for rival in rivals:
            if b[rival] > a[rival]:
                return show(phrase, sign), show(*rival)
    return None


def _prefixed_opposite(
    a: tuple[str, ...], b: tuple[str, ...], prefixes: tuple[tuple[str, str], ...]
) -> tuple[str, str] | None:
    """A word only one text holds that, with its prefix swapped for the opposite one (or a
    negating prefix removed), is a word only the other text holds ("download" / "upload",
    "unlock" / "lock"), or None."""
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    for x, y in ((only_a, only_b), (only_b, only_a)):
        for word in sorted(x):
            for prefix, other in prefixes:
                rest = word[len(prefix) :]
                if word.startswith(prefix) and len(rest) >= 4 and other + rest in y:
                    return word, other + rest
    return None


def _comparative_against_less(a: Analysis, b: Analysis) -> tuple[str, str] | None:
    """A comparative in ``a`` ("likelier", "heavier") whose base ``b`` has after "less"
    ("less likely"): the opposite comparison. None if there is none."""
    if not b.diminished:
        return None
    for word in a.words:
        if word in b.words:
            continue
        for suffix, endings in (("ier", ("y",)), ("er", ("", "e", "-"))):
            if not word.endswith(suffix) or len(word) - len(suffix) < 3:
                continue
            stem = word[: -len(suffix)]
            for ending in endings:
                base = (stem[:-1] if ending == "-" and stem[-1:] == stem[-2:-1]
                        else stem + ending.strip("-"))
                if base in b.diminished and base not in a.diminished:
                    return word, f"less {base}"
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
    numbers.update(_number_words(words))
    negated = sum(w in _NEGATIONS for w in words) % 2 == 1
    intent, form_words = _intent(words, lexicon)
    polar = _polar(words, lexicon)
    return Analysis(
        text=text,
        words=words,
        numbers=frozenset(numbers),
        negated=negated,
        intent=intent,
        form_words=form_words,
        polar=frozenset(phrase for phrase, _ in polar),
        polar_counts=polar,
        diminished=frozenset(
            words[i + 1] for i in range(len(words) - 1) if words[i] in _DIMINISHERS
        ),
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
        lexicon = self._lexicon or default_lexicon()
        found = (
            _opposed_mention(a.polar_counts, b.polar_counts, lexicon.opposites)
            or _prefixed_opposite(a.words, b.words, lexicon.opposite_prefixes)
            or _comparative_against_less(a, b)
        )
        if found is None:
            swapped = _comparative_against_less(b, a)
            found = None if swapped is None else (swapped[1], swapped[0])
        if found is None:
            return None
        return f"opposites {found[0]!r} vs {found[1]!r}"


def _aligned(a: tuple[str, ...], b: tuple[str, ...]) -> list[tuple[int, int]]:
    """Positions ``(i, j)`` of words that occur once in each text (or two inflections of one
    word, "causes"/"caused"), in ``a``'s order."""
    forms_a = [frozenset(_base_forms(w)) for w in a]
    forms_b = [frozenset(_base_forms(w)) for w in b]
    pairs = []
    for i, fa in enumerate(forms_a):
        matches = [j for j, fb in enumerate(forms_b) if fa & fb]
        if len(matches) != 1:
            continue
        j = matches[0]
        if sum(1 for f in forms_a if f & forms_b[j]) == 1:
            pairs.append((i, j))
    return pairs


def _passive(words: tuple[str, ...], start: int, end: int, relation: int | None) -> bool:
    """Whether the relation between positions ``start`` and ``end`` is in the passive: a
    "by" between them, or the relation word (at ``relation``) a participle ("-ed", "-en")
    after a form of "be" ("is Wi-Fi included in the rent")."""
    if _PASSIVE_MARK in words[start + 1 : end]:
        return True
    if relation is None:
        return False
    word = words[relation]
    return word.endswith(("ed", "en")) and not _BE.isdisjoint(words[:relation])


def _block_swap(order: list[int]) -> tuple[int, int, int, int] | None:
    """``order`` (a permutation of ``0..n-1``) as P X M Y S -> P Y M X S with X and Y not
    empty: ``(p, x_len, m_len, y_len)``; None if it is not one. When several splits fit, the
    one with the shortest middle."""
    n = len(order)
    p = next((i for i in range(n) if order[i] != i), None)
    if p is None:
        return None
    s = max(i for i in range(n) if order[i] != i)
    segment = order[p : s + 1]
    size = s - p + 1
    for m_len in range(size - 1):
        for x_len in range(1, size - m_len):
            y_len = size - m_len - x_len
            x = list(range(p, p + x_len))
            m = list(range(p + x_len, p + x_len + m_len))
            y = list(range(p + x_len + m_len, s + 1))
            if segment == y + m + x:
                return p, x_len, m_len, y_len
    return None


def swapped_relation(a: Analysis, b: Analysis, lexicon: Lexicon) -> tuple[str, str, str] | None:
    """``(relation, x, y)`` when the shared content words of ``b`` are those of ``a`` with two
    blocks exchanged around a relation that stays in place ("A inhibits B" / "B inhibits A";
    "from A to B" / "from B to A"); None otherwise. The relation is a shared content word
    between the blocks that is not listed symmetric, or a directional function word
    (``data/order_words.tsv``) between them in both texts; each block at most
    :data:`_ORDER_BLOCK` words. A passive in one text only ("by" between the blocks, or the
    relation a participle after "is"/"was"/...) swaps the blocks back ("A causes B" / "B is
    caused by A"; "does the rent include Wi-Fi" / "is Wi-Fi included in the rent"). Texts
    with a quotation are not compared (quote and speaker change places freely)."""
    function_words = lexicon.function_words
    symmetric = lexicon.symmetric_words
    pairs = [
        (i, j) for i, j in _aligned(a.words, b.words)
        if a.words[i].isalpha() and len(a.words[i]) > 1
        and a.words[i] not in function_words and a.words[i] not in _DEGREE
    ]
    if len(pairs) < 2 or any(q in t for t in (a.text, b.text) for q in _QUOTES):
        return None  # a quotation and its speaker change places freely
    by_b = sorted(range(len(pairs)), key=lambda k: pairs[k][1])
    swap = _block_swap(by_b)
    if swap is None:
        return None
    p, x_len, m_len, y_len = swap
    if max(x_len, y_len) > _ORDER_BLOCK:
        return None  # clauses moved around, not the two sides of one relation
    x_block = pairs[p : p + x_len]
    middle = pairs[p + x_len : p + x_len + m_len]
    y_block = pairs[p + x_len + m_len : p + x_len + m_len + y_len]
    # the gaps between the blocks, in each text: A = X .. Y, B = Y .. X
    gap_a = (x_block[-1][0], y_block[0][0])
    gap_b = (y_block[-1][1], x_block[0][1])
    lowered = (a.text.casefold(), b.text.casefold())
    found = next(
        ((i, j) for i, j in middle
         if a.words[i] not in symmetric and symmetric.isdisjoint(_base_forms(a.words[i]))
         and a.words[i] not in _CARDINALS
         # the tail of a hyphenated modifier ("Paris-based") names no relation
         and not any(f"-{a.words[i]}" in t for t in lowered)),
        None,
    )
    at_a, at_b = found if found is not None else (None, None)
    relation = None if at_a is None else a.words[at_a]
    if relation is None:
        between_a = set(a.words[gap_a[0] + 1 : gap_a[1]])
        between_b = set(b.words[gap_b[0] + 1 : gap_b[1]])
        if between_a & symmetric or between_b & symmetric:
            return None
        relation = next(iter(sorted(between_a & between_b & lexicon.directional_words)), None)
        if relation is None:
            return None
    if _passive(a.words, *gap_a, at_a) != _passive(b.words, *gap_b, at_b):
        return None
    return relation, a.words[x_block[0][0]], a.words[y_block[0][0]]


class OrderSignal:
    """Veto when the texts hold one relation with its two sides swapped ("A inhibits B" vs
    "B inhibits A"; see :func:`swapped_relation`)."""

    name = "order"

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self._lexicon = lexicon

    def check(self, a: Analysis, b: Analysis) -> str | None:
        found = swapped_relation(a, b, self._lexicon or default_lexicon())
        if found is None:
            return None
        relation, x, y = found
        return f"sides of {relation!r} swapped: {x!r} and {y!r}"


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
    "order": OrderSignal,
    "dates": DatesSignal,
    "units": UnitsSignal,
}
"""The rule signals by name, cheapest first."""
