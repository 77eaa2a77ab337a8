"""Attribute editing of inverted codes: label-based (ours, orders 1/2/hvp) and the baselines.

Every editor has the same call shape, so notebooks and re-scoring loop over them::

    editors = [LabelEditor(C, 1), LabelEditor(C, 2), LabelEditor(C, "hvp"),
               InterFaceGANEditor(InterFaceGAN.fit(w, labels)), StyleSpaceEditor(StyleSpace.fit(G, w, labels))]
    for ed in editors:
        images = ed.edit_images(G, wplus, "Smiling", strength=3.0, target=1)

``strength`` is the step size and ``target`` (0 or 1) the value the attribute
should move toward: the label editors step toward ``target`` by ``alpha =
strength``; the baselines apply their signed ``alpha = +strength`` for
``target=1`` and ``-strength`` for ``target=0``. ``edit_latent`` returns W+ codes,
except for StyleSpace, whose edits live in S and which returns the list of S
codes (``Editor.space`` says which).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .interfacegan import InterFaceGAN
from .label import AS_RELEASED, ORDERS, direction, direction_cosine, hvp_direction, label_edit, layer_hessian, normalize_per_layer
from .stylespace import StyleSpace, style_layout

__all__ = ["AS_RELEASED", "ORDERS", "Editor", "LabelEditor", "InterFaceGANEditor", "StyleSpaceEditor", "InterFaceGAN", "StyleSpace",
           "label_edit", "direction", "direction_cosine", "hvp_direction", "layer_hessian", "normalize_per_layer",
           "style_layout"]


def _sign_toward(target, like: torch.Tensor) -> torch.Tensor | float:
    """+1 toward 1, -1 toward 0 (per sample when ``target`` is a tensor)."""
    t = torch.as_tensor(target, dtype=like.dtype, device=like.device)
    if ((t != 0) & (t != 1)).any():
        raise ValueError(f"target must be 0 or 1, got {target!r}")
    return float(2 * t - 1) if t.ndim == 0 else (2 * t - 1)


class Editor:
    """Base class of the editors: ``edit_latent`` to implement, ``edit_images`` for free."""

    name: str = "editor"
    space: str = "w+"      # "w+": edit_latent returns W+ codes; "s": it returns a list of S codes

    def edit_latent(self, wplus: torch.Tensor, attribute: int | str, strength: float, target=1, G=None):
        raise NotImplementedError

    def edit_images(self, G, wplus: torch.Tensor, attribute: int | str, strength: float, target=1, noise=None,
                    randomize_noise: bool = False) -> torch.Tensor:
        """Render the edited codes with ``G`` (fixed noise by default, so edits compare pixel to pixel)."""
        latent = self.edit_latent(wplus, attribute, strength, target, G=G)
        with torch.no_grad():
            if self.space == "s":
                return G.synthesize_s(latent, noise=noise, randomize_noise=randomize_noise)
            return G.synthesis(latent, noise=noise, randomize_noise=randomize_noise)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class LabelEditor(Editor):
    """Label-based editing with a latent classifier (supplementary Algorithms 1/2, or our exact ``"hvp"``;
    ``order=AS_RELEASED`` is Algorithm 2 as the authors' code runs it, see :mod:`stytr.editing.label`).
    ``seed`` fixes the random probe of order 2 and ``AS_RELEASED``."""

    def __init__(self, classifier, order=1, xi: float = 1e-4, layers: Iterable[int] | None = None,
                 seed: int | None = None):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.classifier, self.order, self.xi = classifier, order, xi
        self.layers = None if layers is None else list(layers)
        self.seed = seed
        self.name = f"label-{order}"

    def edit_latent(self, wplus, attribute, strength, target=1, G=None):
        gen = None
        if self.seed is not None and self.order in (2, AS_RELEASED):
            gen = torch.Generator().manual_seed(self.seed)
        return label_edit(wplus, self.classifier, attribute, target, alpha=strength, order=self.order, xi=self.xi,
                          layers=self.layers, generator=gen)


class InterFaceGANEditor(Editor):
    """Move every W+ row along an InterFaceGAN boundary normal (optionally conditioned on other attributes)."""

    name = "interfacegan"

    def __init__(self, model: InterFaceGAN, conditioned_on: Sequence[int | str] | None = None):
        self.model, self.conditioned_on = model, list(conditioned_on or [])
        if self.conditioned_on:
            self.name = "interfacegan-conditional"

    def edit_latent(self, wplus, attribute, strength, target=1, G=None):
        own = self.model._index(attribute)
        others = [a for a in self.conditioned_on if self.model._index(a) != own]
        alpha = strength * _sign_toward(target, wplus)
        return self.model.edit(wplus, attribute, alpha, conditioned_on=others or None)


class StyleSpaceEditor(Editor):
    """Move the attribute's most relevant style channel(s); returns S codes."""

    name = "stylespace"
    space = "s"

    def __init__(self, model: StyleSpace, k: int = 1, exclude_to_rgb: bool = True, criterion: str = "shift"):
        self.model, self.k, self.exclude_to_rgb, self.criterion = model, k, exclude_to_rgb, criterion

    def edit_latent(self, wplus, attribute, strength, target=1, G=None):
        alpha = strength * _sign_toward(target, wplus)
        return self.model.edit(wplus, attribute, alpha, G=G, k=self.k, exclude_to_rgb=self.exclude_to_rgb,
                               criterion=self.criterion)
