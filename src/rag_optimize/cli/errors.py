"""The error the CLI turns into a one-line message and a non-zero exit status."""

from __future__ import annotations

from rag_optimize.errors import RagOptimizeError

USAGE = 2
FAILURE = 1


class CliError(RagOptimizeError):
    """A problem the user can fix (bad argument, file, module); ``exit_code`` for the shell."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
