"""``rag-optimize bench``: benchmark the user's own LangChain Runnable or LlamaIndex engine.

``--app module:factory`` names a function (imported from the current directory or the
Python path) that returns the pipeline; give ``--app`` twice to compare two pipelines (say,
before and after the drop-ins) side by side. Each question of ``--questions`` (one per line,
``#`` comments and blank lines skipped) is one measured call, with the framework's latency
handler attached by the adapter plugin, ``--concurrency`` calls at a time, ``--runs`` passes.

Each app is built and measured in a process of its own, so nothing one app sets globally
(``set_llm_cache``, ``Settings``, module-level caches) can answer the other's questions; the
order of ``--app`` does not matter. Warm-up calls use a question outside the file. The first
pass meets the caches as the app built them; with ``--runs`` > 1 the later passes replay the
same questions into caches the first pass filled: they are reported apart, labelled warm,
and the table and speed-up are the first pass's. Cache lookups the bench can see (LangChain
``with_semantic_cache`` and ``SemanticLLMCache``, LlamaIndex ``CachedQueryEngine``) give the
``cache`` stage and the hit rate; ``--expected FILE`` (JSON, question -> answer id) counts the
hits that answered a question with another question's answer.

Prints the per-stage p50/p95/p99 table and writes ``bench.json`` and ``bench.png`` into
``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag_optimize.cli import report
from rag_optimize.cli.errors import FAILURE, CliError
from rag_optimize.cli.measure import PassResult, PipelineError, measure_pass, summarise
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
    p.add_argument("--expected", type=Path, default=None, metavar="FILE",
                   help="JSON object question -> answer id; counts wrong cache hits")
    p.add_argument("--worker-output", type=Path, default=None, help=argparse.SUPPRESS)
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


WARMUP_QUESTION = "rag-optimize warm-up call {}, not measured"


async def _measure(args: argparse.Namespace, spec: str) -> PassResult:
    """Build the app named by ``spec`` and measure it (in this process)."""
    questions = read_questions(args.questions)
    app = await build_app(spec)
    plugins: LoadedPlugins = load_bench_targets()
    tracker = LatencyTracker()
    try:
        target = bench_target(app, tracker, args.input_key, plugins)
    except TypeError as exc:
        raise CliError(f"{spec}: {exc}", FAILURE) from None
    label = spec.rpartition(":")[2]
    try:
        for i in range(args.warmup):  # outside the question file: no answer is pre-cached
            await target.call(WARMUP_QUESTION.format(i + 1))
        total = len(questions) * args.runs
        with progress_bar(f"{label} ({target.kind})", total, not args.no_progress) as advance:
            result = await measure_pass(
                label, target.call, questions, tracker, concurrency=args.concurrency,
                runs=args.runs, warmup=0, progress=advance,
            )
    except PipelineError as exc:
        raise CliError(f"{spec}: {exc}", FAILURE) from None
    except Exception as exc:  # the warm-up call
        raise CliError(f"{spec}: the warm-up call raised {type(exc).__name__}: {exc}",
                       FAILURE) from None
    finally:
        target.close()
    result.extra["app"] = spec
    result.extra["kind"] = target.kind
    return result


def _measure_in_own_process(args: argparse.Namespace, spec: str, workdir: Path) -> PassResult:
    """Run ``spec`` in a fresh interpreter (same Python, path and directory); its result."""
    output = workdir / f"pass-{abs(hash(spec))}.json"
    command = [
        sys.executable, "-m", "rag_optimize.cli.main", "bench", "--app", spec,
        "--questions", str(args.questions.resolve()), "--concurrency", str(args.concurrency),
        "--runs", str(args.runs), "--warmup", str(args.warmup), "--no-progress",
        "--worker-output", str(output),
    ]
    if args.input_key is not None:
        command += ["--input-key", args.input_key]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *[p for p in sys.path if p]])
    if not args.no_progress:
        print(f"measuring {spec} in its own process ...", flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        prefix = "rag-optimize: error: "
        if last.startswith(prefix):
            raise CliError(last[len(prefix):], done.returncode)
        raise CliError(f"{spec}: the measuring process failed: {last}", FAILURE)
    return PassResult.from_dict(json.loads(output.read_text(encoding="utf-8")))


def read_expected(path: Path | None) -> dict[str, str] | None:
    """The ``--expected`` file: a JSON object mapping each question to its answer id."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"expected-answers file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read expected-answers file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise CliError(
            f"expected-answers file {path} must be a JSON object question -> answer id, "
            f"got {type(data).__name__}"
        )
    return {k: str(v) for k, v in data.items()}


def check_hits(result: PassResult, expected: dict[str, str]) -> dict[str, int]:
    """Hits whose matched question has another answer id (``wrong``), the same (``right``),
    or that cannot be checked (the cache did not say what it matched, or it is not listed)."""
    counts = {"right": 0, "wrong": 0, "unchecked": 0}
    for call in result.per_call:
        if not call.hit:
            continue
        mine, theirs = expected.get(call.question), expected.get(call.matched or "")
        if call.matched == call.question and mine is not None:
            counts["right"] += 1
        elif mine is None or theirs is None:
            counts["unchecked"] += 1
        else:
            counts["right" if mine == theirs else "wrong"] += 1
    return counts


def run_bench(args: argparse.Namespace) -> int:
    """Run the ``bench`` command; raises :class:`CliError` for the user's mistakes."""
    if len(args.app) > 2:
        raise CliError("give --app at most twice (one pipeline, or before and after)")
    if args.worker_output is not None:  # the child process of one app
        result = asyncio.run(_measure(args, args.app[0]))
        args.worker_output.write_text(json.dumps(result.as_dict()), encoding="utf-8")
        return 0
    read_questions(args.questions)  # the user's input first: each process imports a framework
    expected = read_expected(args.expected)
    with tempfile.TemporaryDirectory(prefix="rag-optimize-bench-") as workdir:
        measured = [_measure_in_own_process(args, spec, Path(workdir)) for spec in args.app]
    results = [r.only_run(0) for r in measured]  # the cold pass; warm passes reported apart
    for full, cold in zip(measured, results, strict=True):
        if expected is not None:
            cold.extra["hits_checked"] = check_hits(cold, expected)
        if full.runs() > 1:
            warm = summarise(
                f"{full.label} (warm)", [c for c in full.per_call if c.run > 0],
                full.wall_seconds - cold.wall_seconds, full.concurrency,
            )
            cold.extra["warm"] = warm.as_dict()
    report.print_table(results, title="rag-optimize bench: latency per stage (first pass)")
    for line in report.summary_lines(results):
        print(line)
    for full in measured:
        if full.runs() > 1:
            warm_total = summarise("warm", [c for c in full.per_call if c.run > 0], 0.0, 1)
            rate = warm_total.hit_rate
            print(
                f"{full.label} warm passes 2..{full.runs()} (the same questions again, caches "
                f"filled by pass 1): total p50 {warm_total.total.p50 * 1000:.1f} ms"
                + (f", hit rate {rate:.0%}" if rate is not None else "")
                + "; not part of the speed-up above"
            )
    json_path = report.write_json(
        args.out / "bench.json", results, questions=str(args.questions), runs=args.runs,
        isolation="each app in its own process",
    )
    print(f"JSON report: {json_path}")
    if not args.no_chart:
        chart = report.write_chart(args.out / "bench.png", results,
                                   title="rag-optimize bench (first pass)")
        print(f"chart: {chart}")
    return 0
