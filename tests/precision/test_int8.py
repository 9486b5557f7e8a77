"""INT8: recipe, image sets, Q/DQ graphs in ONNX Runtime, the INT8 share of multiply-adds, the block search."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pem.benchmarks.agreement import matched_pixel_agreement
from pem.calibration.images import CalibrationDataError, list_images, load_rgb, require_disjoint
from pem.export.precision.coverage import int8_node_names, mac_coverage, node_macs
from pem.export.precision.int8 import quantize_to_int8
from pem.export.precision.quantize import Int8Quantizer
from pem.export.precision.recipe import QuantRecipe, RecipeError
from pem.export.precision.sensitivity import search_fp32_blocks
from pem.runtime.contract import META_PRECISION, META_PRECISION_DETAILS
from pem.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def calibration(synthetic_dataset: Callable[..., Path]) -> list[Path]:
    return list_images(synthetic_dataset(8, (128, 128), seed=21))


@pytest.fixture(scope="module")
def quantizer(tiny_onnx: Callable[..., Path], calibration: list[Path]) -> Int8Quantizer:
    with Int8Quantizer(tiny_onnx("panoptic", (128, 128)), calibration, QuantRecipe(calibration_images=8)) as q:
        yield q


def test_recipe_is_validated() -> None:
    for recipe, message in ((QuantRecipe(method="kl"), "unknown calibration method"),
                            (QuantRecipe(target="tflite"), "unknown INT8 target"),
                            (QuantRecipe(percentile=20), "percentile must be"),
                            (QuantRecipe(calibration_images=0), "at least one image")):
        with pytest.raises(RecipeError, match=message):
            recipe.validate()
    assert QuantRecipe().activation_type == "uint8" and QuantRecipe(target="tensorrt").activation_type == "int8"


def test_image_sets_are_checked(tmp_path: Path, calibration: list[Path]) -> None:
    with pytest.raises(CalibrationDataError, match="not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(CalibrationDataError, match="no images"):
        list_images(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CalibrationDataError, match="cannot read calibration image .*broken.jpg"):
        load_rgb(tmp_path / "broken.jpg")
    copy = tmp_path / "renamed.jpg"
    shutil.copy(calibration[3], copy)
    with pytest.raises(CalibrationDataError, match="must be disjoint"):
        require_disjoint([("calibration", calibration), ("search", [copy])])
    require_disjoint([("calibration", calibration[:4]), ("search", calibration[4:])])


def test_qdq_graph_quantizes_all_but_the_islands(quantizer: Int8Quantizer) -> None:
    model = quantizer.quantize()
    int8 = int8_node_names(model)
    assert set(quantizer.quantizable) <= int8
    assert not int8 & quantizer.island_nodes
    zero_points = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("zero_point")]
    # activations uint8, weights int8 per channel, biases int32
    assert {z.dtype for z in zero_points} == {np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int32)}
    image = load_rgb(quantizer.images[0])
    with Predictor(quantizer.source) as reference:
        feed, _ = reference.preprocess(image)
        want = reference(image)
    path = Path(quantizer._work.name) / "check.onnx"
    onnx.save(model, str(path))
    with Predictor(path) as int8_predictor:
        got = int8_predictor(image)
    # segment ids are numbered in query order, so one extra kept segment renumbers the rest: compare matched segments
    assert matched_pixel_agreement(want.panoptic, got.panoptic) > 0.9


def test_tensorrt_target_has_symmetric_int8_activations(tiny_onnx: Callable[..., Path],
                                                        calibration: list[Path]) -> None:
    recipe = QuantRecipe(target="tensorrt", method="percentile", calibration_images=4)
    with Int8Quantizer(tiny_onnx("panoptic", (128, 128)), calibration, recipe) as quantizer:
        model = quantizer.quantize()
    zero_points = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


def _conv_graph() -> onnx.ModelProto:
    """x [1, 4, 8, 8] -> Conv 3x3 (8 out, pad 1) -> MatMul by [8, 5] -> Einsum over the last two axes."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
    matrix = numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "m")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="model.a/conv"),
        helper.make_node("MatMul", ["c", "m"], ["p"], name="model.b/matmul"),
        helper.make_node("Einsum", ["p", "p"], ["e"], equation="bchw,bchw->bc", name="model.c/einsum"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)], [weight, matrix])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_multiply_adds_are_counted_from_real_shapes() -> None:
    feed = {"x": np.ones((1, 4, 8, 8), np.float32)}
    macs = node_macs(_conv_graph(), feed)
    assert macs == {"model.a/conv": ("Conv", 8 * 8 * 8 * 4 * 9), "model.b/matmul": ("MatMul", 8 * 8 * 5 * 8),
                    "model.c/einsum": ("Einsum", 8 * 8 * 5)}
    coverage = mac_coverage(macs, {"model.a/conv"})
    assert coverage.int8 == 18432 and coverage.total == 18432 + 2560 + 320
    assert coverage.by_op_type["MatMul"] == (0, 2560)


def test_search_keeps_the_fewest_blocks_that_fit_the_budget(quantizer: Int8Quantizer) -> None:
    """A deterministic evaluator (our own function of which blocks a graph quantizes) drives the real quantizer:
    quantizing block A costs 0.8 points, B 0.7, C 0.3, any other block nothing. All INT8 drops 1.8 > budget 1.0;
    A back in FP32 leaves 1.0, which fits, and the pruning pass cannot return A: the answer is exactly {A}."""
    blocks = quantizer.blocks
    costs = {blocks[1]: 0.8, blocks[4]: 0.7, blocks[7]: 0.3}

    def evaluate(model: onnx.ModelProto) -> dict[str, float]:
        int8 = int8_node_names(model)
        lost = sum(cost for block, cost in costs.items() if set(quantizer.nodes_of([block])) & int8)
        return {"PQ": 60.0 - lost, "images": 5.0}

    result = search_fp32_blocks(quantizer, evaluate, budget=1.0, progress=lambda line: None)
    assert result.all_int8_metric == pytest.approx(58.2)
    assert [s.drop for s in result.sensitivities if s.block in costs] == pytest.approx([0.8, 0.7, 0.3])
    # drop 1.8 > 1.0; moving A (0.8) back gives 1.0 <= budget; pruning cannot drop A again
    assert result.fp32_blocks == [blocks[1]]
    assert result.final_drop == pytest.approx(1.0)
    assert "FP32" in result.table() and blocks[1] in result.table()


def test_quantize_to_int8_records_its_recipe(tiny_onnx: Callable[..., Path], calibration: list[Path],
                                            synthetic_dataset: Callable[..., Path]) -> None:
    search = synthetic_dataset(4, (128, 128), seed=22)
    outcome = quantize_to_int8(tiny_onnx("panoptic", (128, 128)), calibration, QuantRecipe(calibration_images=8),
                               search_data=search, budget=1.0, progress=lambda line: None)
    props = {p.key: p.value for p in outcome.model.metadata_props}
    details = json.loads(props[META_PRECISION_DETAILS])
    assert props[META_PRECISION] == "int8"
    assert details["int8_mac_share"] == pytest.approx(outcome.coverage.int8_share) and outcome.coverage.int8_share > 0.8
    assert details["search"]["search_images"] == 4 and len(details["search"]["sensitivities"]) == len(
        details["search"]["sensitivities"])
    assert details["search"]["final_drop"] <= 1.0
    with pytest.raises(CalibrationDataError, match="must be disjoint"):
        quantize_to_int8(tiny_onnx("panoptic", (128, 128)), list_images(search), QuantRecipe(), search_data=search)


def test_pem_export_int8_cli(tiny_onnx: Callable[..., Path], calibration: list[Path],
                             synthetic_dataset: Callable[..., Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from pem.export.cli import main

    search = synthetic_dataset(4, (128, 128), seed=22)
    out, report = tmp_path / "int8.onnx", tmp_path / "report.json"
    code = main(["--onnx", str(tiny_onnx("panoptic", (128, 128))), "--precision", "int8",
                 "--calib-data", str(calibration[0].parent), "--calib-images", "6", "--search-data", str(search),
                 "--output", str(out), "--report", str(report), "--check-image", str(calibration[0])])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "INT8 share of conv/matmul multiply-adds" in printed and "int8 graph vs FP32 graph" in printed
    data = json.loads(report.read_text())
    assert data["precision"] == "int8" and data["calibration_images"] == 6
    assert "warning: only 6 calibration image(s), fewer than 16" in printed  # 6 < MIN_CALIBRATION_IMAGES
    assert len(data["warnings"]) == 1 and data["warnings"][0].startswith("only 6 calibration image(s)")
    assert data["check_image"]["integer_agreement"]["winner"] > 0.9
    with Predictor(out) as predictor:
        assert predictor.backend.metadata[META_PRECISION] == "int8"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "int8"], "--precision int8 needs --calib-data DIR"),
        (["--precision", "fp16", "--calib-data", "x"], "--calib-data only apply to a calibrated precision"),
        (["--precision", "int8", "--calib-data", "missing"], "calibration folder not found"),
        (["--precision", "int8", "--calib-data", "SAME", "--search-data", "SAME"], "must be disjoint"),
        (["--precision", "int8", "--calib-data", "BROKEN"], "cannot read calibration image"),
    ],
)
def test_pem_export_precision_errors(tiny_onnx: Callable[..., Path], synthetic_dataset: Callable[..., Path],
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                     message: str) -> None:
    from pem.export.cli import main

    same = str(synthetic_dataset(4, (128, 128), seed=22))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not the rest of a jpeg")
    argv = ["--onnx", str(tiny_onnx("panoptic", (128, 128))), "--output", str(tmp_path / "x.onnx"),
            *[{"SAME": same, "BROKEN": str(broken)}.get(item, item) for item in extra]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_calibration_methods_give_their_own_ranges(tiny_onnx: Callable[..., Path], calibration: list[Path]) -> None:
    """Percentile and entropy (histograms of 2048 and 512 bins) clip some activation ranges min-max keeps whole."""
    scales = {}
    for method in ("minmax", "percentile", "entropy"):
        with Int8Quantizer(tiny_onnx("panoptic", (128, 128)), calibration,
                           QuantRecipe(method=method, calibration_images=4)) as quantizer:
            model = quantizer.quantize()
        scales[method] = {i.name: float(numpy_helper.to_array(i).ravel()[0]) for i in model.graph.initializer
                          if i.name.endswith("_scale") and "weight" not in i.name}
    for method in ("percentile", "entropy"):
        narrower = [name for name, scale in scales[method].items() if scale < 0.99 * scales["minmax"][name]]
        assert narrower, f"{method} calibration gave the min-max ranges"
        assert all(scales[method][name] <= scales["minmax"][name] * 1.0001 for name in scales[method])


def test_graph_of_free_size_calibrates_on_photographs_of_several_sizes(tiny_onnx: Callable[..., Path],
                                                                       tmp_path: Path) -> None:
    """ONNX Runtime's histogram calibrators need one shape per tensor: the images are fed at one size."""
    from skimage.data import data_dir

    for name in ("astronaut.png", "coffee.png", "motorcycle_left.png"):  # 512x512, 400x600, 370x500
        shutil.copy(Path(data_dir) / name, tmp_path / name)
    outcome = quantize_to_int8(tiny_onnx("panoptic", (128, 128), dynamic=True), list_images(tmp_path),
                               QuantRecipe(method="percentile"), progress=lambda line: None)
    path = tmp_path / "int8.onnx"
    onnx.save(outcome.model, str(path))
    with Predictor(path) as predictor:
        for name in ("coffee.png", "motorcycle_left.png"):
            result = predictor(load_rgb(tmp_path / name))
            assert result.panoptic.shape == load_rgb(tmp_path / name).shape[:2]
