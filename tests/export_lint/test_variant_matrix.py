"""Every export ``pem-export`` can make passes the TensorRT lint for JetPack 6.2's 10.3 and the newest table, with no
UINT8 intermediate tensor, as exported and (newest table) after the plugin rewrite of ``--format engine``.

CI lints a few variants in which every value of every option appears (the default export and the exports other tests
share first: see ``conftest.value_covering``), in every precision; ``-m slow`` lints the rest of the full product.
"""
from __future__ import annotations

from collections.abc import Callable

import onnx
import pytest

from pem.export.tensorrt.graph_rewrite import rewrite_for_plugins
from pem.export.trt_support import lint_model
from pem.export.trt_support.onnx_graph import dtype_name, tensor_types
from tests.export_lint.conftest import (
    TABLES,
    Variant,
    all_variants,
    cli_choices,
    lint_errors,
    report_errors,
    value_covering,
)

NEWEST = TABLES[-1]
COVERING = value_covering()
REST = [variant for variant in all_variants() if variant not in COVERING]
Graphs = Callable[[Variant], dict[str, onnx.ModelProto]]


def _uint8_intermediates(model: onnx.ModelProto) -> list[str]:
    """Tensors typed UINT8 that are neither a graph input nor a graph output (TensorRT refuses them)."""
    ends = {value.name for value in (*model.graph.input, *model.graph.output)}
    return sorted(name for name, value in tensor_types(model).items()
                  if name not in ends and dtype_name(value) == "UINT8")


def _check_variant(graphs: Graphs, variant: Variant) -> None:
    precisions = graphs(variant)
    assert set(precisions) == set(cli_choices("--precision"))
    image = precisions["fp32"].graph.input[0]
    assert (dtype_name(image.type) == "UINT8") == (variant.input == "uint8")
    for precision, model in precisions.items():
        where = f"{variant.id} {precision}"
        assert _uint8_intermediates(model) == [], where
        for version in TABLES:
            report = lint_model(model, version)
            assert report.table_version == version, where
            assert report_errors(report) == [], f"{where} TensorRT {version}"
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(model)
        plugins = rewrite_for_plugins(rewritten).plugin_ops
        assert plugins == ["pem::DeformConv2d", "pem::PrototypeGather"], where
        assert _uint8_intermediates(rewritten) == [], f"{where} rewritten"
        for declared in ((), plugins):
            assert lint_errors(rewritten, NEWEST, declared) == [], f"{where} rewritten {declared}"


def test_ci_variants_cover_every_option_value() -> None:
    assert COVERING[0] == Variant("uint8", "raw", False, "input")  # pem-export's defaults
    for flag, field in (("--input", "input"), ("--head", "head"), ("--dynamic", "dynamic"),
                        ("--fusion-size", "fusion_size")):
        assert {getattr(variant, field) for variant in COVERING} == set(cli_choices(flag)), flag
    assert len(set(COVERING)) == len(COVERING) and len(COVERING) + len(REST) == len(all_variants())
    assert {"uint8", "float"} <= set(cli_choices("--input")) and {"raw", "semantic", "panoptic"} <= set(
        cli_choices("--head"))
    assert {"fp32", "fp16", "int8"} <= set(cli_choices("--precision"))
    assert {"original", "input", "mask"} == set(cli_choices("--fusion-size"))


@pytest.mark.parametrize("variant", COVERING, ids=lambda variant: variant.id)
def test_variant_passes_the_lint(variant_graphs: Graphs, variant: Variant) -> None:
    _check_variant(variant_graphs, variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", REST, ids=lambda variant: variant.id)
def test_remaining_variant_passes_the_lint(variant_graphs: Graphs, variant: Variant) -> None:
    _check_variant(variant_graphs, variant)
