"""``--shapes`` / ``--orig-sizes`` parsing and the optimization profile of PEM graphs."""
from __future__ import annotations

import pytest

from pem.export.tensorrt.shapes import ShapeError, engine_shapes, parse_shape_list
from pem.runtime.engine_manifest import ProfileRange

DYNAMIC_NHWC = {"image": (None, None, None, 3), "orig_size": (2,)}


def test_parse_shape_list() -> None:
    assert parse_shape_list("1x512x512,1x512x1024,1x1024x2048") == [(1, 512, 512), (1, 512, 1024), (1, 1024, 2048)]
    assert parse_shape_list("512x512, 2x512x1024 ,4x1024x2048") == [(1, 512, 512), (2, 512, 1024), (4, 1024, 2048)]
    assert parse_shape_list("256x320") == [(1, 256, 320)] * 3
    assert parse_shape_list("480x640,720x1280,1080x1920", "--orig-sizes", batch=False)[2] == (1080, 1920)


@pytest.mark.parametrize(("text", "message"), [
    ("1x512x512,1x512x1024", "min,opt,max .* got 2"),
    ("512", "cannot read '512' as BxHxW or HxW"),
    ("1x512x512,abc,1x1024x1024", "cannot read 'abc'"),
    ("1x2x3x4", "cannot read '1x2x3x4'"),
    ("0x512x512", "must be positive"),
    ("1x512x512,1x256x1024,1x1024x2048", "min <= opt <= max .* 1x512x512, 1x256x1024, 1x1024x2048"),
    ("1x1024x2048,1x512x1024,1x512x512", "min <= opt <= max"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        parse_shape_list(text)


def test_orig_sizes_take_no_batch() -> None:
    with pytest.raises(ShapeError, match=r"--orig-sizes: cannot read '1x480x640' as HxW"):
        parse_shape_list("1x480x640", "--orig-sizes", batch=False)


def test_dynamic_graph_profiles() -> None:
    shapes = engine_shapes(DYNAMIC_NHWC, "uint8_nhwc", "1x512x512,1x512x1024,2x1024x2048")
    assert shapes.profiles["image"] == ProfileRange((1, 512, 512, 3), (1, 512, 1024, 3), (2, 1024, 2048, 3))
    assert shapes.profiles["orig_size"] == ProfileRange((2,), (2,), (2,))
    assert shapes.shape_values["orig_size"] == ProfileRange((1, 1), (512, 1024), (1024, 2048))
    shapes = engine_shapes(DYNAMIC_NHWC, "uint8_nhwc", "512x512", orig_sizes="100x100,720x1280,1080x1920")
    assert shapes.shape_values["orig_size"] == ProfileRange((100, 100), (720, 1280), (1080, 1920))
    nchw = engine_shapes({"image_nchw": (None, 3, None, None)}, "float_nchw", "1x256x320,1x512x640,1x512x640")
    assert nchw.profiles == {"image_nchw": ProfileRange((1, 3, 256, 320), (1, 3, 512, 640), (1, 3, 512, 640))}
    assert nchw.shape_values == {}


def test_static_graph_takes_its_size_only() -> None:
    static = {"image": (1, 256, 256, 3), "orig_size": (2,)}
    fixed = ProfileRange((1, 256, 256, 3), (1, 256, 256, 3), (1, 256, 256, 3))
    assert engine_shapes(static, "uint8_nhwc", None).profiles["image"] == fixed
    assert engine_shapes(static, "uint8_nhwc", "256x256").profiles["image"] == fixed
    with pytest.raises(ShapeError, match=r"fixed height of 256 \(1x256x256x3\) but --shapes asks for \[256, 512\]; "
                                         r"export with --dynamic"):
        engine_shapes(static, "uint8_nhwc", "1x256x256,1x256x256,1x512x512")
    with pytest.raises(ShapeError, match=r"fixed batch of 1 .* export with --dynamic-batch \(free batch\) or "
                                         r"--dynamic"):
        engine_shapes(static, "uint8_nhwc", "2x256x256")


def test_free_batch_graph_takes_a_batch_range_at_its_size() -> None:
    """A ``--dynamic-batch`` export: batch free, height and width fixed (pem-serve's graph batching)."""
    free_batch = {"image": (None, 128, 128, 3)}
    shapes = engine_shapes(free_batch, "uint8_nhwc", "1x128x128,4x128x128,8x128x128")
    assert shapes.profiles == {"image": ProfileRange((1, 128, 128, 3), (4, 128, 128, 3), (8, 128, 128, 3))}
    with pytest.raises(ShapeError, match=r"free dimensions \?x128x128x3"):
        engine_shapes(free_batch, "uint8_nhwc", None)
    with pytest.raises(ShapeError, match=r"fixed width of 128 .* asks for \[128, 256\]; export with --dynamic to"):
        engine_shapes(free_batch, "uint8_nhwc", "1x128x128,2x128x128,4x128x256")


def test_graph_errors() -> None:
    with pytest.raises(ShapeError, match=r"free dimensions \?x\?x\?x3: pass the sizes to build for, min,opt,max "
                                         r"\(--shapes 1x512x512,"):
        engine_shapes(DYNAMIC_NHWC, "uint8_nhwc", None)
    with pytest.raises(ShapeError, match="no image input for layout 'float_nchw'"):
        engine_shapes(DYNAMIC_NHWC, "float_nchw", "512x512")
    with pytest.raises(ShapeError, match=r"outside the PEM contract: \['mask'\]"):
        engine_shapes({**DYNAMIC_NHWC, "mask": (1,)}, "uint8_nhwc", "512x512")
    with pytest.raises(ShapeError, match="--orig-sizes applies to graphs with the 'orig_size' input"):
        engine_shapes({"image": (1, 64, 64, 3)}, "uint8_nhwc", None, orig_sizes="64x64")
