"""SemanticCache: answer a query from a stored answer to a query of the same meaning.

A lookup first tries the exact path (the normalised query text as a hash key: no embedding),
then embeds the query and asks the store for the nearest entries of the same scope; the best
one whose cosine similarity reaches the decision threshold, and that the verifier does not
veto, is a hit. The default verifier is the decision pipeline
(:func:`~rag_optimize.cache.decision.pipeline.default_pipeline`, stage 2): it vetoes a stored
query that differs from the new one in a number, a negation, the question's intent, an
opposite word, a date, a unit, or a content word with no counterpart: the near-misses an
embedding scores as paraphrases.

Choosing ``threshold``: it is the minimum cosine similarity for a hit. Higher means fewer
wrong answers and fewer hits; lower means more hits and more answers to questions that were
only similar. The default is the verifier's own candidate threshold when it proposes one
(the default :class:`~rag_optimize.cache.DecisionPipeline` with token alignment: 0.8, its
signals doing the rest), else 0.9 (:data:`DEFAULT_THRESHOLD`). For the packaged
all-MiniLM-L6-v2 on MRPC (held-out half) similarity alone at 0.9 serves about 10% wrong
answers and a 98% precision target calibrates to 0.976; near-miss questions ("when did ..."
/ "where did ...") reach 0.99 (see BENCHMARKS.md, ``cache_quality``). Use
``calibrate_threshold`` on pairs from your own traffic, or let the error budget learn it.

Knowing when it is wrong: with ``error_budget=ErrorBudgetSettings(max_error_rate=0.02)``
(or the older ``max_error_rate=0.02`` keyword) instead of a fixed number, the cache
learns its threshold from verified outcomes (:meth:`SemanticCache.feedback`, shadow
comparisons, and probes: on a miss, the nearest stored answer is compared with the model's
real answer by the judge when the app stores it), and each entry that served a wrong answer
gets its own higher threshold. See :mod:`rag_optimize.cache.decision.error_budget` for the algorithm
and exactly what it guarantees, and :mod:`rag_optimize.cache.decision.learning` for how outcomes are
gathered (this module is the lookup/write flow and the store I/O). ``mode="shadow"`` looks
up without serving and reports what it would have done (:meth:`SemanticCache.shadow_report`).
``require_scope=True`` makes a call with no scope fail closed. ``tracker=`` times each lookup
as the ``"cache"`` stage of the current run (:mod:`rag_optimize.tracing`).

Keys: a lookup matches on the query (by meaning, or exactly), the ``scope`` (tenant, user)
and the *exact part* ``exact=`` (model identity, system prompt, tools, other inputs: a str,
or a sequence/mapping hashed canonically, see :func:`~rag_optimize.cache.keys.exact_digest`).
Entries with different exact parts never answer each other; ``invalidate(scope)`` drops a
scope with all its exact parts. Adapters pass their framework's exact part here instead of
folding it into the scope.

One flow for sync and async: every operation is a plan (:mod:`rag_optimize.cache.flow`)
written once and run by a blocking and an awaiting driver.

Failure policy: the cache never fails the user's request because of itself. An embedder that
raises or a store that is down turns the lookup into a miss and the write into a no-op, each
counted in :attr:`SemanticCache.stats` and logged once per incident. Input that is wrong
(empty query, wrong types, a model that returns NaN, zero or wrong-dimension vectors) raises
a clear error from :mod:`rag_optimize.errors` (``InvalidInputError`` and its subclasses, still
``ValueError``/``TypeError``): that is a bug to fix, not an outage to ride out.

The constructor does no I/O and starts no thread (the default store is in-process; a
``RedisStore`` is created by the app and owns its connections).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from rag_optimize.cache.decision.error_budget import EVIDENCE_KEY, ErrorBudget
from rag_optimize.cache.decision.judges import EmbeddingJudge, Judge, check_judge
from rag_optimize.cache.decision.learning import Mode, Nearest, OutcomeLearner
from rag_optimize.cache.decision.pipeline import default_pipeline
from rag_optimize.cache.decision.shadow import Observation, ShadowReport
from rag_optimize.cache.decision.verifiers import (
    Verifier,
    check_verifier,
    verifier_name,
)
from rag_optimize.cache.decision.words import offer_words, stored_words, uses_word_vectors
from rag_optimize.cache.entry import CacheEntry, CacheHit
from rag_optimize.cache.flow import (
    Embed,
    EmbedMany,
    Faults,
    Fetch,
    GetExact,
    Lookup,
    Plan,
    Put,
    PutMany,
    Search,
    StoreCall,
    arun,
    run,
)
from rag_optimize.cache.flow import Judge as JudgeOp
from rag_optimize.cache.incidents import IncidentLog
from rag_optimize.cache.keys import (
    ExactPart,
    check_query,
    check_scope,
    digest,
    entry_id,
    exact_digest,
    normalise_query,
)
from rag_optimize.cache.memory import InMemoryStore
from rag_optimize.cache.scopes import current_scope
from rag_optimize.cache.stats import CacheStats, StatsCounter
from rag_optimize.cache.store import Store
from rag_optimize.cache.vector_table import IndexKind
from rag_optimize.embedding.protocol import Embedder, check_embedder
from rag_optimize.embedding.vectors import FloatVector, unit_matrix, unit_vector
from rag_optimize.errors import (
    ConfigurationError,
    EmbeddingError,
    InvalidInputError,
    InvalidTypeError,
    StoreError,
)
from rag_optimize.tracing.stages import CACHE
from rag_optimize.tracing.tracker import LatencyTracker

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_VERIFIER",
    "ErrorBudgetSettings",
    "FeedbackAction",
    "SemanticCache",
    "SemanticCacheOptions",
]

logger = logging.getLogger("rag_optimize.cache")

DEFAULT_THRESHOLD = 0.9
"""The similarity threshold when the verifier proposes none (``verifier=None``, a rule-only
pipeline, a custom callable)."""


def _candidate_threshold(verifier: object) -> float:
    """The stage-1 threshold ``verifier`` was measured with (its ``candidate_threshold``),
    else :data:`DEFAULT_THRESHOLD`."""
    proposed = getattr(verifier, "candidate_threshold", None)
    return DEFAULT_THRESHOLD if proposed is None else float(proposed)
DEFAULT_VERIFIER = default_pipeline()
_PENDING_VECTORS = 1024
_FAILED = object()  # a store write's result when the store failed
FeedbackAction = Literal["updated", "deleted", "missing"]
Item = tuple[str, Any] | tuple[str, Any, dict[str, Any] | None]


@dataclass(frozen=True)
class ErrorBudgetSettings:
    """The error budget of a :class:`SemanticCache`, as one value (``error_budget=``).

    Args:
        max_error_rate: the fraction of served answers allowed to be wrong (e.g. ``0.02``).
            The threshold is then learned from verified outcomes and entries that served a
            wrong answer get their own higher threshold.
        confidence: confidence of the error-budget certificate.
        min_threshold: the error budget never lowers the threshold below this.
        learn_from_misses: compare the nearest stored answer of a miss with the answer the
            app then stores (by the cache's ``judge``): an outcome without serving anything.
            Costs one store fetch per miss with a neighbour of similarity >=
            ``min_threshold`` and one judge call per following ``set`` (the default judge
            embeds both answers). Turn it off to learn from ``feedback`` only.
    """

    max_error_rate: float
    confidence: float = 0.95
    min_threshold: float = 0.5
    learn_from_misses: bool = True


class SemanticCacheOptions(TypedDict, total=False):
    """The options of :class:`SemanticCache` (each described there) besides the embedder
    and ``ttl_seconds``, as one type: adapters that build a cache from an embedding model
    (e.g. ``CachedQueryEngine(engine, embed_model, threshold=0.95)``) take exactly these and
    refuse any other with :class:`~rag_optimize.errors.UnknownOptionError`. ``ttl_seconds``
    is left out because every adapter has its own (the lifetime of the entries it writes)."""

    threshold: float
    max_entries: int | None
    store: Store | None
    index: IndexKind
    candidates: int
    clock: Callable[[], float]
    error_budget: ErrorBudgetSettings | None
    max_error_rate: float | None
    confidence: float | None
    min_threshold: float | None
    learn_from_misses: bool | None
    mode: Mode
    judge: Judge | None
    require_scope: bool
    tracker: LatencyTracker | None
    verifier: Verifier | Sequence[Verifier] | None


@dataclass(slots=True)
class _Key:
    """A call's key, checked: the query, its normalised form, scope, partition, clock."""

    query: str
    key: str
    scope: str
    partition: str
    now: float

    @property
    def slot(self) -> str:
        """Where an observation of this lookup waits for the app's answer (scope is kept
        apart by the learner; the partition is folded in here)."""
        return self.key if not self.partition else digest(self.partition, self.key)


class SemanticCache:
    """A semantic cache over any embedder and any :class:`~rag_optimize.cache.store.Store`.

    Args:
        embedder: anything with ``embed_query``/``embed_documents`` (LangChain shape);
            ``aembed_query``/``aembed_documents`` are used by the async methods when present.
        threshold: minimum cosine similarity for a hit, in (0, 1]. With an error budget it
            is the starting threshold, used until outcomes certify another one (set it to
            the calibrated value for your model, see ``calibrate_threshold``). ``None``
            (default): the verifier's ``candidate_threshold`` if it has one (the default
            pipeline: 0.8), else :data:`DEFAULT_THRESHOLD` (0.9).
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
        error_budget: turn on the error budget (:class:`ErrorBudgetSettings`: the allowed
            error rate, the certificate's confidence, the lowest threshold, probes of
            misses). The older separate keywords ``max_error_rate``, ``confidence``,
            ``min_threshold`` and ``learn_from_misses`` are still accepted and mean the
            same; passing both forms is an error.
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
            the threshold is served; a veto moves on to the next candidate. A list of
            verifiers asks each in turn (the first veto wins). The default
            :class:`~rag_optimize.cache.DecisionPipeline` vetoes queries that differ in a
            number, a negation, the question's intent ("when" vs "where"; "what time" and
            "when" are one intent), an opposite, the order of a relation's two sides, a date,
            a unit or a content word, which the embedding barely sees. ``None`` serves on
            similarity alone. A verifier with a method ``explain(query, cached_query)``
            returning a mapping has it recorded in
            ``hit.metadata["cache_decision"]["verifier_detail"]``.
    """

    def __init__(
        self,
        embedder: Embedder,
        threshold: float | None = None,
        ttl_seconds: float | None = None,
        max_entries: int | None = 10_000,
        *,
        store: Store | None = None,
        index: IndexKind = "auto",
        candidates: int = 4,
        clock: Callable[[], float] = time.time,
        error_budget: ErrorBudgetSettings | None = None,
        max_error_rate: float | None = None,
        confidence: float | None = None,
        min_threshold: float | None = None,
        learn_from_misses: bool | None = None,
        mode: Mode = "live",
        judge: Judge | None = None,
        require_scope: bool = False,
        tracker: LatencyTracker | None = None,
        verifier: Verifier | Sequence[Verifier] | None = DEFAULT_VERIFIER,
    ) -> None:
        self.embedder = check_embedder(embedder)
        self.verifier = check_verifier(verifier)
        self.threshold = _check_threshold(
            threshold if threshold is not None else _candidate_threshold(self.verifier)
        )
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
        settings = _budget_settings(
            error_budget, max_error_rate, confidence, min_threshold, learn_from_misses
        )
        budget: ErrorBudget | None = None
        if settings is not None:
            budget = ErrorBudget(
                settings.max_error_rate,
                start_threshold=self.threshold,
                confidence=settings.confidence,
                min_threshold=min(settings.min_threshold, self.threshold),
            )
        self.store: Store = store if store is not None else InMemoryStore(max_entries, index)
        self._clock = clock
        self._stats = StatsCounter()
        self._faults = Faults(self._stats)
        self._learner = OutcomeLearner(
            budget=budget,
            judge=check_judge(judge) if judge is not None else EmbeddingJudge(embedder),
            mode=mode,
            learn_from_misses=True if settings is None else bool(settings.learn_from_misses),
            stats=self._stats,
        )
        if settings is None and learn_from_misses is not None:
            self._learner.learn_from_misses = bool(learn_from_misses)
        self._verifier_incidents = IncidentLog(logger, "cache verifier")
        self._pending: OrderedDict[str, FloatVector] = OrderedDict()
        self._pending_lock = threading.Lock()

    # ------------------------------------------------------- learning settings
    @property
    def learner(self) -> OutcomeLearner:
        """The learning side (thresholds in force, observations, judging, outcomes)."""
        return self._learner

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
    def get(
        self, query: str, scope: str | None = None, *, exact: ExactPart = None
    ) -> CacheHit | None:
        """The cached answer for ``query`` in ``scope`` with the same exact part ``exact``,
        or ``None`` on a miss (always ``None`` in shadow mode). Timed as the ``"cache"``
        stage when a tracker is given."""
        plan = self._lookup(query, scope, exact)
        if self.tracker is None:  # the hot path: no span to open
            return run(plan, self, self._faults)
        outcome: dict[str, Any] = {}
        with self.tracker.span(CACHE, attributes=outcome):
            hit = run(plan, self, self._faults)
            outcome["hit"] = hit is not None
        return hit

    async def aget(
        self, query: str, scope: str | None = None, *, exact: ExactPart = None
    ) -> CacheHit | None:
        """Async :meth:`get`: never blocks the event loop on the model or the store."""
        plan = self._lookup(query, scope, exact)
        if self.tracker is None:
            return await arun(plan, self, self._faults)
        outcome: dict[str, Any] = {}
        with self.tracker.span(CACHE, attributes=outcome):
            hit = await arun(plan, self, self._faults)
            outcome["hit"] = hit is not None
        return hit

    def _lookup(self, query: str, scope: str | None, exact: ExactPart) -> Plan[CacheHit | None]:
        """The lookup flow: exact path, then embed, search, fetch and decide."""
        k = self._begin(query, scope, exact)
        if self.require_scope and self._refuse_lookup(scope):
            return None
        one_call = getattr(self.store, "lookup_in_one_call", None)
        if one_call is not None and one_call(k.scope, k.key, k.partition):
            # the store checks the exact key and searches in one call (one round trip on a
            # remote store), so the query is embedded first; a failing model still leaves
            # the exact path
            raw = yield Embed(k.query)
            if raw is None:
                entry = yield GetExact(k.scope, k.key, k.now, k.partition)
                if entry is not None:
                    return self._found(entry, 1.0, None, k, None, exact=True)
                self._miss()
                return None
            vector = unit_vector(raw, self._dim())
            entry, candidates = yield Lookup(
                k.scope, k.key, vector, self.candidates, k.now, k.partition
            )
            if entry is not None:
                return self._found(entry, 1.0, None, k, None, exact=True)
        else:
            entry = yield GetExact(k.scope, k.key, k.now, k.partition)
            if entry is not None:
                return self._found(entry, 1.0, None, k, None, exact=True)
            raw = yield Embed(k.query)
            if raw is None:
                self._miss()
                return None
            vector = unit_vector(raw, self._dim())
            candidates = yield Search(k.scope, vector, self.candidates, k.now, k.partition)
        nearest: Nearest | None = None
        for candidate, threshold, accepted in self._learner.ranked(candidates, self.threshold):
            if not accepted and nearest is not None:
                continue
            found = yield Fetch(candidate.entry_id, k.now)
            if found is None or not _same_key(found, k) or self._vetoed(k.query, found, accepted):
                continue
            if accepted:
                return self._found(found, candidate.similarity, threshold, k, vector)
            nearest = (found, candidate.similarity, threshold)
        self._not_found(k, vector, nearest)
        return None

    # ------------------------------------------------------------------- writes
    def set(
        self,
        query: str,
        response: Any,
        scope: str | None = None,
        *,
        exact: ExactPart = None,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> bool:
        """Store ``response`` for ``query`` in ``scope`` under the exact part ``exact``;
        returns whether it was stored.

        ``response`` and ``metadata`` must be JSON-serialisable (so every store can hold
        them). A query just missed is not embedded again. A failing model or store drops
        the write (counted, logged) instead of raising. If the lookup of this query saw a
        stored answer (shadow mode, or a probe of the error budget), ``judge`` compares it
        with ``response`` and the outcome is learned from. Adapters put the answer's source
        document ids in ``metadata["source_ids"]`` and the index version in
        ``metadata["index_version"]`` for :meth:`invalidate`.
        """
        plan = self._write_one(query, response, scope, exact, metadata, ttl_seconds)
        return run(plan, self, self._faults) == 1

    async def aset(
        self,
        query: str,
        response: Any,
        scope: str | None = None,
        *,
        exact: ExactPart = None,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> bool:
        """Async :meth:`set`."""
        plan = self._write_one(query, response, scope, exact, metadata, ttl_seconds)
        return await arun(plan, self, self._faults) == 1

    def set_many(
        self,
        items: Iterable[Item],
        scope: str | None = None,
        *,
        exact: ExactPart = None,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> int:
        """Store many answers at once; returns how many were stored.

        ``items`` are ``(query, response)`` or ``(query, response, metadata)`` pairs
        (``metadata=`` applies to pairs without their own), all in ``scope`` under ``exact``.
        The queries not just missed are embedded in one ``embed_documents`` batch and the
        entries written with one ``Store.put_many``: the way to warm a cache. The same
        checks and failure policy as :meth:`set` (a failing model or store drops the whole
        batch, counted per item).
        """
        plan = self._write_many(_items(items, metadata), scope, exact, ttl_seconds)
        return run(plan, self, self._faults)

    async def aset_many(
        self,
        items: Iterable[Item],
        scope: str | None = None,
        *,
        exact: ExactPart = None,
        metadata: dict[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> int:
        """Async :meth:`set_many` (``aembed_documents`` when the model has it)."""
        plan = self._write_many(_items(items, metadata), scope, exact, ttl_seconds)
        return await arun(plan, self, self._faults)

    def _write_one(
        self,
        query: str,
        response: Any,
        scope: str | None,
        exact: ExactPart,
        metadata: dict[str, Any] | None,
        ttl_seconds: float | None,
    ) -> Plan[int]:
        """The write flow of one answer (``set``): check, embed unless the query's vector is
        pending, put, then learn from the answer if an observation waited for it."""
        k = self._begin(query, scope, exact)
        _check_json(response, metadata)
        if self.require_scope and self._refuse_write(scope):
            return 0
        vector = self._take_pending(k.key)
        if vector is None:
            raw = yield Embed(k.query)
            if raw is None:
                self._stats.add("dropped_writes")
                return 0
            vector = unit_vector(raw, self._dim())
        ttl = self._ttl(ttl_seconds)
        entry = self._entry(k, vector, response, metadata, ttl, self._keeps_words())
        stored = (yield Put(entry, k.now, default=_FAILED)) is not _FAILED
        self._stats.add("sets" if stored else "dropped_writes")
        observation = self._learner.take(k.scope, k.slot)
        if observation is not None:  # a lookup of this query waits for its answer
            yield from self._learn_from_answer(k, observation, entry.id, response)
        return 1 if stored else 0

    def _write_many(
        self,
        items: list[tuple[str, Any, dict[str, Any] | None]],
        scope: str | None,
        exact: ExactPart,
        ttl_seconds: float | None,
    ) -> Plan[int]:
        """The bulk write flow (``set_many``): what :meth:`_write_one` does per answer, done
        once for the batch where it can be: one clock read, scope and exact part; one JSON
        check; one pass over the pending vectors; one embedding batch, checked and
        normalised as one matrix; one ``put_many``."""
        keys = self._begin_many([query for query, _, _ in items], scope, exact)
        _check_json_many(items)
        if self.require_scope and self._refuse_write(scope, len(items)):
            return 0
        vectors = self._take_pending_many(keys)
        todo = [n for n, vector in enumerate(vectors) if vector is None]
        if todo:
            embedded = yield EmbedMany([keys[n].query for n in todo])
            if embedded is None:
                self._stats.add("dropped_writes", len(items))
                return 0
            matrix = unit_matrix(embedded, self._dim())
            if matrix.shape[0] != len(todo):
                raise EmbeddingError(
                    f"the model returned {matrix.shape[0]} vectors for {len(todo)} texts"
                )
            for n, row in zip(todo, matrix, strict=True):
                vectors[n] = row
        ttl = self._ttl(ttl_seconds)
        words = self._keeps_words()
        entry = self._entry
        entries = [
            entry(k, vector, response, metadata, ttl, words)
            for k, vector, (_, response, metadata) in zip(keys, vectors, items, strict=True)
            if vector is not None
        ]
        stored = (yield PutMany(entries, keys[0].now, default=_FAILED)) is not _FAILED
        self._stats.add("sets" if stored else "dropped_writes", len(entries))
        take = self._learner.take
        for k, new, (_, response, _) in zip(keys, entries, items, strict=True):
            observation = take(k.scope, k.slot)
            if observation is not None:  # a lookup of this query waits for its answer
                yield from self._learn_from_answer(k, observation, new.id, response)
        return len(entries) if stored else 0

    def _learn_from_answer(
        self, k: _Key, observation: Observation, new_id: str, response: Any
    ) -> Plan[None]:
        """Judge the observation a lookup of this query left against ``response``; a wrong
        probe gives the observed entry its floor."""
        correct = yield JudgeOp(k.query, observation, response)
        if self._learner.settle(observation, correct, new_id):
            yield from self._outcome(
                observation.entry_id, observation.similarity, False, False, k.now
            )

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
        return run(self._feedback(hit, correct), self, self._faults)

    async def afeedback(self, hit: CacheHit, correct: bool) -> FeedbackAction:
        """Async :meth:`feedback`."""
        return await arun(self._feedback(hit, correct), self, self._faults)

    def _feedback(self, hit: CacheHit, correct: bool) -> Plan[FeedbackAction]:
        _check_feedback(hit, correct)
        self._stats.add("feedback_correct" if correct else "feedback_wrong")
        self._learner.learn(hit.similarity, correct, hit.exact)
        return (
            yield from self._outcome(
                hit.entry_id, hit.similarity, correct, hit.exact, self._clock()
            )
        )

    def _outcome(
        self, entry_id: str, similarity: float, correct: bool, exact: bool, now: float
    ) -> Plan[FeedbackAction]:
        """Record an outcome on the stored entry: update its evidence and floor, or delete it
        (a tombstone) when :meth:`OutcomeLearner.revised` says so."""
        entry = yield Fetch(entry_id, now)
        if entry is None:
            return "missing"
        revised = self._learner.revised(entry, similarity, correct, exact)
        if revised is None:
            removed = yield StoreCall("delete", [entry_id], default=0)
            self._stats.add("tombstones", int(removed))
            return "deleted"
        yield Put(revised, now)
        return "updated"

    # ------------------------------------------------------------ invalidation
    def invalidate(
        self,
        scope: str | None = None,
        *,
        source_ids: Sequence[str] | None = None,
        index_version: str | Sequence[str] | None = None,
    ) -> int:
        """Drop entries; returns how many (also counted in ``stats.invalidated``).

        ``invalidate(scope)``: every entry of ``scope``, whatever its exact part (``None``:
        the active ``cache_scope`` or the default scope). ``invalidate(source_ids=[...])``:
        every entry whose answer used one of these source documents
        (``metadata["source_ids"]``), in every scope unless ``scope`` is given.
        ``invalidate(index_version="v3")``: every entry stored with that
        ``metadata["index_version"]`` (a str or a list of versions), likewise.
        """
        return run(self._invalidate(scope, source_ids, index_version), self, self._faults)

    async def ainvalidate(
        self,
        scope: str | None = None,
        *,
        source_ids: Sequence[str] | None = None,
        index_version: str | Sequence[str] | None = None,
    ) -> int:
        """Async :meth:`invalidate` (the store's async twins: never blocks the loop)."""
        return await arun(self._invalidate(scope, source_ids, index_version), self, self._faults)

    def _invalidate(
        self,
        scope: str | None,
        source_ids: Sequence[str] | None,
        index_version: str | Sequence[str] | None,
    ) -> Plan[int]:
        selectors = _selectors(source_ids, index_version)
        removed = 0
        if not selectors:
            removed = int((yield StoreCall("invalidate", self._scope(scope), default=0)))
        target = None if scope is None else check_scope(scope)
        for field, values in selectors:
            removed += int((yield StoreCall("delete_where", target, field, values, default=0)))
        self._stats.add("invalidated", removed)
        return removed

    def clear(self) -> None:
        """Drop every entry of every scope and reset the counters (the error budget keeps
        what it learned: that is knowledge about the model and traffic, not about entries)."""
        run(self._clear(), self, self._faults)

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await arun(self._clear(), self, self._faults)

    def _clear(self) -> Plan[None]:
        yield StoreCall("clear")
        with self._pending_lock:
            self._pending.clear()
        self._learner.reset()
        self._drain_store_report()
        self._stats.reset()

    # ----------------------------------------------------------------- reports
    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters (hits, misses, exact_hits, evictions, ... hit_rate).

        Evictions, expirations and corrupt entries are those this cache's calls caused,
        plus what the store noticed on its own (background sweeps, loading) and handed to
        this cache (each such event is handed to one cache only)."""
        self._drain_store_report()
        return self._stats.snapshot(entries=self._count())

    def shadow_report(self) -> ShadowReport:
        """What shadow mode saw: would-be hit rate and the judged precision of those hits."""
        return self._learner.shadow.report()

    @property
    def error_budget(self) -> ErrorBudget | None:
        """The threshold learner when an error budget was given (its :meth:`certificate`
        says which threshold is in force and why), else ``None``."""
        return self._learner.budget

    @property
    def current_threshold(self) -> float:
        """The cache-wide threshold in force now (entries may add their own floor)."""
        return self._learner.current_threshold(self.threshold)

    def __len__(self) -> int:
        return self._count()

    # ---------------------------------------------------------------- internals
    def _count(self) -> int:
        """Entries in the store; 0 (counted, logged) while the store fails."""
        try:
            count = int(self.store.count())
        except StoreError as exc:
            self._faults.failure("store", "store_errors", exc)
            return 0
        self._faults.success("store")
        return count

    def _drain_store_report(self) -> None:
        """Take over what the store noticed on its own (see :meth:`Store.drain_report`)."""
        self._faults.count(self.store.drain_report())

    def _begin(self, query: str, scope: str | None, exact: ExactPart) -> _Key:
        key = normalise_query(query) if type(query) is str else ""
        if not key:  # not a plain str, or blank: check_query names the fault
            query = check_query(query)
            key = normalise_query(query)
        partition = "" if exact is None else exact_digest(exact)
        if type(scope) is not str:  # None (the active cache_scope) or a wrong type
            scope = self._scope(scope)
        return _Key(query, key, scope, partition, self._clock())

    def _begin_many(self, queries: list[str], scope: str | None, exact: ExactPart) -> list[_Key]:
        """:meth:`_begin` for a batch: the clock, scope and exact part once."""
        now = self._clock()
        partition = "" if exact is None else exact_digest(exact)
        if type(scope) is not str:
            scope = self._scope(scope)
        keys = []
        for query in queries:
            key = normalise_query(query) if type(query) is str else ""
            if not key:
                query = check_query(query)
                key = normalise_query(query)
            keys.append(_Key(query, key, scope, partition, now))
        return keys

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

    def _refuse_write(self, scope: str | None, count: int = 1) -> bool:
        if not self._unscoped(scope):
            return False
        self._stats.add("unscoped_writes", count)
        self._stats.add("dropped_writes", count)
        return True

    def _found(
        self,
        entry: CacheEntry,
        similarity: float,
        threshold: float | None,
        k: _Key,
        vector: FloatVector | None,
        *,
        exact: bool = False,
    ) -> CacheHit | None:
        """A lookup found an answer: serve it, or in shadow mode record it and miss."""
        if self._learner.mode == "shadow":
            self._learner.observe_would_hit(entry, similarity, threshold, k.slot, exact)
            self._miss(k.key, vector)
            return None
        return self._hit(entry, similarity, k, exact=exact, threshold=threshold)

    def _not_found(self, k: _Key, vector: FloatVector, nearest: Nearest | None) -> None:
        self._learner.observe_miss(k.slot, k.scope, nearest)
        self._miss(k.key, vector)

    def _vetoed(self, query: str, entry: CacheEntry, accepted: bool) -> bool:
        """Whether the verifier forbids serving ``entry`` for ``query`` (a veto of a candidate
        above its threshold is counted; a vetoed entry is not probed either). A verifier
        that raises vetoes: the lookup misses rather than fail or serve unchecked. This is
        the one place the verifier is asked."""
        if self.verifier is None:
            return False
        try:
            if entry.words is not None and uses_word_vectors(self.verifier):
                offer_words(entry.query, entry.words)  # no forward pass for a cold entry
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

    def _verifier_detail(self, query: str, cached_query: str) -> dict[str, Any] | None:
        """The verifier's own account of a served hit (``explain(query, cached_query)``, a
        mapping), or ``None`` if it has none or it failed (logged, never raised)."""
        explain = getattr(self.verifier, "explain", None)
        if not callable(explain):
            return None
        try:
            detail = explain(query, cached_query)
        except Exception as exc:  # noqa: BLE001 - an explanation must never fail a hit
            self._verifier_incidents.failure(exc)
            return None
        return dict(detail) if isinstance(detail, Mapping) else None

    def _hit(
        self,
        entry: CacheEntry,
        similarity: float,
        k: _Key,
        *,
        exact: bool = False,
        threshold: float | None = None,
    ) -> CacheHit:
        """Serve ``entry``: count it and record why (``metadata["cache_decision"]``)."""
        if exact:
            self._stats.add_each("hits", "exact_hits")
        else:
            self._stats.add("hits")
        metadata = dict(entry.metadata)
        metadata.pop(EVIDENCE_KEY, None)
        decision = self._learner.decision(entry, similarity, threshold, exact)
        decision["verifier"] = None if exact else verifier_name(self.verifier)
        if not exact and self.verifier is not None:
            detail = self._verifier_detail(k.query, entry.query)
            if detail is not None:
                decision["verifier_detail"] = detail
        metadata["cache_decision"] = decision
        return CacheHit(
            response=entry.response,
            similarity=similarity,
            matched_query=entry.query,
            age_seconds=max(0.0, k.now - entry.created_at),
            metadata=metadata,
            entry_id=entry.id,
            scope=entry.scope,
            exact=exact,
        )

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

    def _take_pending_many(self, keys: list[_Key]) -> list[FloatVector | None]:
        with self._pending_lock:
            if not self._pending:
                return [None] * len(keys)
            pop = self._pending.pop
            return [pop(k.key, None) for k in keys]

    def _keeps_words(self) -> bool:
        """Whether new entries keep their query's word vectors (the verifier aligns them)."""
        return self.verifier is not None and uses_word_vectors(self.verifier)

    def _ttl(self, ttl_seconds: float | None) -> float | None:
        """The lifetime of a new entry: ``ttl_seconds``, else the cache's default."""
        ttl = ttl_seconds if ttl_seconds is not None else self.ttl_seconds
        if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
            raise ConfigurationError(f"ttl_seconds must be > 0, got {ttl}")
        return ttl

    def _entry(
        self,
        k: _Key,
        vector: FloatVector,
        response: Any,
        metadata: dict[str, Any] | None,
        ttl: float | None,
        words: bool,
    ) -> CacheEntry:
        """The entry to store (``ttl`` from :meth:`_ttl`; ``words``: keep the query's word
        vectors, for a verifier that aligns them)."""
        return CacheEntry(
            id=entry_id(k.scope, k.key, k.partition),
            scope=k.scope,
            query=k.query,
            query_key=k.key,
            vector=vector,
            response=response,
            metadata={} if not metadata else _without_evidence(metadata),
            created_at=k.now,
            expires_at=None if ttl is None else k.now + ttl,
            partition=k.partition,
            words=stored_words(k.query) if words else None,
        )

    def _dim(self) -> int | None:
        try:
            return self.store.dim
        except StoreError:
            return None


def _same_key(entry: CacheEntry, k: _Key) -> bool:
    """Whether a fetched entry belongs to the lookup's scope and partition (a store that
    returned another's candidate must never leak it)."""
    return entry.scope == k.scope and entry.partition == k.partition


def _budget_settings(
    error_budget: ErrorBudgetSettings | None,
    max_error_rate: float | None,
    confidence: float | None,
    min_threshold: float | None,
    learn_from_misses: bool | None,
) -> ErrorBudgetSettings | None:
    """One :class:`ErrorBudgetSettings` from ``error_budget=`` or the older keywords."""
    if error_budget is not None:
        if not isinstance(error_budget, ErrorBudgetSettings):
            raise InvalidTypeError(
                "error_budget must be an ErrorBudgetSettings, got "
                f"{type(error_budget).__name__}"
            )
        old = {
            "max_error_rate": max_error_rate,
            "confidence": confidence,
            "min_threshold": min_threshold,
            "learn_from_misses": learn_from_misses,
        }
        given = sorted(name for name, value in old.items() if value is not None)
        if given:
            raise ConfigurationError(
                f"pass the error budget either as error_budget= or as keywords, not both "
                f"(also got {', '.join(given)})"
            )
        return error_budget
    if max_error_rate is None:
        return None
    return ErrorBudgetSettings(
        max_error_rate,
        confidence=0.95 if confidence is None else confidence,
        min_threshold=0.5 if min_threshold is None else min_threshold,
        learn_from_misses=True if learn_from_misses is None else learn_from_misses,
    )


def _items(
    items: Iterable[Item], metadata: dict[str, Any] | None
) -> list[tuple[str, Any, dict[str, Any] | None]]:
    """``set_many``'s items as ``(query, response, metadata)`` triples."""
    if isinstance(items, (str, bytes, Mapping)):
        raise InvalidTypeError(
            f"items must be an iterable of (query, response) pairs, got {type(items).__name__}"
        )
    out = []
    for item in items:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise InvalidTypeError(
                f"each item must be a (query, response) or (query, response, metadata) "
                f"tuple, got {item!r:.80}"
            )
        own = item[2] if len(item) == 3 else None
        out.append((item[0], item[1], own if own is not None else metadata))
    if not out:
        raise InvalidInputError("set_many needs at least one (query, response) item")
    return out


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidTypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not (0.0 < threshold <= 1.0):
        raise ConfigurationError(f"threshold must be in (0, 1], got {threshold}")
    return float(threshold)


def _check_json(response: Any, metadata: dict[str, Any] | None) -> None:
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidTypeError(
            f"metadata must be a dict or None, got {type(metadata).__name__}"
        )
    try:  # strict JSON (no NaN/inf), so every store accepts or refuses alike
        if type(response) is not str:  # any str is JSON; the common answer skips the call
            json.dumps(response, allow_nan=False)
        if metadata is not None:
            json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidTypeError(
            f"response and metadata must be JSON-serialisable (so any store can hold them): {exc}"
        ) from exc


def _check_json_many(items: list[tuple[str, Any, dict[str, Any] | None]]) -> None:
    """:func:`_check_json` of a batch in one ``json.dumps`` (the error names the first bad
    item)."""
    for _, _, metadata in items:
        if metadata is not None and not isinstance(metadata, dict):
            _check_json(None, metadata)
    try:
        json.dumps([(response, metadata) for _, response, metadata in items], allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        for _, response, metadata in items:  # the first bad one raises with its own fault
            _check_json(response, metadata)
        raise InvalidTypeError(f"set_many items must be JSON-serialisable: {exc}") from exc


def _without_evidence(metadata: dict[str, Any]) -> dict[str, Any]:
    """A copy of the caller's metadata without the cache's own evidence key."""
    return {key: v for key, v in metadata.items() if key != EVIDENCE_KEY}


def _check_feedback(hit: object, correct: object) -> None:
    if not isinstance(hit, CacheHit):
        raise InvalidTypeError(
            f"feedback needs the CacheHit a lookup returned, got {type(hit).__name__}"
        )
    if not isinstance(correct, bool):
        raise InvalidTypeError(f"correct must be a bool, got {type(correct).__name__}")
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
        raise InvalidTypeError(f"{name} must be a list of str, got {type(values).__name__}")
    items = list(values)
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidInputError(f"{name} must hold non-empty str ids, got {item!r}")
    if not items:
        raise InvalidInputError(f"{name} is empty: nothing to invalidate")
    return items
