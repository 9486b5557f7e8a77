"""``pem-export --trt-doctor``: what a TensorRT build needs on this machine, as one block to paste into a bug report.

Probes, in order: PEM and Python, TensorRT, cuda-python, the CUDA driver and runtime, the GPU and its compute
capability, torch, Triton (with its ptxas and PTX ISA, read as the plugin build reads them), Polygraphy, whether
PEM's plugins register with TensorRT, and a tiny engine (Conv + Relu, built by Polygraphy's loaders) checked
against ONNX Runtime with Polygraphy's comparator. Each probe that fails prints its reason and the doctor goes on;
a probe that needs a failed one says so. Exit status: 0 when every probe passed, 1 otherwise (on a machine without
TensorRT, 1: "TensorRT: not installed ...").
"""
from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Probe", "main", "run_probes", "tiny_onnx_model"]


@dataclass(frozen=True)
class Probe:
    """One line of the report: ``label``, the finding or the reason it failed, and ``ok``."""

    label: str
    text: str
    ok: bool

    def line(self) -> str:
        return f"  {self.label + ':':<16} {self.text}"


class _Skipped(Exception):
    """A probe that cannot run because an earlier one failed (reported, not counted as a failure of its own)."""


def main() -> int:
    """Print the report; 0 when every probe passed, else 1."""
    probes = run_probes()
    failed = [p for p in probes if not p.ok]
    print("pem-export --trt-doctor")
    print("\n".join(p.line() for p in probes))
    print(f"  {'result:':<16} " + ("all probes passed" if not failed else
                                   f"{len(failed)} of {len(probes)} probes failed: "
                                   + ", ".join(p.label for p in failed)))
    return 0 if not failed else 1


def run_probes() -> list[Probe]:
    """Every probe, in report order; none raises."""
    facts: dict[str, Any] = {}
    probes = [
        ("pem-edge", _pem),
        ("TensorRT", lambda: _tensorrt(facts)),
        ("cuda-python", lambda: _cuda_python(facts)),
        ("CUDA driver", lambda: _driver(facts)),
        ("CUDA runtime", lambda: _runtime(facts)),
        ("GPU", lambda: _gpu(facts)),
        ("torch", lambda: _version_of("torch")),
        ("Triton", lambda: _triton(facts)),
        ("Polygraphy", lambda: _version_of("polygraphy")),
        ("PEM plugins", lambda: _plugins(facts)),
        ("tiny engine", lambda: _tiny_engine(facts)),
    ]
    return [_run(label, probe) for label, probe in probes]


def _run(label: str, probe: Callable[[], str]) -> Probe:
    try:
        return Probe(label, probe(), True)
    except _Skipped as skipped:
        return Probe(label, f"skipped: {skipped}", False)
    except ImportError as error:
        return Probe(label, f"not installed ({_first_line(error)})", False)
    except Exception as error:  # a probe reports whatever went wrong and the doctor goes on
        return Probe(label, f"failed: {type(error).__name__}: {_first_line(error)}", False)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _pem() -> str:
    version = importlib.metadata.version("pem-edge")
    return f"{version}, Python {platform.python_version()}, {platform.system()} {platform.machine()}"


def _version_of(module: str) -> str:
    return str(getattr(importlib.import_module(module), "__version__", "installed (no __version__)"))


def _tensorrt(facts: dict[str, Any]) -> str:
    facts["trt"] = importlib.import_module("tensorrt")
    return str(facts["trt"].__version__)


def _cuda_python(facts: dict[str, Any]) -> str:
    from cuda.bindings import runtime

    facts["cudart"] = runtime
    versions = []
    for package in ("cuda-python", "cuda-bindings"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(versions) or "cuda.bindings importable"


def _cudart(facts: dict[str, Any]) -> Any:
    if "cudart" not in facts:
        raise _Skipped("needs cuda-python")
    return facts["cudart"]


def _driver(facts: dict[str, Any]) -> str:
    from pem.runtime.backends.tensorrt import cuda_call

    version = cuda_call(_cudart(facts).cudaDriverGetVersion())
    if not version:
        raise RuntimeError("no CUDA driver (cudaDriverGetVersion gave 0)")
    facts["driver"] = int(version)
    return _cuda_version(version)


def _runtime(facts: dict[str, Any]) -> str:
    from pem.runtime.backends.tensorrt import cuda_call

    return _cuda_version(cuda_call(_cudart(facts).cudaRuntimeGetVersion()))


def _cuda_version(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10} ({version})"


def _gpu(facts: dict[str, Any]) -> str:
    from pem.runtime.backends.tensorrt import cuda_call, device_facts

    count = cuda_call(_cudart(facts).cudaGetDeviceCount())
    if not count:
        raise RuntimeError("no CUDA device")
    name, capability = device_facts(0)
    facts["capability"] = capability
    return f"{name}, compute capability {capability} ({count} device{'s' if count > 1 else ''})"


def _triton(facts: dict[str, Any]) -> str:
    from pem.export.tensorrt.plugins.ptx import check_triton

    major, minor = facts.get("capability", "8.7").split(".")
    described = check_triton(int(major) * 10 + int(minor))
    return described if "capability" in facts else f"{described} (probed for sm_87: no GPU found)"


def _plugins(facts: dict[str, Any]) -> str:
    from pem.export.tensorrt.plugins import MIN_TENSORRT, PLUGINS, register_plugins
    from pem.export.trt_support.versions import parse_version
    from pem.runtime.backends.tensorrt import make_logger, registered_plugins

    trt = facts.get("trt")
    if trt is None:
        raise _Skipped("needs TensorRT")
    if parse_version(trt.__version__) < MIN_TENSORRT:
        return (f"not used on TensorRT {trt.__version__} (needs {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]}): engines use "
                "TensorRT's DeformConv and the PrototypeGather ONNX function")
    trt.init_libnvinfer_plugins(make_logger(trt), "")
    register_plugins()
    missing = [name for name in PLUGINS if name not in registered_plugins(trt)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not in TensorRT's plugin registry after registering")
    return f"{', '.join(PLUGINS)} registered"


def tiny_onnx_model() -> bytes:
    """A Conv(3->8, 3x3) + Relu ONNX graph on float32 [1, 3, 32, 32] with fixed weights (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "weight", "bias"], ["conv"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["conv"], ["y"])],
        "pem_doctor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _tiny_engine(facts: dict[str, Any]) -> str:
    if facts.get("trt") is None or "capability" not in facts:
        raise _Skipped("needs TensorRT and a GPU")
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromNetwork, NetworkFromOnnxBytes, TrtRunner
    from polygraphy.comparator import Comparator, CompareFunc

    model = tiny_onnx_model()
    runners = [OnnxrtRunner(SessionFromOnnx(model, providers=["cpu"])),
               TrtRunner(EngineFromNetwork(NetworkFromOnnxBytes(model)))]
    feed = {"x": np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    results = Comparator.run(runners, data_loader=[feed])
    if not Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=1e-3, rtol=1e-3)):
        raise RuntimeError("the engine's output differs from ONNX Runtime's beyond 1e-3 (see Polygraphy's log above)")
    return "Conv+Relu built, run and equal to ONNX Runtime within 1e-3"


if __name__ == "__main__":
    sys.exit(main())
