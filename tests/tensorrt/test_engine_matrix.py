"""On a machine with TensorRT and a GPU (``pytest -m trt tests/tensorrt``): ``pem-export --format engine --verify``
for FP32/FP16/INT8 with and without PEM's plugins, our ``tensorrt`` backend against Polygraphy's TensorRT runner on
the same engine, ``pem-predict`` on an engine against ONNX Runtime, and ``--trt-verbose`` on a failed parse. Skipped
without TensorRT (written to the documented API; not executed on the CPU-only development machines)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pem.export.precision.registry import tensorrt_precisions
from pem.runtime.engine_manifest import read_manifest

pytestmark = [pytest.mark.trt, pytest.mark.gpu]
PRECISIONS = tensorrt_precisions()


@pytest.fixture(scope="module")
def check_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic scene (the tiny model's training distribution) as a PNG, for --check-image."""
    from PIL import Image

    from pem.data.synthetic import synthetic_scene

    path = tmp_path_factory.mktemp("check") / "scene.png"
    Image.fromarray(synthetic_scene(np.random.default_rng(5), (256, 256), min_area=64)[0]).save(path)
    return path


@pytest.fixture(scope="module")
def built(tiny_onnx: Path, check_image: Path, synthetic_dataset: Callable[..., Path],
          tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    """(precision, plugins) -> an engine written by ``pem-export --onnx tiny.onnx --format engine --verify``."""
    from pem.export.cli import main

    folder = tmp_path_factory.mktemp("matrix")
    calibration = synthetic_dataset(8, (256, 256), seed=21) / "images"
    engines = {}
    for precision in PRECISIONS:
        for plugins in (True, False):
            output = folder / f"tiny_{precision}_{'plugins' if plugins else 'builtin'}.engine"
            argv = ["--onnx", str(tiny_onnx), "--format", "engine", "--precision", precision, "--output", str(output),
                    "--check-image", str(check_image), "--verify", "--workspace", "1024",
                    "--timing-cache", str(folder / "timing.cache")]
            if precision == "int8":
                argv += ["--calib-data", str(calibration), "--calib-images", "8"]
            if not plugins:
                argv.append("--no-plugins")
            assert main(argv) == 0, argv
            engines[(precision, plugins)] = output
    return engines


@pytest.mark.parametrize("plugins", [True, False])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_verified_engines(built: dict[tuple[str, bool], Path], precision: str, plugins: bool) -> None:
    import tensorrt as trt

    from pem.export.trt_support.versions import parse_version

    manifest = read_manifest(built[(precision, plugins)])
    assert manifest.precision == precision and manifest.metadata["pem.precision"] == precision
    names = {p.name for p in manifest.plugins}
    if plugins and parse_version(trt.__version__) >= (10, 9):
        assert {"pem::DeformConv2d", "pem::PrototypeGather"} <= names
        assert all(p.embedded for p in manifest.plugins if p.name.startswith("pem::"))
    else:
        assert names == {"ModulatedDeformConv2d"}


def test_backend_equals_polygraphy_trt_runner(built: dict[tuple[str, bool], Path],
                                              tiny_feed: dict[str, np.ndarray]) -> None:
    """Our backend and Polygraphy's TrtRunner run the same FP32 engine on the same feed: identical ids, float
    outputs within 1e-5 (two execution contexts of one engine)."""
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from pem.runtime.backends.tensorrt import TensorRTBackend

    engine = built[("fp32", True)]
    feeds = [{**tiny_feed, "orig_size": np.array(size, np.int64)} for size in ([256, 240], [200, 256])]
    with TensorRTBackend(engine) as backend:
        ours = [backend.infer(feed) for feed in feeds]
    with TrtRunner(EngineFromBytes(BytesFromPath(str(engine)))) as runner:
        theirs = [runner.infer(feed) for feed in feeds]
    for mine, polygraphy in zip(ours, theirs):
        assert mine.keys() == set(polygraphy.keys())
        for name, value in mine.items():
            expected = np.asarray(polygraphy[name])
            if value.dtype.kind == "f":
                np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)
            else:
                np.testing.assert_array_equal(value, expected, err_msg=name)
    assert ours[1]["winner"].shape == (1, 200, 256)  # the new orig_size reached shape inference


def test_pem_predict_on_an_engine_matches_onnxruntime(built: dict[tuple[str, bool], Path], tiny_onnx: Path,
                                                      synthetic_dataset: Callable[..., Path], tmp_path: Path) -> None:
    from pem.runtime.cli import main
    from pem.runtime.coco_panoptic import read_panoptic_png

    images = synthetic_dataset(3, (256, 256), seed=9) / "images"
    for name, artifact in (("engine", built[("fp32", True)]), ("onnx", tiny_onnx)):
        assert main([str(artifact), str(images), "--out", str(tmp_path / name), "--save", "panoptic", "--quiet"]) == 0
    maps = sorted((tmp_path / "engine" / "panoptic").glob("*.png"))
    assert len(maps) == 3
    for path in maps:
        engine_ids = read_panoptic_png(path)
        onnx_ids = read_panoptic_png(tmp_path / "onnx" / "panoptic" / path.name)
        assert np.mean(engine_ids == onnx_ids) >= 0.995, path.name


def test_trt_verbose_prints_the_log_of_a_failed_parse(tiny_onnx: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A node TensorRT cannot import (an unknown op in an unknown domain): EngineBuildError naming it, and with
    verbose the whole TensorRT log on stderr; nothing written."""
    import onnx
    from onnx import helper

    from pem.export.tensorrt.engine_builder import EngineBuildError, EngineOptions, build_engine

    model = onnx.load(str(tiny_onnx))
    output = model.graph.output[0]
    model.graph.node.append(helper.make_node("NoSuchOp", [output.name], ["broken"], domain="pem.test"))
    model.graph.output[0].name = "broken"
    model.opset_import.append(helper.make_opsetid("pem.test", 1))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(EngineBuildError, match="NoSuchOp"):
        build_engine(broken, tmp_path / "broken.engine", EngineOptions(verbose=True, plugins=False))
    assert "TensorRT's log of the failed build:" in capsys.readouterr().err
    assert not (tmp_path / "broken.engine").exists()


def test_manifest_refusals_on_a_built_engine(built: dict[tuple[str, bool], Path], tmp_path: Path) -> None:
    """Another GPU model of the same architecture and a plugin that is neither compiled in nor registered: refused
    with the reasons, before TensorRT deserializes anything; the engine without its manifest: refused too."""
    from dataclasses import replace

    from pem.export.tensorrt.engine_builder import write_engine
    from pem.runtime.backends.tensorrt import TensorRTBackend
    from pem.runtime.engine_manifest import PluginInfo, write_manifest
    from pem.runtime.metadata import ArtifactError

    source = built[("fp32", False)]
    original = read_manifest(source)
    engine = tmp_path / "copy.engine"
    write_engine(engine, source.read_bytes())
    with pytest.raises(ArtifactError, match="has no manifest"):
        TensorRTBackend(engine)
    changed = replace(original, gpu_name="Some Other GPU",
                      plugins=(*original.plugins, PluginInfo("vendor::Missing", "1", False)))
    write_manifest(engine, changed)
    with pytest.raises(ArtifactError, match=r"cannot run here:[\s\S]*'Some Other GPU'[\s\S]*vendor::Missing"):
        TensorRTBackend(engine)
