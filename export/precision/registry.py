"""The precision modes, in one registry read by ``pem-export``, ``pem-bench``, the torch backend, the TensorRT engine
builder and the precision report.

A :class:`PrecisionMode` says how an FP32 graph gets the precision (``graph_pass``; None: no ONNX form, e.g. bf16,
which only the torch backend runs), the dtype the torch backend's autocast runs it in (``torch_dtype``; None: not a
torch precision), whether TensorRT builds graphs of it and whether it needs calibration images. The built-in modes
are fp32, fp16, bf16 and int8. Other packages add modes through the entry-point group ``pem.precisions``
(:data:`ENTRY_POINT_GROUP`; the entry's name is the mode's name, its value a :class:`PrecisionMode`), so a new mode
is one module and one entry point: nothing here names it.

The passes are imported only when a graph is converted: this module needs neither onnx nor torch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pem.runtime.errors import PemError

if TYPE_CHECKING:
    import onnx

    from pem.export.precision.fp16 import Fp32Islands
    from pem.export.precision.recipe import QuantRecipe

__all__ = ["ENTRY_POINT_GROUP", "FP32", "GraphPass", "PrecisionError", "PrecisionMode", "PrecisionRequest",
           "graph_precisions", "precision_mode", "precision_modes", "tensorrt_precisions", "torch_precisions"]

ENTRY_POINT_GROUP = "pem.precisions"
# the FP32 source graph in a pass's scratch folder, written once (the INT8 quantizer and the comparison read it)
FP32_SCRATCH = "fp32.onnx"
FP32 = "fp32"


class PrecisionError(PemError, ValueError):
    """A precision request that cannot be carried out; the message says why."""


def _default_islands() -> Fp32Islands:
    from pem.export.precision.fp16 import Fp32Islands

    return Fp32Islands()


@dataclass(frozen=True)
class PrecisionRequest:
    """``precision`` and what its pass needs: the FP32 islands (FP16 and INT8), and for INT8 the calibration image
    files, the recipe, and optionally a COCO-panoptic ``search_data`` folder with the accuracy ``budget`` (points)."""

    precision: str = FP32
    islands: Fp32Islands = field(default_factory=_default_islands)
    calibration_images: tuple[Path, ...] = ()
    recipe: QuantRecipe | None = None
    search_data: Path | None = None
    budget: float = 1.0
    search_images: int | None = None


# (FP32 graph, request, scratch folder, progress) -> (graph in the precision, JSON-ready details for the report and
# the graph's pem.precision_details)
GraphPass = Callable[["onnx.ModelProto", PrecisionRequest, Path, Callable[[str], None]],
                     tuple["onnx.ModelProto", dict[str, Any]]]


@dataclass(frozen=True)
class PrecisionMode:
    """One precision: ``name`` (``--precision NAME``), a one-line ``summary`` for help and reports, and how each
    tool runs it (see the module docstring)."""

    name: str
    summary: str
    graph_pass: GraphPass | None = None
    torch_dtype: str | None = None
    tensorrt: bool = False
    needs_calibration: bool = False


def _fp32_pass(fp32: onnx.ModelProto, request: PrecisionRequest, work: Path,
               progress: Callable[[str], None]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    return fp32, {}


def _fp16_pass(fp32: onnx.ModelProto, request: PrecisionRequest, work: Path,
               progress: Callable[[str], None]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from pem.export.precision.fp16 import fp16_pass

    return fp16_pass(fp32, request.islands)


def _int8_pass(fp32: onnx.ModelProto, request: PrecisionRequest, work: Path,
               progress: Callable[[str], None]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from pem.export.precision.int8 import int8_pass

    return int8_pass(fp32, request, work, progress)


BUILTIN_MODES = (
    PrecisionMode(FP32, "FP32 throughout (TF32 off in TensorRT)", _fp32_pass, "float32", tensorrt=True),
    PrecisionMode("fp16", "FP16 with FP32 islands (casts baked into the graph)", _fp16_pass, "float16",
                  tensorrt=True),
    PrecisionMode("bf16", "bfloat16 autocast in the torch backend (no ONNX form)", None, "bfloat16"),
    PrecisionMode("int8", "INT8 Q/DQ calibrated on images, optional per-block FP32 search", _int8_pass,
                  tensorrt=True, needs_calibration=True),
)


def precision_modes() -> dict[str, PrecisionMode]:
    """Every mode by name: the built-ins, then the installed ``pem.precisions`` entry points (loaded on each call,
    so a newly installed one shows). PrecisionError for an entry that cannot be loaded, is not a PrecisionMode,
    names another mode or reuses a built-in's name."""
    modes = {mode.name: mode for mode in BUILTIN_MODES}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {entry.name!r} of {ENTRY_POINT_GROUP} ({entry.value})"
        if entry.name in modes:
            raise PrecisionError(f"{where} reuses the precision name {entry.name!r}; give it a name of its own")
        try:
            mode = entry.load()
        except (ImportError, AttributeError) as error:
            raise PrecisionError(f"{where} cannot be loaded: {error}") from error
        if not isinstance(mode, PrecisionMode) or mode.name != entry.name:
            raise PrecisionError(f"{where} must be a PrecisionMode named {entry.name!r}")
        modes[entry.name] = mode
    return modes


def precision_mode(name: str) -> PrecisionMode:
    """The mode called ``name``; PrecisionError listing the known ones otherwise."""
    modes = precision_modes()
    if name not in modes:
        raise PrecisionError(f"unknown precision {name!r}; known: {', '.join(modes)}")
    return modes[name]


def graph_precisions() -> tuple[str, ...]:
    """The modes ``pem-export --precision`` can bake into an ONNX graph."""
    return tuple(name for name, mode in precision_modes().items() if mode.graph_pass is not None)


def torch_precisions() -> tuple[str, ...]:
    """The modes the torch backend runs (under autocast, or FP32)."""
    return tuple(name for name, mode in precision_modes().items() if mode.torch_dtype is not None)


def tensorrt_precisions() -> tuple[str, ...]:
    """The modes whose graphs the TensorRT engine builder takes."""
    return tuple(name for name, mode in precision_modes().items() if mode.tensorrt)
