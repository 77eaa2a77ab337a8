"""Train the ToyFaces attribute predictor on renders.

    python -m stytr train-toy-predictor --preset toy          # ~10 CPU minutes
    python -m stytr train-toy-predictor --preset toy --ship   # also writes data/toyfaces_attribute_predictor.safetensors

Adam under a one-cycle schedule (:func:`one_cycle`, torch's ``OneCycleLR`` as a function of the
step), random flips, blur and pixel noise drawn from the step's generator; the run goes
through :class:`stytr.train.loop.Loop` and resumes exactly from ``out/last.pt``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import artifacts
from ..attributes import CELEBA_ATTRIBUTES
from ..checkpoints import save_weights
from ..config import ToyPredictorConfig
from ..domains import get_domain
from ..toy import AttributePredictor, attribute_mask, render_faces
from ..toy.render import ATTRIBUTES
from .loop import Loop
from .sampling import StepSampler


def random_blur(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Blur a random subset of the batch with a Gaussian of random width (sigma 0.3-1.2 px)."""
    if prob <= 0:
        return x
    pick = torch.rand(x.shape[0], generator=gen) < prob
    if not pick.any():
        return x
    sigma = 0.3 + 0.9 * torch.rand((), generator=gen).item()
    k = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-k**2 / (2 * sigma**2))
    k = (k / k.sum())
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 5, 5)
    blurred = F.conv2d(F.pad(x[pick], (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    out = x.clone()
    out[pick] = blurred
    return out


def one_cycle(step: int, total: int, max_lr: float, pct_start: float = 0.3, div: float = 25.0,
              final_div: float = 1e4) -> tuple[float, float]:
    """(lr, Adam's beta1) at ``step``: torch's ``OneCycleLR`` (two cosine phases, beta1 cycled
    between 0.95 and 0.85) written as a function of the step, so a resumed run needs no scheduler state."""
    initial = max_lr / div
    phases = [(float(pct_start * total) - 1, initial, max_lr, 0.95, 0.85),
              (total - 1, max_lr, initial / final_div, 0.85, 0.95)]
    start = 0.0
    for i, (end, lr_a, lr_b, m_a, m_b) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start)
            cos_out = math.cos(math.pi * pct) + 1
            return lr_b + (lr_a - lr_b) / 2.0 * cos_out, m_b + (m_a - m_b) / 2.0 * cos_out
        start = end


@torch.no_grad()
def attribute_accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """Held-out accuracy per modelled attribute (threshold 0.5)."""
    model.eval()
    logits = torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)])
    correct = ((logits > 0).float() == labels).float().mean(0)
    return {a: correct[CELEBA_ATTRIBUTES.index(a)].item() for a in ATTRIBUTES}


class ToyPredictorTrainer:
    def __init__(self, cfg: ToyPredictorConfig):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.train_x, self.train_y = render_faces(cfg.n_train, seed=cfg.seed + 1000, size=cfg.size)
        self.val_x, self.val_y = render_faces(cfg.n_val, seed=cfg.seed + 2000, size=cfg.size)
        self.mask = attribute_mask().float()
        self.model = AttributePredictor()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.sampler = StepSampler(cfg.n_train, cfg.batch, cfg.seed)
        self.loop = Loop(self, cfg.out, cfg.steps, ckpt_every=cfg.ckpt_every, log_every=100, desc="predictor")

    def state_dict(self) -> dict:
        return {"format": "stytr-toy-predictor", "config": {}, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])      # lr and beta1 are set from the config every step

    def batch_for_step(self, step: int):
        """Images (flipped, blurred and noised by the step's generator) and labels of ``step``."""
        idx, gen = self.sampler.indices(step), self.sampler.generator(step)
        x = self.train_x[idx]
        x = torch.where(torch.rand(len(idx), 1, 1, 1, generator=gen) < 0.5, x.flip(-1), x)
        x = random_blur(x, self.cfg.blur_prob, gen)
        return step, x + 0.02 * torch.randn(x.shape, generator=gen), self.train_y[idx]

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(self.model(x), y, reduction="none")
        return (per * self.mask).sum() / (self.mask.sum() * len(x))

    def train_step(self, batch) -> dict[str, float]:
        step, x, y = batch
        lr, beta1 = one_cycle(step, max(self.cfg.steps, 2), self.cfg.lr)
        for group in self.opt.param_groups:
            group.update(lr=lr, betas=(beta1, *group["betas"][1:]))
        self.model.train()
        loss = self._loss(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        loss = sum(self._loss(self.val_x[i:i + 256], self.val_y[i:i + 256]).item() * len(self.val_x[i:i + 256])
                   for i in range(0, len(self.val_x), 256)) / len(self.val_x)
        acc = attribute_accuracy(self.model, self.val_x, self.val_y)
        blurred = attribute_accuracy(self.model, random_blur(self.val_x, 1.0, torch.Generator().manual_seed(1)),
                                     self.val_y)
        return {"loss": loss, "mean_accuracy": sum(acc.values()) / len(acc), "accuracy": acc,
                "accuracy_blurred": blurred}

    def sample(self) -> None:
        return None


def train_toy_predictor(cfg: ToyPredictorConfig, ship: bool = False, resume: bool = True,
                        allow_changed_config: bool = False) -> dict:
    """Train (resuming ``cfg.out``/last.pt unless ``resume=False``); writes the weights to ``out`` and,
    with ``ship``, as the shipped ToyFaces judge in ``data/``."""
    trainer = ToyPredictorTrainer(cfg)
    if resume:
        trainer.loop.resume(allow_changed_config=allow_changed_config)
    trainer.loop.run()
    m = trainer.loop.metrics
    report = {"config": cfg.to_dict(), "val_accuracy": m["accuracy"], "val_accuracy_blurred": m["accuracy_blurred"]}
    shipped = artifacts.find("predictor", get_domain("toyfaces").judge)
    save_weights(trainer.model.state_dict(), Path(cfg.out) / shipped.file)
    if ship:
        save_weights(trainer.model.state_dict(), shipped.path,
                     metadata={"val_accuracy": json.dumps(m["accuracy"]), "command": shipped.command})
    return report
