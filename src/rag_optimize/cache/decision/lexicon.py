"""The word lists the decision signals read: opposite pairs, question forms, dates and units.

They are data, not code: tab-separated files in ``rag_optimize/cache/decision/data/``
(shipped in the wheel, read with :mod:`importlib.resources`), so a reviewer can read and
extend them without reading a regular expression. Each loader also takes a path to a file of
the same layout, for an application that wants its own list. A file that does not follow its
layout raises :class:`~rag_optimize.errors.ConfigurationError` naming the file and the line.

* ``opposites.tsv``: ``word<TAB>opposite``; symmetric ("increase"/"decrease").
* ``question_forms.tsv``: ``intent<TAB>form``; forms of one intent ask the same kind of
  question ("what time"/"when" are both ``time``).
* ``dates.tsv`` and ``units.tsv``: ``canonical<TAB>form,form,...``.
* ``function_words.txt``: one word a line; words the token alignment needs no counterpart for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
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


def _read_opposites(source: str | Path) -> dict[tuple[str, ...], frozenset[tuple[str, ...]]]:
    pairs: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for lineno, (a, b), label in _lines(source, "opposites"):
        x, y = _phrase(a, label, lineno), _phrase(b, label, lineno)
        if x == y:
            raise ConfigurationError(
                f"malformed opposites file {label}, line {lineno}: {a!r} is its own opposite"
            )
        pairs.setdefault(x, set()).add(y)
        pairs.setdefault(y, set()).add(x)
    return {k: frozenset(v) for k, v in pairs.items()}


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


def _read_words(source: str | Path) -> frozenset[str]:
    label = str(source) if isinstance(source, Path) else f"{_PACKAGE}/{source}"
    try:
        text = (
            source.read_text(encoding="utf-8")
            if isinstance(source, Path)
            else resources.files(_PACKAGE).joinpath(source).read_text(encoding="utf-8")
        )
    except OSError as exc:
        raise ConfigurationError(f"cannot read lexicon file {label}: {exc}") from exc
    words = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
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
) -> Lexicon:
    """Read the lists: the packaged files, or the paths given instead of any of them."""
    return Lexicon(
        opposites=_read_opposites(Path(opposites) if opposites else "opposites.tsv"),
        question_forms=_read_forms(
            Path(question_forms) if question_forms else "question_forms.tsv"
        ),
        dates=_read_concepts(Path(dates) if dates else "dates.tsv", "dates"),
        units=_read_concepts(Path(units) if units else "units.tsv", "units"),
        function_words=_read_words(
            Path(function_words) if function_words else "function_words.txt"
        ),
    )


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The packaged lists, read once per process."""
    return load_lexicon()
