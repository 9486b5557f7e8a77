"""The one entry wrapper of every console script: exit codes, one-line errors, saved tracebacks.

Torch-free (stdlib and :mod:`pem.runtime.errors` only). ``@command("pem-x")`` wraps a ``main(argv) -> int``:

* the ``int`` it returns is the exit status (0 done, 1 some inputs failed or a check found errors);
* a :class:`PemError` prints ``pem-x: error: <one line>`` and exits with its ``exit_code`` (2 unless it says
  otherwise; an interrupt-type error with 130 prints no ``error:``);
* ``KeyboardInterrupt`` prints ``pem-x: interrupted`` and exits 130;
* any other exception is a bug: its traceback goes to a file in the temp folder, one line names that file and the
  status is 3. ``--debug`` (anywhere on the command line, removed before parsing) or ``PEM_DEBUG=1`` also prints it.

``SystemExit`` (argparse's ``--help`` and usage errors, status 0 or 2) passes through unchanged.
"""
from __future__ import annotations

import functools
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence

from pem.runtime.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, PemError

__all__ = ["DEBUG_FLAG", "command", "one_line"]

DEBUG_FLAG = "--debug"
Main = Callable[..., "int | None"]


def one_line(message: object) -> str:
    """``message`` as one line: its lines joined by spaces, blank ones dropped."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _debug_requested(args: list[str]) -> bool:
    return DEBUG_FLAG in args or os.environ.get("PEM_DEBUG", "") not in ("", "0")


def _save_traceback(prog: str, error: BaseException) -> str:
    """Write ``error``'s traceback to a new file in the temp folder; returns its path."""
    handle, path = tempfile.mkstemp(prefix=f"{prog}-", suffix=".traceback.txt")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(f"{prog} {' '.join(sys.argv[1:])}\n")
        stream.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    return path


def _internal(prog: str, error: Exception, debug: bool) -> int:
    try:
        where = f"traceback saved to {_save_traceback(prog, error)}"
    except OSError as save_error:
        where = f"traceback not saved ({save_error.strerror or save_error})"
        debug = True
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    hint = "" if debug else f"; {DEBUG_FLAG} or PEM_DEBUG=1 prints it"
    print(f"{prog}: internal error: {type(error).__name__}: {one_line(error)} ({where}{hint})", file=sys.stderr)
    return EXIT_INTERNAL


def command(prog: str) -> Callable[[Main], Callable[[Sequence[str] | None], int]]:
    """Decorator: run ``main(argv)`` under the exit-code discipline above; ``prog`` prefixes every message."""

    def wrap(main: Main) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            args = list(sys.argv[1:] if argv is None else argv)
            debug = _debug_requested(args)
            args = [arg for arg in args if arg != DEBUG_FLAG]
            try:
                code = main(args)
            except PemError as error:
                kind = "" if error.exit_code == EXIT_INTERRUPTED else "error: "
                print(f"{prog}: {kind}{one_line(error)}", file=sys.stderr)
                return error.exit_code
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            except Exception as error:  # the one broad catch: a bug becomes one line and a saved traceback
                return _internal(prog, error, debug)
            return int(code or 0)

        return run

    return wrap
