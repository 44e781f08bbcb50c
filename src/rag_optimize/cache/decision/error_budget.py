"""Error budget: learn the similarity threshold from verified outcomes instead of guessing it.

A semantic cache serves a stored answer when a new query is similar enough to a stored one.
Every served answer is either right or wrong, and the only way to know which is to check some
of them: user feedback (``cache.feedback(hit, correct)``), shadow comparisons (the model's real
answer compared with what the cache would have served) and probes (on a miss, the nearest
stored answer compared with the answer the model then gave). Each check is an *outcome*: the
similarity of the lookup and whether the stored answer was right.

Two levels learn from outcomes:

1. **One threshold for the cache, certified.** From the pooled outcomes, :class:`ErrorBudget`
   picks the lowest threshold ``t`` (on a fixed grid) at which the one-sided Clopper-Pearson
   upper confidence bound on the error rate among outcomes with similarity ``>= t`` is at most
   ``max_error_rate``. Thresholds are tested from high to low and testing stops at the first
   failure ("fixed-sequence testing", as in Learn-then-Test, Angelopoulos et al. 2021). It
   starts at the highest threshold with enough outcomes above it to pass *with one wrong
   outcome among them* (236 at 2% and 95%). The order depends only on the similarities, never
   on the labels, so no multiple-testing correction is needed. Why not where every outcome
   must be right (149): the first test decides everything, and one stray wrong answer among
   the most similar outcomes then ends the sequence for good; on the ``cache_quality`` stream
   that start never certified, even after 2,000 outcomes. Why not lower, e.g. where a third
   of all outcomes lie above (which served more on that stream, 40% of lookups against 31%
   while learning): real traffic adds many probe outcomes whose nearest entry is an unrelated
   question at a low similarity, all wrong, and a start that counts them lands among them and
   never certifies anything (``benchmarks/error_budget_start.py``, "diverse" rows).
2. **Per-entry floors.** An entry that served (or would have served) a wrong answer at
   similarity ``s`` never serves again at ``s`` or below: its own threshold becomes a floor
   just above ``s`` and the decision threshold is ``max(cache threshold, entry floor)``.
   Near-misses cluster around particular entries ("what is the capital of France" vs
   "... of Spain"), so this removes the wrong hits that one global number cannot.

What is guaranteed, and under which assumptions: if the outcomes are exchangeable with future
lookups (they come from the same traffic, and which lookups get checked does not depend on
whether the answer was right) and the labels are correct, then with probability at least
``confidence`` over the outcomes, the error rate among future hits at the certified threshold
is at most ``max_error_rate`` (before the per-entry floors, which only remove hits that are
known to be risky). Each certificate is one such statement; a cache that keeps learning
recomputes it as outcomes arrive, and over many recomputations some will be among the 1 in
20 that are wrong, so a stretch of traffic can see more than the budget (replaying 6 streams
in ``benchmarks/error_budget_start.py``: 1.4% wrong overall, 2.0% in the worst stream).
It bounds the *fraction of served answers that are wrong*, not the fraction of all lookups.
It does not hold when traffic drifts away from the outcomes (keep checking a
sample), when only complaints are recorded (then it is merely conservative: errors are
over-represented), or when the judge that labels shadow outcomes is wrong (an embedding judge
is itself a similarity threshold).

Until the outcomes certify a threshold (at 2% and 95% confidence that takes 236 outcomes
above it with at most one wrong; more if more are wrong) the cache uses the configured
starting threshold as long as no outcome contradicts it. Once a wrong answer is seen at or
above it, the cache fails closed: it serves only exact repeats and keeps learning from probes
until a threshold is certified (with probes off it stays closed, since nothing is served to
learn from). An earlier version raised the threshold just above the highest wrong outcome
instead; on the cache_quality stream that heuristic served 10-12% wrong answers, because
near-misses reach a cosine of 0.995 and more. The starting threshold carries no guarantee,
and the decision says so (``certified: False``).

Choosing ``confidence`` (default 0.95): the certificate holds with probability
``confidence`` over the outcomes it was computed from; the rate it bounds does not change.
Lower confidence needs fewer outcomes (at a 2% budget, with at most one wrong: 236 outcomes
above a threshold at 0.95, 149 at 0.80, 84 at 0.50; :func:`outcomes_needed`, shown in each
decision as ``outcomes_needed``), at the price that one certificate in 5 (0.80) or in 2
(0.50) may be wrong.

The verifier (:mod:`rag_optimize.cache.decision.verifiers`) comes before all of this: a candidate it
vetoes is neither served nor probed, so the outcomes, and the certificate, are those of the
verified decision. On the ``cache_quality`` stream it is what makes a threshold certifiable
at all: near-misses that differ in a number or a question word are the errors that keep the
error rate above 2% at every similarity.

What is deliberately not done, and why. *Per-entry thresholds fitted from each entry's own
outcomes* (a sigmoid of P(correct | similarity) per entry, as in vCache, arXiv 2502.03771)
need several outcomes per entry before an entry may serve at a 2% bound, so they help only
entries that are asked about many times, and their bound rests on the fitted model being
right. *A pooled monotone (isotonic) fit of error against similarity* lets outcomes just
below a threshold vouch for it (if error only falls as similarity rises, the error rate
just below ``t`` bounds the one above it); that helps only where the error just below the
threshold is already under the budget. On the ``cache_quality`` question stream with
all-MiniLM-L6-v2 and no verifier, the warm-up error rate in the bin just below it,
[0.98, 0.99), is already 2.6-3.2% (typical mix) and 15-21% (hard mix) before any bound, because
near-misses reach a cosine of 0.97-0.995; the 23-45 warm-up outcomes above 0.99 are too few
to certify 2% on their own. Held-out lookups whose nearest entry had only served right
answers before were wrong *more* often above a given similarity than lookups to entries
with no outcome yet (paraphrases tend to arrive before near-misses), so an entry's good
record is not a safe reason to serve. The per-entry *floors* above are the part of
per-entry learning that needs no model: they only ever remove hits.

Where the evidence lives: per-entry outcomes in the entry's metadata (so a shared store such
as Redis shares them); the cache-wide outcomes in the process (:meth:`ErrorBudget.state` /
:meth:`ErrorBudget.load` persist them), so each process sharing a store learns its own
cache-wide threshold.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from rag_optimize.errors import ConfigurationError, InvalidInputError

EVIDENCE_KEY = "rag_optimize_evidence"
"""Reserved entry-metadata key holding the entry's own verified outcomes."""

FLOOR_MARGIN = 1e-4
"""An entry floor sits this far above the similarity of its worst known wrong answer."""

REFUSE = 1.0 + FLOOR_MARGIN
"""A threshold no similarity reaches: the cache serves only exact repeats."""

_MAX_ENTRY_SIMILARITIES = 16


def binomial_upper_bound(errors: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson upper bound on an error rate: the largest ``p`` with
    ``P(Binomial(n, p) <= errors) >= delta``. Exact (conservative) for any ``n``."""
    if n <= 0:
        return 1.0
    if errors >= n:
        return 1.0
    if errors == 0:
        return 1.0 - delta ** (1.0 / n)
    lo, hi = errors / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _binomial_cdf(errors, n, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def _binomial_cdf(k: int, n: int, p: float, log_fact: np.ndarray | None = None) -> float:
    """``P(Binomial(n, p) <= k)`` summed in log space (``log_fact[i] = log(i!)``)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0 if k < n else 1.0
    if log_fact is None or len(log_fact) <= n:
        log_fact = _log_factorials(n)
    i = np.arange(k + 1)
    terms = (
        log_fact[n] - log_fact[i] - log_fact[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    )
    top = float(terms.max())
    return min(1.0, math.exp(top) * float(np.exp(terms - top).sum()))


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _passes(errors: int, n: int, max_error_rate: float, delta: float, log_fact: np.ndarray) -> bool:
    """Whether the Clopper-Pearson upper bound of ``errors/n`` is at most ``max_error_rate``
    (equivalently: ``P(Binomial(n, max_error_rate) <= errors) <= delta``)."""
    if errors / n > max_error_rate:
        return False
    return _binomial_cdf(errors, n, max_error_rate, log_fact) <= delta


START_ERRORS = 1
"""Testing starts at the highest threshold whose outcomes could pass with this many wrong."""


@lru_cache(maxsize=64)
def outcomes_needed(max_error_rate: float, confidence: float, errors: int = 0) -> int:
    """The fewest outcomes, at most ``errors`` of them wrong, that certify an error rate of at
    most ``max_error_rate`` (149 for 2% at 95% with none wrong, 236 with one)."""
    delta = 1.0 - confidence
    n = math.ceil(math.log(delta) / math.log1p(-max_error_rate))  # the errors == 0 answer
    if errors <= 0:
        return n
    n = max(n, math.ceil(errors / max_error_rate))
    log_fact = _log_factorials(n)
    while _binomial_cdf(errors, n, max_error_rate, log_fact) > delta:
        n += 1
        if len(log_fact) <= n:
            log_fact = _log_factorials(2 * n)
    return n


def start_outcomes(max_error_rate: float, confidence: float) -> int:
    """How many outcomes lie above the first threshold tested: enough to pass with one wrong
    among them (236 at 2% and 95%), however many outcomes lie below."""
    return outcomes_needed(max_error_rate, confidence, START_ERRORS)


@dataclass(frozen=True)
class Certificate:
    """The threshold the outcomes support and why.

    ``certified`` says whether ``threshold`` passed the test (then ``upper_bound`` <=
    ``max_error_rate`` with the stated confidence); ``outcomes``/``errors`` count the outcomes
    at or above it. ``outcomes_needed`` is the fewest outcomes above a threshold at which
    testing starts (they certify it with at most one wrong; see :func:`outcomes_needed`), so
    an operator can see how far an uncertified cache is from serving similar queries.
    """

    threshold: float
    certified: bool
    outcomes: int
    errors: int
    upper_bound: float
    outcomes_needed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view for logs and hit metadata."""
        return {
            "threshold": self.threshold,
            "certified": self.certified,
            "outcomes": self.outcomes,
            "errors": self.errors,
            "upper_bound": self.upper_bound,
            "outcomes_needed": self.outcomes_needed,
        }


def certify(
    similarities: np.ndarray,
    correct: np.ndarray,
    *,
    max_error_rate: float,
    confidence: float,
    start_threshold: float,
    min_threshold: float,
    grid_step: float = 0.0025,
    start: int | None = None,
) -> Certificate:
    """The lowest grid threshold certified by fixed-sequence testing (see module docstring),
    or the uncertified fallback when none is. ``start``: test only thresholds with at least
    this many outcomes above (default :func:`start_outcomes`; for comparing start rules)."""
    sims = np.asarray(similarities, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    order = np.argsort(-sims, kind="stable")
    sims_desc = sims[order]
    cum_wrong = np.concatenate([[0], np.cumsum(wrong[order])])
    delta = 1.0 - confidence
    grid = np.round(np.arange(1.0, min_threshold - 1e-9, -grid_step), 6)

    def at(t: float) -> tuple[int, int]:
        n = int(np.searchsorted(-sims_desc, -t, side="right"))
        return n, int(cum_wrong[n])

    needed = start_outcomes(max_error_rate, confidence)
    if start is None:
        start = needed
    log_fact = _log_factorials(len(sims))
    best: tuple[float, int, int] | None = None
    for t in grid:
        n, e = at(float(t))
        if n < start:
            continue  # label-independent start (see the module docstring)
        if not _passes(e, n, max_error_rate, delta, log_fact):
            break
        best = (float(t), n, e)
    if best is not None:
        t, n, e = best
        return Certificate(t, True, n, e, binomial_upper_bound(e, n, delta), needed)
    return _fallback(at, sims, wrong, delta, start_threshold, needed)


def _fallback(
    at: Any, sims: np.ndarray, wrong: np.ndarray, delta: float, start: float, needed: int
) -> Certificate:
    """Uncertified: the starting threshold while no outcome contradicts it; after a wrong
    answer at or above it, :data:`REFUSE` (only exact repeats are served)."""
    threshold = REFUSE if bool((wrong & (sims >= start)).any()) else start
    n, e = at(min(threshold, 1.0))
    return Certificate(threshold, False, n, e, binomial_upper_bound(e, n, delta), needed)


class ErrorBudget:
    """Online learner of the cache-wide threshold from verified outcomes (thread-safe).

    Keeps the most recent ``max_outcomes`` outcomes (so the threshold follows traffic that
    changes slowly) and recomputes the certificate lazily after new outcomes arrive.
    """

    def __init__(
        self,
        max_error_rate: float,
        *,
        start_threshold: float,
        confidence: float = 0.95,
        min_threshold: float = 0.5,
        max_outcomes: int = 20_000,
    ) -> None:
        if not (0.0 < max_error_rate < 1.0):
            raise ConfigurationError(f"max_error_rate must be in (0, 1), got {max_error_rate}")
        if not (0.5 <= confidence < 1.0):
            raise ConfigurationError(f"confidence must be in [0.5, 1), got {confidence}")
        if not (0.0 < min_threshold <= start_threshold <= 1.0):
            raise ConfigurationError(
                "need 0 < min_threshold <= start threshold <= 1, got "
                f"min_threshold={min_threshold}, start={start_threshold}"
            )
        if max_outcomes < 1:
            raise ConfigurationError(f"max_outcomes must be >= 1, got {max_outcomes}")
        self.max_error_rate = max_error_rate
        self.confidence = confidence
        self.start_threshold = start_threshold
        self.min_threshold = min_threshold
        self._outcomes: deque[tuple[float, bool]] = deque(maxlen=max_outcomes)
        self._lock = threading.Lock()
        self._certificate: Certificate | None = None

    def record(self, similarity: float, correct: bool) -> None:
        """Add one verified outcome: a lookup at ``similarity`` whose answer was (not) right."""
        if not math.isfinite(similarity):
            raise InvalidInputError(f"similarity must be finite, got {similarity}")
        with self._lock:
            self._outcomes.append((float(similarity), bool(correct)))
            self._certificate = None

    @property
    def threshold(self) -> float:
        """The cache-wide decision threshold now."""
        return self.certificate().threshold

    def certificate(self) -> Certificate:
        """The current threshold with its evidence (recomputed only after new outcomes)."""
        with self._lock:
            if self._certificate is None:
                sims = np.fromiter((s for s, _ in self._outcomes), np.float64, len(self._outcomes))
                ok = np.fromiter((c for _, c in self._outcomes), bool, len(self._outcomes))
                self._certificate = certify(
                    sims,
                    ok,
                    max_error_rate=self.max_error_rate,
                    confidence=self.confidence,
                    start_threshold=self.start_threshold,
                    min_threshold=self.min_threshold,
                )
            return self._certificate

    def __len__(self) -> int:
        return len(self._outcomes)

    def state(self) -> dict[str, Any]:
        """The outcomes as JSON, to persist learning across restarts (:meth:`load`)."""
        with self._lock:
            return {"outcomes": [[s, c] for s, c in self._outcomes]}

    def load(self, state: dict[str, Any]) -> None:
        """Add the outcomes of a :meth:`state` snapshot."""
        for similarity, correct in state.get("outcomes", []):
            self.record(float(similarity), bool(correct))


@dataclass
class EntryEvidence:
    """One entry's verified outcomes, stored in its metadata under :data:`EVIDENCE_KEY`.

    Bounded: counts plus the similarities of at most 16 wrong answers (the highest ones, which
    are the ones that set the floor).
    """

    correct: int = 0
    wrong: int = 0
    wrong_similarities: tuple[float, ...] = ()

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> EntryEvidence:
        """Read the evidence of an entry (empty if it has none or it is malformed)."""
        raw = metadata.get(EVIDENCE_KEY)
        if not isinstance(raw, dict):
            return cls()
        try:
            return cls(
                int(raw.get("correct", 0)),
                int(raw.get("wrong", 0)),
                tuple(float(s) for s in raw.get("wrong_similarities", ())),
            )
        except (TypeError, ValueError):
            return cls()

    def add(self, similarity: float, correct: bool) -> EntryEvidence:
        """The evidence with one more outcome."""
        if correct:
            return EntryEvidence(self.correct + 1, self.wrong, self.wrong_similarities)
        sims = sorted((*self.wrong_similarities, float(similarity)), reverse=True)
        return EntryEvidence(self.correct, self.wrong + 1, tuple(sims[:_MAX_ENTRY_SIMILARITIES]))

    @property
    def floor(self) -> float | None:
        """The entry's own minimum threshold: just above its worst known wrong answer."""
        if not self.wrong_similarities:
            return None
        return max(self.wrong_similarities) + FLOOR_MARGIN

    def to_json(self) -> dict[str, Any]:
        """What is stored under :data:`EVIDENCE_KEY`."""
        return {
            "correct": self.correct,
            "wrong": self.wrong,
            "wrong_similarities": list(self.wrong_similarities),
        }
