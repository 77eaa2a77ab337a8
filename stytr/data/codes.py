"""W+ codes on disk: what ``python -m stytr invert`` writes and the W+ trainers and evaluations read."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..checkpoints import CheckpointError, load, require_file

__all__ = ["load_codes"]


def load_codes(source, n_latent: int | None = None, style_dim: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W+ codes and optional labels from a path (``.pt`` dict with ``latents``, or ``.npy``), a
    dict ``{'latents', 'labels'?}`` or a tensor. Returns ``(latents (N, n_latent, style_dim) float32,
    labels (N, A) or None)``; the shape is checked against ``n_latent``/``style_dim`` when given."""
    labels = None
    name = "codes"
    if isinstance(source, (str, Path)):
        name = str(source)
        if not str(source):
            raise FileNotFoundError("no W+ codes file given: set `codes` to a .pt file with 'latents' "
                                    "(written by `python -m stytr invert`) or a .npy array")
        path = require_file(source, "W+ codes file",
                            "Invert images first (`python -m stytr invert ...` writes latents.pt) "
                            "or point `codes` at an existing file")
        if path.suffix == ".npy":
            source = torch.from_numpy(np.load(path))
        else:
            source = load(path)
    if isinstance(source, Mapping):
        if "latents" not in source:
            raise CheckpointError(f"{name} has no 'latents' entry (keys: {list(source)[:8]})")
        labels = source.get("labels")
        source = source["latents"]
    latents = torch.as_tensor(source).float()
    if latents.ndim != 3:
        raise ValueError(f"{name}: W+ codes must be (N, n_latent, style_dim), got {tuple(latents.shape)}")
    expected = (n_latent or latents.shape[1], style_dim or latents.shape[2])
    if tuple(latents.shape[1:]) != expected:
        raise ValueError(f"{name}: W+ codes of shape (N, {latents.shape[1]}, {latents.shape[2]}) do not fit the "
                         f"model's (N, {expected[0]}, {expected[1]})")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape[0] != latents.shape[0]:
            raise ValueError(f"{name}: {labels.shape[0]} label rows for {latents.shape[0]} codes")
    return latents, labels
