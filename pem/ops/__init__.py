"""Custom operators: deformable convolution (torchvision kernel with a pure-PyTorch fallback)."""
from __future__ import annotations

from pem.ops.deform_conv import deform_conv2d, deform_conv2d_backend, deform_conv2d_reference

__all__ = ["deform_conv2d", "deform_conv2d_backend", "deform_conv2d_reference"]
