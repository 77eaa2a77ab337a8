"""Fréchet distance between image sets in a judge's feature space (FID's recipe, our own features).

FID compares the Gaussian fits of Inception-v3 pool features of generated and real images. In a
domain whose attribute judge we own (ToyFaces' :class:`~stytr.toy.predictor.AttributePredictor`),
the judge's penultimate activations play Inception's part: the distance is then small only when
the generated images carry the real images' attribute evidence in the same proportions and
combinations. Numbers are comparable only between runs with the same judge and sample counts.

    real = image_statistics(judge, real_images)
    fd = frechet_distance(generator_statistics(G, judge, n=2000), real)

The matrix square root uses symmetric eigendecompositions in float64:
``tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))`` (exact for covariance matrices).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

__all__ = ["FeatureStatistics", "judge_features", "feature_statistics", "image_statistics",
           "generator_statistics", "frechet_distance"]


@dataclass
class FeatureStatistics:
    mean: torch.Tensor      # (D,) float64
    cov: torch.Tensor       # (D, D) float64
    n: int


def judge_features(judge, images: torch.Tensor) -> torch.Tensor:
    """The judge's feature vectors (B, D) of images in [-1, 1]: ``judge.embedding`` when it has
    one (the attribute predictor's penultimate layer), else its output logits."""
    images = images.clamp(-1, 1)
    return judge.embedding(images) if hasattr(judge, "embedding") else judge(images)


def feature_statistics(features: torch.Tensor | np.ndarray) -> FeatureStatistics:
    x = torch.as_tensor(features, dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features (N >= 2, D), got {tuple(x.shape)}")
    return FeatureStatistics(x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1]), x.shape[0])


def _device(module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def image_statistics(judge, images: torch.Tensor | Iterable[torch.Tensor], batch: int = 250) -> FeatureStatistics:
    """Statistics of a tensor of images (N, 3, H, W) or of an iterable of image batches."""
    batches = images.split(batch) if isinstance(images, torch.Tensor) else images
    device = _device(judge)
    feats = [judge_features(judge, b.to(device)).cpu() for b in batches]
    return feature_statistics(torch.cat(feats))


@torch.no_grad()
def generator_statistics(generator, judge, n: int = 2000, seed: int = 0, batch: int = 250,
                         truncation: float = 1.0) -> FeatureStatistics:
    """Statistics of ``n`` images G(z), z ~ N(0, I) from ``seed``, with the generator's stored noise.
    ``truncation`` < 1 pulls W toward ``generator.latent_avg`` (or the mean of 4096 mapped z)."""
    gen = torch.Generator().manual_seed(seed)
    device = _device(generator)
    centre = None
    if truncation < 1:
        centre = getattr(generator, "latent_avg", None)
        if centre is None:
            centre = generator.style(torch.randn(4096, generator.style_dim, generator=gen).to(device)).mean(0, keepdim=True)
        centre = centre.to(device).reshape(1, -1) if centre.ndim == 1 else centre.to(device)

    def batches():
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), generator.style_dim, generator=gen).to(device)
            image, _ = generator([z], truncation=truncation, truncation_latent=centre, randomize_noise=False)
            yield image

    return image_statistics(judge, batches())


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b)``."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {tuple(a.mean.shape)} vs {tuple(b.mean.shape)}")
    root_a = _sqrt_psd(a.cov)
    cross = torch.linalg.eigvalsh(root_a @ b.cov @ root_a).clamp_min(0).sqrt().sum()
    value = (a.mean - b.mean).pow(2).sum() + a.cov.trace() + b.cov.trace() - 2 * cross
    return float(value.clamp_min(0))
