"""Parity of an exported graph with the PyTorch reference chain, on a real photograph, with ONNX Runtime on CPU.

The host resizes the photograph as the runtime does (``resize_shortest_edge`` with the preset's sizes) or, for a
graph with a fixed spatial size, to exactly that size. The reference is the official test-time chain of
``pem.inference.predict`` run on the same resized image (``reference_chain``). Reported: the relative L2 error of
each raw output (``raw`` head), and the share of pixels with identical semantic labels and panoptic segment ids
(every head: a ``raw`` graph's outputs go through the reference chain; a ``panoptic`` graph's through
``panoptic_segments`` and the LUT relabel, the host's part of the fusion).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pem.config import PEMConfig
from pem.export._deps import require
from pem.export.precision.compare import relative_l2
from pem.inference import to_original_size
from pem.modeling.pem_model import PEM
from pem.runtime.contract import (
    IMAGE_INPUTS,
    INPUT_ORIG_SIZE,
    META_HEAD,
    META_INPUT_LAYOUT,
    META_SHAPES,
    META_TEST,
    OUTPUTS,
)
from pem.runtime.fusion import panoptic_inference, panoptic_segments, semantic_inference
from pem.runtime.preprocess import check_image, resize_shortest_edge

RAW_TOLERANCE = 1e-4  # relative L2 error of each raw output
LABEL_AGREEMENT = 0.999  # share of pixels with identical semantic labels / panoptic ids


@dataclass(frozen=True)
class ChainResult:
    """One image through the chain: ``semantic`` int64 [H0, W0] (empty when not asked for); ``panoptic`` int32
    [H0, W0] of segment ids (0 = void) or None, and its number of segments."""

    semantic: np.ndarray
    panoptic: np.ndarray | None
    num_segments: int = 0


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
    """``skimage:NAME`` (a photograph shipped with scikit-image) or a file path -> [H, W, 3] uint8 RGB."""
    if spec.startswith("skimage:"):
        name = spec.split(":", 1)[1]
        try:
            from skimage.data import data_dir
        except ImportError:
            raise FileNotFoundError(f"{spec}: scikit-image is not installed (pip install scikit-image)") from None
        path = Path(data_dir) / name
    else:
        path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"check image not found: {path}")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def resize_exact(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 -> [h, w, 3] uint8 with Pillow bilinear (the resize the runtime uses), no-op when equal."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def reference_chain(
    config: PEMConfig,
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    panoptic: bool,
    thresholds: tuple[float, float] | None = None,
    semantic: bool = True,
) -> ChainResult:
    """``pem.inference.predict`` from the model outputs on: class logits [Q, K+1] and mask logits [Q, h'/4, w'/4]
    of an image resized to ``image_size`` -> labels at ``output_size``: semantic (unless ``semantic`` is False,
    then an empty array) and panoptic (when ``panoptic``).

    ``thresholds`` = (object mask, overlap) for the panoptic fusion; None takes the preset's.
    """
    if thresholds is None:
        thresholds = (config.test.object_mask_threshold, config.test.overlap_threshold)
    divisor = config.size_divisibility
    padded_size = (-(-image_size[0] // divisor) * divisor, -(-image_size[1] // divisor) * divisor)
    logits_np = class_logits.float().numpy()
    masks_np = None
    if config.test.panoptic_on or panoptic:
        masks_np = to_original_size(mask_logits, padded_size, image_size, output_size).float().numpy()
    labels = np.zeros((0, 0), dtype=np.int64)
    if semantic and config.test.panoptic_on:
        labels = semantic_inference(logits_np, masks_np).argmax(axis=0)
    elif semantic:
        upsampled = F.interpolate(mask_logits[None], size=padded_size, mode="bilinear", align_corners=False)[0]
        padded_prob = torch.from_numpy(semantic_inference(logits_np, upsampled.float().numpy()))
        labels = to_original_size(padded_prob, padded_size, image_size, output_size).numpy().argmax(axis=0)
    if not panoptic:
        return ChainResult(labels, None)
    fused = panoptic_inference(logits_np, masks_np, config.thing_ids, *thresholds)
    return ChainResult(labels, fused.panoptic, len(fused.segments))


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
    shapes, test = json.loads(props[META_SHAPES]), json.loads(props[META_TEST])
    config = model.config
    if isinstance(shapes["batch"], int):
        if len(images) not in (1, shapes["batch"]):
            raise ValueError(f"the graph takes a batch of {shapes['batch']}, got {len(images)} images")
        images = images * (shapes["batch"] // len(images))
    original_size = images[0].shape[:2]
    size, rule = _input_size(images[0], shapes, config, size)
    resized = np.stack([resize_exact(image, size) for image in images])

    batch_nchw = torch.from_numpy(resized).permute(0, 3, 1, 2).float()
    feed = {IMAGE_INPUTS[layout]: resized if layout == "uint8_nhwc" else batch_nchw.numpy()}
    if head != "raw":
        feed[INPUT_ORIG_SIZE] = np.array(original_size, dtype=np.int64)
    got = dict(zip(OUTPUTS[head], session.run(list(OUTPUTS[head]), feed)))
    model.eval()
    with torch.no_grad():
        outputs = model(batch_nchw.to(next(model.parameters()).dtype))
    thresholds = (float(test["object_mask_threshold"]), float(test["overlap_threshold"]))
    panoptic = head == "panoptic" or (head == "raw" and config.test.panoptic_on)

    def chain(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> ChainResult:
        return reference_chain(
            config, class_logits, mask_logits, size, original_size, panoptic, thresholds, semantic=head != "panoptic"
        )

    batch = range(len(images))
    references = [chain(outputs["pred_logits"][b], outputs["pred_masks"][b]) for b in batch]
    raw_rel_l2, semantic, panoptic_ids = {}, None, None
    if head == "raw":
        raw_rel_l2 = {name: relative_l2(got[name], outputs[name].numpy()) for name in OUTPUTS["raw"]}
        logits, masks = torch.from_numpy(got["pred_logits"]), torch.from_numpy(got["pred_masks"])
        exported = [chain(logits[b], masks[b]) for b in batch]
        semantic = [e.semantic for e in exported]
        panoptic_ids = [e.panoptic for e in exported] if panoptic else None
    elif head == "semantic":
        semantic = list(got["semantic"])
    else:
        panoptic_ids = [_host_panoptic(got, b, config, thresholds) for b in batch]
    if panoptic:
        segments = tuple(r.num_segments for r in references)
        non_void = tuple(float((r.panoptic != 0).mean()) for r in references)
    else:
        segments, non_void = tuple(len(np.unique(r.semantic)) for r in references), (1.0,) * len(references)
    return ParityReport(
        head, len(images), tuple(size), tuple(original_size), rule, raw_rel_l2,
        None if semantic is None else _agreement(semantic, [r.semantic for r in references]),
        None if panoptic_ids is None else _agreement(panoptic_ids, [r.panoptic for r in references]),
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
    return resize_shortest_edge(image, min_size, max_size).shape[:2], rule


def _host_panoptic(
    outputs: dict[str, np.ndarray], index: int, config: PEMConfig, thresholds: tuple[float, float]
) -> np.ndarray:
    """The host's part of the panoptic fusion on a panoptic graph's outputs for image ``index`` -> ids [H0, W0]."""
    scores, labels = outputs["query_scores"][index], outputs["query_labels"][index]
    keep = (labels != config.num_classes) & (scores > scores.dtype.type(thresholds[0]))
    lut, _ = panoptic_segments(
        scores, labels, keep, outputs["winner_area"][index], outputs["mask_area"][index],
        outputs["visible_area"][index], config.thing_ids, thresholds[1],
    )
    return lut[outputs["winner"][index]]


def _agreement(got: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    """Share of identical pixels over a batch of label maps."""
    same = sum(int((g == e).sum()) for g, e in zip(got, expected) if g.shape == e.shape)
    return same / sum(e.size for e in expected)
