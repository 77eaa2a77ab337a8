"""Fast CPU implementations of upfirdn2d and fused_leaky_relu (the ``STYTR_PATH=fast`` default).

Same semantics as :mod:`stytr.ops.reference`, fewer passes over memory:

* upsampling never multiplies the inserted zeros: it is a transposed depthwise convolution
  with the up factor as stride, which only visits input samples (a quarter of the work
  for ``up=2``); filtering and downsampling are depthwise convolutions that do their own
  zero padding, so no padded copy of the input is made;
* bias, leaky ReLU and gain take two passes instead of three, by folding the (positive)
  gain into the affine step: ``lrelu(x + b) * g == lrelu(g*x + g*b)``.

Everything is ordinary differentiable torch ops, so autograd (to any order) and
torch.compile see nothing special.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reference import _pair, normalize_pad

__all__ = ["upfirdn2d_cpu", "fused_leaky_relu_cpu", "depthwise_filter"]


def _split_pad(p0: int, p1: int) -> tuple[int, int, int]:
    """(symmetric part >= 0 that a convolution can do, residual before, residual after)."""
    both = max(min(p0, p1), 0)
    return both, p0 - both, p1 - both


def _pad_or_crop(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """Positive amounts pad with zeros, negative ones crop (padding first, as the reference does)."""
    if max(x0, x1, y0, y1) > 0:
        x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    if min(x0, x1, y0, y1) < 0:
        x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    return x


def depthwise_filter(x: torch.Tensor, kernel: torch.Tensor, pad, down=1, bias: torch.Tensor | None = None):
    """upfirdn2d with ``up=1``: pad (negative pads crop), true convolution with ``kernel`` on
    every channel, keep every ``down``-th sample; ``bias`` (C,) is added for free."""
    downx, downy = _pair(down)
    px0, px1, py0, py1 = normalize_pad(pad)
    c = x.shape[1]
    (cy, ry0, ry1), (cx, rx0, rx1) = _split_pad(py0, py1), _split_pad(px0, px1)
    if ry0 or ry1 or rx0 or rx1:
        x = _pad_or_crop(x, rx0, rx1, ry0, ry1)
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).expand(c, 1, *kernel.shape).contiguous()
    return F.conv2d(x, weight, bias, stride=(downy, downx), padding=(cy, cx), groups=c)


def upfirdn2d_cpu(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0)) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if kernel.ndim != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel, got shape {tuple(kernel.shape)}")
    upx, upy = _pair(up)
    if upx == 1 and upy == 1:
        return depthwise_filter(x, kernel, pad, down)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = normalize_pad(pad)
    c = x.shape[1]
    kh, kw = kernel.shape
    # Output sample o of upfirdn2d is sample o + (k - 1 - p0) of the full transposed convolution
    # (whose kernel is not flipped); (k - up - p1) samples are left over at the end.
    (cy, ry0, ry1), (cx, rx0, rx1) = _split_pad(kh - 1 - py0, kh - upy - py1), _split_pad(kw - 1 - px0, kw - upx - px1)
    weight = kernel.to(x.dtype).expand(c, 1, kh, kw).contiguous()
    y = F.conv_transpose2d(x, weight, stride=(upy, upx), padding=(cy, cx), groups=c)
    if ry0 or ry1 or rx0 or rx1:  # crop what the convolution's symmetric padding could not (negative = pad)
        y = _pad_or_crop(y, -rx0, -rx1, -ry0, -ry1)
    if downx > 1 or downy > 1:
        y = y[:, :, ::downy, ::downx]
    return y


def fused_leaky_relu_cpu(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float = 0.2,
                         scale: float = math.sqrt(2)) -> torch.Tensor:
    """leaky_relu(x + bias) * scale, with ``bias`` broadcast along dimension 1."""
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != x.shape[1]):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match {x.shape[1]} channels")
    if scale <= 0:  # the gain folding needs a positive gain
        from .reference import fused_leaky_relu_ref

        return fused_leaky_relu_ref(x, bias, negative_slope, scale)
    if bias is None:
        out = x * scale
    else:
        # Not torch.add(bias, x, alpha=scale): after a matmul, inductor turns that into an addmm and
        # scales the wrong operand (torch.compile on CPU gave wrong mapping-network outputs).
        out = torch.mul(x, scale).add_((bias * scale).to(x.dtype).view(1, -1, *([1] * (x.ndim - 2))))
    # In place on a fresh tensor; autograd can only invert that for a positive slope.
    return F.leaky_relu_(out, negative_slope) if negative_slope > 0 else F.leaky_relu(out, negative_slope)
