"""How the codes of one inverted image become pictures: plain W+, the high-fidelity stage, or PTI.

Every editor returns a code (a W+ tensor, or StyleSpace's list of S codes); a :class:`Renderer`,
made once per image, turns any code of that image into a picture:

* :class:`WPlusRenderer` -- the shared generator alone (what the paper does);
* :class:`HighFidelityRenderer` -- the generator plus the residual features of the image's
  distortion, aligned to the code being rendered (:mod:`stytr.models.high_fidelity`);
* :class:`PTIRenderer` -- a copy of the generator tuned on the image (:mod:`stytr.pti`).

So the editors stay as they are and work with every fidelity. ``renderer.generator`` is the
generator whose style space an S-code editor should use (the tuned copy under PTI).
"""
from __future__ import annotations

import enum

import torch
from torch import nn

from .config import PTIConfig
from .models.high_fidelity import HighFidelityModel, fit_size
from .models.inversion import InversionWrapper
from .pti import PTIResult, pivotal_tuning

__all__ = ["Fidelity", "Renderer", "WPlusRenderer", "HighFidelityRenderer", "PTIRenderer", "PTIModel", "make_renderer"]


class Fidelity(str, enum.Enum):
    """The one spelling of the reconstruction modes (CLI ``--refine``, ``EditSession.set_fidelity``)."""

    WPLUS = "w+"
    HIGH = "high-fidelity"
    PTI = "pti"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, name) -> "Fidelity":
        aliases = {"none": "w+", "wplus": "w+", "w": "w+", "hifi": "high-fidelity", "high_fidelity": "high-fidelity"}
        key = str(name).lower()
        try:
            return cls(aliases.get(key, key))
        except ValueError:
            raise ValueError(f"unknown fidelity {name!r}; choose one of {', '.join(m.value for m in cls)}") from None


class Renderer:
    """Renders codes of one image at ``size`` px with the generator's stored noise (so that edits
    compare pixel to pixel). ``render`` returns (B, 3, size, size), unclamped, or the generator's own
    resolution with ``full_resolution`` (for pasting an edit back into a large photo)."""

    fidelity = Fidelity.WPLUS

    def __init__(self, generator: nn.Module, size: int):
        self.generator, self.size = generator, int(size)

    @torch.no_grad()
    def render(self, latent, full_resolution: bool = False) -> torch.Tensor:
        G = self.generator
        if isinstance(latent, torch.Tensor):
            img = G.synthesis(latent[:, :G.n_latent], randomize_noise=False)
        else:
            img = G.synthesize_s(latent, randomize_noise=False)
        return img if full_resolution else fit_size(img, self.size)


class WPlusRenderer(Renderer):
    """The shared generator: W+ fidelity."""


class HighFidelityRenderer(Renderer):
    """The shared generator plus the image's aligned residual features (computed per code)."""

    fidelity = Fidelity.HIGH

    def __init__(self, model: HighFidelityModel, image: torch.Tensor, wplus: torch.Tensor):
        super().__init__(model.decoder, model.cfg.input_size)
        self.model = model
        self.distortion, self.reconstruction = model.distortion(image, wplus)

    @torch.no_grad()
    def render(self, latent, full_resolution: bool = False) -> torch.Tensor:
        n = self.distortion.shape[0]
        batch = latent.shape[0] if isinstance(latent, torch.Tensor) else latent[0].shape[0]
        d, g = self.distortion, self.reconstruction
        if batch != n:   # several codes of the one image
            d, g = d.expand(batch, -1, -1, -1), g.expand(batch, -1, -1, -1)
        return self.model.render(latent, d, g, full_resolution=full_resolution)


class PTIRenderer(Renderer):
    """A generator tuned on the image (the shared one is never changed)."""

    fidelity = Fidelity.PTI

    def __init__(self, result: PTIResult, size: int):
        super().__init__(result.generator, size)
        self.result = result


class PTIModel(InversionWrapper):
    """An inversion model whose reconstructions come from pivotal tuning, one image at a time, so
    that code written for inversion models (``invert``, :func:`stytr.eval.metrics.evaluate_reconstruction`)
    takes it as it is. ``results``: the :class:`~stytr.pti.PTIResult` of each image of the last call,
    whose tuned generators then render that image's edits."""

    def __init__(self, inversion, cfg: PTIConfig | None = None, perceptual: nn.Module | None = None,
                 steps: int | None = None, progress: bool = False):
        super().__init__(inversion)
        self.perceptual = perceptual
        self.pti, self.steps, self.progress = cfg or PTIConfig(), steps, progress
        self.results: list[PTIResult] = []

    def forward(self, x: torch.Tensor, resize: bool = True, randomize_noise: bool = False,
                return_latents: bool = False):
        """Reconstructions of ``x`` (or ``(images, W+ pivots)``) by generators tuned on each image."""
        with torch.no_grad():
            w = self.encode(x)
        with torch.enable_grad():
            self.results = [pivotal_tuning(self.decoder, w[i:i + 1], x[i:i + 1], self.pti, self.perceptual,
                                           steps=self.steps, progress=self.progress) for i in range(len(x))]
        images = torch.cat([PTIRenderer(r, self.cfg.input_size).render(r.pivot) for r in self.results])
        return (images, w) if return_latents else images


def make_renderer(fidelity, model, image: torch.Tensor, wplus: torch.Tensor, high_fidelity: HighFidelityModel | None = None,
                  pti: PTIConfig | None = None, perceptual: nn.Module | None = None, steps: int | None = None,
                  progress: bool = False) -> Renderer:
    """The renderer of one image (``image`` (1, 3, S, S) at the encoder's input size, ``wplus`` its code)
    under ``fidelity``. ``high_fidelity``: the stage joined to ``model`` (for ``high-fidelity``);
    ``pti`` / ``perceptual`` / ``steps``: the tuning settings (for ``pti``)."""
    fidelity = Fidelity.parse(fidelity)
    size = model.cfg.input_size
    if fidelity is Fidelity.WPLUS:
        return WPlusRenderer(model.decoder, size)
    if fidelity is Fidelity.HIGH:
        if high_fidelity is None:
            raise ValueError("high-fidelity rendering needs a high-fidelity stage (artifacts kind 'high_fidelity')")
        return HighFidelityRenderer(high_fidelity, image, wplus)
    with torch.enable_grad():
        result = pivotal_tuning(model.decoder, wplus, image, pti, perceptual=perceptual, steps=steps,
                                progress=progress)
    return PTIRenderer(result, size)
