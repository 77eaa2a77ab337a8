"""Image grids and figure helpers shared by trainers and notebooks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = images.detach().float().cpu().clamp(-1, 1)
    return ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(B, 3, H, W) -> one (3, H', W') grid image in [-1, 1], row-major, ``nrow`` images a row."""
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = (b + ncol - 1) // ncol
    grid = images.new_full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value)
    for i in range(b):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    return grid


def save_image(image: torch.Tensor, path, scale: int = 1) -> Path:
    """Save one (3, H, W) image in [-1, 1] as PNG, optionally enlarged by ``scale`` (nearest)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(to_uint8(image[None])[0])
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    pil.save(path)
    return path


def save_grid(images: torch.Tensor, path, nrow: int = 8, scale: int = 1) -> Path:
    return save_image(image_grid(images, nrow=nrow), path, scale=scale)


def interleave(*batches: torch.Tensor) -> torch.Tensor:
    """[a0, b0, a1, b1, ...]: puts corresponding images side by side in a grid."""
    return torch.stack(batches, 1).flatten(0, 1)
