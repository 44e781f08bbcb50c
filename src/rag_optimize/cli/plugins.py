"""CLI plugins: framework-specific commands and bench adapters come from entry points.

The core never imports LangChain or LlamaIndex, so the adapter distributions plug into the
CLI through two entry-point groups, loaded only when needed (importing a framework takes
seconds; ``rag-optimize cache`` and ``--help`` should not pay for it):

* ``rag_optimize.commands``: the entry point's name is a subcommand (``demo``, from
  ``langchain-rag-optimize``); it points at ``add_parser(subparsers)``, which adds the
  subcommand with ``handler=fn(args) -> int`` as its default. Loaded only when that
  subcommand is run (``--help`` lists it by name).
* ``rag_optimize.bench_targets``: points at ``bench_target(app, tracker, input_key)``, which
  returns a :class:`BenchTarget` when ``app`` is one of its framework's objects (running one
  question with the framework's latency handler attached, reporting into ``tracker``), else
  None. Loaded by ``rag-optimize bench``.

A plugin that fails to import (its framework is not installed) is skipped; the error is kept
for the message shown when a command it would provide is asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from rag_optimize.cli.measure import Call
from rag_optimize.streaming.sse import stream_text
from rag_optimize.tracing.tracker import LatencyTracker

logger = logging.getLogger("rag_optimize.cli")

COMMANDS = "rag_optimize.commands"
BENCH_TARGETS = "rag_optimize.bench_targets"

@dataclass
class BenchTarget:
    """How ``bench`` runs one question: ``call(question)``, then ``close()`` once at the end."""

    call: Call
    kind: str
    close: Callable[[], None] = field(default=lambda: None)


@dataclass
class LoadedPlugins:
    """Loaded bench-target factories and the load errors of plugins that failed."""

    bench_targets: list[tuple[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _entry_points(group: str) -> list[EntryPoint]:
    return sorted(entry_points(group=group), key=lambda e: e.name)


def _load(ep: EntryPoint, errors: dict[str, str]) -> Any:
    try:
        return ep.load()
    except Exception as exc:  # a broken or uninstalled framework must not break the CLI
        dist = ep.dist.name if ep.dist is not None else ep.value
        errors[ep.name] = f"{dist}: {type(exc).__name__}: {exc}"
        logger.debug("plugin %s failed to load", ep.name, exc_info=True)
        return None


def register_plugin_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    run: str | None,
    errors: dict[str, str],
) -> None:
    """Add the plugin subcommands: the full parser of ``run`` (loaded), placeholders else."""
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in _entry_points(COMMANDS):
        by_name.setdefault(ep.name, []).append(ep)
    for name, candidates in by_name.items():
        if name in subparsers.choices:
            continue
        # Every entry point of that name is tried: a stale one (a distribution that no
        # longer provides the command) must not hide the one that does.
        for ep in candidates if name == run else []:
            add_parser = _load(ep, errors)
            if add_parser is None:
                continue
            try:
                add_parser(subparsers)
                errors.pop(name, None)
                break
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        if name not in subparsers.choices:  # not asked for, or it failed to load
            ep = candidates[0]
            dist = ep.dist.name if ep.dist is not None else "a plugin"
            subparsers.add_parser(
                name, help=f"(from {dist}; see `rag-optimize {name} -h`)", add_help=False
            )


def load_bench_targets() -> LoadedPlugins:
    """Import every bench-target plugin; failures are recorded, not raised."""
    loaded = LoadedPlugins()
    for ep in _entry_points(BENCH_TARGETS):
        factory = _load(ep, loaded.errors)
        if callable(factory):
            loaded.bench_targets.append((ep.name, factory))
    return loaded


def make_input(question: str, input_key: str | None) -> Any:
    """The pipeline input for a question: the string, or ``{input_key: question}``."""
    return question if input_key is None else {input_key: question}


def bench_target(
    app: Any, tracker: LatencyTracker, input_key: str | None, loaded: LoadedPlugins
) -> BenchTarget:
    """A plugin's target for ``app`` when one recognises it, else :func:`generic_target`."""
    for _name, factory in loaded.bench_targets:
        target = factory(app, tracker, input_key)
        if target is not None:
            return target
    return generic_target(app, tracker, input_key)


def generic_target(app: Any, tracker: LatencyTracker, input_key: str | None) -> BenchTarget:
    """Duck-typed target without framework handlers: only ``ttft`` and ``total`` are seen.

    Streams ``astream``/``aquery`` objects (the first chunk records ``ttft``); otherwise
    awaits ``ainvoke`` or calls ``app`` (a sync callable runs in a worker thread).
    """
    if callable(getattr(app, "astream", None)) or callable(getattr(app, "aquery", None)):

        async def stream(question: str) -> None:
            async for _ in stream_text(app, make_input(question, input_key)):
                tracker.first_token()

        return BenchTarget(stream, "streaming pipeline")
    if callable(getattr(app, "ainvoke", None)):

        async def ainvoke(question: str) -> None:
            await app.ainvoke(make_input(question, input_key))

        return BenchTarget(ainvoke, "async pipeline")
    if callable(app):

        async def call(question: str) -> None:
            if inspect.iscoroutinefunction(app):
                await app(make_input(question, input_key))
            else:
                await asyncio.to_thread(app, make_input(question, input_key))

        return BenchTarget(call, "callable")
    raise TypeError(
        f"the factory returned {type(app).__name__}, which is neither a LangChain Runnable, "
        "a LlamaIndex query engine nor a callable"
    )
