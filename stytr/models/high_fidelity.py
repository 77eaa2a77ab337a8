"""High-fidelity inversion on top of a W+ encoder, in the spirit of HFGI (Wang et al., CVPR 2022).

W+ cannot hold every detail of a picture. The stage adds back what it misses, in four steps:

1. **distortion**: ``d = x - G(w)``, the input minus its W+ reconstruction (at the encoder's input size);
2. **alignment** (:class:`DistortionAligner`): ``d`` is re-drawn for the image being rendered. For the
   reconstruction that image is ``G(w)`` itself; for an edited code ``w'`` it is ``G(w')``, and the
   aligner moves or drops the parts of ``d`` that no longer fit, so that an edit is not undone by
   pasting the old attribute back (HFGI's ADA sees the distortion and the edited image; ours also
   sees the unedited reconstruction, so it can tell what the edit changed);
3. **residual features** (:class:`ResidualEncoder`): the aligned distortion becomes ``(scale, shift)``
   maps for the generator blocks at ``cfg.layers`` (HFGI's consultation encoder);
4. **fusion**: ``G.synthesis(w', residual=features)`` modulates those blocks' features,
   ``f * (1 + scale) + shift`` (:meth:`stytr.models.stylegan2.Generator.synthesize_s`).

The last layers of both networks start at zero, so an untrained stage renders exactly the W+ image.
:class:`HighFidelityStage` holds the two trainable networks; :class:`HighFidelityModel` joins it to a
frozen inversion model and is what :func:`stytr.eval.metrics.evaluate_reconstruction`, the
``invert`` command and :class:`stytr.fidelity.HighFidelityRenderer` use.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..config import HighFidelityConfig
from .inversion import InversionWrapper
from .stylegan2 import base_channels

__all__ = ["ResidualEncoder", "DistortionAligner", "HighFidelityStage", "HighFidelityModel", "fit_size"]


def fit_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images resized to ``size`` (area when shrinking, bilinear when growing), as they are when equal."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.2))


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResidualEncoder(nn.Module):
    """Aligned distortion (B, 3, S, S) -> ``{res: (scale, shift)}`` for the generator blocks ``layers``.

    A stride-2 conv stack from the input size down to the coarsest layer; each layer's head reads the
    stack at its resolution (or the input, bilinearly resized, for layers above the input size)."""

    def __init__(self, cfg: HighFidelityConfig):
        super().__init__()
        channels = base_channels(cfg.generator.channel_multiplier, cfg.generator.channel_max)
        self.layers = tuple(sorted(cfg.layers))
        self.input_size = cfg.input_size
        self.stem = _conv(3, cfg.width)
        self.down = nn.ModuleDict()
        res, c = cfg.input_size, cfg.width
        while res > min(self.layers) and res > 4:
            res //= 2
            self.down[str(res)] = nn.Sequential(_conv(c, cfg.width, stride=2),
                                                *[_conv(cfg.width, cfg.width) for _ in range(cfg.blocks - 1)])
        self.heads = nn.ModuleDict()
        for r in self.layers:
            ch = channels[r]
            self.heads[str(r)] = nn.Sequential(_conv(cfg.width, cfg.width), _zero(nn.Conv2d(cfg.width, 2 * ch, 1)))

    def forward(self, distortion: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        feats = {self.input_size: self.stem(distortion)}
        x = feats[self.input_size]
        for res, block in self.down.items():
            x = block(x)
            feats[int(res)] = x
        out = {}
        for r in self.layers:
            source = feats.get(r)
            if source is None:   # a block finer than the input: HFGI upsamples its conditions the same way
                source = F.interpolate(feats[self.input_size], size=(r, r), mode="bilinear", align_corners=False)
            scale, shift = self.heads[str(r)](source).chunk(2, dim=1)
            out[r] = (scale, shift)
        return out


class DistortionAligner(nn.Module):
    """(distortion, image to render, W+ reconstruction) -> the distortion aligned to that image.

    A small U-Net over the 9 stacked channels: one convolution at full resolution on the way down
    and one on the way up, the rest at 1/2 and 1/4 (what moves or vanishes with an edit is a shape,
    not a pixel); its output is added to the distortion through a zero-initialised last layer, so it
    starts as the identity."""

    def __init__(self, cfg: HighFidelityConfig):
        super().__init__()
        c = cfg.aligner_width
        self.enc1 = _conv(9, c)
        self.enc2 = nn.Sequential(_conv(c, 2 * c, stride=2), _conv(2 * c, 2 * c))
        self.enc3 = nn.Sequential(_conv(2 * c, 2 * c, stride=2), _conv(2 * c, 2 * c))
        self.dec2 = _conv(4 * c, 2 * c)
        self.dec1 = _conv(3 * c, c)
        self.out = _zero(nn.Conv2d(c, 3, 3, padding=1))

    def forward(self, distortion: torch.Tensor, target: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(torch.cat([distortion, target, reconstruction], 1))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return distortion + self.out(d1)


class HighFidelityStage(nn.Module):
    """The trainable part: :class:`DistortionAligner` (when ``cfg.align``) and :class:`ResidualEncoder`."""

    def __init__(self, cfg: HighFidelityConfig | None = None):
        super().__init__()
        self.cfg = cfg if cfg is not None else HighFidelityConfig()
        self.aligner = DistortionAligner(self.cfg) if self.cfg.align else None
        self.residual = ResidualEncoder(self.cfg)
        self.encoder_spec = ""          # the W+ encoder it was trained on (set by the artefact loader)

    def align(self, distortion: torch.Tensor, target: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Step 2: the distortion for rendering ``target`` (all three (B, 3, S, S) at ``cfg.input_size``)."""
        if self.aligner is None:
            return distortion
        return self.aligner(distortion, target, reconstruction)

    def forward(self, distortion, target, reconstruction) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Steps 2 and 3: the residual features that render ``target``'s code with the input's detail."""
        return self.residual(self.align(distortion, target, reconstruction))

    def without_alignment(self) -> "HighFidelityStage":
        """The same residual encoder (shared, not copied) without the aligner: the input's distortion
        enters every edit as it is (the ablation that shows whether edits get pasted back)."""
        bypass = HighFidelityStage(dataclasses.replace(self.cfg, align=False))
        bypass.residual, bypass.encoder_spec = self.residual, self.encoder_spec
        return bypass.train(self.training)


class HighFidelityModel(InversionWrapper):
    """A frozen inversion model plus a :class:`HighFidelityStage`.

    ``model(x)`` is the high-fidelity reconstruction; the rest is the inversion model's
    (:class:`~stytr.models.inversion.InversionWrapper`).
    For edits: ``d, g = model.distortion(x, w)`` once per image, then ``model.render(latent, d, g)`` for
    any code of it (an edited W+, or the S codes of a StyleSpace edit)."""

    def __init__(self, inversion, stage: HighFidelityStage):
        super().__init__(inversion)
        if stage.cfg.input_size != inversion.cfg.input_size:
            raise ValueError(f"the high-fidelity stage works on {stage.cfg.input_size}px distortion maps, the encoder "
                             f"on {inversion.cfg.input_size}px images")
        g = inversion.decoder
        if g is not None and (stage.cfg.generator.size, stage.cfg.generator.style_dim) != (g.size, g.style_dim):
            raise ValueError(f"the high-fidelity stage was built for a {stage.cfg.generator.size}px generator with "
                             f"style_dim {stage.cfg.generator.style_dim}, the encoder has {g.size}px / {g.style_dim}")
        self.stage = stage

    def _image(self, latent, residual=None, noise=None, randomize_noise: bool = False,
               full_resolution: bool = False) -> torch.Tensor:
        """Render W+ (B, N, D) or a list of S codes, pooled to the encoder's input size (or at the
        generator's own size with ``full_resolution``)."""
        G = self.inversion.decoder
        if isinstance(latent, torch.Tensor):
            img = G.synthesis(latent[:, :G.n_latent], noise=noise, randomize_noise=randomize_noise, residual=residual)
        else:
            img = G.synthesize_s(latent, noise=noise, randomize_noise=randomize_noise, residual=residual)
        return img if full_resolution else fit_size(img, self.cfg.input_size)

    def distortion(self, x: torch.Tensor, wplus: torch.Tensor, noise=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1: ``(x - G(w), G(w))``, the reconstruction clamped to [-1, 1] as HFGI does."""
        with torch.no_grad():
            recon = self._image(wplus, noise=noise).clamp(-1, 1)
        return x - recon, recon

    def render(self, latent, distortion: torch.Tensor, reconstruction: torch.Tensor, noise=None,
               target: torch.Tensor | None = None, full_resolution: bool = False) -> torch.Tensor:
        """The code ``latent`` of the image whose ``distortion`` and W+ ``reconstruction`` are given,
        with the image's detail: steps 2-4. ``target`` (the plain rendering of ``latent``) is computed
        when not given. Returns images at the encoder's input size, or at the generator's with
        ``full_resolution`` (the residual features are the same: they enter at fixed generator layers)."""
        if target is None:
            with torch.no_grad():
                target = self._image(latent, noise=noise).clamp(-1, 1)
        features = self.stage(distortion, target, reconstruction)
        return self._image(latent, residual=features, noise=noise, full_resolution=full_resolution)

    def forward(self, x: torch.Tensor, resize: bool = True, randomize_noise: bool = False,
                return_latents: bool = False):
        """High-fidelity reconstructions of ``x`` (or ``(images, W+)``), always with the generator's
        stored noise: the distortion is measured against that rendering."""
        w = self.encode(x)
        d, g = self.distortion(x, w)
        images = self.render(w, d, g, target=g)
        return (images, w) if return_latents else images

    def fusion_layers(self) -> Sequence[int]:
        return self.stage.cfg.layers
