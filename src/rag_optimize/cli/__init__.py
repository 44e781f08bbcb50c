"""The ``rag-optimize`` command line, and the building blocks its plugins use.

Adapters add bench targets and commands through entry points (:mod:`rag_optimize.cli.plugins`);
what a plugin or a demo needs from the core is exported here and listed in ``__all__``:
``BenchTarget``/``make_input`` (a bench target and its input), ``measure_pass``/``PassResult``
(timing a pass over questions), ``progress_bar``, ``report`` (printing and saving pass
results) and ``positive_int`` (an argparse type). The other submodules may move.
"""

from rag_optimize.cli import report as report
from rag_optimize.cli.measure import PassResult as PassResult
from rag_optimize.cli.measure import measure_pass as measure_pass
from rag_optimize.cli.progress import progress_bar as progress_bar
from rag_optimize.cli.plugins import BenchTarget as BenchTarget
from rag_optimize.cli.plugins import make_input as make_input
from rag_optimize.cli.bench import positive_int as positive_int

__all__ = [
    "BenchTarget",
    "PassResult",
    "make_input",
    "measure_pass",
    "positive_int",
    "progress_bar",
    "report",
]
