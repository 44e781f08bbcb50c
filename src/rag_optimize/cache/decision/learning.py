"""What a SemanticCache learns from being checked: observations, judging, outcomes, floors.

:class:`~rag_optimize.cache.semantic.SemanticCache` is the lookup/write flow; this module is
everything that turns checks of its answers into knowledge, without touching the store
(the cache does the store I/O, sync or async, and asks :class:`OutcomeLearner` what to do):

* **Thresholds in force**: the fixed threshold, or the :class:`ErrorBudget`'s certified one
  raised by an entry's own floor (:meth:`OutcomeLearner.threshold_for`).
* **Observations**: in shadow mode what a lookup would have served, and with an error budget
  the nearest entry of a miss (a *probe*), wait in :class:`AwaitingAnswers` for the app's
  ``set`` of the model's real answer.
* **Judging**: the judge compares the observed stored answer with the real one; a failing
  judge is counted and logged, never raised into the app's write.
* **Outcomes**: a judged observation or a ``feedback`` call is an outcome ``(similarity,
  correct)``: the error budget learns it, shadow mode tallies it, and a wrong one gives the
  entry its floor (or deletes it, :meth:`OutcomeLearner.revised`).
* **Decisions**: the metadata a hit carries about why it was served.

See :mod:`rag_optimize.cache.decision.error_budget` for the threshold algorithm and its guarantee.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Literal

from rag_optimize.cache.decision.error_budget import EVIDENCE_KEY, EntryEvidence, ErrorBudget
from rag_optimize.cache.decision.judges import Judge, ajudge, judge_now
from rag_optimize.cache.decision.shadow import AwaitingAnswers, Observation, ShadowLog
from rag_optimize.cache.entry import CacheEntry, Candidate
from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.stats import StatsCounter

logger = logging.getLogger("rag_optimize.cache")

Mode = Literal["live", "shadow"]
Nearest = tuple[CacheEntry, float, float]
"""The nearest entry of a miss with its similarity and the threshold it failed."""


class OutcomeLearner:
    """The learning side of a :class:`SemanticCache` (thread-safe where its parts are).

    ``mode``, ``judge`` and ``learn_from_misses`` may be changed at any time (the cache
    exposes them as its own attributes).
    """

    def __init__(
        self,
        *,
        budget: ErrorBudget | None,
        judge: Judge,
        mode: Mode,
        learn_from_misses: bool,
        stats: StatsCounter,
    ) -> None:
        self.budget = budget
        self.judge = judge
        self.mode: Mode = mode
        self.learn_from_misses = learn_from_misses
        self.awaiting = AwaitingAnswers()
        self.shadow = ShadowLog()
        self._stats = stats
        self._judge_incidents = IncidentLog(logger, "answer judge")

    # ------------------------------------------------------------- thresholds
    def threshold_for(self, entry_threshold: float | None, fixed: float) -> float:
        """The threshold a candidate must reach: ``fixed`` (or the entry's own), or with an
        error budget the certified cache threshold raised by the entry's floor."""
        if self.budget is None:
            return entry_threshold if entry_threshold is not None else fixed
        base = self.budget.threshold
        return base if entry_threshold is None else max(base, entry_threshold)

    def current_threshold(self, fixed: float) -> float:
        """The cache-wide threshold in force now (entries may add their own floor)."""
        return self.budget.threshold if self.budget is not None else fixed

    def ranked(
        self, candidates: list[Candidate], fixed: float
    ) -> list[tuple[Candidate, float, bool]]:
        """Candidates worth fetching with their threshold and whether they pass it (those
        that fail are kept only when misses are observed)."""
        out = []
        observe = self.observing()
        for candidate in candidates:
            threshold = self.threshold_for(candidate.threshold, fixed)
            accepted = candidate.similarity >= threshold
            if accepted or observe:
                out.append((candidate, threshold, accepted))
        return out

    # ------------------------------------------------------------ observations
    def observing(self) -> bool:
        """Whether misses should remember their nearest entry for the judge."""
        return self.mode == "shadow" or (self.budget is not None and self.learn_from_misses)

    def observe_would_hit(
        self, entry: CacheEntry, similarity: float, threshold: float | None, key: str, exact: bool
    ) -> None:
        """Shadow mode found an answer it would have served: wait for the real one."""
        self.shadow.lookup(True)
        observation = Observation(
            entry.id, entry.scope, entry.response, similarity, threshold, True, exact
        )
        self.awaiting.put(entry.scope, key, observation)

    def observe_miss(self, key: str, scope: str, nearest: Nearest | None) -> None:
        """A miss: in shadow mode count it; remember the nearest entry for a probe."""
        if self.mode == "shadow":
            self.shadow.lookup(False)
        if not self.observing():
            return
        if nearest is not None and (self.mode == "shadow" or self._probe_worthy(nearest[1])):
            entry, similarity, threshold = nearest
            observation = Observation(entry.id, scope, entry.response, similarity, threshold, False)
            self.awaiting.put(scope, key, observation)
        elif self.mode == "shadow":
            self.awaiting.put(scope, key, Observation("", scope, None, 0.0, None, False))

    def _probe_worthy(self, similarity: float) -> bool:
        """A miss is worth judging when its nearest entry is within the learner's range."""
        return self.budget is not None and similarity >= self.budget.min_threshold

    def take(self, scope: str, key: str) -> Observation | None:
        """The observation waiting for this query's real answer, if any."""
        return self.awaiting.pop(scope, key)

    # ----------------------------------------------------------------- judging
    def judged(self, query: str, observation: Observation, fresh: Any) -> bool | None:
        """The judge's verdict on the observed answer, ``None`` if there is none or it failed."""
        if not observation.entry_id:
            return None
        try:
            verdict = judge_now(self.judge, query, observation.response, fresh)
        except Exception as exc:  # noqa: BLE001 - a judge must never fail the app's write
            self._judge_failed(exc)
            return None
        self._judge_incidents.success()
        return verdict

    async def ajudged(self, query: str, observation: Observation, fresh: Any) -> bool | None:
        """Async :meth:`judged`."""
        if not observation.entry_id:
            return None
        try:
            verdict = await ajudge(self.judge, query, observation.response, fresh)
        except Exception as exc:  # noqa: BLE001 - a judge must never fail the app's write
            self._judge_failed(exc)
            return None
        self._judge_incidents.success()
        return verdict

    def _judge_failed(self, exc: BaseException) -> None:
        self._stats.add("judge_errors")
        self.shadow.judge_error()
        self._judge_incidents.failure(exc)

    # ----------------------------------------------------------------- outcomes
    def settle(self, observation: Observation, correct: bool | None, new_entry_id: str) -> bool:
        """Record a judged observation; returns whether the observed entry needs a floor
        (then the cache applies :meth:`revised` with ``correct=False`` to it)."""
        if self.mode == "shadow":
            self.shadow.answered(observation, correct)
        if correct is None:
            return False
        self.learn(observation.similarity, correct, observation.exact)
        return (
            self.budget is not None
            and not correct
            and not observation.exact
            and observation.entry_id != new_entry_id
        )

    def learn(self, similarity: float, correct: bool, exact: bool) -> None:
        """Feed a verified outcome to the error budget. Exact repeats are not evidence about
        similarity (they are always served); a wrong one means the answer itself is bad."""
        if self.budget is not None and not exact:
            self.budget.record(similarity, correct)

    def revised(
        self, entry: CacheEntry, similarity: float, correct: bool, exact: bool
    ) -> CacheEntry | None:
        """The entry with one more outcome recorded, or ``None`` if it should be deleted
        (a wrong answer without an error budget, a wrong exact repeat, or a floor above 1)."""
        evidence = EntryEvidence.from_metadata(entry.metadata).add(similarity, correct)
        floor = evidence.floor
        if not correct and (self.budget is None or exact or (floor is not None and floor > 1.0)):
            return None
        metadata = {**entry.metadata, EVIDENCE_KEY: evidence.to_json()}
        threshold = entry.threshold
        if self.budget is not None and floor is not None:
            threshold = floor if threshold is None else max(threshold, floor)
        return replace(entry, metadata=metadata, threshold=threshold)

    # ---------------------------------------------------------------- decisions
    def decision(
        self, entry: CacheEntry, similarity: float, threshold: float | None, exact: bool
    ) -> dict[str, Any]:
        """Why this hit was served, for the app's logs."""
        evidence = EntryEvidence.from_metadata(entry.metadata)
        decision: dict[str, Any] = {
            "similarity": similarity,
            "threshold": threshold,
            "exact": exact,
            "mode": "fixed" if self.budget is None else "error_budget",
            "entry_threshold": entry.threshold,
            "evidence": {"correct": evidence.correct, "wrong": evidence.wrong},
        }
        if self.budget is not None:
            decision["max_error_rate"] = self.budget.max_error_rate
            decision["cache_threshold"] = self.budget.certificate().as_dict()
        return decision

    def reset(self) -> None:
        """Forget waiting observations and the shadow tally (the budget keeps its outcomes)."""
        self.awaiting.clear()
        self.shadow.reset()
