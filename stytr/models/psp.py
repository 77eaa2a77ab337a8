"""Baselines on the same trunk and FPN: pSp's GradualStyleEncoder and e4e's Encoder4Editing.

Each W+ entry gets its own GradualStyleBlock: a stack of stride-2 3x3 convolutions
with LeakyReLU that shrinks its feature map to 1x1, then one equalised linear layer.
Entries ``[0, coarse_ind)`` read c3, ``[coarse_ind, middle_ind)`` read p2 and the rest
read p1 (3 and 7 for StyleGAN2's 18 entries; a proportional split for the ToyFaces
generator's 10). Module names follow pSp/e4e (``styles.N.convs.K``, ``styles.N.linear``,
``latlayer1``, ``latlayer2``, plus the trunk's) so their checkpoints load by name.

e4e predicts one code from c3 and adds per-entry offsets to it; ``progressive_stage``
limits how many offsets are used (e4e trains them progressively; the default uses all).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import InversionConfig
from .irse import stage_channels
from .stylegan2 import EqualLinear
from .inversion import FeaturePyramidTrunk, InversionModel, upsample_add

__all__ = ["GradualStyleBlock", "GradualStyleEncoder", "Encoder4Editing", "PSP", "E4E"]


class GradualStyleBlock(nn.Module):
    """``spatial`` x ``spatial`` map with ``in_c`` channels -> one ``out_c`` code."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        if spatial < 2 or spatial & (spatial - 1):
            raise ValueError(f"GradualStyleBlock needs a power-of-two feature size >= 2, got {spatial}")
        self.out_c, self.spatial = out_c, spatial
        layers: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, kernel_size=3, stride=2, padding=1),
                       nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"GradualStyleBlock built for {self.spatial}x{self.spatial} inputs got a map that "
                             f"reduces to {tuple(x.shape[-2:])}; check InversionConfig.input_size")
        return self.linear(x.flatten(1))


class GradualStyleEncoder(FeaturePyramidTrunk):
    """pSp's encoder: ``forward(x)`` -> (B, n_latent, style_dim) codes (offsets from ``latent_avg``)."""

    def __init__(self, cfg: InversionConfig):
        super().__init__(cfg, out_channels=_top_channels(cfg))
        self.coarse_ind, self.middle_ind = cfg.style_split()
        self.style_count = cfg.n_latent
        fpn, side = self.tap_channels[2], cfg.input_size // 16
        self.styles = nn.ModuleList(
            GradualStyleBlock(fpn, cfg.style_dim, side if i < self.coarse_ind else
                              2 * side if i < self.middle_ind else 4 * side)
            for i in range(self.style_count))

    def _source(self, i: int) -> int:
        return 0 if i < self.coarse_ind else 1 if i < self.middle_ind else 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.pyramid(x)
        return torch.stack([style(levels[self._source(i)]) for i, style in enumerate(self.styles)], dim=1)


class Encoder4Editing(GradualStyleEncoder):
    """e4e's encoder: ``w0 = styles[0](c3)``; entry ``i`` is ``w0 + styles[i](level)`` for
    ``1 <= i <= progressive_stage`` and ``w0`` beyond it."""

    def __init__(self, cfg: InversionConfig):
        super().__init__(cfg)
        self.progressive_stage = self.style_count  # "inference": every offset in use

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        c3 = self.top(c3)
        w0 = self.styles[0](c3)
        codes = [w0]
        levels = [c3]
        for i in range(1, self.style_count):
            if i > self.progressive_stage:
                codes.append(w0)
                continue
            source = self._source(i)
            while len(levels) <= source:  # build the FPN level only once it is needed
                lateral = self.latlayer1(c2) if len(levels) == 1 else self.latlayer2(c1)
                levels.append(upsample_add(levels[-1], lateral))
            codes.append(w0 + self.styles[i](levels[source]))
        return torch.stack(codes, dim=1)


def _top_channels(cfg: InversionConfig) -> int:
    """pSp's FPN keeps the trunk's top width (512 at full size)."""
    return stage_channels(cfg.backbone_width)[3]


class PSP(InversionModel):
    """pSp (``kind='psp'``): GradualStyleEncoder + frozen generator."""

    kind = "psp"

    @staticmethod
    def make_encoder(cfg: InversionConfig) -> nn.Module:
        return GradualStyleEncoder(cfg)

    def predict_offsets(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class E4E(PSP):
    """e4e (``kind='e4e'``): Encoder4Editing + frozen generator."""

    kind = "e4e"

    @staticmethod
    def make_encoder(cfg: InversionConfig) -> nn.Module:
        return Encoder4Editing(cfg)
