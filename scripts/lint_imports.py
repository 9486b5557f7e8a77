"""Check PEM's layering contracts (``[tool.importlinter]`` in pyproject.toml) with import-linter.

The repository keeps each component at top level (``export/`` is ``pem.export``, see ``package-dir`` in
pyproject.toml), while import-linter's graph builder (grimp) reads one package from one folder. So this script
stages the import namespace first: a temporary ``pem/`` holding a copy of ``pem/`` with every other component copied
in under its import name, and runs ``lint-imports`` on it.

Usage: ``python scripts/lint_imports.py`` (exit 0 when every contract holds, 1 when one is broken).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def package_dirs(repo: Path = REPO) -> dict[str, str]:
    """``{"pem": "pem", "pem.export": "export", ...}`` from pyproject.toml's ``package-dir``."""
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    return dict(config["tool"]["setuptools"]["package-dir"])


def stage(destination: Path, repo: Path = REPO) -> Path:
    """Copy the sources into ``destination/pem`` laid out by import name -> the staged ``pem`` folder."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, folder in sorted(package_dirs(repo).items(), key=lambda item: item[0].count(".")):
        target = destination.joinpath(*name.split("."))
        shutil.copytree(repo / folder, target, ignore=ignore, dirs_exist_ok=True)
    return destination / "pem"


def lint(staged_root: Path, repo: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` with the repository's contracts on the namespace staged under ``staged_root``."""
    environment = {**os.environ, "PYTHONPATH": str(staged_root)}
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
               str(repo / "pyproject.toml"), "--no-cache"]
    return subprocess.run(command, cwd=staged_root, env=environment, capture_output=True, text=True, check=False)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pem-layers-") as work:
        stage(Path(work))
        done = lint(Path(work))
    print(done.stdout + done.stderr, end="")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
