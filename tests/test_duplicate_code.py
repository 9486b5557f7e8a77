"""No repeated code across the five source folders: pylint's duplicate-code check (R0801) reports nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("pem", "export", "runtime", "calibration", "benchmarks")
CHECK = ("--disable=all", "--enable=duplicate-code", "--min-similarity-lines=6", "--ignore-imports=y",
         "--ignore-docstrings=y", "--score=n")


def duplicate_code_report(folders: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylint", *CHECK, *folders], cwd=cwd, capture_output=True,
                          text=True, check=False)


def test_the_source_folders_hold_no_duplicate_code() -> None:
    done = duplicate_code_report(SOURCE_FOLDERS, REPO)
    assert "R0801" not in done.stdout and done.returncode == 0, done.stdout + done.stderr


def test_the_check_finds_a_planted_copy(tmp_path: Path) -> None:
    body = "\n".join(f"    total = total * {n} + {n}" for n in range(8))
    for name in ("first", "second"):
        (tmp_path / f"{name}.py").write_text(f'"""{name}"""\n\n\ndef {name}(total: int) -> int:\n{body}\n'
                                             "    return total\n")
    done = duplicate_code_report(("first.py", "second.py"), tmp_path)
    assert "R0801" in done.stdout
