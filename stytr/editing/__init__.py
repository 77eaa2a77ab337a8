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

import enum
import math
from typing import Iterable, Mapping, Sequence

import torch

from .interfacegan import InterFaceGAN
from .label import AS_RELEASED, ORDERS, direction, direction_cosine, hvp_direction, label_edit, layer_hessian, normalize_per_layer
from .stylespace import StyleSpace, style_layout

__all__ = ["AS_RELEASED", "ORDERS", "Method", "Editor", "LabelEditor", "check_strength", "build_editors", "InterFaceGANEditor", "StyleSpaceEditor", "InterFaceGAN", "StyleSpace",
           "label_edit", "direction", "direction_cosine", "hvp_direction", "layer_hessian", "normalize_per_layer",
           "style_layout"]


class Method(str, enum.Enum):
    """The one spelling of every editing method (CLI ``--method``, ``EditSession``, ``EditingConfig``)."""

    LABEL_1 = "label-1"          # supplementary Algorithm 1 ("Ours-1" in the paper's tables)
    LABEL_2 = "label-2"          # supplementary Algorithm 2 as printed ("Ours-2")
    LABEL_HVP = "label-hvp"      # ours: the exact Hessian-vector-product curvature
    INTERFACEGAN = "interfacegan"
    STYLESPACE = "stylespace"
    REFERENCE = "reference"      # attribute transfer from a reference image (EditTransformer)

    def __str__(self) -> str:
        return self.value

    @property
    def order(self):
        """The label-editing order of a LABEL_* method (None for the others)."""
        return {Method.LABEL_1: 1, Method.LABEL_2: 2, Method.LABEL_HVP: "hvp"}.get(self)

    @property
    def paper_name(self) -> str:
        return {Method.LABEL_1: "Ours-1", Method.LABEL_2: "Ours-2", Method.LABEL_HVP: "Ours-hvp",
                Method.INTERFACEGAN: "InterFaceGAN", Method.STYLESPACE: "StyleSpace",
                Method.REFERENCE: "Reference"}[self]

    @classmethod
    def parse(cls, name) -> "Method":
        try:
            return cls(str(name).lower())
        except ValueError:
            raise ValueError(f"unknown editing method {name!r}; choose one of "
                             f"{', '.join(m.value for m in cls)}") from None


LATENT_METHODS = tuple(m for m in Method if m is not Method.REFERENCE)


def check_strength(strength, limit: float, attribute: str = "") -> float:
    """A finite strength within [-limit, limit], else a ValueError that says the allowed range."""
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"strength {strength!r} is not a number") from None
    if not math.isfinite(s) or abs(s) > limit:
        what = f" for {attribute}" if attribute else ""
        raise ValueError(f"strength {strength!r}{what} is outside [-{limit:g}, {limit:g}], the range that makes "
                         f"sense in this domain (EditingConfig.max_strength)")
    return s


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

    def attributes(self) -> list[str] | None:
        """Names of the attributes this editor was fitted on (None: it does not say)."""
        return None

    def edit_many(self, wplus: torch.Tensor, edits: Sequence[tuple[str, float]], G=None):
        """Signed edits applied one after the other: ``+s`` toward presence, ``-s`` toward absence."""
        latent = wplus
        for attribute, s in edits:
            latent = self.edit_latent(latent, attribute, abs(s), target=1 if s > 0 else 0, G=G)
        return latent

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

    def attributes(self):
        fitted = getattr(self.classifier, "fitted_attributes", None)
        return list(fitted) if fitted else None

    def edit_latent(self, wplus, attribute, strength, target=1, G=None):
        gen = None
        if self.seed is not None and self.order in (2, AS_RELEASED):
            gen = torch.Generator().manual_seed(self.seed)
        with torch.enable_grad():   # callers often render under no_grad; the directions need gradients
            return label_edit(wplus, self.classifier, attribute, target, alpha=strength, order=self.order,
                              xi=self.xi, layers=self.layers, generator=gen).detach()


class InterFaceGANEditor(Editor):
    """Move every W+ row along an InterFaceGAN boundary normal (optionally conditioned on other attributes)."""

    name = "interfacegan"

    def __init__(self, model: InterFaceGAN, conditioned_on: Sequence[int | str] | None = None):
        self.model, self.conditioned_on = model, list(conditioned_on or [])
        if self.conditioned_on:
            self.name = "interfacegan-conditional"

    def attributes(self):
        return [n for n, ok in zip(self.model.attribute_names, self.model.fitted.tolist()) if ok]

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

    def attributes(self):
        fitted = getattr(self.model, "fitted", None)
        names = self.model.attribute_names
        return [n for n, ok in zip(names, fitted.tolist()) if ok] if fitted is not None else None

    def edit_latent(self, wplus, attribute, strength, target=1, G=None):
        alpha = strength * _sign_toward(target, wplus)
        return self.model.edit(wplus, attribute, alpha, G=G, k=self.k, exclude_to_rgb=self.exclude_to_rgb,
                               criterion=self.criterion)

    def edit_many(self, wplus, edits, G=None):
        """All edits in S: the W+ code is mapped to S once and each edit moves its channels there."""
        with torch.no_grad():
            s_codes = G.w_to_s(wplus)
            for attribute, s in edits:
                s_codes = self.model.edit_s(s_codes, attribute, s, k=self.k, exclude_to_rgb=self.exclude_to_rgb,
                                            criterion=self.criterion)
        return s_codes


def build_editors(classifier=None, interfacegan: InterFaceGAN | None = None, stylespace: StyleSpace | None = None,
                  seed: int = 0) -> dict[Method, Editor]:
    """One editor per method whose model is given: label editing of orders 1, 2 and hvp with a
    latent classifier (order 2's probe seeded), InterFaceGAN, StyleSpace."""
    editors: dict[Method, Editor] = {}
    if classifier is not None:
        for m in (Method.LABEL_1, Method.LABEL_2, Method.LABEL_HVP):
            editors[m] = LabelEditor(classifier, m.order, seed=seed)
    if interfacegan is not None:
        editors[Method.INTERFACEGAN] = InterFaceGANEditor(interfacegan)
    if stylespace is not None:
        editors[Method.STYLESPACE] = StyleSpaceEditor(stylespace)
    return editors
