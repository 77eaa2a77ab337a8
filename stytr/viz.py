"""Image grids and figure helpers shared by trainers and notebooks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _float_to_uint8(x: np.ndarray) -> np.ndarray:
    """Floats in [-1, 1] -> uint8 (0..255), rounding to nearest: the one such conversion in stytr."""
    return ((np.clip(x, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return _float_to_uint8(images.detach().float().cpu().permute(0, 2, 3, 1).numpy())


def to_uint8_image(image) -> np.ndarray:
    """One image -> HxWx3 (or HxW) uint8, for ``imshow`` and PNG files.

    ``image``: a CxHxW tensor (stytr's layout) or an array, CxHxW or HxWxC (or HxW), uint8 or floats
    in [-1, 1]. For a batch laid out as a grid, :func:`grid_array`.
    """
    channels_first = False
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image if image.dtype == torch.uint8 else image.float()).numpy()
        channels_first = image.ndim == 3
    a = np.asarray(image)
    if a.ndim == 3 and (channels_first or (a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4))):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"expected one image (HxW, HxWxC or CxHxW), got shape {a.shape}")
    return a if a.dtype == np.uint8 else _float_to_uint8(a)


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


def grid_array(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """A grid of images in [-1, 1] as one (H, W, 3) uint8 array, ready for ``plt.imshow``."""
    return to_uint8_image(image_grid(images, nrow=nrow, pad=pad))


def save_image(image: torch.Tensor, path, scale: int = 1) -> Path:
    """Save one (3, H, W) image in [-1, 1] as PNG, optionally enlarged by ``scale`` (nearest)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(to_uint8_image(image))
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    pil.save(path)
    return path


def save_grid(images: torch.Tensor, path, nrow: int = 8, scale: int = 1) -> Path:
    return save_image(image_grid(images, nrow=nrow), path, scale=scale)


def interleave(*batches: torch.Tensor) -> torch.Tensor:
    """[a0, b0, a1, b1, ...]: puts corresponding images side by side in a grid."""
    return torch.stack(batches, 1).flatten(0, 1)


def plot_labelled_faces(images: torch.Tensor, labels: torch.Tensor, attributes, path=None, ncol: int = 8):
    """Faces with the names of their positive attributes underneath (a matplotlib figure)."""
    import matplotlib.pyplot as plt

    from .attributes import CELEBA_ATTRIBUTES

    n = len(images)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.6 * ncol, 2.0 * nrow))
    pics = to_uint8(images)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(pics[i])
        on = [a.replace("_", " ") for a in attributes if labels[i, CELEBA_ATTRIBUTES.index(a)] > 0.5]
        ax.set_title("\n".join(on[:4]) + ("\n…" if len(on) > 4 else ""), fontsize=6)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_matrix(matrix, labels, path=None, title: str = "", fmt: str = "{:.2f}", cmap: str = "RdBu_r", vmax=None,
                xlabels=None):
    """An annotated heat map (correlations, re-scoring matrices, ...)."""
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=float)
    vmax = vmax if vmax is not None else max(abs(matrix).max(), 1e-6)
    fig, ax = plt.subplots(figsize=(0.55 * len(labels) + 2.5, 0.5 * len(labels) + 1.5))
    im = ax.imshow(matrix, cmap=cmap, vmin=-vmax, vmax=vmax)
    xlabels = labels if xlabels is None else xlabels
    ax.set_xticks(range(len(xlabels)), [s.replace("_", " ") for s in xlabels], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), [s.replace("_", " ") for s in labels], fontsize=7)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=6,
                    fontweight="bold" if i == j else "normal")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig
