"""The ToyFaces quality bar of a generator (the shipped one loads with ``artifacts.load("generator", "toy")``)."""
from __future__ import annotations

import numpy as np
import torch

from ..attributes import CELEBA_ATTRIBUTES
from .render import ATTRIBUTES, labels_z, render_z

@torch.no_grad()
def generator_quality(generator, predictor, n: int = 2000, seed: int = 12345, batch: int = 250) -> dict:
    """The ToyFaces quality bar on ``n`` z ~ N(0, I).

    Per modelled attribute: ``agreement`` = fraction of samples where the predictor's
    decision on G(z) equals ``labels_z(z)``; ``confident`` = fraction of samples whose
    predicted probabilities on G(z) are all outside (0.2, 0.8); ``l1`` = mean |G(z) -
    render_z(z)| over pixels (images in [-1, 1]). G runs with its stored noise."""
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, generator.style_dim))).float()
    labels = torch.from_numpy(labels_z(z.numpy()))
    idx = [CELEBA_ATTRIBUTES.index(a) for a in ATTRIBUTES]
    agree, confident, l1 = torch.zeros(len(idx)), 0, 0.0
    device = next(generator.parameters()).device
    for i in range(0, n, batch):
        zb = z[i:i + batch].to(device)
        fake, _ = generator([zb], randomize_noise=False)
        target = torch.from_numpy(render_z(zb.cpu().numpy(), generator.size)).to(device)
        l1 += (fake - target).abs().mean().item() * len(zb)
        prob = torch.sigmoid(predictor(fake.clamp(-1, 1))).cpu()[:, idx]
        agree += ((prob > 0.5).float() == labels[i:i + batch, idx]).float().sum(0)
        confident += ((prob < 0.2) | (prob > 0.8)).all(1).sum().item()
    return {"agreement": {a: (agree[k] / n).item() for k, a in enumerate(ATTRIBUTES)},
            "confident": confident / n, "l1": l1 / n, "n": n}
