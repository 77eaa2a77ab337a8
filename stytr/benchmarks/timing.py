"""What the benchmarks share: interleaved timing, a training step, and full-size losses without weight files."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable, Mapping

import torch

from stytr.config import InversionTrainConfig
from stytr.losses import IDLoss, InversionLoss


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(calls: Mapping[Hashable, Callable[[], object]], repeats: int, warmup: int,
                device: torch.device | str = "cpu",
                progress: Callable[[str], None] = lambda msg: None) -> dict[Hashable, list[float]]:
    """Seconds per call of each entry, ``{key: [samples]}``. Every round calls each entry once;
    the order rotates by one position per round, so a machine that slows down or speeds up
    mid-run shifts all entries alike. Warm-up rounds are dropped."""
    keys = list(calls)
    samples: dict[Hashable, list[float]] = {k: [] for k in keys}
    for rnd in range(warmup + repeats):
        shift = rnd % len(keys)
        for key in keys[shift:] + keys[:shift]:
            sync(device)
            start = time.perf_counter()
            calls[key]()
            sync(device)
            if rnd >= warmup:
                samples[key].append(time.perf_counter() - start)
        progress(f"round {rnd + 1}/{warmup + repeats}" + (" (warm-up)" if rnd < warmup else ""))
    return samples


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def random_images(batch: int, size: int, device: torch.device | str = "cpu", seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(device)


def training_step(model, loss, optimizer, x: torch.Tensor) -> Callable[[], None]:
    """One step as the inversion trainer takes it: forward, the loss, backward, optimiser step."""
    def step():
        recon, codes = model(x, return_latents=True)
        total, _ = loss(recon, x, codes, model.latent_avg)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    return step


class _MeanLPIPS(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, y):
        return self.net(x, y, normalize=False).mean()


def random_weight_loss(cfg: InversionTrainConfig, device: torch.device | str = "cpu") -> InversionLoss:
    """``cfg``'s loss terms (the paper's: L2, LPIPS, ID) with networks of the published shapes and
    random weights: the time does not depend on the weights, and no weight file is needed.
    LPIPS is left out when the ``lpips`` package is missing."""
    loss = InversionLoss(l2=cfg.l2, lpips=0.0, id=0.0, w_norm=cfg.w_norm)
    if cfg.id > 0:
        loss.id = IDLoss(weights=None)
        loss.weights["id"] = cfg.id
    if cfg.lpips > 0:
        try:
            import lpips
        except ImportError:
            lpips = None
        if lpips is not None:
            net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
            loss.lpips = _MeanLPIPS(net.eval().requires_grad_(False))
            loss.weights["lpips"] = cfg.lpips
    return loss.to(device)
