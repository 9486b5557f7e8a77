"""The one base of every expected failure, and the exit codes of the command-line tools.

Torch-free and dependency-free, so every package (the runtime included) can derive its errors from
:class:`PemError`. An expected failure is bad input, a refused request or a failed check: its message is one line
for the user, and its ``exit_code`` says how a command ends. Anything else that escapes a command is a bug and
keeps its traceback.
"""
from __future__ import annotations

__all__ = [
    "EXIT_DONE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_REFUSED",
    "EXIT_SOME_FAILED",
    "PemError",
]

EXIT_DONE = 0  # finished, every input processed
EXIT_SOME_FAILED = 1  # finished, but some inputs failed or a check found errors
EXIT_REFUSED = 2  # refused before producing anything: bad input or arguments, a failed parity or verify check
EXIT_INTERNAL = 3  # an unexpected error (a bug)
EXIT_INTERRUPTED = 130  # stopped by SIGINT / SIGTERM


class PemError(Exception):
    """An expected failure with a one-line message; ``exit_code`` is the command's exit status for it.

    Subclasses keep their other built-in bases (``ValueError``, ``KeyError``, ...) where callers catch those.
    ``exit_code`` is a class attribute (``EXIT_REFUSED`` unless a subclass says otherwise) that one instance may
    override: ``SomeError("message", exit_code=EXIT_SOME_FAILED)``.
    """

    exit_code: int = EXIT_REFUSED

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        """The message itself (a ``KeyError`` subclass would otherwise print it quoted)."""
        if len(self.args) == 1 and isinstance(self.args[0], str):
            return self.args[0]
        return super().__str__()
