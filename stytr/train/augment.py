"""DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", 2020).

The discriminator sees every image, real or generated, through the same random, differentiable
transforms, so it cannot memorise a small training set while the generator still learns the
un-augmented distribution (the gradients flow through the transforms). Policies, comma-separated:

* ``color``: per image, brightness shift in [-0.5, 0.5), saturation scale in [0, 2), contrast
  scale in [0.5, 1.5) (images in [-1, 1]);
* ``translation``: per image, an integer shift of up to 1/8 of the side, filling with zeros;
* ``cutout``: per image, one square of half the side set to zero.

All randomness comes from the ``torch.Generator`` passed in, so a training step is a function of
its seed (exact resume).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["POLICIES", "diff_augment", "check_policy"]


def _uniform(gen: torch.Generator, x: torch.Tensor, *shape) -> torch.Tensor:
    return torch.rand(x.shape[0], *shape, generator=gen).to(device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    x = x + (_uniform(gen, x, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(gen, x, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(gen, x, 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), generator=gen).to(x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=gen).to(x.device)
    # Index into a copy padded by one zero pixel: every shifted-in position reads the border.
    ys = (torch.arange(h, device=x.device).view(1, h, 1) + ty + 1).clamp(0, h + 1)
    xs = (torch.arange(w, device=x.device).view(1, 1, w) + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)
    return padded[torch.arange(b, device=x.device).view(b, 1, 1), ys, xs].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y0 = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=gen).to(x.device) - ch // 2
    x0 = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=gen).to(x.device) - cw // 2
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (yy >= y0) & (yy < y0 + ch) & (xx >= x0) & (xx < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def check_policy(policy: str) -> list[str]:
    """The policy's transform names, or a ValueError naming the unknown one."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment transform {name!r}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: str, gen: torch.Generator) -> torch.Tensor:
    """``x`` (B, 3, H, W) through the transforms of ``policy`` ("" = unchanged)."""
    for name in check_policy(policy):
        x = POLICIES[name](x, gen)
    return x.contiguous()
