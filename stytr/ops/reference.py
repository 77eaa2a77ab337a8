"""Pure-PyTorch reference implementations of StyleGAN2's two custom ops.

They run on any device, are differentiable to any order through autograd, and
define the semantics the CUDA kernels must match.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def normalize_pad(pad) -> tuple[int, int, int, int]:
    """(p0, p1) for both axes, or (px0, px1, py0, py1), to (px0, px1, py0, py1)."""
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad
    raise ValueError(f"pad must have 2 or 4 entries, got {pad!r}")


def upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative pads crop), convolve with the FIR
    kernel (a true convolution, so the kernel is flipped), then keep every
    ``down``-th sample. ``x`` is (B, C, H, W) and ``kernel`` (kh, kw)."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if kernel.ndim != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel, got shape {tuple(kernel.shape)}")
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = normalize_pad(pad)
    b, c, h, w = x.shape
    kh, kw = kernel.shape

    if upx > 1 or upy > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(b, c, h * upy, w * upx)

    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    weight = torch.flip(kernel, [0, 1]).to(x.dtype).reshape(1, 1, kh, kw).repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, stride=(downy, downx), groups=c)


def upfirdn2d_output_size(h: int, w: int, kernel_hw, up=1, down=1, pad=(0, 0)) -> tuple[int, int]:
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = normalize_pad(pad)
    kh, kw = kernel_hw
    return (h * upy + py0 + py1 - kh) // downy + 1, (w * upx + px0 + px1 - kw) // downx + 1


def fused_leaky_relu_ref(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float = 0.2,
                         scale: float = math.sqrt(2)) -> torch.Tensor:
    """leaky_relu(x + bias) * scale, with ``bias`` broadcast along dimension 1."""
    if bias is not None:
        if bias.ndim != 1 or bias.shape[0] != x.shape[1]:
            raise ValueError(f"bias of shape {tuple(bias.shape)} does not match {x.shape[1]} channels")
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2))).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale
