"""The ``rag-optimize`` command line.

* ``rag-optimize demo``: the offline before/after demo (provided by ``rag-optimize-demo``
  through the ``rag_optimize.commands`` entry point, since the core imports no framework);
* ``rag-optimize bench --app module:factory --questions file.txt``: benchmark your pipeline;
* ``rag-optimize cache stats|clear --redis URL --namespace NS``: inspect or empty a shared cache;
* ``rag-optimize calibrate ...``: choose the cache threshold from labelled pairs.

Every user mistake (bad argument, module, file, a factory that raises) ends with one
``rag-optimize: error: ...`` line on stderr and a non-zero exit status (2 for usage, 1 for
failures), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rag_optimize._version import __version__
from rag_optimize.cli import bench, cache_cmd
from rag_optimize.cli.errors import FAILURE, USAGE, CliError
from rag_optimize.cli.plugins import register_plugin_commands

PROG = "rag-optimize"


# Plugin commands the core names even when their distribution is missing: the distribution
# to install, and the module that provides them (imported directly when it is on the path
# without its distribution installed, as in a source checkout).
PLUGIN_COMMANDS = {"demo": "rag-optimize-demo"}
_PLUGIN_MODULES = {"demo": ("rag_optimize_demo.options", "add_demo_parser")}


def _missing_command(name: str, errors: dict[str, str]) -> str:
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
    dist = PLUGIN_COMMANDS.get(name, "langchain-rag-optimize")
    return (
        f"the {name!r} command comes from the {dist} package; install it with "
        f"`pip install {dist}`" + (f" (plugin errors: {detail})" if detail else "")
    )


def build_parser(run: str | None, errors: dict[str, str]) -> argparse.ArgumentParser:
    """The parser; the plugin subcommand ``run`` (the one asked for) is fully loaded."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Make LangChain and LlamaIndex RAG apps fast, and measure it."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if run in _PLUGIN_MODULES:
        _add_from_source(subparsers, run, errors)
    register_plugin_commands(subparsers, run, errors)
    for name, dist in PLUGIN_COMMANDS.items():  # named here so their absence is explained
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=f"(needs `pip install {dist}`)", add_help=False)
    bench.add_parser(subparsers)
    cache_cmd.add_parser(subparsers)
    subparsers.add_parser(
        "calibrate", help="choose the semantic cache threshold from labelled pairs",
        add_help=False,
    )
    return parser


def _add_from_source(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
    errors: dict[str, str],
) -> None:
    """Add command ``name`` from its module when it is importable: installed (the same module
    its entry point names) or on the path of a source checkout."""
    module_name, function = _PLUGIN_MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    try:
        getattr(module, function)(subparsers)
        errors.pop(name, None)
    except Exception as exc:  # a broken plugin must not break the CLI
        errors[name] = f"{type(exc).__name__}: {exc}"


def _calibrate(argv: Sequence[str]) -> int:
    try:
        from rag_optimize.cli.calibrate import run_calibrate
    except ImportError as exc:
        message = f"calibrate is not available in this installation ({exc})"
        raise CliError(message, FAILURE) from None
    return int(run_calibrate(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] == "calibrate":
            return _calibrate(args_list[1:])
        errors: dict[str, str] = {}
        run = next((a for a in args_list if not a.startswith("-")), None)
        parser = build_parser(run, errors)
        # Unknown arguments are checked after the command: `demo --short` without the demo
        # installed gets the install hint, not "unrecognized arguments: --short".
        args, unknown = parser.parse_known_args(args_list)
        if args.command is None:
            parser.print_help()
            return USAGE
        handler = getattr(args, "handler", None)
        if handler is None:
            raise CliError(_missing_command(args.command, errors))
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        return int(handler(args))
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:  # an optional dependency of the command is missing
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m rag_optimize.cli.main
    sys.exit(main())
