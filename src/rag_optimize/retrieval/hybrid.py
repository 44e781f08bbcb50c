"""Fusion retrievers: run branches concurrently, fuse, rerank, degrade gracefully.

:class:`FusionRetriever` is the engine: it runs any set of :class:`Branch` objects at the same
time (worker threads for :meth:`~FusionRetriever.retrieve`, the event loop for
:meth:`~FusionRetriever.aretrieve`), gives each its own timeout, fuses whatever came back and
optionally reranks. A branch that raises or times out is left out and the result is marked
``degraded``; only when every branch fails is :class:`RetrievalError` raised.

:class:`HybridRetriever` is the usual set-up on our own indexes: BM25 keyword search runs
while the query is being embedded, then the dense search follows in the dense branch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import functools
import json
import shutil
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import numpy as np
import numpy.typing as npt

from rag_optimize.embedding.protocol import Embedder, check_embedder
from rag_optimize.embedding.vectors import unit_matrix, unit_vector
from rag_optimize.errors import ConfigurationError, InvalidInputError, RetrievalError
from rag_optimize.index.bm25 import BM25Index
from rag_optimize.index.dense import DenseIndex
from rag_optimize.index.documents import (
    DocumentStore,
    Hit,
    Mask,
    check_k,
    check_texts,
    loading,
    read_meta,
)
from rag_optimize.retrieval.branches import Branch, Clock, DenseBranch, SparseBranch
from rag_optimize.retrieval.filters import Filter, parse_filter
from rag_optimize.retrieval.fusion import (
    DEFAULT_RRF_K,
    ConsistencyEstimate,
    Fused,
    check_weights,
    consistency,
    get_fusion,
    self_consistency,
)
from rag_optimize.retrieval.rerank import Reranker, _describe, aapply_reranker, apply_reranker
from rag_optimize.retrieval.results import RetrievalResult, RetrievedDocument
from rag_optimize.tracing import stages
from rag_optimize.validation import check_options, check_query

if TYPE_CHECKING:
    # Only for the checker: the core does not depend on typing_extensions at run time.
    from typing_extensions import Unpack

    from rag_optimize.tracing.tracker import LatencyTracker

__all__ = [
    "DocumentColumns",
    "FusionOptions",
    "FusionRetriever",
    "HybridBuildOptions",
    "HybridRetriever",
    "WrapOptions",
    "wrap_retrievers",
]

Outcome = list[Hit] | BaseException
T = TypeVar("T")


@dataclass(frozen=True)
class _Request:
    """One checked retrieval request: the query, how many results, candidates per branch."""

    query: str
    k: int
    candidates: int
    masks: Mapping[str, Mask] | None = None  # per branch, when a filter applies


@dataclass(frozen=True)
class _RunBranches:
    """Step: run every branch for ``request``; the driver sends ``(outcomes, timings)``."""

    request: _Request


@dataclass(frozen=True)
class _Rerank:
    """Step: rerank ``docs`` for ``query``; the driver sends ``(docs, failure)``."""

    query: str
    docs: list[RetrievedDocument]
    k: int


VectorLike = Sequence[float] | npt.NDArray[Any]
_HYBRID_FILE = "hybrid.json"
#: :class:`HybridRetriever`'s fusion unless one is given (wrapped branches default to
#: ``"auto"``/``"rrf"``: ``"consistency"`` needs both scores of every candidate).
_DEFAULT_FUSION = "consistency"
_HYBRID_FORMAT = 1
FilterSpec = Filter | Mapping[str, Any] | None
Plan = Generator[_RunBranches | _Rerank, Any, RetrievalResult]


class _Rows(TypedDict):
    """The columns every document has (see :class:`DocumentColumns`)."""

    texts: Sequence[str]
    ids: Sequence[str]
    metadatas: Sequence[Mapping[str, Any] | None]


class DocumentColumns(_Rows, total=False):
    """Documents as :class:`HybridRetriever` takes them: one sequence per field, in document
    order, passed by name (``**columns``) to :meth:`~HybridRetriever.from_texts`,
    :meth:`~HybridRetriever.add_texts` and :meth:`~HybridRetriever.update`.

    It is what an adapter reads from its framework's objects (a LangChain ``Document``, a
    LlamaIndex node), so each adapter has one reader and every index-mode method feeds the
    core the same way. ``texts`` are what BM25 indexes and a retrieval returns; ``ids`` and
    ``metadatas`` go with them; ``vectors`` are embeddings already known (``None`` where
    not: only those are embedded); ``embed_texts`` are what to embed instead of ``texts``
    (a LlamaIndex node's text with the metadata its index embeds).
    """

    vectors: Sequence[VectorLike | None] | None
    embed_texts: Sequence[str] | None


class WrapOptions(TypedDict, total=False):
    """The keyword options of :class:`FusionRetriever` (each described there) but
    ``weights``, as one type: :func:`wrap_retrievers` takes exactly these, since it takes
    the weights itself in retriever order. Any other keyword raises
    :class:`~rag_optimize.errors.UnknownOptionError` naming it."""

    fusion: str
    k: int
    candidates: int
    reranker: Reranker | None
    rerank_candidates: int | None
    branch_timeout_ms: float | Mapping[str, float] | None
    rrf_k: float
    clock: Clock
    tracker: LatencyTracker | None
    filter: FilterSpec


class FusionOptions(WrapOptions, total=False):
    """The keyword options of :class:`FusionRetriever` (each described there), as one type:
    :class:`HybridRetriever` and :meth:`HybridRetriever.load` take exactly these (``weights``
    by branch name, ``"bm25"`` and ``"dense"``) and refuse any other with
    :class:`~rag_optimize.errors.UnknownOptionError` naming it and listing these."""

    weights: Mapping[str, float] | None


class HybridBuildOptions(FusionOptions, total=False):
    """What :meth:`HybridRetriever.from_texts` takes besides the documents' own columns
    (texts, ids, metadata, vectors, the texts to embed): :class:`FusionOptions` plus how
    the indexes are built (``quantization`` and ``ann`` of the dense index,
    ``bm25_options`` for :class:`~rag_optimize.index.BM25Index`). The adapters' builders
    (LangChain ``from_documents`` / ``from_vectorstore``, LlamaIndex ``from_nodes`` /
    ``from_index``) read those columns from their framework's objects and take exactly
    these options."""

    quantization: str | None
    ann: str | None
    bm25_options: Mapping[str, Any] | None


class FusionRetriever:
    """Run ``branches`` concurrently and fuse their results.

    ``fusion``: ``"auto"`` (default here: z-scores weighted per query by each branch's
    evidence), ``"rrf"``, ``"weighted"`` or ``"relative_score"`` (see
    :mod:`rag_optimize.retrieval.fusion`; ``"consistency"`` needs our own indexes, so only
    :class:`HybridRetriever` takes it, and it is the default there); ``weights`` per branch
    name. Each branch is asked
    for ``candidates`` hits; ``k`` fused documents are returned. ``reranker`` reorders the
    best ``rerank_candidates`` (default ``candidates``) fused documents. ``branch_timeout_ms``
    (one number for all, or per branch name) abandons a slow branch. ``clock`` measures the
    reported timings. ``tracker`` (a :class:`~rag_optimize.tracing.LatencyTracker`) receives
    every retrieval's stage times (``retrieval``, ``retrieval.sparse``/``dense``/``fusion``,
    ``embedding``, ``rerank``) in the caller's current run. ``filter`` is the default
    metadata filter of every call (see :mod:`rag_optimize.retrieval.filters`); it needs
    filterable branches (our own indexes).
    """

    def __init__(
        self,
        branches: Sequence[Branch],
        *,
        fusion: str = "auto",
        weights: Mapping[str, float] | None = None,
        k: int = 10,
        candidates: int = 50,
        reranker: Reranker | None = None,
        rerank_candidates: int | None = None,
        branch_timeout_ms: float | Mapping[str, float] | None = None,
        rrf_k: float = DEFAULT_RRF_K,
        clock: Clock = time.perf_counter,
        tracker: LatencyTracker | None = None,
        filter: FilterSpec = None,
    ) -> None:
        self.branches = list(branches)
        self.filter = parse_filter(filter)
        self.tracker = tracker
        self._stages = {**_TIMING_STAGES, **{b.name: _branch_stage(b) for b in self.branches}}
        names = [b.name for b in self.branches]
        if not names:
            raise ConfigurationError("a fusion retriever needs at least one branch")
        if len(set(names)) != len(names):
            raise ConfigurationError(f"branch names must be unique, got {names}")
        fuse = get_fusion(fusion)
        if fusion == "consistency" and not self._complete_scores:
            raise ConfigurationError(
                "fusion 'consistency' scores every candidate in both branches, which only "
                "HybridRetriever over rag-optimize's own indexes can do: use 'auto' or 'rrf'"
            )
        self.fusion = fusion
        self._fuse: Callable[..., Fused] = (
            functools.partial(fuse, c=rrf_k) if fusion == "rrf" else fuse
        )
        self.rrf_k = float(rrf_k)
        self.weights = check_weights(names, weights)
        self.k = self._checked_k(k, "k")
        self.candidates = self._checked_k(candidates, "candidates")
        self.reranker = reranker
        self.rerank_candidates = self._checked_k(
            rerank_candidates or candidates, "rerank_candidates"
        )
        self.timeouts = self._timeouts(names, branch_timeout_ms)
        self.clock = clock
        self._executor: cf.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @staticmethod
    def _checked_k(value: int, name: str) -> int:
        try:
            return check_k(value)
        except InvalidInputError:
            raise ConfigurationError(f"{name} must be a positive integer, got {value!r}") from None

    @staticmethod
    def _timeouts(
        names: Sequence[str], spec: float | Mapping[str, float] | None
    ) -> dict[str, float | None]:
        if spec is None or isinstance(spec, (int, float)):
            per = {name: spec for name in names}
        else:
            unknown = set(spec) - set(names)
            if unknown:
                raise ConfigurationError(
                    f"branch_timeout_ms names unknown branch(es) {sorted(unknown)}"
                )
            per = {name: spec.get(name) for name in names}
        for name, value in per.items():
            if value is not None and not value > 0:
                raise ConfigurationError(f"branch_timeout_ms for {name!r} must be > 0, got {value}")
        return {name: None if v is None else float(v) / 1000.0 for name, v in per.items()}

    # -- running the branches ---------------------------------------------------------------

    def _pool(self) -> cf.ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                # Spare workers: a timed-out branch keeps its thread until it returns.
                self._executor = cf.ThreadPoolExecutor(
                    max_workers=4 * len(self.branches), thread_name_prefix="rag-optimize-branch"
                )
            return self._executor

    def close(self) -> None:
        """Release the worker threads of the sync path (they are recreated if needed)."""
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    def _timed(self, branch: Branch, request: _Request, timings: dict[str, float]) -> list[Hit]:
        start = self.clock()
        try:
            if request.masks is None:
                return branch.search(request.query, request.candidates, timings)
            return branch.search(  # type: ignore[call-arg]
                request.query, request.candidates, timings, allowed=request.masks[branch.name]
            )
        finally:
            timings[branch.name] = self.clock() - start

    def _outcome(self, branch: Branch, request: _Request, timings: dict[str, float]) -> Outcome:
        """The branch's hits, or the exception it raised (returned, not raised, so that a
        branch's own ``TimeoutError`` is never taken for the retriever's timeout)."""
        try:
            return self._timed(branch, request, timings)
        except Exception as exc:
            return exc

    def _run_sync(self, request: _Request) -> tuple[dict[str, Outcome], dict[str, float]]:
        timings: dict[str, float] = {}
        started = time.monotonic()
        # One branch without a timeout runs on the calling thread (one thread hand-off less);
        # the others go to worker threads, each in a copy of the caller's context so context
        # variables (cache scopes, tracing spans, framework callbacks) reach it.
        inline = next((b for b in self.branches if self.timeouts[b.name] is None), None)
        pool = self._pool() if len(self.branches) > 1 or inline is None else None
        futures = {
            b.name: pool.submit(contextvars.copy_context().run, self._outcome, b, request, timings)
            for b in self.branches
            if b is not inline and pool is not None
        }
        outcomes: dict[str, Outcome] = {}
        if inline is not None:
            outcomes[inline.name] = self._outcome(inline, request, timings)
        for name, future in futures.items():
            limit = self.timeouts[name]
            wait = None if limit is None else max(0.0, limit - (time.monotonic() - started))
            try:
                outcomes[name] = future.result(timeout=wait)
            except cf.TimeoutError:  # only this wait's: the branch's own errors are returned
                future.cancel()
                outcomes[name] = TimeoutError(f"timed out after {limit * 1000:.0f} ms")  # type: ignore[operator]
        outcomes = {b.name: outcomes[b.name] for b in self.branches}  # branch order
        return outcomes, timings

    async def _run_async(self, request: _Request) -> tuple[dict[str, Outcome], dict[str, float]]:
        timings: dict[str, float] = {}

        async def search(branch: Branch) -> Outcome:
            """The branch's hits, or the exception it raised (returned: see ``_outcome``)."""
            try:
                if request.masks is None:
                    return await branch.asearch(request.query, request.candidates, timings)
                return await branch.asearch(  # type: ignore[call-arg]
                    request.query, request.candidates, timings, request.masks[branch.name]
                )
            except Exception as exc:
                return exc

        async def one(branch: Branch) -> Outcome:
            start = self.clock()
            limit = self.timeouts[branch.name]
            try:
                return await asyncio.wait_for(search(branch), timeout=limit)
            except asyncio.TimeoutError:  # only wait_for's: the branch's own errors are returned
                return TimeoutError(f"timed out after {limit * 1000:.0f} ms")  # type: ignore[operator]
            finally:
                timings[branch.name] = self.clock() - start

        results = await asyncio.gather(*(one(b) for b in self.branches))
        return dict(zip([b.name for b in self.branches], results, strict=True)), timings

    # -- fusing -----------------------------------------------------------------------------

    #: Whether this retriever can score any candidate in every branch (``"consistency"``).
    _complete_scores = False

    def _fuse_hits(
        self,
        ok: Mapping[str, list[Hit]],
        weights: Mapping[str, float],
        query: str,
        observe: bool,
    ) -> Fused:
        """Fuse the branches' hit lists (``query`` and ``observe`` serve subclasses that
        read more than the lists: see :meth:`HybridRetriever._fuse_hits`)."""
        return self._fuse({n: [(h.id, h.score) for h in hits] for n, hits in ok.items()}, weights)

    def _fuse_outcomes(
        self,
        outcomes: Mapping[str, Outcome],
        limit: int,
        weights_override: Mapping[str, float] | None = None,
        *,
        query: str = "",
        observe: bool = False,
    ) -> tuple[list[RetrievedDocument], dict[str, str]]:
        """Fuse the branches' outcomes into at most ``limit`` documents, and the failures.

        ``observe``: this is a served query (not a re-fusion by ``calibrate_fusion``), so a
        fusion that learns from the query stream may read it."""
        failures = {
            name: _describe(o) for name, o in outcomes.items() if isinstance(o, BaseException)
        }
        ok = {name: o for name, o in outcomes.items() if not isinstance(o, BaseException)}
        if not ok:
            detail = "; ".join(f"{n}: {msg}" for n, msg in failures.items())
            raise RetrievalError(f"every retrieval branch failed ({detail})")
        chosen = self.weights if weights_override is None else weights_override
        weights = {n: chosen[n] for n in ok}
        if not any(weights.values()):
            weights = {n: 1.0 for n in ok}
        fused = self._fuse_hits(ok, weights, query, observe)
        first_hit: dict[str, Hit] = {}
        ranks: dict[str, dict[str, int]] = {}
        scores: dict[str, dict[str, float]] = {}
        for name, hits in ok.items():
            for rank, hit in enumerate(hits, start=1):
                first_hit.setdefault(hit.id, hit)
                ranks.setdefault(hit.id, {})[name] = rank
                scores.setdefault(hit.id, {})[name] = hit.score
        docs = [
            RetrievedDocument(
                id=doc_id,
                text=first_hit[doc_id].text,
                score=score,
                metadata=first_hit[doc_id].metadata,
                ranks=ranks[doc_id],
                branch_scores=scores[doc_id],
                fusion_score=score,
                payload=first_hit[doc_id].payload,
            )
            for doc_id, score in fused[:limit]
        ]
        return docs, failures

    # -- one retrieval, written once ------------------------------------------------------

    def _request(self, query: object, k: int | None, spec: FilterSpec) -> _Request:
        query = check_query(query)
        k = self.k if k is None else check_k(k)
        chosen = self.filter if spec is None else parse_filter(spec)
        if chosen is None:
            return _Request(query, k, max(self.candidates, k))
        masks = {}
        for branch in self.branches:
            if not getattr(branch, "filterable", False):
                raise ConfigurationError(
                    f"branch {branch.name!r} cannot apply a metadata filter inside its search "
                    "(a wrapped framework retriever): filter on rag-optimize's indexes, or "
                    "configure the wrapped retriever's own filter"
                )
            masks[branch.name] = branch.mask(chosen)  # type: ignore[attr-defined]
        return _Request(query, k, max(self.candidates, k), masks)

    def _plan(self, query: object, k: int | None, spec: FilterSpec) -> Plan:
        """One retrieval as steps: run the branches, fuse, maybe rerank (no I/O of its own).

        It yields :class:`_RunBranches` and :class:`_Rerank` steps; :meth:`retrieve` performs
        them on threads, :meth:`aretrieve` on the event loop, so both do exactly the same.
        """
        request = self._request(query, k, spec)
        start = self.clock()
        outcomes, timings = yield _RunBranches(request)
        fuse_start = self.clock()
        docs, failures = self._fuse_outcomes(
            outcomes, self._pool_size(request.k), query=request.query, observe=True
        )
        timings["fusion"] = self.clock() - fuse_start
        if self.reranker is not None:
            rerank_start = self.clock()
            docs, failure = yield _Rerank(request.query, docs, request.k)
            timings["rerank"] = self.clock() - rerank_start
            if failure:
                failures["reranker"] = failure
        timings["total"] = self.clock() - start
        if self.tracker is not None:
            self._report(self.tracker, timings, request.k)
        return RetrievalResult(tuple(docs[: request.k]), bool(failures), failures, timings)

    def _report(self, tracker: LatencyTracker, timings: Mapping[str, float], k: int) -> None:
        """Record this retrieval into ``tracker`` (the caller's current run) as a tree: a
        ``retrieval`` span (attribute ``top_k``) with the branches, fusion and rerank under it
        and the query embedding under the dense branch. Only durations were timed, so the
        intervals are rebuilt: branches start with the retrieval, fusion follows the slowest
        branch, rerank ends with the retrieval.

        When the caller already times this retrieval (a LangChain retriever run traced by
        ``LatencyCallbackHandler``, or ``with tracker.span("retrieval"):``), its span is the
        retrieval: the parts nest under it and ``top_k`` is added to it, so one retrieval is
        one ``retrieval`` span and one sample, not two."""
        end = tracker.clock()
        total = timings.get("total", 0.0)
        start = end - total
        root = tracker.enclosing_span(stages.RETRIEVAL)
        if root is None or not tracker.annotate_span(root, {"top_k": k}):
            root = tracker.record(stages.RETRIEVAL, total, attributes={"top_k": k}, end=end)
        spans: dict[str, int] = {}
        slowest = 0.0
        for branch in self.branches:
            seconds = timings.get(branch.name)
            if seconds is not None:
                slowest = max(slowest, seconds)
                spans[branch.name] = tracker.record(
                    self._stages[branch.name], seconds, end=start + seconds, parent_id=root
                )
        if "embed" in timings:
            dense = next((b.name for b in self.branches if isinstance(b, DenseBranch)), "")
            seconds = timings["embed"]
            parent = spans.get(dense, root)
            tracker.record(stages.EMBEDDING, seconds, end=start + seconds, parent_id=parent)
        if "fusion" in timings:
            seconds = timings["fusion"]
            tracker.record(stages.FUSION, seconds, end=start + slowest + seconds, parent_id=root)
        if "rerank" in timings:
            tracker.record(stages.RERANK, timings["rerank"], end=end, parent_id=root)

    def retrieve(
        self, query: str, k: int | None = None, *, filter: FilterSpec = None
    ) -> RetrievalResult:
        """Blocking retrieval: branches run in worker threads at the same time.

        ``k`` overrides the constructor's ``k`` for this call (each branch is then asked
        for at least ``k`` candidates). ``filter`` (a :class:`~rag_optimize.retrieval.Filter`
        or its dict form) replaces the constructor's filter for this call; it is applied
        inside every branch before its top-k.
        """
        plan = self._plan(query, k, filter)
        try:
            step = next(plan)
            while True:
                if isinstance(step, _RunBranches):
                    step = plan.send(self._run_sync(step.request))
                else:
                    assert self.reranker is not None
                    step = plan.send(apply_reranker(self.reranker, step.query, step.docs, step.k))
        except StopIteration as done:
            result: RetrievalResult = done.value
            return result

    async def aretrieve(
        self, query: str, k: int | None = None, *, filter: FilterSpec = None
    ) -> RetrievalResult:
        """Async retrieval: branches run as concurrent tasks on the running loop."""
        plan = self._plan(query, k, filter)
        try:
            step = next(plan)
            while True:
                if isinstance(step, _RunBranches):
                    step = plan.send(await self._run_async(step.request))
                else:
                    assert self.reranker is not None
                    reranked = await aapply_reranker(self.reranker, step.query, step.docs, step.k)
                    step = plan.send(reranked)
        except StopIteration as done:
            result: RetrievalResult = done.value
            return result

    def _pool_size(self, k: int) -> int:
        """How many fused documents to keep: the rerank pool if reranking, else ``k``."""
        return max(k, self.rerank_candidates) if self.reranker is not None else k


_TIMING_STAGES = {
    "total": stages.RETRIEVAL,
    "embed": stages.EMBEDDING,
    "fusion": stages.FUSION,
    "rerank": stages.RERANK,
}


def _branch_stage(branch: Branch) -> str:
    if isinstance(branch, SparseBranch):
        return stages.SPARSE
    if isinstance(branch, DenseBranch):
        return stages.DENSE
    return f"{stages.RETRIEVAL}.{branch.name}"


def wrap_retrievers(
    retrievers: Sequence[T],
    to_branch: Callable[[str, T], Branch],
    *,
    names: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    **options: Unpack[WrapOptions],
) -> FusionRetriever:
    """A :class:`FusionRetriever` over framework retrievers, for the adapters.

    ``to_branch(name, retriever)`` wraps one retriever; ``names`` default to ``"r0", "r1",
    ...``; ``weights`` are given in retriever order. ``options`` (:class:`WrapOptions`) as
    for FusionRetriever, except that ``fusion`` defaults to ``"rrf"``: framework retrievers
    mostly return no scores (ranks stand in for them), so there is no score evidence for
    ``"auto"`` to read.
    """
    check_options(options, WrapOptions, "wrap_retrievers")
    if not retrievers:
        raise ConfigurationError("pass at least one retriever to wrap")
    names = list(names) if names is not None else [f"r{i}" for i in range(len(retrievers))]
    for label, values in (("names", names), ("weights", weights)):
        if values is not None and len(values) != len(retrievers):
            raise ConfigurationError(f"{len(retrievers)} retrievers but {len(values)} {label}")
    options.setdefault("fusion", "rrf")
    return FusionRetriever(
        [to_branch(name, r) for name, r in zip(names, retrievers, strict=True)],
        weights=None if weights is None else dict(zip(names, weights, strict=True)),
        **options,
    )


_VIEW_DEPTH = 5  # a branch's best documents whose neighbourhood the other space reads


@dataclass(frozen=True)
class _Columns:
    """The union of both branches' candidates with both scores of each, and their vectors."""

    ids: list[str]
    bm25: npt.NDArray[np.float32]
    dense: npt.NDArray[np.float32]
    vectors: npt.NDArray[np.float32]


class HybridRetriever(FusionRetriever):
    """BM25 + dense retrieval on our own indexes, run concurrently and fused.

    Either index may be ``None`` for a single-branch retriever; ``embedder`` is required with
    a dense index. Branch names are ``"bm25"`` and ``"dense"`` (for ``weights`` and
    ``branch_timeout_ms``). ``options`` (:class:`FusionOptions`) as for
    :class:`FusionRetriever`; any other keyword raises
    :class:`~rag_optimize.errors.UnknownOptionError` naming it.

    ``fusion="consistency"`` (the default here) fuses complete score vectors (each
    candidate's BM25 score and cosine, whichever branch found it) weighted by
    :attr:`consistency`, a :class:`~rag_optimize.retrieval.fusion.ConsistencyEstimate` read
    from the queries this retriever serves (no labels; saved with :meth:`save`; seed it
    with :meth:`observe_queries`). Until it has seen ``warmup`` queries the fusion is
    ``"auto"``. Why it is the default: on both shared BEIR sets it is level with the better
    of ``"auto"`` and the best single branch (BENCHMARKS.md, "Consistency fusion"), where
    ``"auto"`` stays far below dense search on a corpus whose keyword branch is weak.
    """

    _complete_scores = True

    def __init__(
        self,
        sparse: BM25Index | None,
        dense: DenseIndex | None,
        embedder: Embedder | None = None,
        **options: Unpack[FusionOptions],
    ) -> None:
        check_options(options, FusionOptions, "HybridRetriever")
        options.setdefault("fusion", _DEFAULT_FUSION)
        branches: list[Branch] = []
        clock = options.get("clock", time.perf_counter)
        if sparse is not None:
            branches.append(SparseBranch(sparse))
        if dense is not None:
            if embedder is None:
                raise ConfigurationError("a dense index needs an embedder to embed queries")
            branches.append(DenseBranch(dense, check_embedder(embedder), clock=clock))
        if not branches:
            raise ConfigurationError("HybridRetriever needs a sparse index, a dense index or both")
        super().__init__(branches, **options)
        self.sparse = sparse
        self.dense = dense
        self.embedder = embedder
        self.consistency = ConsistencyEstimate(tuple(b.name for b in branches))

    # -- consistency fusion -----------------------------------------------------------------

    def _fuse_hits(
        self,
        ok: Mapping[str, list[Hit]],
        weights: Mapping[str, float],
        query: str,
        observe: bool,
    ) -> Fused:
        """``"consistency"``: complete the candidates' scores, maybe observe, then fuse."""
        if self.fusion != "consistency" or len(ok) != 2 or not query:
            return super()._fuse_hits(ok, weights, query, observe)
        lists = {n: [(h.id, h.score) for h in hits] for n, hits in ok.items()}
        sample = observe and self.consistency.should_sample()
        reliability = self.consistency.weights()
        if not sample and reliability is None:  # warming up between samples: auto
            return consistency(lists, weights)
        try:
            columns = self._columns(query, ok["bm25"], ok["dense"])
        except Exception:  # noqa: BLE001 - e.g. a document deleted meanwhile: fail open
            columns = None
        if columns is None:
            return consistency(lists, weights, reliability=reliability)
        if sample:
            kappas = self._kappas(columns, ok["bm25"], ok["dense"])
            if kappas is not None:
                self.consistency.observe(kappas)
                reliability = self.consistency.weights()
        complete = (columns.ids, {"bm25": columns.bm25, "dense": columns.dense})
        return consistency(lists, weights, complete=complete, reliability=reliability)

    def _columns(self, query: str, sparse: list[Hit], dense: list[Hit]) -> _Columns | None:
        """Both scores of every candidate of the union (``None`` without a query vector)."""
        vector = getattr(dense, "vector", None)
        if vector is None or self.sparse is None or self.dense is None:
            return None
        ids = list(dict.fromkeys([h.id for h in sparse] + [h.id for h in dense]))
        vectors = np.asarray(self.dense.vectors(ids), dtype=np.float32)
        cosines = vectors @ unit_vector(vector, self.dense.dim)
        return _Columns(ids, self.sparse.score(query, ids), cosines, vectors)

    def _kappas(
        self, columns: _Columns, sparse: list[Hit], dense: list[Hit]
    ) -> dict[str, float] | None:
        """One query's cross-space self-consistency of each branch (see
        :func:`~rag_optimize.retrieval.fusion.self_consistency`), or ``None``."""
        assert self.sparse is not None
        if not sparse:
            return None
        position = {doc_id: i for i, doc_id in enumerate(columns.ids)}
        top = [position[h.id] for h in sparse[:_VIEW_DEPTH]]
        near_bm25_best = columns.vectors @ columns.vectors[top].mean(axis=0)
        # The words BM25 indexed for dense's best (a dense index may hold no texts).
        store = self.sparse.documents
        words = " ".join(store.texts[store.position(h.id)] for h in dense[:_VIEW_DEPTH])
        like_dense_best = self.sparse.score(words, columns.ids)
        kappa_bm25 = self_consistency(columns.bm25, near_bm25_best)
        kappa_dense = self_consistency(columns.dense, like_dense_best)
        if kappa_bm25 is None or kappa_dense is None:
            return None
        return {"bm25": kappa_bm25, "dense": kappa_dense}

    def observe_queries(self, queries: Sequence[str]) -> dict[str, float] | None:
        """Seed :attr:`consistency` from sample queries (no labels needed): each is run
        through both branches and observed (every one, not a sample). Returns the weights
        the estimate gives now (``None`` if still warming up)."""
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise InvalidInputError("queries must be a sequence of strings")
        if self.sparse is None or self.dense is None:
            raise ConfigurationError("observe_queries needs both a BM25 and a dense index")
        for query in queries:
            request = self._request(query, None, None)
            outcomes, _ = self._run_sync(request)
            sparse, dense = outcomes.get("bm25"), outcomes.get("dense")
            if isinstance(sparse, BaseException) or isinstance(dense, BaseException):
                continue
            assert sparse is not None and dense is not None
            columns = self._columns(request.query, sparse, dense)
            kappas = None if columns is None else self._kappas(columns, sparse, dense)
            if kappas is not None:
                self.consistency.observe(kappas)
        return self.consistency.weights()

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        embedder: Embedder,
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        vectors: Sequence[VectorLike | None] | None = None,
        embed_texts: Sequence[str] | None = None,
        quantization: str | None = "auto",
        ann: str | None = None,
        bm25_options: Mapping[str, Any] | None = None,
        **options: Unpack[FusionOptions],
    ) -> HybridRetriever:
        """Build both indexes over ``texts`` and a retriever on them.

        This is the one builder the LangChain and LlamaIndex adapters use. ``vectors`` (one
        per text, ``None`` where unknown) reuses embeddings a vector store already holds;
        only the missing ones are embedded, from ``embed_texts`` when given (for example a
        LlamaIndex node's text with the metadata its index embedded) else from ``texts``.
        ``quantization`` and ``ann`` choose the dense index's search (see
        :class:`~rag_optimize.index.DenseIndex`), ``bm25_options`` go to
        :class:`~rag_optimize.index.BM25Index`; ``options`` (:class:`FusionOptions`) as for
        :class:`FusionRetriever` (all of these together: :class:`HybridBuildOptions`).
        """
        check_options(options, FusionOptions, "HybridRetriever.from_texts")
        embedder = check_embedder(embedder)
        sparse = BM25Index(**dict(bm25_options or {}))
        dense = DenseIndex(quantization=quantization, ann=ann)
        retriever = cls(sparse, dense, embedder, **options)
        retriever.add_texts(
            texts, ids=ids, metadatas=metadatas, vectors=vectors, embed_texts=embed_texts
        )
        return retriever

    # -- updates ----------------------------------------------------------------------------

    def _indexes(self) -> list[BM25Index | DenseIndex]:
        return [i for i in (self.sparse, self.dense) if i is not None]

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id from both indexes; return how many were removed.

        Every id must be in every index (else :class:`InvalidInputError` and nothing is
        removed). Updates are not meant to run at the same time as searches on the same
        retriever; build a new one (or load a saved copy) to swap a live index.
        """
        wanted = [str(i) for i in ids]
        for index in self._indexes():
            index.documents.check_known(wanted)
        removed = 0
        for index in self._indexes():
            removed = index.delete(wanted)
        return removed

    def update(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        vectors: Sequence[VectorLike | None] | None = None,
        embed_texts: Sequence[str] | None = None,
    ) -> list[str]:
        """Replace existing documents (text, metadata, vector) by id in both indexes.

        The new vectors are computed first, so a failing embedder leaves every index as it
        was. Updated documents move to the end of the row order (ids are what count).
        """
        texts = check_texts(texts)
        wanted = [str(i) for i in ids]
        if len(wanted) != len(texts):
            raise InvalidInputError(f"got {len(texts)} texts but {len(wanted)} ids")
        for index in self._indexes():
            index.documents.check_known(wanted)
        fresh = (
            list(self._vectors_for(texts, vectors, embed_texts)) if self.dense is not None else None
        )
        self.delete(wanted)
        return self.add_texts(texts, wanted, metadatas, vectors=fresh)

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write both indexes and the retrieval settings to directory ``path``.

        Numpy ``.npy`` arrays, JSON and bm25s' own files; nothing is pickled. The new copy is
        written beside ``path`` and swapped in at the end, so a crash mid-save leaves the
        previous save intact. The embedder, reranker, tracker and filter are not saved: pass
        them to :meth:`load`.
        """
        target = Path(path)
        staging = target.with_name(f".{target.name}.saving")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        digests = set()
        if self.sparse is not None:
            digests.add(self.sparse.save(staging / "bm25"))
        if self.dense is not None:
            digests.add(self.dense.save(staging / "dense"))
        settings = {
            # Both indexes hold the same documents: load parses them once.
            "shared_documents_sha1": next(iter(digests)) if len(digests) == 1 else None,
            "format": _HYBRID_FORMAT,
            "fusion": self.fusion,
            "weights": self.weights,
            "k": self.k,
            "candidates": self.candidates,
            "rerank_candidates": self.rerank_candidates,
            "rrf_k": self.rrf_k,
            "branch_timeout_ms": {
                name: None if t is None else t * 1000.0 for name, t in self.timeouts.items()
            },
            "embedder": getattr(self.embedder, "model_name", None),
            "documents": len(self._indexes()[0]),
            "consistency": self.consistency.to_dict(),
        }
        (staging / _HYBRID_FILE).write_text(json.dumps(settings))
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
        staging.rename(target)
        if old.exists():
            shutil.rmtree(old)

    @classmethod
    def load(
        cls,
        path: str | Path,
        embedder: Embedder | None = None,
        *,
        mmap: bool = False,
        **options: Unpack[FusionOptions],
    ) -> HybridRetriever:
        """Open a retriever written by :meth:`save`; no document is re-embedded.

        ``embedder`` embeds queries (required when a dense index was saved; it must be the
        model the documents were embedded with: a different ``model_name`` is refused).
        ``mmap=True`` memory-maps the BM25 matrix and the float vectors, so opening is about
        reading the documents' JSON. ``options`` override the saved settings (and give the
        unsaved ones: ``reranker``, ``tracker``, ``filter``, ``clock``). A damaged save
        raises :class:`InvalidInputError` saying what is wrong; an option that is not one of
        :class:`FusionOptions` raises :class:`~rag_optimize.errors.UnknownOptionError`.
        """
        check_options(options, FusionOptions, "HybridRetriever.load")
        directory = Path(path)
        settings = read_meta(directory, _HYBRID_FILE, "HybridRetriever", _HYBRID_FORMAT)
        shared = None
        digest = settings.get("shared_documents_sha1")
        first = next((directory / d for d in ("dense", "bm25") if (directory / d).exists()), None)
        if digest and first is not None:
            with loading("HybridRetriever", first):
                shared = DocumentStore.load(first, digest)
        sparse = dense = None
        if (directory / "bm25").exists():
            sparse = BM25Index.load(directory / "bm25", mmap=mmap, documents=shared)
        if (directory / "dense").exists():
            dense = DenseIndex.load(directory / "dense", mmap=mmap, documents=shared)
        saved_model = settings.get("embedder")
        given_model = getattr(embedder, "model_name", None)
        if dense is not None and saved_model and given_model and saved_model != given_model:
            raise ConfigurationError(
                f"{directory} was embedded with {saved_model!r}, not {given_model!r}: "
                "pass the same embedder, or rebuild the index"
            )
        indexes = [i for i in (sparse, dense) if i is not None]
        if not indexes:
            raise InvalidInputError(f"cannot load HybridRetriever from {directory}: no index")
        for index in indexes:
            if not index.documents.same_ids(indexes[0].documents) or len(index) != settings.get(
                "documents", len(index)
            ):
                raise InvalidInputError(
                    f"cannot load HybridRetriever from {directory}: the BM25 and dense "
                    "indexes hold different documents (an incomplete save?)"
                )
        saved: dict[str, Any] = {
            key: settings[key]
            for key in ("fusion", "weights", "k", "candidates", "rerank_candidates", "rrf_k")
            if key in settings
        }
        saved["branch_timeout_ms"] = settings.get("branch_timeout_ms") or None
        retriever = cls(sparse, dense, embedder, **{**saved, **options})
        if settings.get("consistency") is not None:
            estimate = ConsistencyEstimate.from_dict(settings["consistency"])
            if estimate.branches == retriever.consistency.branches:
                retriever.consistency = estimate
        return retriever

    def add_texts(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        vectors: Sequence[VectorLike | None] | None = None,
        embed_texts: Sequence[str] | None = None,
    ) -> list[str]:
        """Add ``texts`` to both indexes under the same ids; embed only what ``vectors`` lacks.

        ``vectors`` and ``embed_texts`` as for :meth:`from_texts`. Nothing is added to either
        index if an argument is wrong (counts, duplicate ids, a bad vector).
        """
        texts = check_texts(texts)
        if ids is None:
            base = len(self.sparse) if self.sparse is not None else len(self.dense or ())
            ids = [str(base + i) for i in range(len(texts))]
        ids = [str(i) for i in ids]
        for name, seq in (("ids", ids), ("vectors", vectors), ("embed_texts", embed_texts)):
            if seq is not None and len(seq) != len(texts):
                raise InvalidInputError(f"got {len(texts)} texts but {len(seq)} {name}")
        for index in (self.sparse, self.dense):
            clash = next((i for i in ids if index is not None and i in index.documents), None)
            if clash is not None:
                raise InvalidInputError(f"duplicate document id {clash!r}")
        new_ids = list(ids)
        if self.dense is not None and texts:
            matrix = self._vectors_for(texts, vectors, embed_texts)
            new_ids = self.dense.add(matrix, ids=ids, texts=texts, metadatas=metadatas)
        if self.sparse is not None:
            new_ids = self.sparse.add(texts, ids=ids, metadatas=metadatas)
        return new_ids

    def _vectors_for(
        self,
        texts: Sequence[str],
        vectors: Sequence[VectorLike | None] | None,
        embed_texts: Sequence[str] | None,
    ) -> npt.NDArray[np.float32]:
        """One row per text: the given vector where there is one, else a fresh embedding."""
        assert self.embedder is not None
        source = list(embed_texts) if embed_texts is not None else list(texts)
        given: list[Any] = list(vectors) if vectors is not None else [None] * len(texts)
        missing = [i for i, v in enumerate(given) if v is None]
        embedded = self.embedder.embed_documents([source[i] for i in missing]) if missing else []
        for i, vector in zip(missing, embedded, strict=True):
            given[i] = vector
        return unit_matrix(given, self.dense.dim if self.dense is not None else None)
