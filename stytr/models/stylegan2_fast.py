"""The CPU fast path of the StyleGAN2 synthesis layers (``STYTR_PATH=fast``, the default).

It computes what :class:`~stytr.models.stylegan2.StyledConv` and
:class:`~stytr.models.stylegan2.ToRGB` compute on their reference path, reading the same
parameters, with fewer passes over the activations, which are what a CPU spends its time on
(a 1024 px image has 32 x 1024^2 activations per layer; the weights there are 9k numbers):

* **Demodulation from the squared weights.** The reference builds the modulated weight of
  every sample to sum its squares; ``d = rsqrt(s^2 @ sum_k(w^2)^T + eps)`` is the same number
  from one (B, Cin) x (Cin, Cout) product.
* **Where to modulate.** With one image and no gradient to carry back (inference), the style,
  the demodulation and the activation gain are folded into the small weight tensor, and the
  bias into the convolution. Otherwise (a batch, or training) the input is scaled by the style
  and the demodulation, bias and gain are one fused step after the convolution: that keeps
  one batched convolution, and its backward needs no gradient for a per-sample weight.
* **One epilogue.** Noise, bias, leaky ReLU and gain are applied in place where autograd
  allows it (``lrelu(x)*g == lrelu(g*x)`` for the positive gain), and ``conv_clamp``
  (StyleGAN2-ADA layouts) after them.
* **Filtering without zeros.** The blur after a transposed convolution and the skip
  upsampling of ToRGB use :mod:`stytr.ops.cpu_impl` (depthwise convolutions; the upsampling
  one strides over the input instead of filtering a zero-inserted map), the blur with the
  layer's bias folded in.
* **channels_last** activations inside the synthesis network when the layers are wide enough
  for the convolutions to gain from it (:func:`use_channels_last`).

The functions take the layer modules and use only their attributes, so a layer that gains an
optional attribute (``conv_clamp``) is honoured here as on the reference path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.cpu_impl import depthwise_filter, upfirdn2d_cpu

__all__ = ["applies", "use_channels_last", "styled_conv", "to_rgb", "demodulation"]


def applies(x: torch.Tensor) -> bool:
    """The fast path handles CPU float tensors; anything else takes the reference path."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def use_channels_last(channels: int, batch: int) -> bool:
    """oneDNN runs 3x3 convolutions directly on channels_last data; on NCHW it reorders every
    input and output. That pays once a layer is wide; below 16 channels the reorder is cheap and
    the channels_last kernels of the small element-wise steps are slower."""
    return channels >= 16


def _tracks_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def demodulation(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """(B, Cout) demodulation coefficients of ``weight`` (Cout, Cin, k, k) modulated by ``styles`` (B, Cin)."""
    return torch.rsqrt(styles.square() @ weight.square().sum((2, 3)).t() + 1e-8)


#: Polyphase pays once the input map is this wide: below, four small convolutions and the
#: interleaving cost more than oneDNN's one transposed convolution (measured on the 1024 px
#: generator's shapes, batch 1: 0.65-0.95x up to 32 px, 1.2-1.8x from 64 px up).
POLYPHASE_MIN_WIDTH = 64


def transposed_conv_up2(x: torch.Tensor, weight: torch.Tensor, polyphase: bool = True) -> torch.Tensor:
    """``conv_transpose2d(x, weight, stride=2)`` for a 3x3 ``weight`` (Cin, Cout, 3, 3). With
    ``polyphase`` and a wide enough map, as four direct convolutions, one per output phase (taps
    2+0 / 1 per axis), interleaved: oneDNN's direct convolutions outrun its transposed one on
    large maps in a forward pass, but the interleaving costs more than it saves when the
    backward pass has to undo it."""
    batch, _, height, width = x.shape
    if not polyphase or weight.shape[-2:] != (3, 3) or min(height, width) < POLYPHASE_MIN_WIDTH:
        return F.conv_transpose2d(x, weight, stride=2)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
    out = torch.empty(batch, weight.shape[1], 2 * height + 1, 2 * width + 1, dtype=x.dtype, memory_format=fmt)
    # Taps (2, 0) and (1,) per axis as slices of the flipped kernel (rows 2, 1, 0): views, where
    # index lists would copy the kernel six times.
    flipped = weight.flip((2, 3)).transpose(0, 1)
    taps = (slice(0, 3, 2), slice(1, 2))
    for ry in (0, 1):
        for rx in (0, 1):
            out[:, :, ry::2, rx::2] = F.conv2d(x, flipped[:, :, taps[ry], taps[rx]], padding=(1 - ry, 1 - rx))
    return out


def _noise_term(layer, out: torch.Tensor, noise: torch.Tensor | None, gain: float) -> torch.Tensor:
    """gain * noise weight * noise, (B or 1, 1, H, W); fresh noise drawn as the reference draws it."""
    if noise is None:
        noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
    return noise.to(out.dtype) * (layer.noise.weight * gain)


def styled_conv(layer, x: torch.Tensor, s: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """``layer.forward_s(x, s, noise)`` of a StyledConv (modulated 3x3 conv, optionally upsampling
    by 2, then noise, bias, leaky ReLU with gain, optional clamp)."""
    conv, act = layer.conv, layer.activate
    gain, slope = float(act.scale), float(act.negative_slope)
    if gain <= 0:
        raise ValueError("the fast path folds the activation gain into the convolution; it must be positive")
    weight = conv.weight[0]
    styles = s * conv.scale
    batch = x.shape[0]
    bias = act.bias * gain if act.bias is not None else None
    demod = demodulation(weight, styles) if conv.demodulate else None
    tracking = _tracks_grad(x, s, weight, *([bias] if bias is not None else []), layer.noise.weight)

    if batch == 1 and not tracking:
        # Everything per-sample goes into the (small) weight; the convolution adds the bias.
        w = weight * styles.view(1, -1, 1, 1)
        w = w * (demod.view(-1, 1, 1, 1) * gain if demod is not None else gain)
        if conv.upsample:
            out = transposed_conv_up2(x, w.transpose(0, 1))
            out = depthwise_filter(out, conv.blur.kernel, conv.blur.pad, bias=bias)
        else:
            out = F.conv2d(x, w, bias, padding=conv.padding)
    else:
        w = weight * gain
        x = x * styles.view(batch, -1, 1, 1)
        if conv.upsample:
            up = transposed_conv_up2(x, w.transpose(0, 1), polyphase=not tracking)
            out = depthwise_filter(up, conv.blur.kernel, conv.blur.pad)
        else:
            out = F.conv2d(x, w, padding=conv.padding)
        coef = demod.view(batch, -1, 1, 1) if demod is not None else None
        # The convolution's output is not needed by its own backward, so it may be overwritten;
        # a product that autograd must differentiate is not, hence out-of-place when tracking.
        if coef is not None and bias is not None:
            out = torch.addcmul(bias.view(1, -1, 1, 1), out, coef, out=None if tracking else out)
        elif coef is not None:
            out = out * coef if tracking else out.mul_(coef)
        elif bias is not None:
            out = out.add_(bias.view(1, -1, 1, 1))
    out = out.add_(_noise_term(layer, out, noise, gain))
    out = F.leaky_relu_(out, slope) if slope > 0 else F.leaky_relu(out, slope)
    clamp = getattr(layer, "conv_clamp", None)
    if clamp is not None:
        out = out.clamp(-clamp, clamp) if tracking else out.clamp_(-clamp, clamp)
    return out


def to_rgb(layer, x: torch.Tensor, s: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
    """``layer.forward_s(x, s, skip)`` of a ToRGB: a per-sample 1x1 modulated conv (no demodulation)
    as one batched matrix product with the bias, clamp, then the upsampled skip added."""
    conv = layer.conv
    if conv.kernel_size != 1 or conv.demodulate or conv.upsample or conv.downsample:
        raise ValueError("to_rgb expects ToRGB's 1x1 modulation without demodulation")
    batch, channels, height, width = x.shape
    w = conv.weight[0, :, :, 0, 0].unsqueeze(0) * (s * conv.scale).unsqueeze(1)  # (B, 3, Cin)
    bias = layer.bias.view(1, -1, 1)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # (B, H*W, Cin) @ (B, Cin, 3): the result is (B, 3, H, W) in channels_last layout.
        flat = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        out = torch.baddbmm(bias.transpose(1, 2), flat, w.transpose(1, 2))
        out = out.view(batch, height, width, -1).permute(0, 3, 1, 2)
    else:
        out = torch.baddbmm(bias, w, x.reshape(batch, channels, height * width)).view(batch, -1, height, width)
    tracking = _tracks_grad(x, s, w, layer.bias)
    clamp = getattr(layer, "conv_clamp", None)
    if clamp is not None:
        out = out.clamp(-clamp, clamp) if tracking else out.clamp_(-clamp, clamp)
    if skip is not None:
        up = layer.upsample
        skip = upfirdn2d_cpu(skip, up.kernel, up=up.factor, down=1, pad=up.pad)
        out = out + skip if tracking or skip.requires_grad else out.add_(skip)
    return out
