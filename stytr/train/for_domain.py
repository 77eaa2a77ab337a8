"""Trainer configs for a domain: what ``--domain`` changes in a preset before the command's flags apply.

The preset gives the recipe (optimiser, losses, model family and width); the domain gives what is
fixed by its files: the generator's architecture and weights, the encoder's input size, the
training images. ``python -m stytr train-inversion --preset ffhq --domain cars.json`` is thus the
paper's recipe around the cars generator; flags such as ``--steps`` still override both.
"""
from __future__ import annotations

from ..config import InversionTrainConfig, LatentClassifierTrainConfig
from ..domains import Domain

__all__ = ["inversion_config", "latent_classifier_config"]


def inversion_config(cfg: InversionTrainConfig, domain: Domain) -> InversionTrainConfig:
    """``cfg`` with the domain's generator (architecture read off its weights), input size and images.
    A domain that renders its own images (ToyFaces) keeps the preset's data source. ``cfg.domain``,
    where the trainer finds the judge, is the caller's to set (the CLI sets it to ``--domain``)."""
    data = cfg.to_dict()
    data["model"]["generator"] = domain.generator_config().to_dict()
    data["model"]["input_size"] = data["model"]["output_size"] = domain.image_size
    if domain.render is None:
        if not domain.image_dir:
            raise ValueError(f"domain {domain.name!r} has no image_dir to train an encoder on")
        data.update(data="folder", train_dir=domain.image_dir, val_dir=domain.val_dir)
    if not domain.judge:
        data["perceptual"] = 0.0          # the predictor-feature term needs the domain's judge
    return InversionTrainConfig.from_dict(data)


def latent_classifier_config(cfg: LatentClassifierTrainConfig, domain: Domain) -> LatentClassifierTrainConfig:
    """``cfg`` with the W+ shape of the domain's generator."""
    g = domain.generator_config()
    return LatentClassifierTrainConfig.from_dict({**cfg.to_dict(), "n_latent": g.n_latent, "style_dim": g.style_dim})
