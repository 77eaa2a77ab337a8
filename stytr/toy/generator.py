"""The ToyFaces quality bar of a generator (the shipped one loads with ``artifacts.load("generator", "toy")``)."""
from __future__ import annotations

import numpy as np
import torch

from ..attributes import CELEBA_ATTRIBUTES
from ..eval.frechet import frechet_distance, image_statistics
from .faces import Z_DIM
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


@torch.no_grad()
def compare_generators(generators: dict, predictor, n: int = 2000, seed: int = 12345) -> list[dict]:
    """One row per named generator: the quality bar of :func:`generator_quality` plus the
    Fréchet distance to ``n`` fresh renders in the predictor's feature space (``frechet``) and
    the largest gap between the rates at which the predictor finds each modelled attribute on
    G(z) and on the renders (``rate_gap``). A first row, ``renders``, compares a second set of
    renders with the first: the distance's floor at this ``n``.

    ``agreement`` asks whether G(z) shows the attributes that ``render_z(z)`` has: only a
    generator distilled from the renderer can score high on it; one trained adversarially has
    its own z and scores like chance on it, however good its images are."""
    idx = [CELEBA_ATTRIBUTES.index(a) for a in ATTRIBUTES]
    device = next(predictor.parameters()).device

    def renders(s):
        z = np.random.default_rng(s).standard_normal((n, Z_DIM)).astype(np.float32)
        return torch.from_numpy(render_z(z, size))

    def rates(images):
        probs = torch.cat([torch.sigmoid(predictor(b.to(device).clamp(-1, 1))).cpu()[:, idx] for b in images.split(250)])
        return (probs > 0.5).float().mean(0)

    size = next(iter(generators.values())).size
    real = renders(seed + 1)
    real_stats, real_rates = image_statistics(predictor, real), rates(real)
    second = renders(seed + 2)
    rows = [{"generator": "renders", "frechet": frechet_distance(image_statistics(predictor, second), real_stats),
             "rate_gap": (rates(second) - real_rates).abs().max().item(), "agreement": float("nan"),
             "confident": float("nan")}]
    for name, g in generators.items():
        quality = generator_quality(g, predictor, n=n, seed=seed)
        gen = torch.Generator().manual_seed(seed + 3)
        fakes = torch.cat([g([torch.randn(min(250, n - i), g.style_dim, generator=gen).to(g.device)],
                             randomize_noise=False)[0].cpu() for i in range(0, n, 250)])
        rows.append({"generator": name, "frechet": frechet_distance(image_statistics(predictor, fakes), real_stats),
                     "rate_gap": (rates(fakes) - real_rates).abs().max().item(),
                     "agreement": float(np.mean(list(quality["agreement"].values()))),
                     "confident": quality["confident"]})
    return rows
