"""``rag-optimize bench``: benchmark the user's own LangChain Runnable or LlamaIndex engine.

``--app module:factory`` names a function (imported from the current directory or the
Python path) that returns the pipeline; give ``--app`` twice to compare two pipelines (say,
before and after the drop-ins) side by side. Each question of ``--questions`` (one per line,
``#`` comments and blank lines skipped) is one measured call, with the framework's latency
handler attached by the adapter plugin, ``--concurrency`` calls at a time, ``--runs`` passes.
Prints the per-stage p50/p95/p99 table and writes ``bench.json`` and ``bench.png`` into
``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag_optimize.cli import report
from rag_optimize.cli.errors import FAILURE, CliError
from rag_optimize.cli.measure import PassResult, PipelineError, measure_pass
from rag_optimize.cli.plugins import LoadedPlugins, bench_target, load_bench_targets
from rag_optimize.cli.progress import progress_bar
from rag_optimize.tracing.tracker import LatencyTracker

DEFAULT_OUT = "rag_optimize_report"


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``, with a clear message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark your own LangChain Runnable or LlamaIndex query engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--app", action="append", required=True, metavar="MODULE:FACTORY",
                   help="function returning the pipeline; repeat to compare two")
    p.add_argument("--questions", required=True, type=Path, metavar="FILE",
                   help="text file, one question per line")
    p.add_argument("--concurrency", type=positive_int, default=1)
    p.add_argument("--runs", type=positive_int, default=1, help="passes over the questions")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="unmeasured calls first")
    p.add_argument("--input-key", default=None, metavar="KEY",
                   help="send {KEY: question} instead of the question string")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                   help=f"report directory (default ./{DEFAULT_OUT}/)")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_bench)


def read_questions(path: Path) -> list[str]:
    """Non-blank lines of ``path`` that do not start with ``#``; CliError if none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"questions file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read questions file {path}: {exc}") from None
    questions = [line.strip() for line in text.splitlines()]
    questions = [q for q in questions if q and not q.startswith("#")]
    if not questions:
        raise CliError(
            f"questions file {path} has no questions (put one per line; blank lines and "
            "lines starting with # are skipped)"
        )
    return questions


def load_object(spec: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted); the current directory is importable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"--app must look like 'module:factory', got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise CliError(
                f"cannot import module {module_name!r} (from --app {spec!r}): no module named "
                f"{missing!r}; run from the directory that contains it or fix PYTHONPATH"
            ) from None
        raise CliError(f"importing module {module_name!r} failed: {exc}", FAILURE) from None
    except Exception as exc:
        raise CliError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc}", FAILURE
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(
                f"module {module_name!r} has no attribute {attr!r} (from --app {spec!r})"
            ) from None
    return obj


def is_pipeline(obj: Any) -> bool:
    return any(callable(getattr(obj, m, None)) for m in ("astream", "aquery", "ainvoke"))


async def build_app(spec: str) -> Any:
    """Call the factory named by ``spec`` (sync or async) and return the pipeline."""
    factory = load_object(spec)
    if is_pipeline(factory) and not inspect.isclass(factory):
        return factory  # the name points at a ready pipeline
    if not callable(factory):
        raise CliError(f"{spec!r} is neither a factory function nor a pipeline")
    try:
        app = factory()
        if inspect.isawaitable(app):
            app = await app
    except Exception as exc:
        raise CliError(f"the factory {spec} raised {type(exc).__name__}: {exc}", FAILURE) from exc
    if app is None:
        raise CliError(f"the factory {spec} returned None instead of a pipeline", FAILURE)
    return app


async def _bench(args: argparse.Namespace) -> list[PassResult]:
    questions = read_questions(args.questions)
    plugins: LoadedPlugins | None = None  # after the user's input checked out: imports are slow
    results = []
    for spec in args.app:
        app = await build_app(spec)
        plugins = plugins or load_bench_targets()
        tracker = LatencyTracker()
        try:
            target = bench_target(app, tracker, args.input_key, plugins)
        except TypeError as exc:
            raise CliError(f"{spec}: {exc}", FAILURE) from None
        label = spec.rpartition(":")[2]
        total = len(questions) * args.runs
        try:
            with progress_bar(f"{label} ({target.kind})", total, not args.no_progress) as advance:
                result = await measure_pass(
                    label, target.call, questions, tracker, concurrency=args.concurrency,
                    runs=args.runs, warmup=args.warmup, progress=advance,
                )
        except PipelineError as exc:
            raise CliError(f"{spec}: {exc}", FAILURE) from None
        finally:
            target.close()
        result.extra["app"] = spec
        result.extra["kind"] = target.kind
        results.append(result)
    return results


def run_bench(args: argparse.Namespace) -> int:
    """Run the ``bench`` command; raises :class:`CliError` for the user's mistakes."""
    if len(args.app) > 2:
        raise CliError("give --app at most twice (one pipeline, or before and after)")
    results = asyncio.run(_bench(args))
    report.print_table(results, title="rag-optimize bench: latency per stage")
    for line in report.summary_lines(results):
        print(line)
    json_path = report.write_json(
        args.out / "bench.json", results, questions=str(args.questions), runs=args.runs
    )
    print(f"JSON report: {json_path}")
    if not args.no_chart:
        print(f"chart: {report.write_chart(args.out / 'bench.png', results)}")
    return 0
