"""The I/O contract of exported PEM graphs: tensor names, heads and metadata keys, in one place.

Export (``pem.export``) writes graphs with these names and the runtime reads them; nobody else spells them.

Shapes: B batch, h x w the host-resized image, H0 x W0 the original image (one size per batch), Q queries,
K classes.

Inputs
    ``image``      uint8 [B, h, w, 3] RGB, already resized by the host (shortest edge, Pillow bilinear);
                   normalization and zero padding to a multiple of 32 happen in the graph.
    ``image_nchw`` float32 [B, 3, h, w] RGB in 0..255 (the ``float`` input layout, instead of ``image``).
    ``orig_size``  int64 [2]: (H0, W0), the size the outputs are resized to (the official chain). Only the
                   ``semantic`` and ``panoptic`` heads of fusion size ``original`` take it; the other graphs have
                   the image input alone.

Exported graphs fix batch, h and w (``pem.shapes`` holds integers), leave the batch free (``--dynamic-batch``:
``"dynamic"`` batch, integer h and w) or leave all three free (``"dynamic"``).

Fusion sizes (``pem.fusion_size``; see ``pem.runtime.resolution``): the resolution F of the semantic/panoptic
heads' per-pixel outputs: ``original`` F = H0 x W0 (the official chain, exact), ``input`` F = h x w, ``mask``
F = ceil(h/4) x ceil(w/4). Below ``original`` the runtime resizes the id maps to H0 x W0 (nearest neighbour).

Heads and their outputs
    ``raw``        ``pred_logits`` float [B, Q, K+1] (last = "no object"), ``pred_masks`` float [B, Q, h'/4, w'/4]
                   (mask logits of the padded input h' x w').
    ``semantic``   ``semantic`` int64 [B, F]: argmax over classes of the official semantic scores.
    ``panoptic``   ``query_scores`` float [B, Q], ``query_labels`` int64 [B, Q] (K = no object),
                   ``winner`` int32 [B, F] (index of the kept query that wins the pixel when its mask
                   probability is >= 0.5 there, else -1), ``winner_area``, ``mask_area``, ``visible_area``
                   int64 [B, Q] (the per-query counts the fusion rules need; see ``pem.runtime.fusion``).
                   A query is kept where ``query_labels != K`` and ``query_scores > object_mask_threshold`` (of
                   ``pem.test``, compared in float32); counts are zero for the others. The host runs
                   ``panoptic_segments`` on these and relabels ``winner`` through its LUT (``lut[-1] = 0``).
"""
from __future__ import annotations

INPUT_IMAGE = "image"
INPUT_IMAGE_FLOAT = "image_nchw"
INPUT_ORIG_SIZE = "orig_size"

HEADS = ("raw", "semantic", "panoptic")
FUSION_ORIGINAL = "original"
FUSION_INPUT = "input"
FUSION_MASK = "mask"
FUSION_SIZES = (FUSION_ORIGINAL, FUSION_INPUT, FUSION_MASK)
DEFAULT_FUSION_SIZE = "input"  # of new exports; artifacts without ``pem.fusion_size`` are ``original``
MASK_STRIDE = 4  # input pixels per mask-logit pixel
LAYOUT_UINT8_NHWC = "uint8_nhwc"
LAYOUT_FLOAT_NCHW = "float_nchw"
INPUT_LAYOUTS = (LAYOUT_UINT8_NHWC, LAYOUT_FLOAT_NCHW)
IMAGE_INPUTS = {LAYOUT_UINT8_NHWC: INPUT_IMAGE, LAYOUT_FLOAT_NCHW: INPUT_IMAGE_FLOAT}  # the image input of each layout
IMAGE_DTYPES = {LAYOUT_UINT8_NHWC: "uint8", LAYOUT_FLOAT_NCHW: "float32"}
IMAGE_AXES = {LAYOUT_UINT8_NHWC: (0, 1, 2), LAYOUT_FLOAT_NCHW: (0, 2, 3)}  # positions of B, H, W in the image input
IMAGE_DIMENSIONS = {  # the image input's dims, named where they are free in a dynamic graph
    LAYOUT_UINT8_NHWC: ("batch", "height", "width", 3), LAYOUT_FLOAT_NCHW: ("batch", 3, "height", "width"),
}

RAW_OUTPUTS = ("pred_logits", "pred_masks")
SEMANTIC_OUTPUTS = ("semantic",)
PANOPTIC_OUTPUTS = ("query_scores", "query_labels", "winner", "winner_area", "mask_area", "visible_area")
COUNT_OUTPUTS = ("winner_area", "mask_area", "visible_area")  # integer pixel counts per query (not labels)
OUTPUTS = {"raw": RAW_OUTPUTS, "semantic": SEMANTIC_OUTPUTS, "panoptic": PANOPTIC_OUTPUTS}
OUTPUT_DTYPES = {  # numpy dtype names of every output (floats are float32 on the host whatever the precision)
    "pred_logits": "float32", "pred_masks": "float32", "semantic": "int64", "query_scores": "float32",
    "query_labels": "int64", "winner": "int32", "winner_area": "int64", "mask_area": "int64", "visible_area": "int64",
}

# The custom node ``pem::PrototypeGather`` (inputs memory [B, N, C], queries [B, Q, C], mask logits [B, Q, N];
# output [B, Q, C]; int attribute ``num_heads``), defined by a model-local ONNX function of standard ops.
PROTOTYPE_GATHER_DOMAIN = "pem"
PROTOTYPE_GATHER_OP = "PrototypeGather"
PROTOTYPE_GATHER_NUM_HEADS = "num_heads"
PROTOTYPE_GATHER_VERSION = 1  # opset version of the "pem" domain
# Our FP32-accurate deformable convolution for TensorRT, in the "pem" domain: TensorRT's importer owns "DeformConv".
DEFORM_CONV2D_OP = "DeformConv2d"

# Node names of exported graphs are "<module path><SCOPE_SEPARATOR><exporter's name>", e.g.
# "model.backbone.stages.0.0/node_Conv_12"; nodes of the export wrapper itself (pre/post-processing) carry no path.
SCOPE_SEPARATOR = "/"

# metadata_props of the ONNX model (and the JSON manifest beside an engine); values are strings, JSON-encoded
# where they are not plain text.
META_FORMAT = "pem.format"  # "pem-edge/1"
META_PRESET = "pem.preset"
META_HEAD = "pem.head"
META_INPUT_LAYOUT = "pem.input_layout"
META_CLASSES = "pem.classes"  # JSON list of {"id", "name", "isthing", "color", "dataset_id"}
# JSON {"min_size", "max_size", "object_mask_threshold", "overlap_threshold", "panoptic_on", "semantic_on",
# "instance_on"}: the preset's test settings, thresholds as overridden at export (pem-export --object-mask-threshold,
# --overlap-threshold): object_mask_threshold is the one baked into a panoptic graph, overlap_threshold the host's.
META_TEST = "pem.test"
META_NORMALIZATION = "pem.normalization"  # JSON {"mean": [...], "std": [...], "size_divisibility": 32}
META_PRECISION = "pem.precision"  # "fp32" | "fp16" | "int8"
# JSON: how the precision was made (fp16: the FP32 islands and node counts; int8: the recipe, the blocks kept in
# FP32, the INT8 share of multiply-adds, the accuracy search's outcome)
META_PRECISION_DETAILS = "pem.precision_details"
META_FUSION_SIZE = "pem.fusion_size"  # one of FUSION_SIZES (absent: "original")
META_SHAPES = "pem.shapes"  # JSON {"batch": int | "dynamic", "height": ..., "width": ...}
META_PRODUCER = "pem.producer"  # JSON {"pem", "torch", "torchvision", "onnx", "onnxscript", "onnxslim", "opset"}
FORMAT = "pem-edge/1"
