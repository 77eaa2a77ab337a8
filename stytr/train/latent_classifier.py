"""Train the LCNet-style latent classifier on (W+, labels, mask) tensors.

The authors publish classifier weights but no trainer. Ours minimises binary
cross-entropy on the logits, counting only the (sample, attribute) pairs that the
mask marks as known, holds a random fraction of the codes out, reports the
held-out accuracy of every attribute, and stops when the held-out loss has not
improved for ``patience`` epochs (the best weights are kept). Producing the W+
codes (inverting labelled images) happens elsewhere; this module takes tensors.

Outputs, all optional: TensorBoard scalars, a checkpoint written atomically::

    {'format': 'stytr-latent-classifier', 'config': cfg.to_dict(), 'model': state_dict,
     'model_config': model.config(), 'accuracy': {name: held-out accuracy},
     'val_loss': float, 'epoch': int, 'step': int, 'modelled': [attribute names]}

and the weights as safetensors (architecture in the metadata), which
:meth:`stytr.models.latent_classifier.LatentClassifier.from_checkpoint` reads too.
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attributes import prepare_labels
from ..checkpoints import save_atomic, save_weights
from ..config import LatentClassifierTrainConfig
from ..models.latent_classifier import CLASSIFIER_FORMAT, LatentClassifier

__all__ = ["LatentClassifierTrainResult", "masked_bce", "evaluate", "split_indices",
           "train_latent_classifier", "save_classifier_checkpoint", "export_safetensors"]


@dataclass
class LatentClassifierTrainResult:
    model: LatentClassifier
    accuracy: dict[str, float]            # held-out accuracy of each attribute that has held-out labels
    mean_accuracy: float
    val_loss: float                       # best held-out loss (training loss when there is no held-out split)
    best_epoch: int
    epochs_run: int
    steps: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    safetensors: Path | None = None


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the known (sample, attribute) pairs only (0 when none is known)."""
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    known = known.to(per.dtype)
    return (per * known).sum() / known.sum().clamp_min(1.0)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split into (train, held-out) indices; the held-out part has at least one sample."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = 0 if val_fraction == 0 or n < 2 else max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


@torch.no_grad()
def evaluate(model: LatentClassifier, wplus: torch.Tensor, labels: torch.Tensor, known: torch.Tensor,
             batch: int = 1024) -> tuple[float, torch.Tensor, torch.Tensor]:
    """``(masked BCE, per-attribute accuracy (A,), per-attribute count of known labels (A,))``.

    Accuracy is NaN for attributes without known labels.
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    correct = torch.zeros(labels.shape[1], dtype=torch.float64)
    seen = torch.zeros(labels.shape[1], dtype=torch.float64)
    was_training = model.training
    model.eval()
    for start in range(0, wplus.shape[0], batch):
        sl = slice(start, start + batch)
        logits = model(wplus[sl].to(device))[0].float().cpu()
        y, k = labels[sl], known[sl]
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        total += (per * k).sum().item()
        count += k.sum().item()
        correct += (((logits > 0).float() == y) & k).sum(0).double()
        seen += k.sum(0).double()
    model.train(was_training)
    acc = torch.where(seen > 0, correct / seen.clamp_min(1), torch.full_like(seen, float("nan")))
    return total / max(count, 1.0), acc, seen


def save_classifier_checkpoint(model: LatentClassifier, path: str | os.PathLike, cfg: LatentClassifierTrainConfig,
                               accuracy: dict[str, float], **extra) -> Path:
    ckpt = {"format": CLASSIFIER_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
            "model_config": model.config(), "accuracy": dict(accuracy), **extra}
    return save_atomic(ckpt, path)


def export_safetensors(model: LatentClassifier, path: str | os.PathLike, half: bool = True) -> Path:
    """The weights as safetensors; the architecture goes into the metadata as JSON."""
    meta = {"format": CLASSIFIER_FORMAT, "config": json.dumps(model.config())}
    return save_weights(model.state_dict(), path, half=half, metadata=meta)


def train_latent_classifier(wplus: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                            cfg: LatentClassifierTrainConfig | None = None, *, model: LatentClassifier | None = None,
                            out_dir: str | os.PathLike | None = None, log_dir: str | os.PathLike | None = None,
                            device: str | torch.device | None = None, progress: bool = True,
                            attribute_names: list[str] | None = None) -> LatentClassifierTrainResult:
    """Fit a :class:`LatentClassifier` to ``wplus`` (N, n_latent, style_dim) and ``labels`` (N, A).

    ``mask``: which labels are known / modelled ((A,) or (N, A); None = all).
    ``out_dir``: where ``latent_classifier.pt`` (checkpoint, rewritten at every
    held-out improvement) and ``latent_classifier.safetensors`` go; None uses
    ``cfg.out``, "" writes nothing. ``log_dir``: TensorBoard folder (None = none).
    ``model``: continue from these weights instead of a fresh classifier.
    """
    cfg = cfg or LatentClassifierTrainConfig.preset("toy")
    wplus = torch.as_tensor(wplus).float()
    if wplus.ndim == 2:
        wplus = wplus.view(wplus.shape[0], cfg.n_latent, cfg.style_dim)
    if wplus.ndim != 3 or wplus.shape[1:] != (cfg.n_latent, cfg.style_dim):
        raise ValueError(f"wplus must be (N, {cfg.n_latent}, {cfg.style_dim}) for this config, "
                         f"got {tuple(wplus.shape)}")
    labels, known = prepare_labels(labels, mask)
    if labels.shape[0] != wplus.shape[0]:
        raise ValueError(f"{wplus.shape[0]} codes but {labels.shape[0]} label rows")
    n_attr = labels.shape[1]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    if model is None:
        model = LatentClassifier(cfg.n_latent, cfg.style_dim, n_attr, cfg.hidden, cfg.embed_dim, cfg.negative_slope,
                                 attribute_names=attribute_names)
    model = model.to(device).train()
    names = model.attribute_names

    train_idx, val_idx = split_indices(wplus.shape[0], cfg.val_fraction, cfg.seed)
    has_val = len(val_idx) > 0
    out_dir = cfg.out if out_dir is None else out_dir
    ckpt_path = Path(out_dir) / "latent_classifier.pt" if out_dir else None
    st_path = Path(out_dir) / "latent_classifier.safetensors" if out_dir else None
    writer = None
    if log_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))

    opt = _adamw(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    bar = tqdm(total=total_steps, desc="latent classifier", disable=not progress, leave=False)

    best_loss, best_state, best_epoch, best_acc = math.inf, None, -1, None
    history, step, epoch, bad_epochs, stopped_early = [], 0, 0, 0, False
    try:
        for epoch in range(cfg.epochs):
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            running, n_batches = 0.0, 0
            for start in range(0, len(order), cfg.batch):
                if cfg.max_steps and step >= cfg.max_steps:
                    break
                idx = order[start:start + cfg.batch]
                logits = model(wplus[idx].to(device))[0]
                loss = masked_bce(logits, labels[idx].to(device), known[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                running, n_batches = running + loss.item(), n_batches + 1
                if writer is not None and step % max(cfg.log_every, 1) == 0:
                    writer.add_scalar("train/loss", loss.item(), step)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
            train_loss = running / max(n_batches, 1)
            eval_idx = val_idx if has_val else train_idx
            val_loss, acc, seen = evaluate(model, wplus[eval_idx], labels[eval_idx], known[eval_idx],
                                           batch=4 * cfg.batch)
            mean_acc = float(acc[seen > 0].mean()) if (seen > 0).any() else float("nan")
            history.append(dict(epoch=epoch, step=step, train_loss=train_loss, val_loss=val_loss,
                                mean_accuracy=mean_acc))
            if writer is not None:
                writer.add_scalar("epoch/train_loss", train_loss, step)
                writer.add_scalar("val/loss", val_loss, step)
                writer.add_scalar("val/mean_accuracy", mean_acc, step)
                for i in torch.nonzero(seen > 0).flatten().tolist():
                    writer.add_scalar(f"val_accuracy/{names[i]}", float(acc[i]), step)
            if val_loss < best_loss - cfg.min_delta:
                best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
                best_acc = {names[i]: float(acc[i]) for i in range(n_attr) if seen[i] > 0}
                if ckpt_path is not None:
                    save_classifier_checkpoint(model, ckpt_path, cfg, best_acc, val_loss=val_loss, epoch=epoch,
                                               step=step, modelled=_modelled(known, names))
            else:
                bad_epochs += 1
            if cfg.patience and bad_epochs >= cfg.patience:
                stopped_early = True
                break
            if cfg.max_steps and step >= cfg.max_steps:
                break
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    best_acc = best_acc or {}
    accs = [a for a in best_acc.values() if not math.isnan(a)]
    if st_path is not None:
        export_safetensors(model, st_path)
    return LatentClassifierTrainResult(
        model=model.eval(), accuracy=best_acc, mean_accuracy=sum(accs) / len(accs) if accs else float("nan"),
        val_loss=best_loss, best_epoch=best_epoch, epochs_run=len(history), steps=step, stopped_early=stopped_early,
        history=history, checkpoint=ckpt_path, safetensors=st_path)


def _adamw(model: torch.nn.Module, cfg: LatentClassifierTrainConfig) -> torch.optim.Optimizer:
    # The fused kernel updates the 160-odd small tensors of the 40 heads in one go (several times faster
    # than the per-tensor loop on a CPU); fall back where a build or device lacks it.
    try:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _modelled(known: torch.Tensor, names: list[str]) -> list[str]:
    return [names[i] for i in torch.nonzero(known.any(0)).flatten().tolist()]
