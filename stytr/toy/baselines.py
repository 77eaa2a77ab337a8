"""ToyFaces editing baselines fitted on exact labels, and a random-weight session for tests."""
from __future__ import annotations

import torch

from ..attributes import CELEBA_ATTRIBUTES
from ..config import EditTransformerConfig, GeneratorConfig, InversionConfig, InversionTrainConfig
from ..editing import build_editors
from ..editing.interfacegan import InterFaceGAN
from ..editing.session import EditSession
from ..editing.stylespace import StyleSpace
from ..models.edit_transformer import EditTransformer
from ..models.inversion import build_inversion_model
from ..models.latent_classifier import LatentClassifier
from .faces import attribute_mask, sample_z
from .render import ATTRIBUTES, labels_z

__all__ = ["fit_toy_baselines", "random_toy_session"]


@torch.no_grad()
def fit_toy_baselines(G, n: int = 2000, seed: int = 0, attributes=None) -> tuple[InterFaceGAN, StyleSpace]:
    """InterFaceGAN and StyleSpace for a ToyFaces generator, fitted on ``n`` samples ``w = G.style(z)``
    with the exact labels ``labels_z(z)`` (the toy generator copies the renderer, so they hold for
    ``G(z)``). Takes a few seconds on a CPU."""
    z = torch.from_numpy(sample_z(n, seed, G.style_dim)).float()
    labels = torch.from_numpy(labels_z(z.numpy())).float()
    device = next(G.parameters()).device
    w = torch.cat([G.style(z[i:i + 500].to(device)).cpu() for i in range(0, n, 500)])
    wplus = w[:, None].expand(-1, G.n_latent, -1)
    attrs = list(attributes or ATTRIBUTES)
    mask = attribute_mask()
    ifg = InterFaceGAN.fit(w, labels, mask=mask, attributes=attrs)
    ss = StyleSpace.fit(G, wplus, labels, mask=mask)
    return ifg, ss


def random_toy_session(seed: int = 0, baselines: bool = True, editors=("Smiling",), tiny: bool = True,
                       **kwargs) -> EditSession:
    """An :class:`EditSession` of *untrained* toy-configuration models (random weights): for tests
    and for the notebook before the shipped weights exist. ``tiny`` uses the smoke trunk (one
    residual unit per stage). The edits it renders are meaningless, only the machinery is real."""
    torch.manual_seed(seed)
    gen = dict(GeneratorConfig.PRESETS["toy"], checkpoint="")
    cfg = InversionTrainConfig.preset("smoke").model if tiny else InversionConfig.preset("toy", generator=gen)
    model = build_inversion_model(cfg).eval()
    with torch.no_grad():
        model.set_latent_avg(model.decoder.mean_latent(1000))
    classifier = LatentClassifier(n_latent=cfg.n_latent, style_dim=cfg.style_dim, hidden=(64, 32), embed_dim=8)
    ifg = ss = None
    if baselines:   # random boundaries (fitting would only import the L-BFGS machinery for nothing)
        fitted = attribute_mask()
        normals = torch.nn.functional.normalize(torch.randn(len(CELEBA_ATTRIBUTES), cfg.style_dim), dim=1)
        ifg = InterFaceGAN(normals * fitted[:, None], torch.zeros(len(CELEBA_ATTRIBUTES)), fitted)
        z = sample_z(512, seed, cfg.style_dim)
        with torch.no_grad():
            w = model.decoder.style(torch.from_numpy(z).float())[:, None].expand(-1, model.decoder.n_latent, -1)
        ss = StyleSpace.fit(model.decoder, w, torch.from_numpy(labels_z(z)).float(), mask=fitted)
    eds = {}
    for attr in editors or ():
        ecfg = EditTransformerConfig.preset("toy", generator=gen, dim_feedforward=64, classifier_hidden=(64, 32),
                                            classifier_embed_dim=8)
        eds[attr] = EditTransformer(ecfg, build_generator=False, build_classifier=False).eval()
    return EditSession(model, build_editors(classifier, ifg, ss, seed=seed), eds, domain="toyfaces", seed=seed, **kwargs)
