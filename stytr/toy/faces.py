"""Sampling, datasets and export for ToyFaces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..attributes import CELEBA_ATTRIBUTES
from .render import ATTRIBUTE_MASK, N_FACTORS, labels_z, render_z

Z_DIM = 128  # the toy generator's style_dim: z vectors are this long; the renderer reads the first 24


def sample_z(n: int, seed: int, dim: int = Z_DIM) -> np.ndarray:
    """z ~ N(0, I), reproducible from ``seed``."""
    return np.random.default_rng(seed).standard_normal((n, dim))


def render_faces(n: int, seed: int, size: int = 64, z: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` faces: images (n, 3, size, size) in [-1, 1] and CelebA labels (n, 40) in {0, 1}."""
    z = sample_z(n, seed) if z is None else z
    return torch.from_numpy(render_z(z, size)), torch.from_numpy(labels_z(z))


def attribute_mask() -> torch.Tensor:
    """(40,) bool: which CelebA attributes ToyFaces models (the others are always 0)."""
    return torch.from_numpy(ATTRIBUTE_MASK.copy())


def resample_factors(z: np.ndarray, seed: int, edit_prob: float, max_factors: int) -> tuple[np.ndarray, np.ndarray]:
    """Edited twins of faces whose truth is known: each face is, with probability ``edit_prob``,
    re-drawn with 1 ... ``max_factors`` of its generating factors resampled (an attribute, a colour,
    the face's shape or position), everything else equal. Returns ``(z_edited, edited)``, the
    unedited faces' z unchanged and ``edited`` (N,) bool."""
    rng = np.random.default_rng(seed)
    z_new = np.array(z, dtype=np.float64, copy=True)
    edited = rng.random(len(z_new)) < edit_prob
    for i in np.flatnonzero(edited):
        k = int(rng.integers(1, max(1, max_factors) + 1))
        factors = rng.choice(N_FACTORS, size=k, replace=False)
        z_new[i, factors] = rng.standard_normal(k)
    return z_new, edited


class ToyFacesDataset(Dataset):
    """A fixed set of ``n`` faces drawn from ``seed``: items are (image, labels, mask).

    Rendering happens once, up front (2000 faces take a few seconds)."""

    def __init__(self, n: int, seed: int, size: int = 64, flip: bool = False):
        self.z = sample_z(n, seed)
        self.images, self.labels = render_faces(n, seed, size, z=self.z)
        self.mask = attribute_mask()
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.labels[i], self.mask


def export(directory, n: int, seed: int, size: int = 64) -> Path:
    """Write ``n`` faces as PNGs plus a CelebA-format ``list_attr_celeba.txt`` (labels as -1/1)."""
    from PIL import Image

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    images, labels = render_faces(n, seed, size)
    names = []
    for i, img in enumerate(images):
        name = f"{i:06d}.png"
        arr = ((img.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(directory / "images" / name)
        names.append(name)
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES)]
    lines += [name + " " + " ".join("1" if v else "-1" for v in row) for name, row in zip(names, labels.tolist())]
    (directory / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return directory


def attribute_statistics(labels: torch.Tensor) -> dict:
    """Prevalence of each modelled attribute and their pairwise correlation (phi coefficients)."""
    from .render import ATTRIBUTES

    idx = [CELEBA_ATTRIBUTES.index(a) for a in ATTRIBUTES]
    x = labels[:, idx].double()
    prevalence = x.mean(0)
    centred = x - prevalence
    cov = centred.T @ centred / len(x)
    std = cov.diagonal().sqrt().clamp_min(1e-12)
    return {"attributes": list(ATTRIBUTES), "prevalence": prevalence.numpy(),
            "correlation": (cov / std[:, None] / std[None, :]).numpy()}
