"""An existing LangChain RAG app, then the same app with rag-optimize's four drop-ins.

    python examples/langchain_app.py            # offline: packaged MiniLM + local extractive model
    python examples/langchain_app.py --short    # fewer questions, smaller simulated model delays

``build_app`` is the app as it is usually written (LCEL: vector-store retriever, prompt,
chat model, parser). ``build_optimized_app`` adds, in a few lines each:

1. ``BatchingEmbeddings``: concurrent query embeddings share model batches;
2. ``AsyncHybridRetriever``: BM25 and dense search at the same time, fused;
3. ``with_semantic_cache``: repeated and paraphrased questions skip retrieval and the model;
4. ``LatencyCallbackHandler``: per-stage p50/p95/p99 of every request.

Offline stand-ins: ``MiniLMEmbeddings`` (the packaged all-MiniLM-L6-v2) for your embeddings
(``OpenAIEmbeddings``, ``HuggingFaceEmbeddings`` ...), and rag-optimize's local extractive chat
model (it streams sentences of the retrieved context with a simulated delay) for your chat
model (``ChatOpenAI`` ...). ``RAG_OPTIMIZE_EXAMPLE_SHORT=1`` is the same as ``--short``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_rag_optimize import (
    AsyncHybridRetriever,
    BatchingEmbeddings,
    LatencyCallbackHandler,
    with_semantic_cache,
)
from rag_optimize import LatencyTracker, SemanticCache, default_embedder
from rag_optimize_demo.chat_model import ExtractiveChatModel

DOCS = [
    "To reset your password, open Settings, choose Security and click Reset password.",
    "Invoices are emailed on the first day of each month and can be downloaded under Billing.",
    "The API rate limit is 600 requests per minute per key; exceeding it returns HTTP 429.",
    "Error E1042 means the upload was larger than 50 MB; split the file and try again.",
    "Two-factor authentication can be turned on under Settings, Security, Two-factor.",
    "Deleted projects stay in the trash for 30 days and can be restored by an admin.",
    "The desktop app syncs every five minutes; force a sync with Ctrl+Shift+S.",
    "Single sign-on with SAML is available on the Business and Enterprise plans.",
    "Exports are generated as CSV or JSON and are kept for seven days.",
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
    "what is the rate limit of the API",
    "How do I turn on two-factor authentication?",
]
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using only the context."),
        ("human", "Context:\n{context}\n\nQuestion: {question}"),
    ]
)


class MiniLMEmbeddings(Embeddings):
    """Stands in for your embeddings: the all-MiniLM-L6-v2 that ships with rag-optimize."""

    def __init__(self) -> None:
        self.model = default_embedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.model.embed_query(text)


def join(documents: Sequence[Document]) -> str:
    return "\n".join(d.page_content for d in documents)


# ---------------------------------------------------------------- the app as it was
def build_app(embeddings: Embeddings, llm: BaseChatModel) -> Runnable[Any, str]:
    store = InMemoryVectorStore.from_texts(DOCS, embeddings)
    retriever = store.as_retriever(search_kwargs={"k": 2})
    return {"context": retriever | join, "question": RunnablePassthrough()} | PROMPT | llm | (
        StrOutputParser()
    )


# ---------------------------------------------------------------- with the drop-ins
def build_optimized_app(
    embeddings: Embeddings, llm: BaseChatModel, tracker: LatencyTracker
) -> tuple[Runnable[Any, str], SemanticCache]:
    embeddings = BatchingEmbeddings(embeddings, max_wait_ms=2)                      # 1
    retriever = AsyncHybridRetriever.from_documents(                                # 2
        [Document(page_content=d) for d in DOCS], embeddings, k=2
    )
    chain = {"context": retriever | join, "question": RunnablePassthrough()} | PROMPT | llm | (
        StrOutputParser()
    )
    cache = SemanticCache(embeddings, threshold=0.85, tracker=tracker)
    cached = with_semantic_cache(chain, cache)                                      # 3
    handler = LatencyCallbackHandler(tracker)                                       # 4
    return cached.with_config(callbacks=[handler]), cache


async def ask_all(
    chain: Runnable[Any, str], questions: list[str], tracker: LatencyTracker | None = None
) -> tuple[list[str], float]:
    """Stream the questions in waves of four concurrent users; answers and seconds.

    With a tracker each request is one of its runs, so answers served from the cache (which
    never reach the chain's callbacks) count in ``total`` and ``ttft`` too.
    """

    async def ask(question: str) -> str:
        with tracker.run() if tracker is not None else contextlib.nullcontext():
            chunks: list[str] = []
            async for chunk in chain.astream(question):
                if tracker is not None and not chunks:
                    tracker.first_token()
                chunks.append(chunk)
            return "".join(chunks)

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
    llm = ExtractiveChatModel(
        first_token_delay_s=0.02 if short else 0.15, token_delay_s=0.002 if short else 0.015,
        max_sentences=1,
    )
    embeddings = MiniLMEmbeddings()

    plain = build_app(embeddings, llm)
    answers, plain_s = asyncio.run(ask_all(plain, questions))
    print(f"plain app:     {len(questions)} questions in {plain_s:.2f} s")
    print(f"  Q: {questions[0]}\n  A: {answers[0]}")

    tracker = LatencyTracker()
    optimized, cache = build_optimized_app(embeddings, llm, tracker)
    answers, fast_s = asyncio.run(ask_all(optimized, questions, tracker))
    print(f"optimized app: {len(questions)} questions in {fast_s:.2f} s "
          f"({plain_s / fast_s:.1f}x), cache hit rate {cache.stats.hit_rate:.0%}")
    print(f"  Q: {questions[0]}\n  A: {answers[0]}")
    tracker.print_report(title="optimized app: latency per stage")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
