"""``pem-export --verify``: a built graph against ONNX Runtime on the check image, through Polygraphy.

Polygraphy's ``Comparator`` runs both runners on one feed (the check image pre-processed by the runtime, as
``pem-predict`` would) and compares them with :class:`PemCompareFunc`, a Polygraphy compare function whose
numbers come from :func:`compare_outputs`, which knows no runner. The reference is always the ONNX graph on ONNX
Runtime's CPU provider; the candidate is a TensorRT engine (Polygraphy's ``TrtRunner``) in ``pem-export``, and any
other runner in the tests (ONNX Runtime on an FP16 or INT8 graph, where no TensorRT is installed).

Tolerances (:meth:`Tolerances.for_precision`): an FP32 engine against the FP32 ONNX graph: every float output
within relative L2 error 1e-3, semantic and panoptic ids of >= 99.5% of the pixels identical after the runtime's
post-processing; an FP16 or INT8 engine against the ONNX graph of the same precision: ids >= 99.0% identical
(float errors reported, not gated). Polygraphy is imported lazily.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pem.export._deps import MissingDependencyError
from pem.export.precision.compare import relative_l2
from pem.runtime.engine_manifest import EngineManifest
from pem.runtime.metadata import ArtifactMetadata
from pem.runtime.postprocess import Geometry, postprocess
from pem.runtime.preprocess import resize_to

__all__ = ["FP32_ID_AGREEMENT", "FP32_REL_L2", "REDUCED_ID_AGREEMENT", "TOLERANCE_HELP", "Check", "PemCompareFunc",
           "Tolerances", "VerifyReport", "check_feed", "compare_outputs", "onnxruntime_runner", "tensorrt_runner",
           "verify"]

FP32_REL_L2 = 1e-3  # FP32 engine vs FP32 ONNX on ONNX Runtime: relative L2 error of each float output
FP32_ID_AGREEMENT = 0.995  # ... share of identical semantic / panoptic ids
REDUCED_ID_AGREEMENT = 0.99  # FP16 / INT8 engine vs the same-precision ONNX on ONNX Runtime
TOLERANCE_HELP = (f"FP32 engine vs ONNX Runtime FP32: float outputs relative L2 <= {FP32_REL_L2:g}, panoptic/semantic "
                  f"ids >= {100 * FP32_ID_AGREEMENT:.1f}%% identical; FP16/INT8 engines vs the same-precision ONNX "
                  f"on ONNX Runtime: ids >= {100 * REDUCED_ID_AGREEMENT:.1f}%% identical")


@dataclass(frozen=True)
class Tolerances:
    """``rel_l2``: largest relative L2 error of a float output (None: reported, not gated); ``id_agreement``:
    smallest share (0..1) of pixels with identical semantic labels and panoptic ids."""

    rel_l2: float | None
    id_agreement: float

    @classmethod
    def for_precision(cls, precision: str) -> Tolerances:
        """The tolerances of a graph in one of the registry's TensorRT precisions (see the module docstring): FP32's
        own, or the reduced precisions' (fp16, int8)."""
        from pem.export.precision.registry import FP32, tensorrt_precisions

        if precision == FP32:
            return cls(FP32_REL_L2, FP32_ID_AGREEMENT)
        if precision in tensorrt_precisions():
            return cls(None, REDUCED_ID_AGREEMENT)
        raise ValueError(f"no verification tolerances for precision {precision!r}")


@dataclass(frozen=True)
class Check:
    """One compared quantity: ``kind`` ``rel_l2`` (value = error, passes when <= limit), ``ids`` (value = share
    identical, passes when >= limit) or ``shape`` (value 0/1); ``limit`` None: reported only."""

    name: str
    kind: str
    value: float
    limit: float | None

    @property
    def passed(self) -> bool:
        if self.limit is None:
            return True
        return self.value <= self.limit if self.kind == "rel_l2" else self.value >= self.limit

    def line(self) -> str:
        verdict = "ok" if self.limit is None or self.passed else "FAILED"
        if self.kind == "rel_l2":
            limit = "reported" if self.limit is None else f"<= {self.limit:g}"
            return f"  {self.name}: relative L2 error {self.value:.3g} ({limit}) {verdict}"
        if self.kind == "ids":
            return f"  {self.name}: {100 * self.value:.2f}% identical (>= {100 * self.limit:.1f}%) {verdict}"
        return f"  {self.name}: {'same' if self.value else 'different'} shape {verdict}"


@dataclass
class VerifyReport:
    """The checks of ``candidate`` against ``reference`` on one image."""

    reference: str
    candidate: str
    precision: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[str]:
        return [check.line().strip() for check in self.checks if not check.passed]

    def lines(self) -> list[str]:
        head = f"verify ({self.precision}): {self.candidate} vs {self.reference}"
        return [head, *(check.line() for check in self.checks), "verify: " + ("passed" if self.passed else "FAILED")]


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    metadata: ArtifactMetadata, geometry: Geometry, tolerances: Tolerances) -> list[Check]:
    """Runner-agnostic comparison of one image's graph outputs: the relative L2 error of each float output, then the
    semantic and panoptic maps of the runtime's post-processing (``pem.runtime.postprocess``) pixel by pixel."""
    checks = []
    for name, want in reference.items():
        have = candidate.get(name)
        if have is None or np.shape(have) != np.shape(want):
            checks.append(Check(f"{name} {np.shape(want)} vs {None if have is None else np.shape(have)}", "shape",
                                0.0, 1.0))
        elif np.asarray(want).dtype.kind == "f":
            error = relative_l2(np.asarray(have, np.float64), np.asarray(want, np.float64))
            checks.append(Check(name, "rel_l2", error, tolerances.rel_l2))
    if not all(check.passed for check in checks if check.kind == "shape"):
        return checks
    expected = postprocess(reference, metadata, geometry)
    got = postprocess(candidate, metadata, geometry)
    checks.append(Check("semantic ids", "ids", float(np.mean(expected.semantic == got.semantic)),
                        tolerances.id_agreement))
    if expected.panoptic is not None and got.panoptic is not None:
        checks.append(Check("panoptic ids", "ids", float(np.mean(expected.panoptic == got.panoptic)),
                            tolerances.id_agreement))
    return checks


class PemCompareFunc:
    """A Polygraphy ``compare_func`` (two ``IterationResult`` -> ``OrderedDict[str, bool]``) applying
    :func:`compare_outputs`; the checks of every call are kept in ``checks``."""

    def __init__(self, metadata: ArtifactMetadata, geometry: Geometry, tolerances: Tolerances) -> None:
        self.metadata, self.geometry, self.tolerances = metadata, geometry, tolerances
        self.checks: list[Check] = []

    def __call__(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> OrderedDict:
        checks = compare_outputs(dict(reference), dict(candidate), self.metadata, self.geometry, self.tolerances)
        self.checks.extend(checks)
        return OrderedDict((check.name, check.passed) for check in checks)


def check_feed(onnx_path: str | Path, image: np.ndarray, manifest: EngineManifest | None = None
               ) -> tuple[dict[str, np.ndarray], Geometry, ArtifactMetadata]:
    """The check image ``image`` (uint8 [H, W, 3] RGB) as the runtime feeds ``onnx_path`` -> (feed, geometry,
    metadata). With an engine's ``manifest``: a dynamic graph is fed at the profile's opt size, and an image whose
    size lies outside the engine's ``orig_size`` range is first resized to the range's opt size."""
    from pem.runtime.contract import IMAGE_AXES, IMAGE_INPUTS, INPUT_ORIG_SIZE
    from pem.runtime.predictor import Predictor

    input_size = None
    if manifest is not None:
        values = manifest.shape_values.get(INPUT_ORIG_SIZE)
        if values is not None and not values.contains(tuple(image.shape[:2])):
            image = resize_to(image, (int(values.opt[0]), int(values.opt[1])))
    with Predictor(onnx_path, providers=["cpu"]) as predictor:
        if manifest is not None and predictor.fixed_size is None:
            profile = manifest.profiles[IMAGE_INPUTS[predictor.metadata.input_layout]]
            axes = IMAGE_AXES[predictor.metadata.input_layout][1:]
            input_size = tuple(int(profile.opt[a]) for a in axes)
            predictor.fixed_size = input_size
        feed, geometry = predictor.preprocess(image)
        return feed, geometry, predictor.metadata


def onnxruntime_runner(onnx_path: str | Path, name: str | None = None) -> Any:
    """Polygraphy's ONNX Runtime runner on the CPU provider for ``onnx_path``."""
    _polygraphy()
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    session = SessionFromOnnx(str(onnx_path), providers=["cpu"])
    return OnnxrtRunner(session, name=name or f"onnxrt:{Path(onnx_path).name}")


def tensorrt_runner(engine_path: str | Path, manifest: EngineManifest) -> Any:
    """Polygraphy's TensorRT runner for ``engine_path`` (its loader registers TensorRT's standard plugins; PEM's are
    registered here when the manifest lists one not compiled into the engine)."""
    _polygraphy()
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from pem.runtime.contract import PROTOTYPE_GATHER_DOMAIN

    if any(p.name.startswith(f"{PROTOTYPE_GATHER_DOMAIN}::") and not p.embedded for p in manifest.plugins):
        from pem.export.tensorrt.plugins import register_plugins

        register_plugins()
    return TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path))), name=f"tensorrt:{Path(engine_path).name}")


def verify(reference_runner: Any, candidate_runner: Any, feed: Mapping[str, np.ndarray], metadata: ArtifactMetadata,
           geometry: Geometry, precision: str) -> VerifyReport:
    """Run both Polygraphy runners on ``feed`` with Polygraphy's ``Comparator`` and compare with
    :class:`PemCompareFunc` at the tolerances of ``precision``."""
    _polygraphy()
    from polygraphy.comparator import Comparator

    results = Comparator.run([reference_runner, candidate_runner], data_loader=[dict(feed)])
    compare = PemCompareFunc(metadata, geometry, Tolerances.for_precision(precision))
    accuracy = Comparator.compare_accuracy(results, compare_func=compare)
    report = VerifyReport(reference_runner.name, candidate_runner.name, precision, compare.checks)
    if not bool(accuracy) and report.passed:  # Polygraphy and our checks must agree
        report.checks.append(Check("Polygraphy's accuracy summary", "ids", 0.0, 1.0))
    return report


def _polygraphy() -> None:
    try:
        import polygraphy  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(f"--verify compares through NVIDIA's Polygraphy: pip install -e \".[trt]\" "
                                     f"(or pip install polygraphy) ({error})") from None
