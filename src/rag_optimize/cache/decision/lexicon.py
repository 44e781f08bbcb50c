"""The word lists the decision signals read: opposite pairs, question forms, dates and units.

They are data, not code: tab-separated files in ``rag_optimize/cache/decision/data/``
(shipped in the wheel, read with :mod:`importlib.resources`), so a reviewer can read and
extend them without reading a regular expression. Each loader also takes a path to a file of
the same layout, for an application that wants its own list. A file that does not follow its
layout raises :class:`~rag_optimize.errors.ConfigurationError` naming the file and the line.

* ``opposites.tsv``: ``words<TAB>opposites``; each side one word or a comma-separated group
  of words of one sense, every word of one side the opposite of every word of the other
  ("increase,raise,boost<TAB>decrease,reduce,lower"); symmetric.
* ``opposite_prefixes.tsv``: ``prefix<TAB>prefix``: two words that differ only in these
  prefixes are opposites ("upregulate"/"downregulate", "overestimate"/"underestimate");
  ``prefix<TAB>*``: the prefix negates the bare word ("unlock"/"lock").
* ``synonyms.tsv``: one group a line, comma-separated: words that ask the same thing in a
  question ("change,reset,update"); the token alignment counts them as the same word.
* ``order_words.tsv``: ``symmetric<TAB>word``: a relation whose two sides may be swapped
  ("associated", "between"); ``directional<TAB>word``: a function word whose two sides may
  not be swapped ("than", "to"); read by the argument-order signal.
* ``question_forms.tsv``: ``intent<TAB>form``; forms of one intent ask the same kind of
  question ("what time"/"when" are both ``time``).
* ``dates.tsv`` and ``units.tsv``: ``canonical<TAB>form,form,...``.
* ``function_words.txt``: one word a line; words the token alignment needs no counterpart for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from rag_optimize.errors import ConfigurationError

__all__ = [
    "Lexicon",
    "default_lexicon",
    "load_lexicon",
    "words_of",
]

_PACKAGE = "rag_optimize.cache.decision.data"
_TOKEN = re.compile(r"[a-z0-9]+(?:[.'’][a-z0-9]+)*|[$€£¥%°]")


def words_of(text: str) -> tuple[str, ...]:
    """Lower-case words of ``text`` as the lexicon matches them ("n't" becomes "not", "32%"
    becomes "32" and "%")."""
    lowered = text.casefold().replace("n\u2019t", " not").replace("n't", " not")
    lowered = lowered.replace("cannot", "can not")
    return tuple(_TOKEN.findall(lowered))


@dataclass(frozen=True)
class Lexicon:
    """The word lists (phrases are tuples of words)."""

    opposites: dict[tuple[str, ...], frozenset[tuple[str, ...]]]
    question_forms: dict[tuple[str, ...], str]
    dates: dict[tuple[str, ...], str]
    units: dict[tuple[str, ...], str]
    function_words: frozenset[str]
    opposite_prefixes: tuple[tuple[str, str], ...] = ()
    """Pairs of prefixes that make opposites; ``""`` as the second: a negating prefix."""
    synonyms: dict[str, frozenset[str]] = field(default_factory=dict)
    """Each listed word and the words of its synonym group (itself included)."""
    symmetric_words: frozenset[str] = frozenset()
    """Relation words whose two sides may be swapped (the order signal ignores them)."""
    directional_words: frozenset[str] = frozenset()
    """Function words whose two sides may not be swapped (the order signal reads them)."""

    @property
    def longest_form(self) -> int:
        """Words in the longest question form (how far a form match looks ahead)."""
        return max((len(f) for f in self.question_forms), default=1)


def _lines(source: str | Path, name: str) -> Iterator[tuple[int, list[str], str]]:
    if isinstance(source, Path):
        label = str(source)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read lexicon file {label}: {exc}") from exc
    else:
        label = f"{_PACKAGE}/{source}"
        text = resources.files(_PACKAGE).joinpath(source).read_text(encoding="utf-8")
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise ConfigurationError(
                f"malformed {name} file {label}, line {lineno}: expected two tab-separated "
                f"fields, got {line!r}"
            )
        yield lineno, [f.strip() for f in fields], label


def _phrase(text: str, label: str, lineno: int) -> tuple[str, ...]:
    words = words_of(text)
    if not words:
        raise ConfigurationError(
            f"malformed lexicon file {label}, line {lineno}: {text!r} has no word"
        )
    return words


def _group(text: str, name: str, label: str, lineno: int) -> list[tuple[str, ...]]:
    members = [m.strip() for m in text.split(",")]
    if not all(members):
        raise ConfigurationError(
            f"malformed {name} file {label}, line {lineno}: an empty word in {text!r}"
        )
    return [_phrase(m, label, lineno) for m in members]


def _read_opposites(source: str | Path) -> dict[tuple[str, ...], frozenset[tuple[str, ...]]]:
    pairs: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for lineno, (a, b), label in _lines(source, "opposites"):
        left, right = _group(a, "opposites", label, lineno), _group(b, "opposites", label, lineno)
        both = sorted(set(left) & set(right))
        if both:
            raise ConfigurationError(
                f"malformed opposites file {label}, line {lineno}: "
                f"{' '.join(both[0])!r} is its own opposite"
            )
        for x in left:
            for y in right:
                pairs.setdefault(x, set()).add(y)
                pairs.setdefault(y, set()).add(x)
    return {k: frozenset(v) for k, v in pairs.items()}


def _read_prefixes(source: str | Path) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for lineno, (a, b), label in _lines(source, "opposite prefixes"):
        a, b = a.casefold(), b.casefold()
        if not a.isalpha() or not (b == "*" or b.isalpha()) or a == b:
            raise ConfigurationError(
                f"malformed opposite prefixes file {label}, line {lineno}: expected two "
                f"different prefixes (letters) or a prefix and '*', got {a!r}, {b!r}"
            )
        found.append((a, "" if b == "*" else b))
    return tuple(found)


def _read_synonyms(source: str | Path) -> dict[str, frozenset[str]]:
    label = str(source) if isinstance(source, Path) else f"{_PACKAGE}/{source}"
    groups: dict[str, set[str]] = {}
    for lineno, line in _plain_lines(source, label):
        members = [m.strip() for m in line.split(",")]
        if len(members) < 2 or any(len(words_of(m)) != 1 or "\t" in m for m in members):
            raise ConfigurationError(
                f"malformed synonyms file {label}, line {lineno}: expected two or more "
                f"comma-separated single words, got {line!r}"
            )
        group = {words_of(m)[0] for m in members}
        for word in group:
            groups.setdefault(word, set()).update(group)
    return {k: frozenset(v) for k, v in groups.items()}


def _read_order_words(source: str | Path) -> tuple[frozenset[str], frozenset[str]]:
    kinds: dict[str, set[str]] = {"symmetric": set(), "directional": set()}
    for lineno, (kind, word), label in _lines(source, "order words"):
        words = words_of(word)
        if kind not in kinds or len(words) != 1:
            raise ConfigurationError(
                f"malformed order words file {label}, line {lineno}: expected "
                f"'symmetric' or 'directional' and one word, got {kind!r}, {word!r}"
            )
        kinds[kind].add(words[0])
    return frozenset(kinds["symmetric"]), frozenset(kinds["directional"])


def _read_forms(source: str | Path) -> dict[tuple[str, ...], str]:
    forms: dict[tuple[str, ...], str] = {}
    for lineno, (intent, form), label in _lines(source, "question forms"):
        phrase = _phrase(form, label, lineno)
        if forms.get(phrase, intent) != intent:
            raise ConfigurationError(
                f"malformed question forms file {label}, line {lineno}: {form!r} is listed "
                f"under two intents ({forms[phrase]!r} and {intent!r})"
            )
        forms[phrase] = intent
    return forms


def _read_concepts(source: str | Path, name: str) -> dict[tuple[str, ...], str]:
    concepts: dict[tuple[str, ...], str] = {}
    for lineno, (canonical, forms), label in _lines(source, name):
        for form in forms.split(","):
            if not form.strip():
                raise ConfigurationError(
                    f"malformed {name} file {label}, line {lineno}: an empty form in {forms!r}"
                )
            concepts[_phrase(form, label, lineno)] = canonical
    return concepts


def _plain_lines(source: str | Path, label: str) -> Iterator[tuple[int, str]]:
    try:
        text = (
            source.read_text(encoding="utf-8")
            if isinstance(source, Path)
            else resources.files(_PACKAGE).joinpath(source).read_text(encoding="utf-8")
        )
    except OSError as exc:
        raise ConfigurationError(f"cannot read lexicon file {label}: {exc}") from exc
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield lineno, line


def _read_words(source: str | Path) -> frozenset[str]:
    label = str(source) if isinstance(source, Path) else f"{_PACKAGE}/{source}"
    words = set()
    for lineno, line in _plain_lines(source, label):
        if len(words_of(line)) != 1 or "\t" in line:
            raise ConfigurationError(
                f"malformed function words file {label}, line {lineno}: expected one word, "
                f"got {line!r}"
            )
        words.add(words_of(line)[0])
    return frozenset(words)


def load_lexicon(
    *,
    opposites: str | Path | None = None,
    question_forms: str | Path | None = None,
    dates: str | Path | None = None,
    units: str | Path | None = None,
    function_words: str | Path | None = None,
    opposite_prefixes: str | Path | None = None,
    synonyms: str | Path | None = None,
    order_words: str | Path | None = None,
) -> Lexicon:
    """Read the lists: the packaged files, or the paths given instead of any of them. A
    synonym group that holds a word and its opposite raises ConfigurationError naming both."""
    opposite_pairs = _read_opposites(Path(opposites) if opposites else "opposites.tsv")
    synonym_groups = _read_synonyms(Path(synonyms) if synonyms else "synonyms.tsv")
    for word, group in sorted(synonym_groups.items()):
        clash = sorted(o[0] for o in opposite_pairs.get((word,), ()) if o[0] in group)
        if clash:
            raise ConfigurationError(
                f"malformed synonyms file: {word!r} and its opposite {clash[0]!r} are in one "
                "synonym group"
            )
    symmetric, directional = _read_order_words(
        Path(order_words) if order_words else "order_words.tsv"
    )
    return Lexicon(
        opposites=opposite_pairs,
        question_forms=_read_forms(
            Path(question_forms) if question_forms else "question_forms.tsv"
        ),
        dates=_read_concepts(Path(dates) if dates else "dates.tsv", "dates"),
        units=_read_concepts(Path(units) if units else "units.tsv", "units"),
        function_words=_read_words(
            Path(function_words) if function_words else "function_words.txt"
        ),
        opposite_prefixes=_read_prefixes(
            Path(opposite_prefixes) if opposite_prefixes else "opposite_prefixes.tsv"
        ),
        synonyms=synonym_groups,
        symmetric_words=symmetric,
        directional_words=directional,
    )


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The packaged lists, read once per process."""
    return load_lexicon()
