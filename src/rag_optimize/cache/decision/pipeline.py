"""The decision pipeline: stage 2 of a cache lookup, deciding from named signals.

Stage 1 (the vector search with its similarity threshold) proposes candidates; stage 2,
:class:`DecisionPipeline`, asks each of its signals in turn whether the stored answer may be
served for the new question. The first veto wins; a candidate every signal passes is served.
It is a verifier (``pipeline(query, cached_query) -> bool``), so it plugs into
``SemanticCache(verifier=...)``, and :meth:`DecisionPipeline.explain` says which signals voted
and why (the cache records it on a hit).

The signals, cheapest first (see :mod:`~rag_optimize.cache.decision.signals` and
:mod:`~rag_optimize.cache.decision.alignment`): ``numbers``, ``negation``,
``question_intent``, ``polarity``, ``order``, ``dates``, ``units`` (rules over the two
texts, a few microseconds) and ``alignment`` (every content word needs a counterpart in the
other text, on the model's word vectors; tens of microseconds when the words' vectors are at
hand, one forward pass of the packaged model when not).

:func:`default_pipeline` is the cache's default: all eight when the packaged model is
installed, the seven rules when it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rag_optimize.cache.decision.alignment import (
    DEFAULT_ALIGNMENT_THRESHOLD,
    AlignmentSignal,
    local_model_installed,
)
from rag_optimize.cache.decision.alignment import TokenSource as TokenSource
from rag_optimize.cache.decision.lexicon import Lexicon
from rag_optimize.cache.decision.signals import (
    RULE_SIGNALS,
    OrderSignal,
    PolaritySignal,
    Signal,
    analyse,
)
from rag_optimize.errors import ConfigurationError

__all__ = [
    "DEFAULT_CANDIDATE_THRESHOLD",
    "DEFAULT_SIGNALS",
    "DecisionPipeline",
    "RULE_SIGNAL_NAMES",
    "default_pipeline",
]

RULE_SIGNAL_NAMES = tuple(RULE_SIGNALS)
DEFAULT_SIGNALS = (*RULE_SIGNAL_NAMES, "alignment")
SIGNAL_NAMES = DEFAULT_SIGNALS
DEFAULT_CANDIDATE_THRESHOLD = 0.8
"""The stage-1 similarity threshold of a pipeline with token alignment: candidates from 0.8
up, the signals decide. On the dev split of benchmarks/cache_decision.py it served 95% of the
stream paraphrases at 0.5% wrong answers (0.9: 75% at 0.3%), and the question-form
paraphrases ("How do I reset my password?" / "What is the way to change my password?",
cosine 0.83) reach it."""
_LEXICON_SIGNALS: dict[str, Callable[[Lexicon | None], Signal]] = {
    "polarity": PolaritySignal,
    "order": OrderSignal,
}


class DecisionPipeline:
    """Serve a candidate only when no signal vetoes it.

    Args:
        signals: signal names from :data:`DEFAULT_SIGNALS` and/or objects with a ``name``
            and ``check(a, b) -> str | None`` (see
            :class:`~rag_optimize.cache.decision.signals.Signal`), asked in this order. An
            unknown name raises ConfigurationError naming it.
        alignment_threshold: the ``alignment`` signal's minimum word match (see
            :class:`~rag_optimize.cache.decision.alignment.AlignmentSignal`).
        candidate_threshold: the similarity threshold a cache using this pipeline gets
            unless it is given one (``SemanticCache(threshold=None)``); default
            :data:`DEFAULT_CANDIDATE_THRESHOLD` with ``alignment``, None (the cache's 0.9)
            with rules only, which let more near-misses through.
        token_source: where ``alignment`` gets word vectors (default: the packaged model).
        lexicon: word lists other than the packaged ones
            (:func:`~rag_optimize.cache.decision.lexicon.load_lexicon`).
    """

    __name__ = "DecisionPipeline"

    def __init__(
        self,
        signals: Sequence[str | Signal] = DEFAULT_SIGNALS,
        *,
        alignment_threshold: float = DEFAULT_ALIGNMENT_THRESHOLD,
        token_source: TokenSource | Callable[[], TokenSource] | None = None,
        lexicon: Lexicon | None = None,
        candidate_threshold: float | None = DEFAULT_CANDIDATE_THRESHOLD,
    ) -> None:
        if isinstance(signals, str) or not isinstance(signals, Sequence):
            raise ConfigurationError(
                f"signals must be a list of signal names or signals, got {signals!r}"
            )
        built: list[Signal] = []
        for item in signals:
            if isinstance(item, str):
                built.append(_build(item, alignment_threshold, token_source, lexicon))
            elif isinstance(item, Signal):
                built.append(item)
            else:
                raise ConfigurationError(
                    f"unknown signal {item!r}: expected one of {', '.join(SIGNAL_NAMES)} "
                    "or an object with name and check(a, b)"
                )
        names = [s.name for s in built]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"a signal is listed twice in {names}")
        self.signals: tuple[Signal, ...] = tuple(built)
        self.lexicon = lexicon
        if candidate_threshold is not None and (
            isinstance(candidate_threshold, bool)
            or not isinstance(candidate_threshold, (int, float))
            or not 0.0 < candidate_threshold <= 1.0
        ):
            raise ConfigurationError(
                f"candidate_threshold must be in (0, 1] or None, got {candidate_threshold!r}"
            )
        self.candidate_threshold: float | None = (
            float(candidate_threshold)
            if candidate_threshold is not None and "alignment" in self.names
            else None
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The signals' names, in the order they are asked."""
        return tuple(s.name for s in self.signals)

    def __repr__(self) -> str:
        return f"DecisionPipeline(signals={list(self.names)!r})"

    def __call__(self, query: str, cached_query: str) -> bool:
        return self.veto(query, cached_query) is None

    def veto(self, query: str, cached_query: str) -> tuple[str, str] | None:
        """The first signal that vetoes and its reason, or None (serve). A signal that raises
        propagates: the cache counts that as a veto."""
        a, b = analyse(query, self.lexicon), analyse(cached_query, self.lexicon)
        for signal in self.signals:
            reason = signal.check(a, b)
            if reason is not None:
                return signal.name, reason
        return None

    def explain(self, query: str, cached_query: str) -> Mapping[str, Any]:
        """Every signal's vote on the pair, JSON-ready: ``{"decision": "serve" | "veto",
        "vetoed_by": name | None, "signals": [{"signal", "vote", "reason"}, ...]}`` with
        ``vote`` ``"pass"``, ``"veto"`` or ``"error"`` (a signal that raised; it vetoes)."""
        a, b = analyse(query, self.lexicon), analyse(cached_query, self.lexicon)
        votes: list[dict[str, Any]] = []
        vetoed_by = None
        for signal in self.signals:
            try:
                reason = signal.check(a, b)
            except Exception as exc:  # noqa: BLE001 - explain reports, never fails
                vote, reason = "error", f"{type(exc).__name__}: {exc}"
            else:
                vote = "pass" if reason is None else "veto"
            if vote != "pass" and vetoed_by is None:
                vetoed_by = signal.name
            votes.append({"signal": signal.name, "vote": vote, "reason": reason})
        return {
            "decision": "serve" if vetoed_by is None else "veto",
            "vetoed_by": vetoed_by,
            "signals": votes,
        }


def _build(
    name: str,
    alignment_threshold: float,
    token_source: TokenSource | Callable[[], TokenSource] | None,
    lexicon: Lexicon | None,
) -> Signal:
    if name == "alignment":
        return AlignmentSignal(alignment_threshold, token_source, lexicon)
    if name in _LEXICON_SIGNALS:
        return _LEXICON_SIGNALS[name](lexicon)
    factory = RULE_SIGNALS.get(name)
    if factory is None:
        raise ConfigurationError(
            f"unknown signal {name!r}: expected one of {', '.join(SIGNAL_NAMES)}"
        )
    return factory()


def default_pipeline() -> DecisionPipeline:
    """The cache's default decision: every rule signal, and token alignment on the packaged
    model when it is installed."""
    if local_model_installed():
        return DecisionPipeline(DEFAULT_SIGNALS)
    return DecisionPipeline(RULE_SIGNAL_NAMES)
