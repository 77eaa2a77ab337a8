"""Pivotal tuning (PTI; Roich et al., *Pivotal Tuning for Latent-based Editing of Real Images*).

The per-image upper bound of inversion fidelity: keep the encoder's W+ code as the pivot and tune
the *generator* until it renders the pivot as the input image. The tuning works on a deep copy of
the generator (only the synthesis weights train), so the shared generator, and the file it came
from, stay as they were; edits then move the pivot as usual and render with the tuned copy.

    tuned = pivotal_tuning(G, pivot, image, PTIConfig.preset("toy"), perceptual=domain_perceptual(dom))
    edited = tuned.generator.synthesis(editor.edit_latent(pivot, "Smiling", 8.0), randomize_noise=False)

The loss is the published one: MSE + perceptual distance to the input, plus the locality
regulariser, which samples a code ``alpha`` away from the pivot toward a random truncated code and
asks the tuned generator to render it as the original does, so the tuning stays local.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .config import PTIConfig
from .models.high_fidelity import fit_size

__all__ = ["PTIResult", "pivotal_tuning", "tunable_copy", "locality_codes"]


@dataclass
class PTIResult:
    generator: nn.Module             # the tuned copy, frozen and in eval mode
    pivot: torch.Tensor              # the W+ pivot it renders as the image
    losses: list = field(default_factory=list)   # per step: {"l2", "perceptual", "locality", "loss"}
    seconds: float = 0.0


def tunable_copy(G: nn.Module) -> nn.Module:
    """A deep copy of ``G`` whose synthesis weights train (the mapping MLP stays frozen: a pivot is a
    W+ code, so the mapping never runs while tuning)."""
    tuned = copy.deepcopy(G).train()
    for name, p in tuned.named_parameters():
        p.requires_grad_(not name.startswith("style."))
    return tuned


def _truncation_centre(G, generator: torch.Generator, n: int = 4096) -> torch.Tensor:
    latent_avg = getattr(G, "latent_avg", None)
    if latent_avg is not None:
        return latent_avg.reshape(-1, G.style_dim).mean(0)
    z = torch.randn(n, G.style_dim, generator=generator).to(G.device)
    return G.style(z).mean(0)


def locality_codes(G, pivot: torch.Tensor, alpha: float, truncation: float, centre: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """Codes ``alpha`` away from ``pivot`` (B, N, D), each toward a random mapped code truncated toward
    ``centre``; the distance is the norm over the whole W+ tensor of each sample, as PTI measures it."""
    z = torch.randn(pivot.shape[0], G.style_dim, generator=generator).to(pivot.device)
    w = G.style(z)
    w = centre + truncation * (w - centre)
    direction = w[:, None] - pivot
    norm = direction.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
    return pivot + alpha * direction / norm


def pivotal_tuning(G: nn.Module, pivot: torch.Tensor, target: torch.Tensor, cfg: PTIConfig | None = None,
                   perceptual: nn.Module | None = None, steps: int | None = None, progress: bool = False) -> PTIResult:
    """Tune a copy of ``G`` so that ``pivot`` (1, N, D) renders as ``target`` (1, 3, S, S) in [-1, 1].

    ``perceptual``: the domain's distance (:func:`stytr.losses.domain_perceptual`); without it the
    perceptual terms are left out. ``steps`` overrides ``cfg.steps``. ``G`` is only read: it renders
    the locality regulariser's reference images under ``no_grad``."""
    cfg = cfg if cfg is not None else PTIConfig()
    steps = cfg.steps if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"PTI steps must be >= 0, got {steps}")
    if pivot.ndim != 3 or pivot.shape[0] != target.shape[0]:
        raise ValueError(f"pivot (B, N, D) and target (B, 3, S, S) must match; got {tuple(pivot.shape)} and "
                         f"{tuple(target.shape)}")
    start = time.perf_counter()
    pivot = pivot.detach()[:, :G.n_latent]
    target = target.detach()
    rng = torch.Generator().manual_seed(cfg.seed)
    tuned = tunable_copy(G)
    params = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    with torch.no_grad():
        centre = _truncation_centre(G, rng) if cfg.locality_every else None
    size = target.shape[-1]
    use_perceptual = perceptual is not None and cfg.perceptual > 0
    losses = []
    for step in tqdm(range(steps), desc="pti", disable=not progress, leave=False):
        image = fit_size(tuned.synthesis(pivot, randomize_noise=False), size)
        terms = {"l2": F.mse_loss(image, target)}
        if use_perceptual:
            terms["perceptual"] = perceptual(image, target)
            if cfg.stop_below and terms["perceptual"].item() <= cfg.stop_below:
                break
        total = cfg.l2 * terms["l2"] + (cfg.perceptual * terms["perceptual"] if use_perceptual else 0.0)
        if cfg.locality_every and step % cfg.locality_every == 0:
            with torch.no_grad():
                codes = locality_codes(G, pivot, cfg.locality_alpha, cfg.locality_truncation, centre, rng)
                reference = G.synthesis(codes, randomize_noise=False)
            moved = tuned.synthesis(codes, randomize_noise=False)
            locality = cfg.locality_l2 * F.mse_loss(moved, reference)
            if perceptual is not None and cfg.locality_perceptual > 0:
                locality = locality + cfg.locality_perceptual * perceptual(fit_size(moved, size),
                                                                           fit_size(reference, size))
            terms["locality"] = locality
            total = total + locality
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses.append({**{k: v.detach().item() for k, v in terms.items()}, "loss": total.detach().item()})
    tuned.eval().requires_grad_(False)
    return PTIResult(tuned, pivot, losses, time.perf_counter() - start)
