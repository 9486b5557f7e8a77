"""The layering contracts (import-linter, ``[tool.importlinter]`` in pyproject.toml) and the package list.

The lint runs on the real sources staged by ``scripts/lint_imports.py``; a planted import shows it can fail.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _lint_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lint_imports", REPO / "scripts" / "lint_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lint_imports = _lint_script()


def test_the_layering_contracts_hold(tmp_path: Path) -> None:
    lint_imports.stage(tmp_path)
    done = lint_imports.lint(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(("planted", "contract"), [
    ("pem/runtime/planted.py", "The deploy side and the metrics never import torch"),
    ("pem/metrics/planted.py", "The deploy side and the metrics never import torch"),
    ("pem/calibration/planted.py", "PEM layers"),
])
def test_a_planted_import_breaks_a_contract(tmp_path: Path, planted: str, contract: str) -> None:
    lint_imports.stage(tmp_path)
    body = "import torch\n" if "torch" in contract else "from pem.export import wrapper\n"
    (tmp_path / planted).write_text(f'"""A planted violation."""\n{body}')
    done = lint_imports.lint(tmp_path)
    assert done.returncode == 1
    assert f"{contract} BROKEN" in done.stdout
    assert planted.removesuffix(".py").replace("/", ".") in done.stdout


def test_every_top_level_module_has_a_layer(tmp_path: Path) -> None:
    root = lint_imports.stage(tmp_path)
    modules = {f"pem.{p.stem}" for p in root.glob("*.py") if p.stem != "__init__"}
    modules |= {f"pem.{p.parent.name}" for p in root.glob("*/__init__.py")}
    (layers,) = [c["layers"] for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    placed = {name.strip(" ()") for layer in layers for name in layer.split("|")}
    assert modules <= placed, f"modules without a layer: {sorted(modules - placed)}"


def test_the_package_list_matches_the_folders_holding_python() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (REPO / folder).rglob("*.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *relative.parts]))
    assert set(setuptools["packages"]) == found
