"""StyleGAN2 generator and discriminator.

Attribute names, parameter shapes and buffers follow rosinality/stylegan2-pytorch
exactly, so its ``g_ema``/``d`` state dicts (e.g. ``stylegan2-ffhq-config-f.pt``)
load with ``strict=True``. ``channel_max`` shrinks every layer's width while
keeping the module tree, which is how the ToyFaces generator is configured.

Besides the usual W / W+ interface the generator exposes its style space S (the
per-layer outputs of the modulation layers) for StyleSpace editing:
``G.w_to_s(w_plus)`` gives the list of S codes and ``G.synthesize_s(s)`` renders them.

High-fidelity inversion enters through ``residual``: ``G.synthesis(w_plus, residual={32: (scale,
shift)})`` (and ``synthesize_s``) modulates the features of the 32x32 block right after its upsampling
convolution, ``f * (1 + scale) + shift`` (HFGI's consultation fusion); a zero residual renders exactly
the plain image.

On a CPU the synthesis layers take the fast path of :mod:`stytr.models.stylegan2_fast`
unless ``STYTR_PATH=reference`` (:mod:`stytr.runtime`); the code below is the reference
that the fast path is tested against.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..checkpoints import CheckpointError, load_state_strict, save_atomic
from ..ops import FusedLeakyReLU, fused_leaky_relu, upfirdn2d
from ..runtime import fast_path_enabled
from . import stylegan2_fast as fast
from .nvidia_pickle import SnapshotError, SnapshotInfo, import_generator

RESOLUTIONS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


def base_channels(channel_multiplier: float = 2, channel_max: int = 512) -> dict[int, int]:
    """Feature maps per resolution: StyleGAN2 config-f's table, capped at ``channel_max``."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
             256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: int(min(ch, channel_max)) for res, ch in table.items()}


def check_size(size: int) -> int:
    if size not in RESOLUTIONS or size < 8:
        raise ValueError(f"StyleGAN2 resolution must be a power of two between 8 and 1024, got {size}")
    return int(math.log2(size))


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class Upsample(nn.Module):
    def __init__(self, kernel, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class Blur(nn.Module):
    def __init__(self, kernel, pad, upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv with the equalised learning rate: weights ~ N(0,1), scaled at run time."""

    def __init__(self, in_channel, out_channel, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias=True, bias_init=0.0, lr_mul=1.0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x):
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled per sample by a style, then demodulated.

    Implemented as one grouped convolution over the batch (the "fused" path).
    ``forward`` takes the W code; ``forward_s`` takes the already-modulated style
    (the S code), which is what StyleSpace edits.
    """

    def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False,
                 downsample=False, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.kernel_size, self.in_channel, self.out_channel = kernel_size, in_channel, out_channel
        self.upsample, self.downsample, self.demodulate = upsample, downsample, demodulate
        if upsample:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward(self, x, style):
        return self.forward_s(x, self.modulation(style))

    def forward_s(self, x, s):
        return self._forward_s_fused(x, s) if x.is_cuda else self._forward_s_unfused(x, s)

    def _forward_s_fused(self, x, s):
        batch, in_channel, height, width = x.shape
        weight = self.scale * self.weight * s.view(batch, 1, in_channel, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, self.out_channel, 1, 1, 1)
        k = self.kernel_size
        x = x.reshape(1, batch * in_channel, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = self.blur(out.view(batch, self.out_channel, *out.shape[2:]))
        elif self.downsample:
            x = self.blur(x.view(batch, in_channel, height, width))
            x = x.reshape(1, batch * in_channel, *x.shape[2:])
            out = F.conv2d(x, weight.reshape(batch * self.out_channel, in_channel, k, k), stride=2, groups=batch)
            out = out.view(batch, self.out_channel, *out.shape[2:])
        else:
            out = F.conv2d(x, weight.reshape(batch * self.out_channel, in_channel, k, k), padding=self.padding,
                           groups=batch)
            out = out.view(batch, self.out_channel, *out.shape[2:])
        return out


    def _forward_s_unfused(self, x, s):
        # Same maths as the grouped convolution, but scales activations instead of
        # weights: one ordinary convolution for the whole batch, which CPUs run better.
        batch, in_channel = x.shape[:2]
        weight = self.scale * self.weight.squeeze(0)
        x = x * s.view(batch, in_channel, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2))
        elif self.downsample:
            out = F.conv2d(self.blur(x), weight, stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            dcoefs = torch.rsqrt((weight.unsqueeze(0) * s.view(batch, 1, in_channel, 1, 1)).pow(2).sum([2, 3, 4]) + 1e-8)
            out = out * dcoefs.view(batch, self.out_channel, 1, 1)
        return out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise=None):
        if noise is None:
            noise = image.new_empty(image.shape[0], 1, *image.shape[2:]).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channel, size=4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch_size: int):
        return self.input.repeat(batch_size, 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv, noise, bias and leaky ReLU with gain. ``conv_clamp`` (StyleGAN2-ADA; None in
    rosinality's layout) clamps the result to +-conv_clamp after the activation gain."""

    def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False, blur_kernel=(1, 3, 3, 1),
                 demodulate=True, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel, demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x, style, noise=None):
        return self.forward_s(x, self.conv.modulation(style), noise)

    def forward_s(self, x, s, noise=None):
        if fast_path_enabled() and fast.applies(x):
            return fast.styled_conv(self, x, s, noise)
        out = self.activate(self.noise(self.conv.forward_s(x, s), noise=noise))
        return out if self.conv_clamp is None else out.clamp(-self.conv_clamp, self.conv_clamp)


class ToRGB(nn.Module):
    """``conv_clamp`` (StyleGAN2-ADA) clamps this layer's own output, before the skip is added."""

    def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=(1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        return self.forward_s(x, self.conv.modulation(style), skip)

    def forward_s(self, x, s, skip=None):
        if fast_path_enabled() and fast.applies(x):
            return fast.to_rgb(self, x, s, skip)
        out = self.conv.forward_s(x, s) + self.bias
        if self.conv_clamp is not None:
            out = out.clamp(-self.conv_clamp, self.conv_clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class Generator(nn.Module):
    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel=(1, 3, 3, 1), lr_mlp: float = 0.01, channel_max: int = 512,
                 conv_clamp: float | None = None):
        super().__init__()
        self.size, self.style_dim, self.n_mlp = size, style_dim, n_mlp
        self.conv_clamp = conv_clamp  # StyleGAN2-ADA's activation clamp; None (off) in rosinality's networks
        clamp = dict(conv_clamp=conv_clamp)
        self.log_size = check_size(size)
        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])
        self.channels = base_channels(channel_multiplier, channel_max)
        blur_kernel = list(blur_kernel)

        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel, **clamp)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False, **clamp)

        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        # Present (empty) in the reference layout; kept so checkpoints map one to one.
        self.upsamples = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2**res, 2**res))

        in_channel = self.channels[4]
        for i in range(3, self.log_size + 1):
            out_channel = self.channels[2**i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, blur_kernel=blur_kernel,
                                         **clamp))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel, **clamp))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, **clamp))
            in_channel = out_channel
        self.n_latent = self.log_size * 2 - 2

    # -- latents -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.input.input.device

    def make_noise(self) -> list[torch.Tensor]:
        noises = [torch.randn(1, 1, 4, 4, device=self.device)]
        for i in range(3, self.log_size + 1):
            noises += [torch.randn(1, 1, 2**i, 2**i, device=self.device) for _ in range(2)]
        return noises

    @torch.no_grad()
    def mean_latent(self, n_latent: int) -> torch.Tensor:
        z = torch.randn(n_latent, self.style_dim, device=self.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.style(z)

    def _stored_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def _resolve_noise(self, noise, randomize_noise):
        if noise is not None:
            return noise
        return [None] * self.num_layers if randomize_noise else self._stored_noise()

    # -- forward -------------------------------------------------------------
    def forward(self, styles, return_latents: bool = False, inject_index: int | None = None, truncation: float = 1,
                truncation_latent: torch.Tensor | None = None, input_is_latent: bool = False, noise=None,
                randomize_noise: bool = True):
        """``styles``: a list of one or two z (B, style_dim) tensors, or of W (B, style_dim) /
        W+ (B, n_latent, style_dim) codes when ``input_is_latent``. Two styles mix at
        ``inject_index`` (random when None). Returns ``(image, W+ or None)``."""
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        for s in styles:
            if s.shape[-1] != self.style_dim or s.ndim not in (2, 3) or (s.ndim == 3 and s.shape[1] != self.n_latent):
                raise ValueError(f"a style must be (B, {self.style_dim}) or (B, {self.n_latent}, {self.style_dim}); "
                                 f"got {tuple(s.shape)}")
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. G.mean_latent(4096))")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) < 2:
            latent = styles[0] if styles[0].ndim == 3 else styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            first, second = (s if s.ndim == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1) for s in styles[:2])
            latent = torch.cat([first[:, :inject_index], second[:, inject_index:]], 1)

        image = self.synthesis(latent, noise=noise, randomize_noise=randomize_noise)
        return (image, latent) if return_latents else (image, None)

    def synthesis(self, latent: torch.Tensor, noise=None, randomize_noise: bool = True,
                  residual: Mapping[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Render a W+ code (B, n_latent, style_dim); ``residual`` as in :meth:`synthesize_s`."""
        return self.synthesize_s(self.w_to_s(latent), noise=noise, randomize_noise=randomize_noise, residual=residual)

    def check_residual(self, residual, batch: int) -> None:
        """A ValueError unless ``residual`` is None or {res: (scale, shift)} of this generator's shapes."""
        for res, pair in (residual or {}).items():
            want = (batch, self.channels.get(res, 0), res, res)
            if res not in RESOLUTIONS or not 8 <= res <= self.size:
                raise ValueError(f"residual features at {res}x{res}: this generator's blocks are 8 ... {self.size}")
            if len(pair) != 2 or any(tuple(t.shape) != want for t in pair):
                raise ValueError(f"residual features at {res}x{res} must be (scale, shift), each {want}; got "
                                 f"{[tuple(t.shape) for t in pair]}")

    # -- style space ---------------------------------------------------------
    def style_layers(self) -> list[nn.Module]:
        """Modulated layers in synthesis order (conv, to_rgb, conv, conv, to_rgb, ...)."""
        layers = [self.conv1, self.to_rgb1]
        for i, to_rgb in enumerate(self.to_rgbs):
            layers += [self.convs[2 * i], self.convs[2 * i + 1], to_rgb]
        return layers

    def style_latent_index(self) -> list[int]:
        """Which W+ entry drives each style layer (to_rgb shares the next conv's index)."""
        index = [0, 1]
        for i in range(len(self.to_rgbs)):
            index += [2 * i + 1, 2 * i + 2, 2 * i + 3]
        return index

    def w_to_s(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """W+ (B, n_latent, style_dim) to the S codes of every style layer."""
        return [layer.conv.modulation(latent[:, idx]) for layer, idx in zip(self.style_layers(), self.style_latent_index())]

    def synthesize_s(self, s_codes: Sequence[torch.Tensor], noise=None, randomize_noise: bool = True,
                     residual: Mapping[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Render S codes. ``residual`` maps block resolutions (8 ... size) to ``(scale, shift)`` of shape
        (B, channels[res], res, res), fused into that block after its upsampling convolution."""
        self.check_residual(residual, s_codes[0].shape[0])
        noise = self._resolve_noise(noise, randomize_noise)
        s = iter(s_codes)
        out = self.input(s_codes[0].shape[0])
        on_fast_path = fast_path_enabled() and fast.applies(out)
        if on_fast_path and fast.use_channels_last(min(self.channels.values()), out.shape[0]):
            out = out.contiguous(memory_format=torch.channels_last)
        out = self.conv1.forward_s(out, next(s), noise=noise[0])
        skip = self.to_rgb1.forward_s(out, next(s))
        for i, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * i].forward_s(out, next(s), noise=noise[2 * i + 1])
            if residual and 2 ** (i + 3) in residual:
                scale, shift = residual[2 ** (i + 3)]
                out = out * (1 + scale) + shift
            out = self.convs[2 * i + 1].forward_s(out, next(s), noise=noise[2 * i + 2])
            skip = to_rgb.forward_s(out, next(s), skip)
        return skip.contiguous() if on_fast_path else skip


class ConvLayer(nn.Sequential):
    def __init__(self, in_channel, out_channel, kernel_size, downsample=False, blur_kernel=(1, 3, 3, 1), bias=True,
                 activate=True):
        layers = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_channel, out_channel, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False,
                              blur_kernel=blur_kernel)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel=(1, 3, 3, 1), channel_max: int = 512):
        super().__init__()
        log_size = check_size(size)
        channels = base_channels(channel_multiplier, channel_max)
        blur_kernel = list(blur_kernel)
        convs = [ConvLayer(3, channels[size], 1)]
        in_channel = channels[size]
        for i in range(log_size, 2, -1):
            out_channel = channels[2 ** (i - 1)]
            convs.append(ResBlock(in_channel, out_channel, blur_kernel))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)
        self.stddev_group, self.stddev_feat = 4, 1
        self.final_conv = ConvLayer(in_channel + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
            EqualLinear(channels[4], 1))

    def forward(self, x):
        out = self.convs(x)
        batch, channel, height, width = out.shape
        # Minibatch standard deviation over groups of samples: the batch must split evenly.
        group = min(batch, self.stddev_group)
        while batch % group:
            group -= 1
        stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        out = torch.cat([out, stddev.repeat(group, 1, height, width)], 1)
        out = self.final_conv(out)
        return self.final_linear(out.view(batch, -1))


# -- rosinality checkpoints ---------------------------------------------------

def generator_kwargs_from_state(state: dict[str, torch.Tensor]) -> dict:
    """Infer ``Generator`` arguments from a rosinality-layout ``g_ema`` state dict."""
    try:
        style_dim = state["style.1.weight"].shape[1]
        n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
        n_to_rgbs = len({k.split(".")[1] for k in state if k.startswith("to_rgbs.")})
        c4 = state["input.input"].shape[1]
    except KeyError as err:
        raise ValueError(f"not a StyleGAN2 generator state dict (no {err.args[0]!r})") from err
    size = 2 ** (n_to_rgbs + 2)
    channels = {2 ** (i + 3): state[f"convs.{2 * i}.conv.weight"].shape[1] for i in range(n_to_rgbs)}
    channel_max = max([c4, *channels.values()])
    # A block of res >= 64 px has 16384 * channel_multiplier / res maps unless the cap cut it.
    below_cap = [(res, ch) for res, ch in sorted(channels.items()) if res >= 64 and ch < channel_max]
    mult = below_cap[0][1] * below_cap[0][0] / 16384 if below_cap else 2
    lr_mlp = 0.01
    return dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=mult, channel_max=channel_max,
                lr_mlp=lr_mlp)


def load_rosinality_generator(path, device="cpu", key: str = "g_ema", **kwargs):
    """Load ``g_ema`` (or ``g``) from a rosinality checkpoint such as ``stylegan2-ffhq-config-f.pt``.

    Architecture arguments are inferred from the weights unless given. Returns
    ``(generator, latent_avg or None)``; the generator is in eval mode.
    """
    from ..checkpoints import CheckpointError, load, load_state_strict

    ckpt = load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or key not in ckpt:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a rosinality StyleGAN2 checkpoint: expected a dict with {key!r}, "
                              f"found {found}")
    state = ckpt[key]
    try:
        # conv_clamp: written by convert_nvidia_pickle for StyleGAN2-ADA networks that clamp.
        clamp = {} if ckpt.get("conv_clamp") is None else {"conv_clamp": float(ckpt["conv_clamp"])}
        arch = {**generator_kwargs_from_state(state), **clamp, **kwargs}
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    generator = Generator(**arch)
    load_state_strict(generator, state, f"{path} [{key}]")
    latent_avg = ckpt.get("latent_avg")
    return generator.to(device).eval(), (latent_avg.to(device) if latent_avg is not None else None)


# -- NVIDIA StyleGAN2-ADA snapshots ----------------------------------------------

def load_nvidia_pickle(path, device="cpu") -> Generator:
    """``G_ema`` of a StyleGAN2-ADA ``network-snapshot-*.pkl``, read without running the code inside
    it (:mod:`stytr.models.nvidia_pickle`). It computes in float32 whatever blocks the snapshot marks
    fp16. ``G.latent_avg`` is the snapshot's ``w_avg`` (the truncation centre; None if untracked) and
    ``G.snapshot_info`` reports resolution, num_ws and the mapping's layer count. In eval mode."""
    imported = import_generator(path)
    info = imported.info
    arch = generator_kwargs_from_state(imported.state)
    ours = base_channels(arch["channel_multiplier"], arch["channel_max"])
    if any(ours[res] != ch for res, ch in info.channels.items()):
        raise SnapshotError(f"{path}: channels per resolution {info.channels} do not follow StyleGAN2's table "
                            f"(channel_base / res capped at channel_max, 512 at most up to 32 px)")
    generator = Generator(**arch, conv_clamp=imported.conv_clamp)
    load_state_strict(generator, imported.state, f"{path} [G_ema]")
    generator = generator.to(device).eval()
    generator.latent_avg = imported.latent_avg.to(device) if imported.latent_avg is not None else None
    generator.snapshot_info = info
    return generator


def convert_nvidia_pickle(src, out) -> SnapshotInfo:
    """Write ``src``'s ``G_ema`` as a rosinality-layout checkpoint (``{'g_ema', 'latent_avg'}``, plus
    ``conv_clamp`` when the network clamps) at ``out``, atomically; ``load_rosinality_generator`` reads it."""
    if Path(out).expanduser().resolve() == Path(src).expanduser().resolve():
        raise CheckpointError(f"{out}: the output would overwrite the snapshot it is converted from")
    generator = load_nvidia_pickle(src)
    ckpt = {"g_ema": generator.state_dict()}
    if generator.latent_avg is not None:
        ckpt["latent_avg"] = generator.latent_avg
    if generator.conv_clamp is not None:
        ckpt["conv_clamp"] = generator.conv_clamp
    save_atomic(ckpt, out)
    return generator.snapshot_info
