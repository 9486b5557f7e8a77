"""Errors of the export steps (torch-free, so the CLI can catch them without importing torch)."""
from __future__ import annotations

from pem.runtime.errors import PemError


class ExportError(PemError, ValueError):
    """The export cannot be done as asked; the message says why."""
