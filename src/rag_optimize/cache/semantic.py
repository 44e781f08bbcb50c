"""SemanticCache: answer a query from a stored answer to a query of the same meaning.

A lookup first tries the exact path (the normalised query text as a hash key: no embedding),
then embeds the query and asks the store for the nearest entries of the same scope; the best
one whose cosine similarity reaches the decision threshold, and that the verifier does not
veto, is a hit. The default verifier (:class:`~rag_optimize.cache.MismatchVerifier`)
vetoes a stored query that differs from the new one in a number, a negation or the question
word, the near-misses an embedding scores as paraphrases.

Choosing ``threshold``: it is the minimum cosine similarity for a hit. Higher means fewer
wrong answers and fewer hits; lower means more hits and more answers to questions that were
only similar. 0.9 is the default. For the packaged all-MiniLM-L6-v2 on MRPC (held-out
half) 0.9 serves about 10% wrong answers and a 98% precision target calibrates to 0.976;
near-miss questions ("when did ..." / "where did ...") reach 0.99 (see BENCHMARKS.md,
``cache_quality``). Use ``calibrate_threshold`` on pairs from your own traffic, or let the
error budget learn it.

Knowing when it is wrong: with ``max_error_rate=0.02`` instead of a fixed number, the cache
learns its threshold from verified outcomes (:meth:`SemanticCache.feedback`, shadow
comparisons, and probes: on a miss, the nearest stored answer is compared with the model's
real answer by the judge when the app stores it), and each entry that served a wrong answer
gets its own higher threshold. See :mod:`rag_optimize.cache.decision.error_budget` for the algorithm
and exactly what it guarantees, and :mod:`rag_optimize.cache.decision.learning` for how outcomes are
gathered (this module is the lookup/write flow and the store I/O). ``mode="shadow"`` looks
up without serving and reports what it would have done (:meth:`SemanticCache.shadow_report`).
``require_scope=True`` makes a call with no scope fail closed. ``tracker=`` times each lookup
as the ``"cache"`` stage of the current run (:mod:`rag_optimize.tracing`).

Failure policy: the cache never fails the user's request because of itself. An embedder that
raises or a store that is down turns the lookup into a miss and the write into a no-op, each
counted in :attr:`SemanticCache.stats` and logged once per incident. Input that is wrong
(empty query, wrong types, a model that returns NaN, zero or wrong-dimension vectors) raises
a clear ``ValueError``/``TypeError``: that is a bug to fix, not an outage to ride out.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Literal, TypeVar

from rag_optimize.cache.decision.error_budget import EVIDENCE_KEY, ErrorBudget
from rag_optimize.cache.decision.judges import EmbeddingJudge, Judge, check_judge
from rag_optimize.cache.decision.learning import Mode, Nearest, OutcomeLearner
from rag_optimize.cache.decision.shadow import Observation, ShadowReport
from rag_optimize.cache.decision.verifiers import (
    MismatchVerifier,
    Verifier,
    check_verifier,
    verifier_name,
)
from rag_optimize.cache.entry import CacheEntry, CacheHit, Candidate
from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.keys import check_query, check_scope, digest, normalise_query
from rag_optimize.cache.memory import InMemoryStore
from rag_optimize.cache.scopes import current_scope
from rag_optimize.cache.stats import CacheStats, StatsCounter
from rag_optimize.cache.store import Store
from rag_optimize.cache.vector_table import IndexKind
from rag_optimize.embedding.protocol import Embedder, aembed_query, check_embedder
from rag_optimize.embedding.vectors import FloatVector, unit_vector
from rag_optimize.errors import ConfigurationError, InvalidInputError, StoreError
from rag_optimize.tracing.stages import CACHE
from rag_optimize.tracing.tracker import LatencyTracker, optional_span

logger = logging.getLogger("rag_optimize.cache")

T = TypeVar("T")

DEFAULT_THRESHOLD = 0.9
DEFAULT_VERIFIER = MismatchVerifier()
_PENDING_VECTORS = 1024
FeedbackAction = Literal["updated", "deleted", "missing"]


class SemanticCache:
    """A semantic cache over any embedder and any :class:`~rag_optimize.cache.store.Store`.

    Args:
        embedder: anything with ``embed_query``/``embed_documents`` (LangChain shape);
            ``aembed_query`` is used by the async methods when present.
        threshold: minimum cosine similarity for a hit, in (0, 1]. With ``max_error_rate``
            it is the starting threshold, used until outcomes certify another one (set it to
            the calibrated value for your model, see ``calibrate_threshold``).
        ttl_seconds: default lifetime of an entry; ``None`` keeps entries until evicted.
        max_entries: capacity of the default in-process store (LRU eviction past it).
        store: where entries live; default :class:`InMemoryStore`. Use ``RedisStore`` to
            share one cache between processes.
        index: search method of the default store's per-scope tables: ``"auto"`` (exact scan
            while small, sign-bit codes with exact rescoring from 4,096 entries in a scope),
            or ``"exact"``, ``"binary"``, ``"int8"``, ``"hnsw"`` (``"ann"``) to force one.
        candidates: how many nearest entries a lookup considers; more only matters when
            entries carry their own thresholds.
        clock: wall-clock seconds; injected in tests. Entries store absolute times, so all
            processes sharing a store must use the same clock (the default ``time.time``).
        max_error_rate: turn on the error budget: the fraction of served answers allowed to be
            wrong (e.g. ``0.02``). The threshold is then learned from verified outcomes and
            entries that served a wrong answer get their own higher threshold.
        confidence: confidence of the error-budget certificate (default 0.95).
        min_threshold: the error budget never lowers the threshold below this.
        learn_from_misses: with an error budget, compare the nearest stored answer of a miss
            with the answer the app then stores (by ``judge``): an outcome without serving
            anything. Costs one store fetch per miss with a neighbour of similarity
            >= ``min_threshold`` and one judge call per following ``set`` (the default
            judge embeds both answers). Turn it off to learn from ``feedback`` only.
        mode: ``"live"`` serves hits; ``"shadow"`` never serves, records what it would have
            served and judges it against the model's real answer (:meth:`shadow_report`).
        judge: ``judge(query, cached_answer, fresh_answer) -> bool`` for shadow comparisons and
            probes; default :class:`~rag_optimize.cache.EmbeddingJudge` on ``embedder``.
        require_scope: a lookup or write with no scope (neither passed nor set by
            ``cache_scope``; the shared default scope ``""`` counts as none) fails closed: the
            lookup misses and the write is dropped, both counted. For multi-tenant apps.
        tracker: a :class:`~rag_optimize.tracing.LatencyTracker`; ``get``/``aget`` then
            record the stage ``"cache"`` (in the current run, see ``tracker.run()``) with the
            attribute ``hit`` (True/False) for listeners and exporters.
        verifier: ``verifier(query, cached_query) -> bool``, asked before a candidate above
            the threshold is served; a veto moves on to the next candidate. The default
            :class:`~rag_optimize.cache.MismatchVerifier` vetoes queries that differ
            in a number, a negation or the question word ("when" vs "where"), which the
            embedding barely sees. ``None`` serves on similarity alone.
    """

    def __init__(
        self,
        embedder: Embedder,
        threshold: float = DEFAULT_THRESHOLD,
        ttl_seconds: float | None = None,
        max_entries: int | None = 10_000,
        *,
        store: Store | None = None,
        index: IndexKind = "auto",
        candidates: int = 4,
        clock: Callable[[], float] = time.time,
        max_error_rate: float | None = None,
        confidence: float = 0.95,
        min_threshold: float = 0.5,
        learn_from_misses: bool = True,
        mode: Mode = "live",
        judge: Judge | None = None,
        require_scope: bool = False,
        tracker: LatencyTracker | None = None,
        verifier: Verifier | None = DEFAULT_VERIFIER,
    ) -> None:
        self.embedder = check_embedder(embedder)
        self.verifier = check_verifier(verifier)
        self.threshold = _check_threshold(threshold)
        if ttl_seconds is not None and not (ttl_seconds > 0 and math.isfinite(ttl_seconds)):
            raise ConfigurationError(f"ttl_seconds must be > 0 or None, got {ttl_seconds}")
        if candidates < 1:
            raise ConfigurationError(f"candidates must be >= 1, got {candidates}")
        if mode not in ("live", "shadow"):
            raise ConfigurationError(f"mode must be 'live' or 'shadow', got {mode!r}")
        self.ttl_seconds = ttl_seconds
        self.candidates = candidates
        self.require_scope = bool(require_scope)
        self.tracker = tracker
        budget: ErrorBudget | None = None
        if max_error_rate is not None:
            budget = ErrorBudget(
                max_error_rate,
                start_threshold=self.threshold,
                confidence=confidence,
                min_threshold=min(min_threshold, self.threshold),
            )
        self.store: Store = store if store is not None else InMemoryStore(max_entries, index)
        self._clock = clock
        self._stats = StatsCounter()
        self.store.attach_stats(self._stats)
        self._learner = OutcomeLearner(
            budget=budget,
            judge=check_judge(judge) if judge is not None else EmbeddingJudge(embedder),
            mode=mode,
            learn_from_misses=bool(learn_from_misses),
            stats=self._stats,
        )
        self._embed_incidents = IncidentLog(logger, "embedding model")
        self._store_incidents = IncidentLog(logger, "cache store")
        self._verifier_incidents = IncidentLog(logger, "cache verifier")
        self._pending: OrderedDict[str, FloatVector] = OrderedDict()
        self._pending_lock = threading.Lock()

    # ------------------------------------------------------- learning settings
    @property
    def mode(self) -> Mode:
        """``"live"`` serves hits; ``"shadow"`` only observes (may be switched at any time)."""
        return self._learner.mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode not in ("live", "shadow"):
            raise ConfigurationError(f"mode must be 'live' or 'shadow', got {mode!r}")
        self._learner.mode = mode

    @property
    def judge(self) -> Judge:
        """Compares a stored answer with the model's real one (shadow mode and probes)."""
        return self._learner.judge

    @judge.setter
    def judge(self, judge: Judge) -> None:
        self._learner.judge = check_judge(judge)

    @property
    def learn_from_misses(self) -> bool:
        """Whether misses probe their nearest entry (with an error budget)."""
        return self._learner.learn_from_misses

    @learn_from_misses.setter
    def learn_from_misses(self, value: bool) -> None:
        self._learner.learn_from_misses = bool(value)

    # ------------------------------------------------------------------ lookups
    def get(self, query: str, scope: str | None = None) -> CacheHit | None:
        """The cached answer for ``query`` in ``scope``, or ``None`` on a miss (always
        ``None`` in shadow mode). Timed as the ``"cache"`` stage when a tracker is given."""
        outcome: dict[str, Any] = {}
        with optional_span(self.tracker, CACHE, attributes=outcome):
            hit = self._get(query, scope)
            outcome["hit"] = hit is not None
        return hit

    async def aget(self, query: str, scope: str | None = None) -> CacheHit | None:
        """Async :meth:`get`: never blocks the event loop on the model or the store."""
        outcome: dict[str, Any] = {}
        with optional_span(self.tracker, CACHE, attributes=outcome):
            hit = await self._aget(query, scope)
            outcome["hit"] = hit is not None
        return hit

    def _get(self, query: str, scope: str | None) -> CacheHit | None:
        query, key, scope_key, now = self._begin(query, scope)
        if self._refuse_lookup(scope):
            return None
        entry = self._guard(lambda: self.store.get_exact(scope_key, key, now), None)
        if entry is not None:
            return self._found(entry, 1.0, None, key, None, now, exact=True)
        vector = self._embed(query)
        if vector is None:
            self._miss()
            return None
        empty: list[Candidate] = []
        candidates = self._guard(
            partial(self.store.search, scope_key, vector, self.candidates, now), empty
        )
        nearest: Nearest | None = None
        for candidate, threshold, accepted in self._learner.ranked(candidates, self.threshold):
            if not accepted and nearest is not None:
                continue
            found = self._guard(partial(self.store.fetch, candidate.entry_id, now), None)
            if found is None or found.scope != scope_key or self._vetoed(query, found, accepted):
                continue
            if accepted:
                return self._found(found, candidate.similarity, threshold, key, vector, now)
            nearest = (found, candidate.similarity, threshold)
        self._not_found(key, scope_key, vector, nearest)
        return None

    async def _aget(self, query: str, scope: str | None) -> CacheHit | None:
        query, key, scope_key, now = self._begin(query, scope)
        if self._refuse_lookup(scope):
            return None
        entry = await self._aguard(lambda: self.store.aget_exact(scope_key, key, now), None)
        if entry is not None:
            return self._found(entry, 1.0, None, key, None, now, exact=True)
        vector = await self._aembed(query)
        if vector is None:
            self._miss()
            return None
        empty: list[Candidate] = []
        candidates = await self._aguard(
            partial(self.store.asearch, scope_key, vector, self.candidates, now), empty
        )
        nearest: Nearest | None = None
        for candidate, threshold, accepted in self._learner.ranked(candidates, self.threshold):
            if not accepted and nearest is not None:
                continue
            found = await self._aguard(partial(self.store.afetch, candidate.entry_id, now), None)
            if found is None or found.scope != scope_key or self._vetoed(query, found, accepted):
                continue
            if accepted:
                return self._found(found, candidate.similarity, threshold, key, vector, now)
            nearest = (found, candidate.similarity, threshold)
        self._not_found(key, scope_key, vector, nearest)
        return None

    # ------------------------------------------------------------------- writes
    def set(
        self,
        query: str,
        response: Any,
        scope: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> bool:
        """Store ``response`` for ``query`` in ``scope``; returns whether it was stored.

        ``response`` and ``metadata`` must be JSON-serialisable (so every store can hold
        them). A query just missed is not embedded again. A failing model or store drops
        the write (counted, logged) instead of raising. If the lookup of this query saw a
        stored answer (shadow mode, or a probe of the error budget), ``judge`` compares it
        with ``response`` and the outcome is learned from. Adapters put the answer's source
        document ids in ``metadata["source_ids"]`` and the index version in
        ``metadata["index_version"]`` for :meth:`invalidate`.
        """
        query, key, scope_key, now = self._begin(query, scope)
        _check_json(response, metadata)
        if self._refuse_write(scope):
            return False
        vector = self._take_pending(key)
        if vector is None:
            vector = self._embed(query)
        if vector is None:
            self._stats.add("dropped_writes")
            return False
        entry = self._entry(query, key, scope_key, vector, response, metadata, ttl_seconds, now)

        def put() -> bool:
            self.store.put(entry, now)
            return True

        stored = self._guard(put, False)
        self._count_write(stored)
        observation = self._learner.take(scope_key, key)
        if observation is not None:
            correct = self._learner.judged(query, observation, response)
            self._settle(observation, correct, entry.id, now)
        return stored

    async def aset(
        self,
        query: str,
        response: Any,
        scope: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> bool:
        """Async :meth:`set`."""
        query, key, scope_key, now = self._begin(query, scope)
        _check_json(response, metadata)
        if self._refuse_write(scope):
            return False
        vector = self._take_pending(key)
        if vector is None:
            vector = await self._aembed(query)
        if vector is None:
            self._stats.add("dropped_writes")
            return False
        entry = self._entry(query, key, scope_key, vector, response, metadata, ttl_seconds, now)

        async def put() -> bool:
            await self.store.aput(entry, now)
            return True

        stored = await self._aguard(put, False)
        self._count_write(stored)
        observation = self._learner.take(scope_key, key)
        if observation is not None:
            correct = await self._learner.ajudged(query, observation, response)
            await self._asettle(observation, correct, entry.id, now)
        return stored

    # ---------------------------------------------------------------- feedback
    def feedback(self, hit: CacheHit, correct: bool) -> FeedbackAction:
        """Tell the cache whether a hit it served was right.

        With an error budget the outcome is learned from (cache threshold) and recorded on
        the entry; a wrong answer raises the entry's own threshold above this similarity, so
        it will not be served again this far away. Without one (fixed threshold) a wrong
        answer deletes the entry (a tombstone: the next lookup misses and the model's answer
        replaces it). A wrong exact-match hit always deletes (the answer itself is bad).
        Returns ``"updated"``, ``"deleted"`` or ``"missing"`` (entry already gone).
        """
        _check_feedback(hit, correct)
        self._count_feedback(hit, correct)
        return self._apply_outcome(hit.entry_id, hit.similarity, correct, hit.exact, self._clock())

    async def afeedback(self, hit: CacheHit, correct: bool) -> FeedbackAction:
        """Async :meth:`feedback`."""
        _check_feedback(hit, correct)
        self._count_feedback(hit, correct)
        return await self._aapply_outcome(
            hit.entry_id, hit.similarity, correct, hit.exact, self._clock()
        )

    # ------------------------------------------------------------ invalidation
    def invalidate(
        self,
        scope: str | None = None,
        *,
        source_ids: Sequence[str] | None = None,
        index_version: str | Sequence[str] | None = None,
    ) -> int:
        """Drop entries; returns how many.

        ``invalidate(scope)``: every entry of ``scope`` (``None``: the active ``cache_scope``
        or the default scope). ``invalidate(source_ids=[...])``: every entry whose answer used
        one of these source documents (``metadata["source_ids"]``), in every scope unless
        ``scope`` is given. ``invalidate(index_version="v3")``: every entry stored with that
        ``metadata["index_version"]`` (a str or a list of versions), likewise.
        """
        selectors = _selectors(source_ids, index_version)
        if not selectors:
            scope_key = self._scope(scope)
            return int(self._guard(lambda: self.store.invalidate(scope_key), 0))
        target = None if scope is None else check_scope(scope)
        return sum(
            int(self._guard(partial(self.store.delete_where, target, field, values), 0))
            for field, values in selectors
        )

    async def ainvalidate(
        self,
        scope: str | None = None,
        *,
        source_ids: Sequence[str] | None = None,
        index_version: str | Sequence[str] | None = None,
    ) -> int:
        """Async :meth:`invalidate`."""
        selectors = _selectors(source_ids, index_version)
        if not selectors:
            scope_key = self._scope(scope)
            return int(await self._aguard(lambda: self.store.ainvalidate(scope_key), 0))
        target = None if scope is None else check_scope(scope)
        removed = 0
        for field, values in selectors:
            removed += int(
                await self._aguard(partial(self.store.adelete_where, target, field, values), 0)
            )
        return removed

    def clear(self) -> None:
        """Drop every entry of every scope and reset the counters (the error budget keeps
        what it learned: that is knowledge about the model and traffic, not about entries)."""
        self._guard(lambda: self.store.clear(), None)
        self._reset_local()

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await self._aguard(lambda: self.store.aclear(), None)
        self._reset_local()

    # ----------------------------------------------------------------- reports
    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters (hits, misses, exact_hits, evictions, ... hit_rate)."""
        return self._stats.snapshot(entries=int(self._guard(self.store.count, 0)))

    def shadow_report(self) -> ShadowReport:
        """What shadow mode saw: would-be hit rate and the judged precision of those hits."""
        return self._learner.shadow.report()

    @property
    def error_budget(self) -> ErrorBudget | None:
        """The threshold learner when ``max_error_rate`` was given (its :meth:`certificate`
        says which threshold is in force and why), else ``None``."""
        return self._learner.budget

    @property
    def current_threshold(self) -> float:
        """The cache-wide threshold in force now (entries may add their own floor)."""
        return self._learner.current_threshold(self.threshold)

    def __len__(self) -> int:
        return int(self._guard(self.store.count, 0))

    # ---------------------------------------------------------------- internals
    def _begin(self, query: str, scope: str | None) -> tuple[str, str, str, float]:
        query = check_query(query)
        return query, normalise_query(query), self._scope(scope), self._clock()

    def _scope(self, scope: str | None) -> str:
        """The explicit scope, else the one of the active ``cache_scope`` block."""
        return check_scope(scope if scope is not None else current_scope())

    def _unscoped(self, scope: str | None) -> bool:
        return self.require_scope and not (scope if scope is not None else current_scope())

    def _refuse_lookup(self, scope: str | None) -> bool:
        if not self._unscoped(scope):
            return False
        self._stats.add("unscoped_lookups")
        self._stats.add("misses")
        return True

    def _refuse_write(self, scope: str | None) -> bool:
        if not self._unscoped(scope):
            return False
        self._stats.add("unscoped_writes")
        self._stats.add("dropped_writes")
        return True

    def _found(
        self,
        entry: CacheEntry,
        similarity: float,
        threshold: float | None,
        key: str,
        vector: FloatVector | None,
        now: float,
        *,
        exact: bool = False,
    ) -> CacheHit | None:
        """A lookup found an answer: serve it, or in shadow mode record it and miss."""
        if self.mode == "shadow":
            self._learner.observe_would_hit(entry, similarity, threshold, key, exact)
            self._miss(key, vector)
            return None
        return self._hit(entry, similarity, now, exact=exact, threshold=threshold)

    def _not_found(
        self, key: str, scope: str, vector: FloatVector, nearest: Nearest | None
    ) -> None:
        self._learner.observe_miss(key, scope, nearest)
        self._miss(key, vector)

    def _vetoed(self, query: str, entry: CacheEntry, accepted: bool) -> bool:
        """Whether the verifier forbids serving ``entry`` for ``query`` (a veto of a candidate
        above its threshold is counted; a vetoed entry is not probed either). A verifier
        that raises vetoes: the lookup misses rather than fail or serve unchecked."""
        if self.verifier is None:
            return False
        try:
            allowed = bool(self.verifier(query, entry.query))
        except Exception as exc:  # noqa: BLE001 - a verifier must never fail the app's lookup
            self._stats.add("verifier_errors")
            self._verifier_incidents.failure(exc)
            return True
        self._verifier_incidents.success()
        if allowed:
            return False
        if accepted:
            self._stats.add("verifier_rejections")
        return True

    def _hit(
        self,
        entry: CacheEntry,
        similarity: float,
        now: float,
        *,
        exact: bool = False,
        threshold: float | None = None,
    ) -> CacheHit:
        self._stats.add("hits")
        if exact:
            self._stats.add("exact_hits")
        metadata = {k: v for k, v in entry.metadata.items() if k != EVIDENCE_KEY}
        decision = self._learner.decision(entry, similarity, threshold, exact)
        decision["verifier"] = None if exact else verifier_name(self.verifier)
        metadata["cache_decision"] = decision
        return CacheHit(
            response=entry.response,
            similarity=similarity,
            matched_query=entry.query,
            age_seconds=max(0.0, now - entry.created_at),
            metadata=metadata,
            entry_id=entry.id,
            scope=entry.scope,
            exact=exact,
        )

    def _count_feedback(self, hit: CacheHit, correct: bool) -> None:
        self._stats.add("feedback_correct" if correct else "feedback_wrong")
        self._learner.learn(hit.similarity, correct, hit.exact)

    def _settle(
        self, observation: Observation, correct: bool | None, new_entry_id: str, now: float
    ) -> None:
        """Learn a judged observation; a wrong probe gives the observed entry its floor."""
        if self._learner.settle(observation, correct, new_entry_id):
            self._apply_outcome(observation.entry_id, observation.similarity, False, False, now)

    async def _asettle(
        self, observation: Observation, correct: bool | None, new_entry_id: str, now: float
    ) -> None:
        if self._learner.settle(observation, correct, new_entry_id):
            await self._aapply_outcome(
                observation.entry_id, observation.similarity, False, False, now
            )

    def _apply_outcome(
        self, entry_id: str, similarity: float, correct: bool, exact: bool, now: float
    ) -> FeedbackAction:
        """Record an outcome on the stored entry: update its evidence and floor, or delete it
        (a tombstone) when :meth:`OutcomeLearner.revised` says so."""
        entry = self._guard(partial(self.store.fetch, entry_id, now), None)
        if entry is None:
            return "missing"
        revised = self._learner.revised(entry, similarity, correct, exact)
        if revised is None:
            removed = self._guard(lambda: self.store.delete([entry_id]), 0)
            self._stats.add("tombstones", int(removed))
            return "deleted"
        self._guard(partial(self.store.put, revised, now), None)
        return "updated"

    async def _aapply_outcome(
        self, entry_id: str, similarity: float, correct: bool, exact: bool, now: float
    ) -> FeedbackAction:
        entry = await self._aguard(partial(self.store.afetch, entry_id, now), None)
        if entry is None:
            return "missing"
        revised = self._learner.revised(entry, similarity, correct, exact)
        if revised is None:
            removed = await self._aguard(lambda: self.store.adelete([entry_id]), 0)
            self._stats.add("tombstones", int(removed))
            return "deleted"
        await self._aguard(partial(self.store.aput, revised, now), None)
        return "updated"

    def _reset_local(self) -> None:
        with self._pending_lock:
            self._pending.clear()
        self._learner.reset()
        self._stats.reset()

    def _miss(self, key: str | None = None, vector: FloatVector | None = None) -> None:
        """Count a miss; keep the query's vector so a following ``set`` does not re-embed."""
        self._stats.add("misses")
        if key is not None and vector is not None:
            with self._pending_lock:
                self._pending[key] = vector
                self._pending.move_to_end(key)
                while len(self._pending) > _PENDING_VECTORS:
                    self._pending.popitem(last=False)

    def _take_pending(self, key: str) -> FloatVector | None:
        with self._pending_lock:
            return self._pending.pop(key, None)

    def _entry(
        self,
        query: str,
        key: str,
        scope: str,
        vector: FloatVector,
        response: Any,
        metadata: dict[str, Any] | None,
        ttl_seconds: float | None,
        now: float,
    ) -> CacheEntry:
        ttl = ttl_seconds if ttl_seconds is not None else self.ttl_seconds
        if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
            raise ConfigurationError(f"ttl_seconds must be > 0, got {ttl}")
        return CacheEntry(
            id=digest(scope, key),
            scope=scope,
            query=query,
            query_key=key,
            vector=vector,
            response=response,
            metadata={k: v for k, v in (metadata or {}).items() if k != EVIDENCE_KEY},
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
        )

    def _count_write(self, stored: bool) -> None:
        self._stats.add("sets" if stored else "dropped_writes")

    def _dim(self) -> int | None:
        try:
            return self.store.dim
        except StoreError:
            return None

    def _embed(self, query: str) -> FloatVector | None:
        try:
            raw = self.embedder.embed_query(query)
        except Exception as exc:  # noqa: BLE001 - any model failure must fail open
            self._stats.add("embedder_errors")
            self._embed_incidents.failure(exc)
            return None
        self._embed_incidents.success()
        return unit_vector(raw, self._dim())

    async def _aembed(self, query: str) -> FloatVector | None:
        try:
            raw = await aembed_query(self.embedder, query)
        except Exception as exc:  # noqa: BLE001 - any model failure must fail open
            self._stats.add("embedder_errors")
            self._embed_incidents.failure(exc)
            return None
        self._embed_incidents.success()
        return unit_vector(raw, self._dim())

    def _guard(self, call: Callable[[], T], default: T) -> T:
        try:
            result = call()
        except StoreError as exc:
            self._stats.add("store_errors")
            self._store_incidents.failure(exc)
            return default
        self._store_incidents.success()
        return result

    async def _aguard(self, call: Callable[[], Awaitable[T]], default: T) -> T:
        try:
            result = await call()
        except StoreError as exc:
            self._stats.add("store_errors")
            self._store_incidents.failure(exc)
            return default
        self._store_incidents.success()
        return result


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not (0.0 < threshold <= 1.0):
        raise ConfigurationError(f"threshold must be in (0, 1], got {threshold}")
    return float(threshold)


def _check_json(response: Any, metadata: dict[str, Any] | None) -> None:
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        json.dumps(response)
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"response and metadata must be JSON-serialisable (so any store can hold them): {exc}"
        ) from exc


def _check_feedback(hit: object, correct: object) -> None:
    if not isinstance(hit, CacheHit):
        raise TypeError(f"feedback needs the CacheHit a lookup returned, got {type(hit).__name__}")
    if not isinstance(correct, bool):
        raise TypeError(f"correct must be a bool, got {type(correct).__name__}")
    if not hit.entry_id:
        raise InvalidInputError("this CacheHit has no entry_id; it did not come from a lookup")


def _selectors(
    source_ids: Sequence[str] | None, index_version: str | Sequence[str] | None
) -> list[tuple[str, list[str]]]:
    """The ``(metadata key, values)`` pairs an invalidation deletes by."""
    out = []
    if source_ids is not None:
        out.append(("source_ids", _str_list(source_ids, "source_ids")))
    if index_version is not None:
        versions = [index_version] if isinstance(index_version, str) else index_version
        out.append(("index_version", _str_list(versions, "index_version")))
    return out


def _str_list(values: object, name: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence | set | frozenset):
        raise TypeError(f"{name} must be a list of str, got {type(values).__name__}")
    items = list(values)
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidInputError(f"{name} must hold non-empty str ids, got {item!r}")
    if not items:
        raise InvalidInputError(f"{name} is empty: nothing to invalidate")
    return items
