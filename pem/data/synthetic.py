"""Synthetic COCO-panoptic scenes for tests, demos and smoke training (numpy + Pillow).

Each image holds 2-4 textured stuff regions (``SYNTHETIC_CATEGORIES`` grass, water, sand, sky) with irregular
boundaries, 2-6 textured thing instances (disk, box, triangle, ring) that overlap and touch (later ones occlude
earlier ones), sometimes a crowd (a cluster of small same-class things annotated as one ``iscrowd`` segment) and
sometimes a void scribble or blob painted with a stuff-like texture. Layout written under ``out``::

    images/{id:06d}.jpg     RGB, JPEG quality 95 (like the real datasets; labels are never JPEG)
    panoptic/{id:06d}.png   COCO-panoptic PNG (id = R + 256 G + 256**2 B, 0 = void)
    semantic/{id:06d}.png   8-bit contiguous class ids, 255 = void (crowd pixels keep their class)
    panoptic.json           COCO-panoptic index; category ids are the dataset ids 1..8

Image ids run 1..n. Every file is written atomically and the JSON last. The same seed gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pem.config import SYNTHETIC_CATEGORIES
from pem.runtime.coco_panoptic import write_atomic, write_json_atomic, write_panoptic_png
from pem.runtime.metadata import ClassInfo

JPEG_QUALITY = 95
MIN_SIDE = 32
_STUFF = tuple(c for c in SYNTHETIC_CATEGORIES if not c.isthing)
_THINGS = tuple(c for c in SYNTHETIC_CATEGORIES if c.isthing)
_VOID = 0
_FIRST_THING_CODE = 1 + len(_STUFF)  # layer codes: 0 void, 1 + stuff id, then one code per thing layer

Grid = tuple[np.ndarray, np.ndarray]  # (yy, xx) float32 pixel coordinates of a window


@dataclass(frozen=True)
class _Thing:
    """One thing layer: a boolean mask over ``window`` (rows, cols) and its texture there (float32 [h, w, 3])."""

    category: ClassInfo
    iscrowd: bool
    window: tuple[slice, slice]
    mask: np.ndarray
    texture: np.ndarray


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise float32 [H, W], roughly unit variance: a ``cells`` grid of normals, bicubically upsampled."""
    grid = rng.standard_normal((max(2, cells[0]), max(2, cells[1]))).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def _jitter(rng: np.random.Generator, colour: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """A colour float32 [3] near ``colour``: per-channel shifts and an overall brightness factor."""
    shifted = np.asarray(colour, dtype=np.float32) + rng.normal(0.0, 14.0, 3).astype(np.float32)
    return shifted * np.float32(rng.uniform(0.85, 1.15))


def _grass(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """Green noise with thin vertical blades and lighter patches."""
    h, w = grid[0].shape
    blades = _smooth(rng, (h, w), (h // 32, w // 2))
    patches = _smooth(rng, (h, w), (4, 4))
    fine = rng.standard_normal((h, w), dtype=np.float32)
    texture = _jitter(rng, (70, 140, 60)) * (1 + 0.22 * blades + 0.1 * patches + 0.08 * fine)[..., None]
    texture[..., 0] += 25 * np.clip(blades - 1, 0, None)
    return texture


def _water(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """Blue with warped sinusoidal ripples, glints on the crests and slow depth shading."""
    yy, xx = grid
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 18)
    warp = _smooth(rng, yy.shape, (4, 4)) * np.float32(rng.uniform(1.5, 4.0))
    ripple = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * np.float32(2 * np.pi / period) + warp)
    depth = _smooth(rng, yy.shape, (3, 3))
    texture = _jitter(rng, (40, 90, 170)) * (1 + 0.14 * ripple + 0.1 * depth)[..., None]
    return texture + (60 * np.clip(ripple - 0.85, 0, None) / 0.15)[..., None]


def _sand(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """Speckled beige with faint dune bands."""
    yy, xx = grid
    theta, period = rng.uniform(0, np.pi), rng.uniform(20, 50)
    bend = 2 * _smooth(rng, yy.shape, (3, 3))
    dunes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * np.float32(2 * np.pi / period) + bend)
    speck = rng.random(yy.shape, dtype=np.float32)
    fine = rng.standard_normal(yy.shape, dtype=np.float32)
    shade = 1 + 0.07 * fine + 0.06 * dunes - 0.35 * (speck < 0.03) + 0.25 * (speck > 0.975)
    return _jitter(rng, (200, 180, 120)) * shade[..., None]


def _sky(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """A smooth vertical blue gradient with soft clouds."""
    yy, _ = grid
    h, w = yy.shape
    t = (yy / max(h - 1, 1))[..., None]
    base = _jitter(rng, (110, 170, 235)) * (1 - t) + _jitter(rng, (185, 215, 245)) * t
    clouds = _smooth(rng, (h, w), (4, 6)) + 0.5 * _smooth(rng, (h, w), (10, 14))
    alpha = np.clip((clouds - rng.uniform(0.3, 1.0)) * 1.2, 0, 1)[..., None] * np.float32(rng.uniform(0.6, 0.95))
    return base * (1 - alpha) + _jitter(rng, (245, 245, 245)) * alpha


_STUFF_TEXTURES: dict[str, Callable[[np.random.Generator, Grid], np.ndarray]] = {
    "grass": _grass,
    "water": _water,
    "sand": _sand,
    "sky": _sky,
}


def _stuff_layout(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Layer codes int32 [H, W] of 2-4 stuff classes: argmax of smooth noise fields gives irregular boundaries."""
    chosen = rng.choice(len(_STUFF), size=int(rng.integers(2, 5)), replace=False)
    fields = np.stack(
        [_smooth(rng, shape, (3, 3)) + 0.3 * _smooth(rng, shape, (12, 12)) + rng.normal(0, 0.3) for _ in chosen]
    )
    return (1 + chosen[np.argmax(fields, axis=0)]).astype(np.int32)


def _window(cy: float, cx: float, r: float, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Rows and columns of the square of half-side ``r`` around (cy, cx), clipped to the image; None if empty."""
    y0, y1 = max(0, int(cy - r - 1)), min(shape[0], int(cy + r + 2))
    x0, x1 = max(0, int(cx - r - 1)), min(shape[1], int(cx + r + 2))
    return (slice(y0, y1), slice(x0, x1)) if y0 < y1 and x0 < x1 else None


def _shape(
    rng: np.random.Generator, name: str, grid: Grid, cy: float, cx: float, r: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mask bool [h, w] and shading float32 [h, w] (around 1) of one thing of class ``name`` on a window grid."""
    yy, xx = grid[0] - np.float32(cy), grid[1] - np.float32(cx)
    d2 = (yy * yy + xx * xx) / np.float32(r * r)
    light = rng.uniform(0, 2 * np.pi)
    shade = 1 + 0.2 * (xx * np.cos(light) + yy * np.sin(light)) / np.float32(r)
    if name == "disk":
        return d2 <= 1, shade * (1 - 0.35 * d2)
    if name == "ring":
        inner = rng.uniform(0.45, 0.7)
        spokes = 1 + 0.12 * np.sin(np.arctan2(yy, xx) * int(rng.integers(3, 8)))
        return (d2 <= 1) & (d2 >= inner * inner), shade * spokes
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = yy * np.cos(theta) - xx * np.sin(theta)
    if name == "box":
        half_u, half_v = r * rng.uniform(0.6, 1.0), r * rng.uniform(0.35, 0.8)
        stripes = 1 + 0.15 * np.sign(np.sin(u * np.float32(2 * np.pi / rng.uniform(4, 9))))
        return (np.abs(u) <= half_u) & (np.abs(v) <= half_v), shade * stripes
    angles = theta + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
    radii = r * rng.uniform(0.85, 1.1, 3)
    corners = np.stack([radii * np.sin(angles), radii * np.cos(angles)], axis=1)  # (dy, dx)
    sides = []
    for (ay, ax), (by, bx) in zip(corners, np.roll(corners, -1, axis=0)):
        sides.append((bx - ax) * (yy - ay) - (by - ay) * (xx - ax) >= 0)
    inside = (sides[0] & sides[1] & sides[2]) | ~(sides[0] | sides[1] | sides[2])
    frequency = np.float32(2 * np.pi / rng.uniform(5, 9))
    dots = 1 - 0.25 * ((np.sin(xx * frequency) * np.sin(yy * frequency)) > 0.5)
    return inside, shade * dots


def _thing_colour(rng: np.random.Generator, category: ClassInfo) -> np.ndarray:
    """The class colour half-mixed with a random colour, so colour alone does not give the class away."""
    return 0.55 * _jitter(rng, category.color) + 0.45 * rng.uniform(30, 230, 3).astype(np.float32)


def _thing(
    rng: np.random.Generator, category: ClassInfo, grid: Grid, cy: float, cx: float, r: float
) -> _Thing | None:
    """One textured thing centred at (cy, cx) with radius ``r``; None when it falls outside the image."""
    window = _window(cy, cx, r, grid[0].shape)
    if window is None:
        return None
    local = (grid[0][window], grid[1][window])
    mask, shade = _shape(rng, category.name, local, cy, cx, r)
    fine = rng.standard_normal(mask.shape, dtype=np.float32)
    texture = _thing_colour(rng, category) * (shade + 0.04 * fine)[..., None]
    return _Thing(category, False, window, mask, texture) if mask.any() else None


def _crowd(rng: np.random.Generator, grid: Grid) -> _Thing | None:
    """A tight cluster of 6-12 small same-class things as one crowd layer covering the whole image."""
    h, w = grid[0].shape
    category = _THINGS[int(rng.integers(len(_THINGS)))]
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    r = max(2.0, rng.uniform(0.018, 0.03) * min(h, w))
    mask = np.zeros((h, w), dtype=bool)
    texture = np.zeros((h, w, 3), dtype=np.float32)
    for _ in range(int(rng.integers(6, 13))):
        member = _thing(rng, category, grid, cy + rng.normal(0, 1.8 * r), cx + rng.normal(0, 1.8 * r), r)
        if member is not None:
            mask[member.window] |= member.mask
            texture[member.window][member.mask] = member.texture[member.mask]
    full = (slice(0, h), slice(0, w))
    return _Thing(category, True, full, mask, texture) if mask.any() else None


def _things(rng: np.random.Generator, grid: Grid) -> list[_Thing]:
    """Sometimes a crowd (bottom layer), then 2-6 instances; most are placed against an earlier one (overlap)."""
    h, w = grid[0].shape
    crowd = _crowd(rng, grid) if rng.random() < 0.5 else None
    layers = [crowd] if crowd is not None else []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(2, 7))):
        category = _THINGS[int(rng.integers(len(_THINGS)))]
        r = max(3.0, rng.uniform(0.06, 0.16) * min(h, w))
        if placed and rng.random() < 0.6:
            py, px, pr = placed[int(rng.integers(len(placed)))]
            angle, distance = rng.uniform(0, 2 * np.pi), (pr + r) * rng.uniform(0.5, 1.0)
            cy, cx = py + distance * np.sin(angle), px + distance * np.cos(angle)
        else:
            cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        thing = _thing(rng, category, grid, cy, cx, r)
        if thing is not None:
            layers.append(thing)
            placed.append((cy, cx, r))
    return layers


def _void_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Void pixels bool [H, W]: nothing (30%), a thin random scribble or a small blob."""
    h, w = shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    choice = rng.random()
    if choice < 0.35:
        steps = rng.normal(0, 0.15 * min(h, w), (int(rng.integers(4, 9)), 2))
        points = np.cumsum(steps, axis=0) + [rng.uniform(0, w), rng.uniform(0, h)]
        draw.line([(float(x), float(y)) for x, y in points], fill=1, width=int(rng.integers(2, 5)))
    elif choice < 0.7:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ry, rx = rng.uniform(0.03, 0.07, 2) * min(h, w)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
    return np.asarray(canvas, dtype=bool)


def _compose(stuff: np.ndarray, things: list[_Thing], void: np.ndarray) -> np.ndarray:
    """Layer codes int32 [H, W]: stuff, then things in order (later ones on top), then void on top of all."""
    layers = stuff.copy()
    for index, thing in enumerate(things):
        layers[thing.window][thing.mask] = _FIRST_THING_CODE + index
    layers[void] = _VOID
    return layers


def _render(rng: np.random.Generator, grid: Grid, layers: np.ndarray, things: list[_Thing]) -> np.ndarray:
    """RGB uint8 [H, W, 3]: stuff and void textures, visible thing textures, colour jitter and sensor noise."""
    image = np.zeros((*layers.shape, 3), dtype=np.float32)
    for category in _STUFF:
        region = layers == 1 + category.id
        if region.any():
            image[region] = _STUFF_TEXTURES[category.name](rng, grid)[region]
    void = layers == _VOID
    if void.any():
        confusing = _STUFF_TEXTURES[_STUFF[int(rng.integers(len(_STUFF)))].name](rng, grid)
        image[void] = confusing[void] * np.float32(rng.uniform(0.7, 1.3))
    for index, thing in enumerate(things):
        visible = layers[thing.window] == _FIRST_THING_CODE + index
        image[thing.window][visible] = thing.texture[visible]
    image = image * rng.normal(1.0, 0.04, 3).astype(np.float32) + np.float32(rng.normal(0.0, 6.0))
    image += rng.normal(0.0, rng.uniform(2.0, 6.0), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _bbox(region: np.ndarray) -> list[int]:
    """[x, y, w, h] of the True pixels of a non-empty bool [H, W] array."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _labels(layers: np.ndarray, things: list[_Thing]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Panoptic ids int32 [H, W] (sequential from 1, 0 void), semantic uint8 [H, W] (255 void), segments_info."""
    categories = [*_STUFF, *(thing.category for thing in things)]  # indexed by layer code - 1
    crowd = [False] * len(_STUFF) + [thing.iscrowd for thing in things]
    lut_ids = np.zeros(len(categories) + 1, dtype=np.int32)
    lut_semantic = np.full(len(categories) + 1, 255, dtype=np.uint8)
    segments = []
    for code in range(1, len(categories) + 1):
        region = layers == code
        area = int(region.sum())
        if area == 0:
            continue
        category = categories[code - 1]
        segment_id = len(segments) + 1
        lut_ids[code], lut_semantic[code] = segment_id, category.id
        segments.append(
            {"id": segment_id, "category_id": category.dataset_id, "area": area, "bbox": _bbox(region),
             "iscrowd": int(crowd[code - 1])}
        )
    return lut_ids[layers], lut_semantic[layers], segments


def synthetic_scene(
    rng: np.random.Generator, size: tuple[int, int], min_area: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """One scene of ``size`` (H, W): image uint8 [H, W, 3] RGB, panoptic ids int32 [H, W] (0 void), semantic uint8
    [H, W] (contiguous ids, 255 void) and COCO ``segments_info``. Things whose visible area ends below
    ``min_area`` pixels are dropped (what lay under them shows again)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = (yy, xx)
    stuff = _stuff_layout(rng, size)
    things = _things(rng, grid)
    void = _void_mask(rng, size)
    areas = np.bincount(_compose(stuff, things, void).ravel(), minlength=_FIRST_THING_CODE + len(things))
    things = [thing for index, thing in enumerate(things) if areas[_FIRST_THING_CODE + index] >= min_area]
    layers = _compose(stuff, things, void)
    image = _render(rng, grid, layers, things)
    ids, semantic, segments = _labels(layers, things)
    return image, ids, semantic, segments


def _save_image(path: Path, array: np.ndarray, **options: Any) -> None:
    """Write an image array with Pillow, atomically; the format follows the suffix."""
    image = Image.fromarray(array)
    image_format = "JPEG" if path.suffix == ".jpg" else "PNG"
    write_atomic(path, lambda handle: image.save(handle, format=image_format, **options), path.suffix)


def _categories_json() -> list[dict[str, Any]]:
    return [
        {"id": c.dataset_id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
        for c in SYNTHETIC_CATEGORIES
    ]


def generate_synthetic_dataset(out: Path, n: int, size: tuple[int, int], seed: int) -> Path:
    """Write ``n`` scenes of ``size`` (H, W) under ``out`` (layout in the module docstring); returns ``out``.

    Image ``i`` (1..n) draws from ``numpy.random.default_rng([seed, i])``, so a seed fixes every byte. Files of
    the same names are overwritten; other files in ``out`` are left alone.
    """
    out = Path(out)
    h, w = size
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE}x{MIN_SIDE}, got {h}x{w}")
    min_area = max(24, int(0.0015 * h * w))
    images, annotations = [], []
    for image_id in range(1, n + 1):
        image, ids, semantic, segments = synthetic_scene(np.random.default_rng([seed, image_id]), (h, w), min_area)
        stem = f"{image_id:06d}"
        _save_image(out / "images" / f"{stem}.jpg", image, quality=JPEG_QUALITY)
        write_panoptic_png(out / "panoptic" / f"{stem}.png", ids)
        _save_image(out / "semantic" / f"{stem}.png", semantic)
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w})
        annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
    info = {"description": "PEM synthetic panoptic scenes", "seed": seed, "size": [h, w], "count": n}
    data = {"info": info, "images": images, "annotations": annotations, "categories": _categories_json()}
    write_json_atomic(out / "panoptic.json", data)
    return out
