"""The demo runner: one LangChain RAG chain, timed plain and with rag-optimize dropped in.

*Plain* is how an existing app is often written: LangChain's ``InMemoryVectorStore``
retriever over the packaged embedding model, a prompt, the chat model, a parser.
*Optimized* is the same chain with the four drop-ins: ``with_semantic_cache`` around it,
``AsyncHybridRetriever`` (BM25 + dense, fused) instead of the vector-store retriever,
``BatchingEmbeddings`` for query embeddings (shared by the cache and the retriever), and
the ``LatencyCallbackHandler`` (attached to both passes, it is how they are measured).

Both passes see the same question stream at the same concurrency, after one warm-up call
on a question outside the stream; the cache starts empty.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from rich.console import Console

from langchain_rag_optimize.callbacks import TimedEmbeddings
from langchain_rag_optimize.chain_cache import with_semantic_cache
from langchain_rag_optimize.cli_plugin import runnable_target
from langchain_rag_optimize.embeddings import BatchingEmbeddings
from langchain_rag_optimize.retrievers import AsyncHybridRetriever
from rag_optimize.cache import CacheHit, ExactPart, SemanticCache
from rag_optimize.cli import PassResult, measure_pass, progress_bar, report
from rag_optimize.embedding import default_embedder
from rag_optimize.tracing import LatencyTracker
from rag_optimize_demo.chat_model import make_chat_model
from rag_optimize_demo.corpus import passages
from rag_optimize_demo.embeddings import PackagedEmbeddings
from rag_optimize_demo.questions import question_stream, stream_stats

WARMUP_QUESTION = "What is a warm-up request?"
SHORT_CORPUS = 60
K = 4
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using only the context. Be brief."),
        ("human", "Context:\n{context}\n\nQuestion: {question}"),
    ]
)


class RecordingSemanticCache(SemanticCache):
    """A :class:`SemanticCache` that remembers its hits: as (question, matched question)
    pairs and by tracker run.

    Measurement only: the demo checks every hit against the stream's ground truth (was the
    matched question about the same passage?) and prints it per question with ``--verbose``.
    The ``cache`` stage itself is timed by the cache (``tracker=``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.matches: list[tuple[str, str]] = []
        self.hit_by_run: dict[str, str] = {}

    async def aget(
        self, query: str, scope: str | None = None, *, exact: ExactPart = None
    ) -> CacheHit | None:
        hit = await super().aget(query, scope, exact=exact)
        if hit is not None:
            self.matches.append((query, hit.matched_query))
            run_id = LatencyTracker.current_run()
            if run_id is not None:
                self.hit_by_run[run_id] = hit.matched_query
        return hit

    def forget(self) -> None:
        """Drop every entry, counter and remembered hit."""
        self.clear()
        self.matches.clear()
        self.hit_by_run.clear()


def wrong_hits(matches: list[tuple[str, str]], intent_of: dict[str, str]) -> list[tuple[str, str]]:
    """Hits whose matched question asked about another passage than the question."""
    return [(q, m) for q, m in matches if intent_of.get(q) != intent_of.get(m, intent_of.get(q))]


def print_questions(
    console: Console, before: PassResult, after: PassResult, hit_by_run: dict[str, str]
) -> None:
    """One line per question of the stream: plain ms, optimized ms, and the cache decision."""
    for plain, fast in zip(before.per_call, after.per_call, strict=True):
        matched = hit_by_run.get(fast.run_id)
        decision = (
            "miss"
            if matched is None
            else ("hit (exact)" if matched == fast.question else f"hit ~ {matched!r}")
        )
        console.print(
            f"{plain.seconds * 1000:7.1f} ms -> {fast.seconds * 1000:7.1f} ms  {decision:<12} "
            f"{fast.question}",
            markup=False,
            highlight=False,
        )


def format_docs(documents: Sequence[Document]) -> str:
    return "\n".join(d.page_content for d in documents)


def rag_chain(retriever: BaseRetriever, model: BaseChatModel) -> Runnable[Any, str]:
    """The classic LCEL RAG chain: question in, answer text out."""
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | model
        | StrOutputParser()
    )


async def _pass(
    label: str,
    chain: Runnable[Any, str],
    tracker: LatencyTracker,
    questions: list[str],
    concurrency: int,
    show_progress: bool,
    after_warmup: Callable[[], None] | None = None,
) -> PassResult:
    target = runnable_target(chain, tracker, None)
    await target.call(WARMUP_QUESTION)
    if after_warmup is not None:
        after_warmup()
    with progress_bar(label, len(questions), show_progress) as advance:
        return await measure_pass(
            label, target.call, questions, tracker, concurrency=concurrency, progress=advance
        )


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; prints the report and writes ``demo.json`` / ``demo.png``."""
    return asyncio.run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 120)
    short = bool(args.short)
    n = args.questions or (12 if short else 80)
    # --short: the first 20 topics only (60 passages), so indexing takes seconds on a busy CPU.
    corpus = passages()[: SHORT_CORPUS if short else None]
    stream = question_stream(
        n, seed=args.seed, zipf_s=1.8 if short else 1.1, only={p.id for p in corpus}
    )
    questions = [q.text for q in stream]
    stream_info = stream_stats(stream)
    model, model_label = make_chat_model(
        first_token_delay_s=0.03 if short else 0.15, token_delay_s=0.004 if short else 0.015
    )
    show = not args.no_progress

    console.print("[bold]rag-optimize demo[/bold] (offline)")
    started = time.perf_counter()
    embedder = default_embedder()
    console.print(
        f"embedding model: all-MiniLM-L6-v2, packaged ({embedder.backend} backend), "
        f"loaded in {time.perf_counter() - started:.1f} s"
    )
    documents = [
        Document(page_content=p.text, metadata={"topic": p.topic, "kind": p.kind}, id=p.id)
        for p in corpus
    ]
    embeddings = PackagedEmbeddings(embedder)
    with progress_bar("embedding the corpus", len(documents), show) as advance:
        embeddings.precompute([d.page_content for d in documents], advance)

    # Plain: LangChain's own vector-store retriever.
    plain_tracker = LatencyTracker()
    store = InMemoryVectorStore(TimedEmbeddings(embeddings, plain_tracker))
    store.add_documents(documents)
    plain = rag_chain(store.as_retriever(search_kwargs={"k": K}), model)

    # Optimized: the same chain with the drop-ins.
    opt_tracker = LatencyTracker()
    # A lone query is sent at once (wait_when_idle=False); the int8 ONNX model on a small CPU
    # overlaps concurrent calls better than it batches them (BENCHMARKS.md): small batches,
    # several in flight.
    batching = BatchingEmbeddings(
        embeddings, max_wait_ms=2, max_batch_size=4, max_in_flight=4, wait_when_idle=False
    )
    timed = TimedEmbeddings(batching, opt_tracker)
    with progress_bar("building the hybrid index (BM25 + dense)", 1, show) as advance:
        hybrid = AsyncHybridRetriever.from_documents(documents, timed, k=K, candidates=20)
        advance(1)
    # the cache stage is timed by the latency handler (the lookup run of with_semantic_cache)
    cache = RecordingSemanticCache(timed, threshold=args.threshold)
    optimized = with_semantic_cache(rag_chain(hybrid, model), cache)

    console.print(f"corpus: {len(documents)} passages on software, RAG and operations")
    console.print(
        f"question stream: {stream_info['questions']} questions ({stream_info['first']} first "
        f"asks, {stream_info['paraphrases']} paraphrases of earlier ones, "
        f"{stream_info['repeats']} exact repeats), {args.concurrency} in flight"
    )
    console.print(f"generation: {model_label}")
    console.print(f"plain:     InMemoryVectorStore retriever (k={K}) | prompt | model | parser")
    console.print(
        f"optimized: with_semantic_cache(AsyncHybridRetriever (BM25 + dense, {hybrid.fusion} "
        f"fusion) | prompt | model | parser), BatchingEmbeddings, cache threshold "
        f"{cache.threshold}"
    )
    try:
        before = await _pass("plain", plain, plain_tracker, questions, args.concurrency, show)
        after = await _pass(  # the cache forgets the warm-up question and its counters
            "optimized",
            optimized,
            opt_tracker,
            questions,
            args.concurrency,
            show,
            cache.forget,
        )
        after.extra["cache_hit_rate"] = cache.stats.hit_rate
    finally:
        batching.close()
    results = [before, after]

    if args.verbose:
        print_questions(console, before, after, cache.hit_by_run)
    report.print_table(results, title="rag-optimize demo: latency per stage (plain vs optimized)")
    for line in report.summary_lines(results):
        console.print(line)
    stats = cache.stats
    wrong = wrong_hits(cache.matches, {q.text: q.intent for q in stream})
    console.print(
        f"cache hit rate: {stats.hit_rate:.0%} ({stats.hits} hits, {stats.exact_hits} exact, "
        f"of {stats.lookups} lookups); hits answered with another question's answer: "
        f"{len(wrong)}; candidates vetoed by the verifier: {stats.verifier_rejections}"
    )
    for question, matched in wrong[:3]:
        console.print(f"  wrong hit: {question!r} matched {matched!r}")
    batch = batching.stats()
    console.print(
        f"batching embedder: {batch.requests} query embeddings, {batch.batches} model batches, "
        f"{batch.cache_hits} answered from its vector cache"
    )
    json_path = report.write_json(
        args.out / "demo.json",
        results,
        options={
            "short": short,
            "questions": n,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "threshold": cache.threshold,
        },
        generation=model_label,
        corpus_passages=len(documents),
        question_stream=stream_info,
        cache={**stats.as_dict(), "wrong_hits": len(wrong)},
        batching=batch.as_dict(),
        note="timings from one process on the machine that ran the demo; generation delays of "
        "the local extractive model are simulated",
    )
    console.print(f"JSON report: {json_path}")
    if not args.no_chart:
        chart = report.write_chart(
            args.out / "demo.png", results, title="rag-optimize demo: plain vs optimized"
        )
        console.print(f"chart: {chart}")
    return 0
