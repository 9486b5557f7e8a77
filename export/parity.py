"""Parity of an exported graph with the PyTorch reference chain, on a real photograph, with ONNX Runtime on CPU.

Both sides run in the graph's fusion size (``pem.fusion_size``; the reference through ``pem.inference.postprocess``
with the same setting, the graph's id maps resized to the original size by the runtime's host part).
The host resizes the photograph as the runtime does (the preset's shortest-edge rule) or, for a graph with a fixed
spatial size, to exactly that size. The reference is the official test-time chain, ``pem.inference.postprocess``,
on the model's outputs for the same resized image. Reported: the relative L2 error of each raw output (``raw``
head), and the share of pixels with identical semantic labels and panoptic segment ids (every head: a ``raw``
graph's outputs go through the same ``pem.inference.postprocess``; a ``panoptic`` graph's through the runtime's
host part of the fusion, ``pem.runtime.postprocess``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pem.config import PEMConfig
from pem.export._deps import require
from pem.export.precision.compare import relative_l2
from pem.inference import Prediction, input_size, postprocess
from pem.modeling.pem_model import PEM
from pem.runtime.contract import (
    IMAGE_INPUTS,
    INPUT_ORIG_SIZE,
    META_HEAD,
    META_INPUT_LAYOUT,
    META_SHAPES,
    OUTPUTS,
)
from pem.runtime.images import read_image, resolve_image_source
from pem.runtime.metadata import ArtifactMetadata
from pem.runtime.postprocess import Geometry
from pem.runtime.postprocess import postprocess as host_postprocess
from pem.runtime.preprocess import check_image, resize_to

RAW_TOLERANCE = 1e-4  # relative L2 error of each raw output
LABEL_AGREEMENT = 0.999  # share of pixels with identical semantic labels / panoptic ids


@dataclass(frozen=True)
class ParityReport:
    """Agreement of ONNX Runtime with the PyTorch reference on one batch.

    ``raw_rel_l2`` maps raw output names to relative L2 errors; ``semantic_agreement`` / ``panoptic_agreement``
    are shares of identical pixels in [0, 1] (None when not compared). ``reference_segments`` and
    ``reference_non_void`` describe each image's reference: its panoptic segments and non-void share or, without
    panoptic output, the classes present in its semantic map (non-void 1).
    """

    head: str
    batch: int
    resized_size: tuple[int, int]
    original_size: tuple[int, int]
    resize_rule: str
    raw_rel_l2: dict[str, float] = field(default_factory=dict)
    semantic_agreement: float | None = None
    panoptic_agreement: float | None = None
    reference_segments: tuple[int, ...] = ()
    reference_non_void: tuple[float, ...] = ()

    @property
    def failures(self) -> list[str]:
        """One line per quantity beyond tolerance (empty when parity holds)."""
        lines = [
            f"{name}: relative L2 error {error:.3g} > {RAW_TOLERANCE:g}"
            for name, error in self.raw_rel_l2.items() if not error <= RAW_TOLERANCE
        ]
        for what, share in (("semantic labels", self.semantic_agreement), ("panoptic ids", self.panoptic_agreement)):
            if share is not None and not share >= LABEL_AGREEMENT:
                lines.append(f"{what}: {100 * share:.3f}% identical < {100 * LABEL_AGREEMENT:g}%")
        return lines

    @property
    def passed(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        """Human-readable summary, one quantity per line."""
        h, w = self.resized_size
        out = [f"parity ({self.head} head, batch {self.batch}, input {h}x{w} {self.resize_rule}, "
               f"output {self.original_size[0]}x{self.original_size[1]}), ONNX Runtime CPU vs PyTorch:"]
        out += [f"  {name}: relative L2 error {error:.3g} (tolerance {RAW_TOLERANCE:g})"
                for name, error in self.raw_rel_l2.items()]
        for what, share in (("semantic labels", self.semantic_agreement), ("panoptic ids", self.panoptic_agreement)):
            if share is not None:
                out.append(f"  {what}: {100 * share:.4f}% identical (tolerance {100 * LABEL_AGREEMENT:g}%)")
        segments = " + ".join(str(n) for n in self.reference_segments)
        non_void = ", ".join(f"{100 * share:.1f}%" for share in self.reference_non_void)
        kind = "segments" if self.panoptic_agreement is not None else "classes"
        out.append(f"  reference: {segments} {kind}, {non_void} non-void")
        return out


def load_check_image(spec: str) -> np.ndarray:
    """``skimage:NAME`` (a photograph shipped with scikit-image) or a file path -> [H, W, 3] uint8 RGB, read by
    ``pem.runtime.images.read_image`` (EXIF orientation applied, as every image path does)."""
    return read_image(resolve_image_source(spec)).image


def check_parity(
    model: PEM,
    onnx_model: bytes | str | os.PathLike,
    images: np.ndarray | Sequence[np.ndarray],
    size: tuple[int, int] | None = None,
) -> ParityReport:
    """Run the graph (serialized bytes or a path) in ONNX Runtime on CPU and the reference on ``model``.

    ``images`` are [H, W, 3] uint8 RGB photographs of one size (a static graph's batch is filled by repeating
    them). They are resized to ``size`` if given, else to a static graph's size, else by the preset's shortest-edge
    rule. Thresholds come from the graph's metadata.
    """
    ort = require("onnxruntime")
    images = [images] if isinstance(images, np.ndarray) else list(images)
    for image in images:
        check_image(image)
    if len({image.shape for image in images}) != 1:
        raise ValueError("parity images must share one size (a batch has one original size)")
    session = ort.InferenceSession(
        onnx_model if isinstance(onnx_model, bytes) else os.fspath(onnx_model), providers=["CPUExecutionProvider"]
    )
    props = session.get_modelmeta().custom_metadata_map
    head, layout = props[META_HEAD], props[META_INPUT_LAYOUT]
    shapes = json.loads(props[META_SHAPES])
    config = model.config
    if isinstance(shapes["batch"], int):
        if len(images) not in (1, shapes["batch"]):
            raise ValueError(f"the graph takes a batch of {shapes['batch']}, got {len(images)} images")
        images = images * (shapes["batch"] // len(images))
    original_size = images[0].shape[:2]
    size, rule = _input_size(images[0], shapes, config, size)
    resized = np.stack([resize_to(image, size) for image in images])

    batch_nchw = torch.from_numpy(resized).permute(0, 3, 1, 2).float()
    feed = {IMAGE_INPUTS[layout]: resized if layout == "uint8_nhwc" else batch_nchw.numpy()}
    if any(value.name == INPUT_ORIG_SIZE for value in session.get_inputs()):
        feed[INPUT_ORIG_SIZE] = np.array(original_size, dtype=np.int64)
    got = dict(zip(OUTPUTS[head], session.run(list(OUTPUTS[head]), feed)))
    model.eval()
    with torch.no_grad():
        outputs = model(batch_nchw.to(next(model.parameters()).dtype))
    meta = ArtifactMetadata.from_props(props, "the exported graph")
    thresholds = (meta.object_mask_threshold, meta.overlap_threshold)
    panoptic = meta.has_panoptic

    def chain(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> Prediction:
        return postprocess(config, class_logits, mask_logits, size, original_size, panoptic=panoptic,
                           semantic=head != "panoptic", thresholds=thresholds, fusion_size=meta.fusion_size)

    batch = range(len(images))
    references = [chain(outputs["pred_logits"][b], outputs["pred_masks"][b]) for b in batch]
    raw_rel_l2, semantic, panoptic_ids = {}, None, None
    if head == "raw":
        raw_rel_l2 = {name: relative_l2(got[name], outputs[name].numpy()) for name in OUTPUTS["raw"]}
        logits, masks = torch.from_numpy(got["pred_logits"]), torch.from_numpy(got["pred_masks"])
        exported = [chain(logits[b], masks[b]) for b in batch]
        semantic = [e.semantic for e in exported]
        panoptic_ids = [e.panoptic.panoptic for e in exported] if panoptic else None
    else:
        geometry = Geometry(tuple(original_size), tuple(size))
        hosted = [host_postprocess({k: v[b : b + 1] for k, v in got.items()}, meta, geometry) for b in batch]
        if head == "semantic":
            semantic = [h.semantic for h in hosted]
        else:
            panoptic_ids = [h.panoptic for h in hosted]
    if panoptic:
        segments = tuple(len(r.panoptic.segments) for r in references)
        non_void = tuple(float((r.panoptic.panoptic != 0).mean()) for r in references)
    else:
        segments, non_void = tuple(len(np.unique(r.semantic)) for r in references), (1.0,) * len(references)
    return ParityReport(
        head, len(images), tuple(size), tuple(original_size), rule, raw_rel_l2,
        None if semantic is None else _agreement(semantic, [r.semantic for r in references]),
        None if panoptic_ids is None else _agreement(panoptic_ids, [r.panoptic.panoptic for r in references]),
        segments, non_void,
    )


def _input_size(
    image: np.ndarray, shapes: dict[str, int | str], config: PEMConfig, size: tuple[int, int] | None
) -> tuple[tuple[int, int], str]:
    """The host-resized size and how it was chosen: asked for, the static graph's, or the shortest-edge rule."""
    if size is not None:
        return tuple(size), "(resized to the size asked for)"
    if isinstance(shapes["height"], int):
        return (shapes["height"], shapes["width"]), "(resized to the static graph's size)"
    min_size, max_size = config.test.min_size, config.test.max_size
    rule = f"(shortest edge {min_size}, long side <= {max_size})"
    return input_size(config, image.shape[:2]), rule


def _agreement(got: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    """Share of identical pixels over a batch of label maps."""
    same = sum(int((g == e).sum()) for g, e in zip(got, expected) if g.shape == e.shape)
    return same / sum(e.size for e in expected)
