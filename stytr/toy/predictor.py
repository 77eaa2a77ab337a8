"""The ToyFaces attribute predictor: a small CNN that reads the 40 CelebA logits off an image.

It is the image-space judge of the toy domain (re-scoring, quality checks) and its
intermediate feature maps give the toy perceptual distance used instead of LPIPS.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..attributes import CELEBA_ATTRIBUTES



class AttributePredictor(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128), n_attr: int = len(CELEBA_ATTRIBUTES), hidden: int = 256):
        super().__init__()
        layers, c_in = [], 3
        for w in widths:
            # Stride first: the 64x64 input is never convolved at full resolution, which keeps it cheap.
            layers.append(nn.Sequential(nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                        nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2)))
            c_in = w
        self.blocks = nn.ModuleList(layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, n_attr))
        self.attribute_names = list(CELEBA_ATTRIBUTES)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after each stage (images in [-1, 1], any size >= 32)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(x.shape)}")
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> (B, 40) logits in CelebA order."""
        feat = self.features(x)[-1]
        return self.head(F.adaptive_avg_pool2d(feat, 4))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The head's penultimate activations (B, hidden): the feature space of
        :mod:`stytr.eval.frechet`, as Inception's pool features are FID's."""
        return self.head[:-1](F.adaptive_avg_pool2d(self.features(x)[-1], 4))


class PredictorFeatureDistance(nn.Module):
    """Toy perceptual distance: mean squared difference of the predictor's unit-normalised
    feature maps (the recipe of LPIPS without learned weights), on a frozen predictor."""

    def __init__(self, predictor: AttributePredictor):
        super().__init__()
        self.predictor = predictor.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.predictor.eval()  # always frozen
        return self

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample distance, shape (B,)."""
        total = a.new_zeros(a.shape[0])
        for fa, fb in zip(self.predictor.features(a), self.predictor.features(b)):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)
            total = total + (fa - fb).pow(2).sum(1).mean((1, 2))
        return total
