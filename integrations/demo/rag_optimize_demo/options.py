"""The ``rag-optimize demo`` command line (kept apart so the CLI imports no LangChain)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive_int(text: str) -> int:
    from rag_optimize.cli import positive_int

    return positive_int(text)


def add_demo_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="offline demo: a LangChain RAG chain before and after rag-optimize",
        description=(
            "Runs a question stream (with paraphrases and repeats) through a plain LangChain "
            "RAG chain, then through the same chain with the semantic cache, the async hybrid "
            "retriever, the batching embedder and the latency handler dropped in; prints the "
            "per-stage p50/p95/p99 table, TTFT, cache hit rate and speed-up, and writes a "
            "JSON report and a PNG chart."
        ),
    )
    p.add_argument("--short", action="store_true", help="a few questions, fast (for tests)")
    p.add_argument(
        "--questions",
        type=_positive_int,
        default=None,
        metavar="N",
        help="questions in the stream (default 80, 12 with --short)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        help="questions in flight at once (default 4)",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the question stream")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="semantic cache similarity threshold (default: the cache's own, 0.8 with the "
        "default decision pipeline)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("rag_optimize_report"),
        help="report directory (default ./rag_optimize_report/)",
    )
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="one line per question: plain and optimized latency, cache hit",
    )

    def handler(args: argparse.Namespace) -> int:
        from rag_optimize_demo.runner import run_demo

        return run_demo(args)

    p.set_defaults(handler=handler)
