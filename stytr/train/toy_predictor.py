"""Train the ToyFaces attribute predictor on renders.

    python -m stytr train-toy-predictor --preset toy          # ~10 CPU minutes
    python -m stytr train-toy-predictor --preset toy --ship   # also writes data/toyfaces_attribute_predictor.safetensors
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import artifacts
from ..checkpoints import save_weights
from ..config import ToyPredictorConfig
from ..toy import AttributePredictor, attribute_mask, render_faces
from ..toy.render import ATTRIBUTES
from ..attributes import CELEBA_ATTRIBUTES


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


@torch.no_grad()
def attribute_accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """Held-out accuracy per modelled attribute (threshold 0.5)."""
    model.eval()
    logits = torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)])
    correct = ((logits > 0).float() == labels).float().mean(0)
    return {a: correct[CELEBA_ATTRIBUTES.index(a)].item() for a in ATTRIBUTES}


def train_toy_predictor(cfg: ToyPredictorConfig, ship: bool = False) -> dict:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_x, train_y = render_faces(cfg.n_train, seed=cfg.seed + 1000, size=cfg.size)
    val_x, val_y = render_faces(cfg.n_val, seed=cfg.seed + 2000, size=cfg.size)
    mask = attribute_mask().float()
    model = AttributePredictor()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 2))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(range(cfg.steps), desc="predictor")
    for step in bar:
        model.train()
        idx = torch.randint(len(train_x), (cfg.batch,), generator=gen)
        x = train_x[idx]
        x = torch.where(torch.rand(cfg.batch, 1, 1, 1, generator=gen) < 0.5, x.flip(-1), x)
        x = random_blur(x, cfg.blur_prob, gen)
        x = x + 0.02 * torch.randn(x.shape, generator=gen)
        loss = (F.binary_cross_entropy_with_logits(model(x), train_y[idx], reduction="none") * mask).sum() / (
            mask.sum() * cfg.batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    acc = attribute_accuracy(model, val_x, val_y)
    blurred = attribute_accuracy(model, random_blur(val_x, 1.0, torch.Generator().manual_seed(1)), val_y)
    report = {"config": cfg.to_dict(), "val_accuracy": acc, "val_accuracy_blurred": blurred}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    shipped = artifacts.find("predictor", "toy")
    save_weights(model.state_dict(), out / shipped.file)
    if ship:
        save_weights(model.state_dict(), shipped.path,
                     metadata={"val_accuracy": json.dumps(acc), "command": shipped.command})
    return report
