"""A LlamaIndex query engine, then the same engine with rag-optimize's four drop-ins.

    python examples/llamaindex_app.py            # offline: packaged MiniLM + a local stand-in LLM
    python examples/llamaindex_app.py --short    # fewer questions, smaller simulated LLM delays

``build_engine`` is the usual ``VectorStoreIndex(...).as_query_engine(streaming=True)``.
``build_optimized_engine`` adds, in a few lines each:

1. ``BatchingEmbedding``: concurrent query embeddings share model batches;
2. ``AsyncHybridRetriever``: BM25 and dense search at the same time, fused;
3. ``CachedQueryEngine``: repeated and paraphrased questions skip retrieval and the LLM;
4. ``LatencyEventHandler``: per-stage p50/p95/p99 of every query.

Offline stand-ins: ``MiniLMEmbedding`` (the packaged all-MiniLM-L6-v2) for your embedding
model, and ``ExtractiveLLM`` (answers with the context sentence that best matches the query,
streamed with a simulated delay) for your LLM. ``RAG_OPTIMIZE_EXAMPLE_SHORT=1`` is the same
as ``--short``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import TextNode

from llama_index_rag_optimize import (
    AsyncHybridRetriever,
    BatchingEmbedding,
    CachedQueryEngine,
    LatencyEventHandler,
)
from rag_optimize import LatencyTracker, default_embedder
from rag_optimize.streaming import stream_text

DOCS = [
    "To reset your password, open Settings, choose Security and click Reset password.",
    "Invoices are emailed on the first day of each month and can be downloaded under Billing.",
    "The API rate limit is 600 requests per minute per key; exceeding it returns HTTP 429.",
    "Error E1042 means the upload was larger than 50 MB; split the file and try again.",
    "Two-factor authentication can be turned on under Settings, Security, Two-factor.",
    "Deleted projects stay in the trash for 30 days and can be restored by an admin.",
    "Single sign-on with SAML is available on the Business and Enterprise plans.",
    "Support answers within four business hours on weekdays, 9:00 to 18:00 CET.",
]
QUESTIONS = [  # users arrive in waves of four; later waves repeat and rephrase earlier ones
    "How do I reset my password?",
    "What does error E1042 mean?",
    "What is the API rate limit?",
    "When are invoices sent?",
    "how can I reset my password",
    "What's the meaning of error E1042?",
    "How do I reset my password?",
    "Can I restore a deleted project?",
]
_WORD = re.compile(r"[a-z0-9]+")


class MiniLMEmbedding(BaseEmbedding):
    """Stands in for your embedding model: the all-MiniLM-L6-v2 that ships with rag-optimize."""

    def _get_query_embedding(self, query: str) -> list[float]:
        return default_embedder().embed_query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await default_embedder().aembed_query(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return default_embedder().embed_query(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return default_embedder().embed_documents(texts)


class ExtractiveLLM(CustomLLM):
    """Stands in for your LLM: streams the context sentence sharing most words with the query."""

    first_token_delay_s: float = 0.15
    token_delay_s: float = 0.015

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="extractive-stand-in")

    def _answer(self, prompt: str) -> list[str]:
        context, _, query = prompt.rpartition("Query:")
        wanted = set(_WORD.findall(query.lower()))
        lines = [s for s in context.splitlines() if s.strip() and not s.startswith("---")]
        best = max(lines, key=lambda s: len(wanted & set(_WORD.findall(s.lower()))), default="")
        return re.findall(r"\S+\s*", best) or ["I don't know."]

    def _delays(self, n: int) -> list[float]:
        return [self.first_token_delay_s] + [self.token_delay_s] * (n - 1)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        tokens = self._answer(prompt)
        time.sleep(sum(self._delays(len(tokens))))
        return CompletionResponse(text="".join(tokens))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        tokens = self._answer(prompt)

        def gen() -> CompletionResponseGen:
            text = ""
            for token, delay in zip(tokens, self._delays(len(tokens)), strict=True):
                time.sleep(delay)
                text += token
                yield CompletionResponse(text=text, delta=token)

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        tokens = self._answer(prompt)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            for token, delay in zip(tokens, self._delays(len(tokens)), strict=True):
                await asyncio.sleep(delay)
                text += token
                yield CompletionResponse(text=text, delta=token)

        return gen()


# ---------------------------------------------------------------- the engine as it was
def build_engine(embed_model: BaseEmbedding, llm: CustomLLM) -> BaseQueryEngine:
    index = VectorStoreIndex([TextNode(text=d) for d in DOCS], embed_model=embed_model)
    return index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True)


# ---------------------------------------------------------------- with the drop-ins
def build_optimized_engine(
    embed_model: BaseEmbedding, llm: CustomLLM, tracker: LatencyTracker
) -> tuple[CachedQueryEngine, LatencyEventHandler]:
    embed_model = BatchingEmbedding(embed_model, max_wait_ms=2)                    # 1
    retriever = AsyncHybridRetriever.from_nodes(                                   # 2
        [TextNode(text=d) for d in DOCS], embed_model, k=2
    )
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm, streaming=True)
    cached = CachedQueryEngine(engine, embed_model, threshold=0.85, tracker=tracker)  # 3
    handler = LatencyEventHandler(tracker).instrument()                            # 4
    return cached, handler


async def ask_all(engine: BaseQueryEngine, questions: list[str]) -> tuple[list[str], float]:
    """Stream the answers in waves of four concurrent users; answers and seconds."""

    async def ask(question: str) -> str:
        return "".join([token async for token in stream_text(engine, question)])

    start = time.perf_counter()
    answers: list[str] = []
    for wave in range(0, len(questions), 4):
        answers += await asyncio.gather(*(ask(q) for q in questions[wave : wave + 4]))
    return answers, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args(argv)
    short = args.short or os.environ.get("RAG_OPTIMIZE_EXAMPLE_SHORT") == "1"
    questions = QUESTIONS[:7] if short else QUESTIONS * 2
    llm = ExtractiveLLM(
        first_token_delay_s=0.02 if short else 0.15, token_delay_s=0.002 if short else 0.015
    )
    embed_model = MiniLMEmbedding()

    plain = build_engine(embed_model, llm)
    answers, plain_s = asyncio.run(ask_all(plain, questions))
    print(f"plain engine:     {len(questions)} questions in {plain_s:.2f} s")
    print(f"  Q: {questions[0]}\n  A: {answers[0]}")

    tracker = LatencyTracker()
    optimized, handler = build_optimized_engine(embed_model, llm, tracker)
    try:
        answers, fast_s = asyncio.run(ask_all(optimized, questions))
    finally:
        handler.uninstrument()
    print(f"optimized engine: {len(questions)} questions in {fast_s:.2f} s "
          f"({plain_s / fast_s:.1f}x), cache hit rate {optimized.cache.stats.hit_rate:.0%}")
    print(f"  Q: {questions[0]}\n  A: {answers[0]}")
    tracker.print_report(title="optimized engine: latency per stage (queries that ran)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
