"""``--shapes min,opt,max`` -> the TensorRT optimization profile of an exported PEM graph.

Each entry is ``HxW`` (batch 1) or ``BxHxW``; one entry means min = opt = max. A graph exported with
``--dynamic-batch`` takes entries of its fixed ``HxW`` with a batch range (``1x512x512,4x512x512,8x512x512``).
The image input gets the profile in its layout (uint8 NHWC ``[B, h, w, 3]`` or float NCHW ``[B, 3, h, w]``).
``orig_size`` (int64 [2], the original image size the panoptic/semantic outputs are resized to) is a shape tensor
for TensorRT: its *values* need a range too, ``--orig-sizes min,opt,max`` of ``HxW`` entries, by default 1x1 up to
the largest image size (TensorRT reserves memory for the largest original size, whose [B, Q, H0, W0] mask logits
are the biggest activations).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pem.runtime.contract import IMAGE_AXES, IMAGE_INPUTS, INPUT_ORIG_SIZE
from pem.runtime.engine_manifest import ProfileRange
from pem.runtime.errors import PemError

__all__ = ["EngineShapes", "ShapeError", "engine_shapes", "parse_shape_list"]

_ENTRY = re.compile(r"^(?:(\d+)x)?(\d+)x(\d+)$")
EXAMPLE = "--shapes 1x512x512,1x512x1024,1x1024x2048"

Dim = int | None  # a graph dimension: an int when fixed, None when free


class ShapeError(PemError, ValueError):
    """Shapes that do not parse or do not fit the graph; the message says what to pass instead."""


@dataclass(frozen=True)
class EngineShapes:
    """``profiles``: min/opt/max dims of each input tensor; ``shape_values``: min/opt/max values of each shape
    tensor input (``orig_size``: (H0, W0))."""

    profiles: dict[str, ProfileRange]
    shape_values: dict[str, ProfileRange]


def parse_shape_list(text: str, option: str = "--shapes", batch: bool = True) -> list[tuple[int, ...]]:
    """``"1x512x512,1x512x1024,1x1024x2048"`` -> [(1, 512, 512), (1, 512, 1024), (1, 1024, 2048)].

    One or three comma-separated entries, ``BxHxW`` or ``HxW`` (batch 1); with ``batch=False`` entries are ``HxW``
    and come back as (H, W). One entry is repeated as min, opt and max. Raises ShapeError.
    """
    entries = [part.strip() for part in str(text).split(",")]
    if len(entries) not in (1, 3):
        raise ShapeError(f"{option} takes min,opt,max (three sizes) or one fixed size, got {len(entries)}: {text!r}")
    parsed = []
    for entry in entries:
        match = _ENTRY.match(entry)
        if match is None or (not batch and match.group(1) is not None):
            form = "BxHxW or HxW" if batch else "HxW"
            raise ShapeError(f"{option}: cannot read {entry!r} as {form} (example: {EXAMPLE})")
        dims = tuple(int(g) for g in match.groups() if g is not None)
        if batch and len(dims) == 2:
            dims = (1, *dims)
        if min(dims) < 1:
            raise ShapeError(f"{option}: sizes must be positive, got {entry!r}")
        parsed.append(dims)
    if len(parsed) == 1:
        parsed *= 3
    low, opt, high = parsed
    if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
        raise ShapeError(f"{option} must satisfy min <= opt <= max in every dimension, got "
                         f"{_text(low)}, {_text(opt)}, {_text(high)}")
    return parsed


def engine_shapes(inputs: Mapping[str, Sequence[Dim]], layout: str, shapes: str | None,
                  orig_sizes: str | None = None) -> EngineShapes:
    """The profile of a graph with ``inputs`` (name -> dims, None for free ones) in input ``layout``.

    ``shapes`` (``--shapes``) is required when the image input has free dims and must equal the fixed ones
    otherwise (None takes them). ``orig_sizes`` (``--orig-sizes``) only applies to graphs with ``orig_size``.
    """
    image = IMAGE_INPUTS.get(layout)
    if image is None or image not in inputs:
        raise ShapeError(f"the graph has no image input for layout {layout!r} (inputs: {sorted(inputs)})")
    unknown = sorted(set(inputs) - {image, INPUT_ORIG_SIZE})
    if unknown:
        raise ShapeError(f"the graph has inputs outside the PEM contract: {unknown}")
    dims = tuple(inputs[image])
    if len(dims) != 4:
        raise ShapeError(f"the image input {image!r} must have rank 4, got {dims}")
    axes = IMAGE_AXES[layout]
    graph_bhw = tuple(dims[a] for a in axes)
    if shapes is None:
        if any(d is None for d in graph_bhw):
            raise ShapeError(f"the graph's input {image!r} has free dimensions {_text(dims)}: pass the sizes to "
                             f"build for, min,opt,max ({EXAMPLE})")
        bounds = [graph_bhw] * 3
    else:
        bounds = parse_shape_list(shapes)
        for index, (axis, fixed) in enumerate(zip(("batch", "height", "width"), graph_bhw)):
            asked = sorted({b[index] for b in bounds})
            if fixed is not None and asked != [fixed]:
                flag = "--dynamic-batch (free batch) or --dynamic" if axis == "batch" else "--dynamic"
                raise ShapeError(f"the graph's input {image!r} has a fixed {axis} of {fixed} ({_text(dims)}) but "
                                 f"--shapes asks for {asked}; export with {flag} to build for other "
                                 f"sizes, or leave out --shapes")
    full = [_layout_dims(b, dims, axes) for b in bounds]
    profiles = {image: ProfileRange(*full)}
    shape_values = {}
    if INPUT_ORIG_SIZE in inputs:
        if orig_sizes is None:
            values = [(1, 1), tuple(bounds[1][1:]), tuple(bounds[2][1:])]
        else:
            values = parse_shape_list(orig_sizes, "--orig-sizes", batch=False)
        shape_values[INPUT_ORIG_SIZE] = ProfileRange(*values)
        profiles[INPUT_ORIG_SIZE] = ProfileRange((2,), (2,), (2,))
    elif orig_sizes is not None:
        raise ShapeError(f"--orig-sizes applies to graphs with the {INPUT_ORIG_SIZE!r} input (semantic and "
                         "panoptic heads); this graph has none")
    return EngineShapes(profiles, shape_values)


def _layout_dims(bhw: tuple[int, ...], dims: tuple[Dim, ...], axes: tuple[int, int, int]) -> tuple[int, ...]:
    """(B, H, W) placed at ``axes`` of the 4-D input; the other (channel) axis keeps the graph's size."""
    full = [d if d is not None else 3 for d in dims]
    for axis, value in zip(axes, bhw):
        full[axis] = value
    return tuple(full)


def _text(dims: Sequence[Dim]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)
