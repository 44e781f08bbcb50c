"""Does ``rag-optimize bench`` measure each app on its own? Both orders of ``--app``, compared.

``optimized`` sets LangChain's process-wide LLM cache (``set_llm_cache``) and wraps the chain
with ``with_semantic_cache``, as an optimized app does; ``plain`` is the same chain without.
The model has no token streaming, so LangChain consults the global LLM cache for it: run in
one process after ``optimized``, ``plain`` would be answered from ``optimized``'s cache. The
bench runs each app in a process of its own; this script runs
``rag-optimize bench --app plain --app optimized`` and the reverse order and compares the
plain numbers (they must agree within noise, and plain must see no cache lookup).

Run: ``python benchmarks/bench_isolation.py`` (writes ``benchmarks/results/bench_isolation.json``).
The apps are the factories below (``--app bench_isolation:plain``), run from this directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_isolation.json"
DOCS = [
    "Redis keeps its data in memory and can persist it to disk with RDB or AOF.",
    "A semantic cache answers a question that means the same as one it already answered.",
    "BM25 ranks documents by how often they contain the query's words.",
    "Dense retrieval compares the embedding of the query with those of the documents.",
]
QUESTIONS = [
    "Where does Redis keep its data?", "What is a semantic cache?", "How does BM25 rank?",
    "where does redis keep its data", "What does dense retrieval compare?",
    "What is a semantic cache?", "how does bm25 rank documents", "Where does Redis keep its data?",
]
MODEL_SECONDS = 0.3  # a stand-in for a hosted model's answer time


def _chain() -> Any:
    from langchain_core.documents import Document
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore

    from rag_optimize import default_embedder
    from rag_optimize_demo.embeddings import PackagedEmbeddings

    class SlowModel(FakeMessagesListChatModel):
        """Answers after MODEL_SECONDS, without token streaming."""

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            time.sleep(MODEL_SECONDS)
            return super()._generate(*args, **kwargs)

    store = InMemoryVectorStore(PackagedEmbeddings(default_embedder()))
    store.add_documents([Document(page_content=d) for d in DOCS])
    prompt = ChatPromptTemplate.from_template("Context: {context}\nQuestion: {question}")
    model = SlowModel(responses=[AIMessage("From the context.")] * 1000)
    return (
        {"context": store.as_retriever(search_kwargs={"k": 2}), "question": RunnablePassthrough()}
        | prompt | model | StrOutputParser()
    )


def plain() -> Any:
    return _chain()


def optimized() -> Any:
    from langchain_core.globals import set_llm_cache

    from langchain_rag_optimize import SemanticLLMCache, with_semantic_cache
    from rag_optimize import SemanticCache, default_embedder

    cache = SemanticCache(default_embedder(), threshold=0.9)
    set_llm_cache(SemanticLLMCache(cache))
    return with_semantic_cache(_chain(), cache)


def _bench(order: list[str], questions: Path, out: Path) -> dict[str, Any]:
    apps = [a for name in order for a in ("--app", f"bench_isolation:{name}")]
    command = [sys.executable, "-m", "rag_optimize.cli.main", "bench", *apps, "--questions",
               str(questions), "--no-progress", "--no-chart", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(command, cwd=HERE, env=env, check=True, capture_output=True, text=True)
    report = json.loads((out / "bench.json").read_text())
    return {p["label"]: p for p in report["passes"]}


def _row(p: dict[str, Any]) -> dict[str, Any]:
    total = p["stages"]["total"]
    return {"total_p50_ms": total["p50"] * 1000, "total_p95_ms": total["p95"] * 1000,
            "cache_lookups": p["cache_lookups"], "cache_hits": p["cache_hits"],
            "generation_calls": p["stages"]["generation"]["count"]}


def main() -> None:
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        questions = Path(tmp) / "questions.txt"
        questions.write_text("\n".join(QUESTIONS) + "\n")
        runs = {}
        for order in (["plain", "optimized"], ["optimized", "plain"]):
            passes = _bench(order, questions, Path(tmp) / "-".join(order))
            runs[" then ".join(order)] = {name: _row(p) for name, p in passes.items()}
    a, b = (runs[k]["plain"]["total_p50_ms"] for k in runs)
    result = {
        "command": "python benchmarks/bench_isolation.py",
        "load_average_1_5_15": load,
        "questions": len(QUESTIONS),
        "model_seconds": MODEL_SECONDS,
        "runs": runs,
        "plain_p50_ratio_between_orders": max(a, b) / min(a, b),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
