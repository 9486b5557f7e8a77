"""One check for every command's output path: it must not be one of the command's inputs and must be writable.

Run before any work starts, so a long export or benchmark cannot end by replacing its own source or failing to
write.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pem.runtime.errors import PemError

__all__ = ["DestinationError", "check_destination"]


class DestinationError(PemError):
    """An output path that would clobber an input or cannot be written (exit 2)."""


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_destination(path: Path | str, inputs: Iterable[Path | str | None] = (), *, what: str = "output",
                      folder: bool = False) -> Path:
    """Refuse ``path`` when it resolves to one of ``inputs``, when it is a folder but a file is wanted (or the
    reverse), or when its nearest existing folder is not writable. Returns ``path`` as a ``Path``; raises
    :class:`DestinationError` with one line otherwise."""
    path = Path(path)
    for source in inputs:
        if source is None or str(source) == "":
            continue
        source = Path(source)
        if _same(path, source):
            raise DestinationError(f"{what} {path} is the input {source}: it would be overwritten; "
                                   "choose another path")
    if path.is_dir() and not folder:
        raise DestinationError(f"{what} {path} is a folder; give a file name")
    if path.exists() and folder and not path.is_dir():
        raise DestinationError(f"{what} {path} exists and is not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise DestinationError(f"cannot write {path}: it is not writable")
    nearest = path.parent.absolute() if not folder else path.absolute()
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
        raise DestinationError(f"cannot write {path}: {nearest} is not a writable folder")
    return path
