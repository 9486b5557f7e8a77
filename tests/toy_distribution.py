"""A toy installed distribution for the entry-point tests: one package and its ``*.dist-info`` in a folder."""
from __future__ import annotations

from pathlib import Path


def install_toy_distribution(site: Path, package: str, source: str, group: str, entries: dict[str, str]) -> None:
    """Write ``site/package/__init__.py`` holding ``source`` and a dist-info declaring ``entries`` (name -> value)
    in the entry-point ``group``, as ``pip install`` would leave them; ``site`` goes on ``sys.path`` for use."""
    (site / package).mkdir()
    (site / package / "__init__.py").write_text(source)
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    name = package.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{entry} = {value}\n" for entry, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
