"""Networks: StyleGAN2, encoders (Style Transformer, pSp, w/o self), latent classifier, edit transformer."""
from .stylegan2 import Discriminator, Generator, load_rosinality_generator

__all__ = ["Generator", "Discriminator", "load_rosinality_generator"]
