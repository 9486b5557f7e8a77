"""Backends from the ``pem.backends`` entry-point group: a third-party backend is one module plus one entry point.

The toy backend lives in a package written to a temporary folder with its own ``*.dist-info`` (what ``pip install``
leaves), so the registry finds it exactly as it finds an installed one; nothing in the runtime names it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from pem.runtime import Predictor
from pem.runtime.backends import ENTRY_POINT_GROUP, backend_names, open_backend, url_scheme
from pem.runtime.metadata import ArtifactError
from tests.toy_distribution import install_toy_distribution

TOY_MODULE = '''
"""A toy backend: ONNX graphs stored with the suffix .toy, run by ONNX Runtime, counting its calls."""
from pem.runtime.backends.onnxruntime import OnnxRuntimeBackend


class ToyBackend(OnnxRuntimeBackend):
    name = "toy"
    suffixes = (".toy",)
    calls = 0

    def _infer_impl(self, feed):
        type(self).calls += 1
        return super()._infer_impl(feed)


class NotABackend:
    suffixes = (".nab",)
'''


@pytest.fixture()
def toy_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install_toy_distribution(site, "toy_pem_backend", TOY_MODULE, ENTRY_POINT_GROUP,
                             {"toy": "toy_pem_backend:ToyBackend", "broken": "toy_pem_backend:NotABackend"})
    monkeypatch.syspath_prepend(str(site))
    return site


def test_an_entry_point_backend_runs_through_the_predictor(toy_site: Path, toy_dir: Path, tmp_path: Path,
                                                           scene: np.ndarray) -> None:
    assert {"toy", "torch", "onnxruntime", "tensorrt", "tritonserver"} <= set(backend_names())
    artifact = tmp_path / "panoptic.toy"
    artifact.write_bytes((toy_dir / "panoptic.onnx").read_bytes())
    with Predictor(toy_dir / "panoptic.onnx") as reference, Predictor(artifact) as predictor:
        assert predictor.backend.name == "toy"
        want, got = reference(scene), predictor(scene)
    assert type(predictor.backend).calls == 1
    np.testing.assert_array_equal(got.panoptic, want.panoptic)
    assert got.segments == want.segments and len(want.segments) > 0


def test_a_backend_named_explicitly_opens_any_file(toy_site: Path, toy_dir: Path) -> None:
    with open_backend(toy_dir / "raw.onnx", backend="toy") as backend:
        assert backend.name == "toy" and backend.metadata["pem.head"] == "raw"


def test_an_entry_point_that_is_not_a_backend_is_refused_by_name(toy_site: Path, toy_dir: Path,
                                                                tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="entry point 'broken' .* is not a Backend class"):
        open_backend(toy_dir / "raw.onnx", backend="broken")
    unknown = tmp_path / "model.nab"
    unknown.write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"unknown artifact format '\.nab'.*\.toy -> toy"):
        open_backend(unknown)


def test_the_torch_backend_is_found_through_its_entry_point() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "torch"]
    assert entry.value == "pem.export.torch_backend:TorchBackend"
    runtime = Path(__file__).parents[2] / "runtime"
    for source in runtime.rglob("*.py"):
        tree = ast.parse(source.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node)}
        names = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                 and isinstance(node.value, str) and id(node) not in docstrings]
        assert not [n for n in names if n.startswith(("pem.export", "pem.torch", "pem.modeling"))], source


def test_url_artifacts_go_to_the_serving_backend() -> None:
    assert url_scheme("http://127.0.0.1:8000/pem") == "http" and url_scheme("grpc://h:8001/m") == "grpc"
    assert url_scheme("C:\\models\\a.onnx") is None and url_scheme("./a:b.onnx") is None
    with pytest.raises(ArtifactError, match="unknown URL scheme 'ftp://'"):
        open_backend("ftp://host/model")


def test_a_plugin_loader_entry_point_group_is_declared() -> None:
    from importlib.metadata import entry_points

    from pem.runtime.backends.tensorrt import PLUGIN_ENTRY_POINT_GROUP

    values = [e.value for e in entry_points(group=PLUGIN_ENTRY_POINT_GROUP)]
    assert values == ["pem.export.tensorrt.plugins:register_plugins"]
