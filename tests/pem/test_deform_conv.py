"""pem.ops.deform_conv2d: the pure-PyTorch reference against torchvision's kernel and against conv2d."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from pem.ops import deform_conv2d, deform_conv2d_backend, deform_conv2d_reference

FORWARD_ATOL = 1e-13
GRAD_ATOL = 1e-13


@dataclass(frozen=True)
class Case:
    """One deformable-convolution configuration."""

    batch: int = 2
    in_channels: int = 4
    height: int = 6
    width: int = 5
    out_channels: int = 4
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    bias: bool = True
    mask: bool = True

    @property
    def out_size(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return (self.height + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (self.width + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def base_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Undeformed sample rows/cols, each [kh*kw, Ho, Wo] float64."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        out_h, out_w = self.out_size
        i, j, ho, wo = torch.meshgrid(torch.arange(kh), torch.arange(kw), torch.arange(out_h), torch.arange(out_w),
                                      indexing="ij")
        rows = (ho * sh - ph + i * dh).reshape(kh * kw, out_h, out_w)
        cols = (wo * sw - pw + j * dw).reshape(kh * kw, out_h, out_w)
        return rows.double(), cols.double()

    def tensors(self, offsets: torch.Tensor, dtype: torch.dtype = torch.float64,
                seed: int = 0) -> dict[str, torch.Tensor | None]:
        """Random input/weight/bias/mask for ``offsets`` [B, 2*G*kh*kw, Ho, Wo]."""
        generator = torch.Generator().manual_seed(seed)
        kh, kw = self.kernel
        out_h, out_w = self.out_size
        taps = kh * kw

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

        mask = None
        if self.mask:
            mask = torch.rand(self.batch, self.offset_groups * taps, out_h, out_w, generator=generator,
                              dtype=torch.float64).to(dtype)
        return {
            "input": rand(self.batch, self.in_channels, self.height, self.width),
            "offset": offsets.to(dtype),
            "weight": rand(self.out_channels, self.in_channels // self.groups, kh, kw),
            "bias": rand(self.out_channels) if self.bias else None,
            "mask": mask,
        }

    def random_offsets(self, scale: float, seed: int = 1) -> torch.Tensor:
        """Gaussian offsets [B, 2*G*kh*kw, Ho, Wo] float64 with standard deviation ``scale``."""
        generator = torch.Generator().manual_seed(seed)
        kh, kw = self.kernel
        return torch.randn(self.batch, 2 * self.offset_groups * kh * kw, *self.out_size, generator=generator,
                           dtype=torch.float64) * scale

    def border_offsets(self, seed: int = 2) -> torch.Tensor:
        """Offsets whose samples land on borders, integers, exactly -1 / H, just inside/outside and +-3H away."""
        generator = torch.Generator().manual_seed(seed)
        kh, kw = self.kernel
        taps = kh * kw
        rows, cols = self.base_grid()
        shape = (self.batch, self.offset_groups, taps, *self.out_size)
        offsets = torch.empty(self.batch, self.offset_groups, taps, 2, *self.out_size, dtype=torch.float64)
        for axis, (size, base) in enumerate(((self.height, rows), (self.width, cols))):
            targets = torch.tensor([-1.0, float(size), 0.0, float(size - 1), float(size // 2), -0.5, size - 0.5,
                                    -1.0 - 1e-9, -1.0 + 1e-9, size - 1e-9, size + 1e-9, -2.0, size + 1.0,
                                    -3.0 * size, 3.0 * size, 0.25, size - 1.25], dtype=torch.float64)
            chosen = targets[torch.randint(len(targets), shape, generator=generator)]
            offsets[:, :, :, axis] = chosen - base
        return offsets.reshape(self.batch, 2 * self.offset_groups * taps, *self.out_size)


CASES = {
    "default": Case(),
    "no_bias_no_mask": Case(bias=False, mask=False),
    "stride2_pad0": Case(stride=(2, 2), padding=(0, 0), height=7, width=8),
    "pad2_dilation2": Case(padding=(2, 2), dilation=(2, 2)),
    "groups2": Case(groups=2, out_channels=6),
    "offset_groups2": Case(offset_groups=2, mask=False),
    "groups2_offset_groups2": Case(groups=2, offset_groups=2, out_channels=2, bias=False),
    "non_square_mixed": Case(height=4, width=9, kernel=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1)),
    "one_pixel_wide": Case(height=5, width=1, padding=(1, 1)),
    "one_by_one_kernel": Case(kernel=(1, 1), padding=(0, 0), offset_groups=4),
}


@pytest.fixture(scope="module")
def torchvision_deform() -> Callable[..., torch.Tensor]:
    return pytest.importorskip("torchvision.ops").deform_conv2d


def _run(fn: Callable[..., torch.Tensor], case: Case, tensors: dict[str, torch.Tensor | None]) -> torch.Tensor:
    return fn(tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"], stride=case.stride,
              padding=case.padding, dilation=case.dilation, mask=tensors["mask"])


def _grads(fn: Callable[..., torch.Tensor], case: Case,
           tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    leaves = {name: t.detach().clone().requires_grad_() for name, t in tensors.items() if t is not None}
    out = _run(fn, case, {name: leaves.get(name) for name in tensors})
    upstream = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad(out, list(leaves.values()), upstream)
    return dict(zip(leaves, grads))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("offsets", ["random", "border"])
@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_torchvision(name: str, offsets: str,
                                       torchvision_deform: Callable[..., torch.Tensor]) -> None:
    case = CASES[name]
    offset = case.random_offsets(2.0) if offsets == "random" else case.border_offsets()
    tensors = case.tensors(offset)
    expected = _run(torchvision_deform, case, tensors)
    assert expected.shape == (case.batch, case.out_channels, *case.out_size)
    assert _max_diff(_run(deform_conv2d_reference, case, tensors), expected) <= FORWARD_ATOL


@pytest.mark.parametrize("offsets", ["random", "border"])
@pytest.mark.parametrize("name", ["default", "no_bias_no_mask", "groups2_offset_groups2", "non_square_mixed",
                                  "one_pixel_wide"])
def test_reference_gradients_match_torchvision(name: str, offsets: str,
                                               torchvision_deform: Callable[..., torch.Tensor]) -> None:
    case = CASES[name]
    offset = case.random_offsets(1.5) if offsets == "random" else case.border_offsets()
    tensors = case.tensors(offset)
    expected = _grads(torchvision_deform, case, tensors)
    actual = _grads(deform_conv2d_reference, case, tensors)
    assert actual.keys() == expected.keys()
    for key in expected:
        assert _max_diff(actual[key], expected[key]) <= GRAD_ATOL, key


def test_far_outside_samples_are_zero() -> None:
    case = Case(bias=False)
    tensors = case.tensors(case.random_offsets(1.0))
    for axis, (size, base) in enumerate(zip((case.height, case.width), case.base_grid())):
        for value in (-1.0, -1.5, float(size), size + 0.5, -3.0 * size, 3.0 * size):
            offset = torch.zeros_like(tensors["offset"])
            offset[:, axis::2] = value - base
            out = _run(deform_conv2d_reference, case, {**tensors, "offset": offset})
            assert torch.count_nonzero(out) == 0, (axis, value)


@pytest.mark.parametrize("name", ["default", "stride2_pad0", "pad2_dilation2", "groups2", "non_square_mixed",
                                  "one_pixel_wide", "offset_groups2"])
def test_zero_offsets_equal_conv2d(name: str) -> None:
    case = CASES[name]
    tensors = case.tensors(torch.zeros_like(case.random_offsets(1.0)))
    if tensors["mask"] is not None:
        tensors["mask"] = torch.ones_like(tensors["mask"])
    expected = F.conv2d(tensors["input"], tensors["weight"], tensors["bias"], case.stride, case.padding,
                        case.dilation, case.groups)
    assert _max_diff(_run(deform_conv2d_reference, case, tensors), expected) <= 1e-12


def test_float32_reference_matches_torchvision(torchvision_deform: Callable[..., torch.Tensor]) -> None:
    case = CASES["groups2_offset_groups2"]
    tensors = case.tensors(case.random_offsets(2.0), dtype=torch.float32)
    actual = _run(deform_conv2d_reference, case, tensors)
    assert actual.dtype == torch.float32
    assert _max_diff(actual, _run(torchvision_deform, case, tensors)) <= 1e-5


def test_reference_gradcheck() -> None:
    case = Case(batch=1, in_channels=2, height=4, width=3, out_channels=2, kernel=(2, 2), offset_groups=2)
    tensors = case.tensors(case.random_offsets(1.0))
    names = [name for name, t in tensors.items() if t is not None]

    def fn(*args: torch.Tensor) -> torch.Tensor:
        return _run(deform_conv2d_reference, case, {**tensors, **dict(zip(names, args))})

    inputs = tuple(tensors[name].clone().requires_grad_() for name in names)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_backend_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES["default"]
    tensors = case.tensors(case.random_offsets(1.0))
    monkeypatch.setenv("PEM_DISABLE_TORCHVISION_DEFORM", "1")
    assert deform_conv2d_backend() == "reference"
    assert torch.equal(_run(deform_conv2d, case, tensors), _run(deform_conv2d_reference, case, tensors))
    monkeypatch.delenv("PEM_DISABLE_TORCHVISION_DEFORM")
    pytest.importorskip("torchvision.ops")
    assert deform_conv2d_backend() == "torchvision"
    monkeypatch.setenv("PEM_DISABLE_TORCHVISION_DEFORM", "0")
    assert deform_conv2d_backend() == "torchvision"


def test_int_stride_padding_dilation() -> None:
    case = Case(stride=(2, 2), padding=(2, 2), dilation=(2, 2))
    tensors = case.tensors(case.random_offsets(1.0))
    out = deform_conv2d(tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"], stride=2, padding=2,
                        dilation=2, mask=tensors["mask"])
    assert torch.allclose(out, _run(deform_conv2d_reference, case, tensors), atol=1e-12, rtol=0)


@pytest.mark.parametrize("fn", [deform_conv2d, deform_conv2d_reference])
def test_shape_errors(fn: Callable[..., torch.Tensor]) -> None:
    x = torch.zeros(2, 4, 6, 5)
    weight = torch.zeros(3, 4, 3, 3)
    offset = torch.zeros(2, 18, 4, 3)
    with pytest.raises(ValueError, match=r"offset channels 17 \(offset \(2, 17, 4, 3\)\) must be a positive "
                                         r"multiple of 2 \* kh \* kw = 18"):
        fn(x, torch.zeros(2, 17, 4, 3), weight)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 9, 4, 3\) .* got \(2, 18, 4, 3\)"):
        fn(x, offset, weight, mask=torch.zeros(2, 18, 4, 3))
    with pytest.raises(ValueError, match=r"input channels 4 .* not a multiple of weight.shape\[1\] = 3"):
        fn(x, offset, torch.zeros(3, 3, 3, 3))
    with pytest.raises(ValueError, match=r"offset must have shape \(2, 18, 4, 3\) .* got \(2, 18, 6, 5\)"):
        fn(x, torch.zeros(2, 18, 6, 5), weight)
    with pytest.raises(ValueError, match=r"input channels 4 .* not divisible by offset_groups = 3"):
        fn(x, torch.zeros(2, 54, 4, 3), weight)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        fn(x, offset, weight, torch.zeros(4))
