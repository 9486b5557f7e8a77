"""The INT8 recipe: calibration method, target runtime, which ops become Q/DQ, which stay FP32."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pem.export.precision.fp16 import Fp32Islands
from pem.runtime.errors import PemError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# onnxruntime: uint8 asymmetric activations (ONNX Runtime's CPU kernels fuse every DQ->Conv->Q into QLinearConv
# only for uint8 activations here); tensorrt: int8 symmetric activations (TensorRT accepts zero points of 0 only)
INT8_TARGETS = ("onnxruntime", "tensorrt")
QUANTIZED_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
HISTOGRAM_BINS = 2048
ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128


class RecipeError(PemError, ValueError):
    """An INT8 recipe that cannot be used; the message says why."""


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize: ``method`` of activation calibration (``percentile`` keeps ``percentile`` % of each
    tensor's values inside the range), ``target`` runtime, ``calibration_images`` (the first N of the folder,
    sorted by name), per-channel symmetric INT8 weights, and the FP32 islands left unquantized."""

    method: str = "minmax"
    percentile: float = 99.999
    target: str = "onnxruntime"
    calibration_images: int = 32
    per_channel: bool = True
    islands: Fp32Islands = field(default_factory=Fp32Islands)

    def validate(self) -> None:
        """Raise RecipeError for values that cannot be used."""
        if self.method not in CALIBRATION_METHODS:
            raise RecipeError(f"unknown calibration method {self.method!r}; known: {', '.join(CALIBRATION_METHODS)}")
        if self.target not in INT8_TARGETS:
            raise RecipeError(f"unknown INT8 target {self.target!r}; known: {', '.join(INT8_TARGETS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise RecipeError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.calibration_images < 1:
            raise RecipeError(f"calibration needs at least one image, got {self.calibration_images}")

    @property
    def activation_type(self) -> str:
        """``uint8`` (asymmetric) for ONNX Runtime, ``int8`` (symmetric) for TensorRT."""
        return "uint8" if self.target == "onnxruntime" else "int8"

    def ort_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``onnxruntime.quantization.quantize_static`` for this recipe (without the nodes)."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

        methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                   "entropy": CalibrationMethod.Entropy}
        symmetric = self.activation_type == "int8"
        # TensorRT dequantizes INT8 only: biases stay float there (ONNX Runtime fuses INT32 biases into its kernels)
        extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric}

        return {
            "quant_format": QuantFormat.QDQ,
            "op_types_to_quantize": list(QUANTIZED_OP_TYPES),
            "per_channel": self.per_channel,
            "activation_type": QuantType.QInt8 if symmetric else QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "calibrate_method": methods[self.method],
            "extra_options": extra,
        }

    def calibrator_options(self) -> dict[str, Any]:
        """``extra_options`` of ONNX Runtime's ``create_calibrator`` for this recipe's method."""
        if self.method == "percentile":
            return {"percentile": self.percentile, "num_bins": HISTOGRAM_BINS}
        if self.method == "entropy":
            # KL-divergence thresholds over a 512-bin histogram for 128 quantized levels. ONNX Runtime's defaults
            # (128 and 128) make the threshold the min-max range; TensorRT's legacy calibrator used 2048 bins, which
            # ONNX Runtime's Python search takes minutes for (it scans every candidate threshold of every tensor)
            return {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
        return {}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (for the graph metadata and the report)."""
        data = asdict(self)
        data["islands"] = {"op_types": list(self.islands.op_types), "scope_patterns": list(self.islands.scope_patterns)}
        data["activation_type"] = self.activation_type
        data["weight_type"] = "int8 symmetric per-channel" if self.per_channel else "int8 symmetric per-tensor"
        data["quantized_op_types"] = list(QUANTIZED_OP_TYPES)
        return data
