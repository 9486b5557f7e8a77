"""The export variants of ``pem-export`` for the lint matrix, built from the CLI's own option lists.

Each (input, head, dynamic) is exported once per session through the shared ``tiny_onnx`` fixture
(``synthetic_panoptic_tiny`` with its trained weights, 128x128, no parity check): the uint8 raw/panoptic static and
panoptic dynamic exports are the ones the precision, benchmark and example tests already make, so in a full run the
matrix's CI part adds one export. FP16 and TensorRT-target INT8 are derived from the FP32 export, INT8 calibrated
on two synthetic 128x128 scenes.
"""
from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from pem.export.cli import INPUT_CHOICES, build_parser
from pem.export.trt_support import LintReport, lint_model
from pem.export.trt_support.tables import stored_versions
from pem.export.trt_support.versions import format_version

SIZE = (128, 128)
CALIBRATION_IMAGES = 2
TABLES = ("10.3", format_version(stored_versions()[-1]))  # JetPack 6.2's TensorRT and the newest stored table


def report_errors(report: LintReport) -> list[str]:
    """A lint report's error findings as ``where op: messages`` lines (empty: TensorRT parses the graph)."""
    return [f"{f.where} {f.op}: {'; '.join(f.messages)}" for f in report.findings if f.severity == "error"]


def lint_errors(model: onnx.ModelProto, version: str, plugins: tuple[str, ...] | list[str] = ()) -> list[str]:
    """:func:`report_errors` of the lint of ``model`` for TensorRT ``version``."""
    return report_errors(lint_model(model, version, plugins=plugins))


def _action(flag: str) -> argparse.Action:
    return next(action for action in build_parser()._actions if flag in action.option_strings)


def cli_choices(flag: str) -> tuple:
    """The values ``pem-export`` accepts for ``flag`` (its choices, or both states of a switch)."""
    action = _action(flag)
    if action.choices is not None:
        return tuple(action.choices)
    return action.default, action.const


@dataclass(frozen=True)
class Variant:
    """One export: ``--input``, ``--head``, ``--dynamic`` and ``--fusion-size`` of ``pem-export``."""

    input: str
    head: str
    dynamic: bool
    fusion_size: str

    @property
    def id(self) -> str:
        """Short test id, e.g. ``uint8-panoptic-static-input``."""
        return f"{self.input}-{self.head}-{'dynamic' if self.dynamic else 'static'}-{self.fusion_size}"

    def values(self) -> set[tuple[str, object]]:
        """The (flag, value) pairs of this variant."""
        return set(zip(FLAGS, (self.input, self.head, self.dynamic, self.fusion_size)))


FLAGS = ("--input", "--head", "--dynamic", "--fusion-size")  # the fields of Variant, in order


def all_variants() -> list[Variant]:
    """Every (input, head, dynamic, fusion size) combination ``pem-export`` offers; the fusion size only shapes the
    semantic and panoptic heads, so raw graphs come in pem-export's default fusion size only."""
    raw_fusion = _action("--fusion-size").default
    return [Variant(*values) for values in itertools.product(*(cli_choices(flag) for flag in FLAGS))
            if values[1] != "raw" or values[3] == raw_fusion]


def _default_first(flag: str) -> list:
    default = _action(flag).default
    return sorted(cli_choices(flag), key=lambda value: value != default)


# exports other test modules take from ``tiny_onnx`` at 128x128 (uint8 input): free in a full run
SHARED = (("uint8", "panoptic", False, "original"), ("uint8", "panoptic", True, "original"))


def value_covering() -> list[Variant]:
    """Few variants in which every value of every option appears: pem-export's default export first, then the
    exports shared with other tests, then whichever adds the most values not yet covered."""
    default = Variant(*(_action(flag).default for flag in FLAGS))
    shared = [Variant(*values) for values in SHARED]
    candidates = [default, *shared, *(v for v in all_variants() if v != default and v not in shared)]
    uncovered = {(flag, value) for flag in FLAGS for value in _default_first(flag)}

    def gain(variant: Variant) -> int:
        return len(variant.values() & uncovered)

    chosen = [default]
    uncovered -= default.values()
    for variant in shared:
        if gain(variant):
            chosen.append(variant)
            uncovered -= variant.values()
    while uncovered:
        best = max(candidates, key=gain)
        chosen.append(best)
        uncovered -= best.values()
    return chosen


@pytest.fixture(scope="session")
def calibration_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """Two synthetic scenes, 64x64 PNG (the tiny model's training distribution)."""
    from pem.data.synthetic import synthetic_scene

    folder = tmp_path_factory.mktemp("lint_calibration")
    rng = np.random.default_rng(5)
    paths = []
    for index in range(CALIBRATION_IMAGES):
        path = folder / f"scene_{index}.png"
        Image.fromarray(synthetic_scene(rng, SIZE, min_area=16)[0]).save(path)
        paths.append(path)
    return tuple(paths)


@pytest.fixture(scope="session")
def variant_graphs(tiny_onnx: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory,
                   calibration_images: tuple[Path, ...]) -> Callable[[Variant], dict[str, onnx.ModelProto]]:
    """``graphs(variant)`` -> ``{precision: ModelProto}`` for every ``--precision`` choice, made once per variant."""
    from pem.export.precision.apply import PrecisionRequest, apply_precision
    from pem.export.precision.recipe import QuantRecipe

    assert "tensorrt" in cli_choices("--int8-target")
    cache: dict[Variant, dict[str, onnx.ModelProto]] = {}
    recipe = QuantRecipe(target="tensorrt", calibration_images=CALIBRATION_IMAGES)
    special = {"int8": PrecisionRequest("int8", calibration_images=calibration_images, recipe=recipe)}
    requests = [special.get(precision, PrecisionRequest(precision)) for precision in cli_choices("--precision")]

    def graphs(variant: Variant) -> dict[str, onnx.ModelProto]:
        if variant not in cache:
            path = tiny_onnx(variant.head, SIZE, variant.dynamic, INPUT_CHOICES[variant.input], variant.fusion_size)
            fp32 = onnx.load(str(path))
            work = tmp_path_factory.mktemp(variant.id)
            cache[variant] = {request.precision: apply_precision(fp32, request, work, None, lambda _: None)[0]
                              for request in requests}
        return cache[variant]

    return graphs
