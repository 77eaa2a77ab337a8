"""Train the LCNet-style latent classifier on (W+, labels, mask) tensors.

The authors publish classifier weights but no trainer. Ours minimises binary
cross-entropy on the logits, counting only the (sample, attribute) pairs that the
mask marks as known, holds a random fraction of the codes out, reports the
held-out accuracy of every attribute, and stops when the held-out loss has not
improved for ``patience`` epochs (the best weights are kept). Producing the W+
codes (inverting labelled images) happens elsewhere; this module takes tensors.

The run goes through :class:`stytr.train.loop.Loop` (one evaluation and checkpoint per
epoch; ``out/last.pt`` resumes exactly). At the end the best weights are written as

    out/latent_classifier.pt           {'format': 'stytr-latent-classifier', 'config': model.config(),
                                        'model', 'train_config', 'accuracy': {name: held-out accuracy},
                                        'val_loss', 'epoch', 'step', 'modelled': [attribute names]}
    out/latent_classifier.safetensors  the weights, the architecture in the metadata

both of which :meth:`stytr.models.latent_classifier.LatentClassifier.from_checkpoint` reads.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..attributes import prepare_labels
from ..checkpoints import save_atomic, save_weights
from ..config import LatentClassifierTrainConfig
from ..models.latent_classifier import CLASSIFIER_FORMAT, LatentClassifier
from .loop import Loop, set_hyperparameters
from .sampling import StepSampler, split_indices

__all__ = ["LatentClassifierTrainResult", "LatentClassifierTrainer", "masked_bce", "evaluate", "split_indices",
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
    ckpt = {"format": CLASSIFIER_FORMAT, "config": model.config(), "model": model.state_dict(),
            "train_config": cfg.to_dict(), "accuracy": dict(accuracy), **extra}
    return save_atomic(ckpt, path)


def export_safetensors(model: LatentClassifier, path: str | os.PathLike, half: bool = True) -> Path:
    """The weights as safetensors; the architecture goes into the metadata as JSON."""
    meta = {"format": CLASSIFIER_FORMAT, "config": json.dumps(model.config())}
    return save_weights(model.state_dict(), path, half=half, metadata=meta)


class LatentClassifierTrainer:
    """Masked BCE on batches of the training codes; one evaluation (held-out loss and
    accuracies) an epoch, which is also where the loop checkpoints and may stop early."""

    def __init__(self, wplus: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None,
                 cfg: LatentClassifierTrainConfig, model: LatentClassifier | None = None, out=None,
                 device: str | torch.device | None = None, progress: bool = True,
                 attribute_names: list[str] | None = None):
        self.cfg = cfg
        wplus = torch.as_tensor(wplus).float()
        if wplus.ndim == 2:
            wplus = wplus.view(wplus.shape[0], cfg.n_latent, cfg.style_dim)
        if wplus.ndim != 3 or wplus.shape[1:] != (cfg.n_latent, cfg.style_dim):
            raise ValueError(f"wplus must be (N, {cfg.n_latent}, {cfg.style_dim}) for this config, "
                             f"got {tuple(wplus.shape)}")
        self.labels, self.known = prepare_labels(labels, mask)
        if self.labels.shape[0] != wplus.shape[0]:
            raise ValueError(f"{wplus.shape[0]} codes but {self.labels.shape[0]} label rows")
        self.wplus = wplus
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(cfg.seed)
        if model is None:
            model = LatentClassifier(cfg.n_latent, cfg.style_dim, self.labels.shape[1], cfg.hidden, cfg.embed_dim,
                                     cfg.negative_slope, attribute_names=attribute_names)
        self.model = model.to(self.device).train()
        self.train_idx, self.val_idx = split_indices(wplus.shape[0], cfg.val_fraction, cfg.seed)
        # Without a held-out split the training codes are evaluated instead.
        self.eval_idx = self.val_idx if len(self.val_idx) else self.train_idx
        self.sampler = StepSampler(len(self.train_idx), cfg.batch, cfg.seed, drop_last=False)
        self.optimizer = _adamw(self.model, cfg)
        epoch = self.sampler.steps_per_epoch
        steps = min(cfg.epochs * epoch, cfg.max_steps or cfg.epochs * epoch)
        self.loop = Loop(self, out, steps, ckpt_every=epoch, eval_every=epoch, log_every=cfg.log_every,
                         patience=cfg.patience, min_delta=cfg.min_delta, desc="latent classifier", progress=progress)

    def state_dict(self) -> dict:
        return {"format": CLASSIFIER_FORMAT, "config": self.model.config(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_hyperparameters(self.optimizer, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def batch_for_step(self, step: int) -> torch.Tensor:
        return self.train_idx[self.sampler.indices(step)]

    def train_step(self, idx: torch.Tensor) -> dict[str, float]:
        self.model.train()
        logits = self.model(self.wplus[idx].to(self.device))[0]
        loss = masked_bce(logits, self.labels[idx].to(self.device), self.known[idx].to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def evaluate(self) -> dict:
        i = self.eval_idx
        loss, acc, seen = evaluate(self.model, self.wplus[i], self.labels[i], self.known[i], batch=4 * self.cfg.batch)
        names = self.model.attribute_names
        accuracy = {names[a]: float(acc[a]) for a in range(len(names)) if seen[a] > 0}
        mean = sum(accuracy.values()) / len(accuracy) if accuracy else math.nan
        return {"loss": loss, "mean_accuracy": mean, "accuracy": accuracy}

    def sample(self) -> None:
        return None

    def modelled(self) -> list[str]:
        names = self.model.attribute_names
        return [names[i] for i in torch.nonzero(self.known.any(0)).flatten().tolist()]


def train_latent_classifier(wplus: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                            cfg: LatentClassifierTrainConfig | None = None, *, model: LatentClassifier | None = None,
                            out_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
                            progress: bool = True, attribute_names: list[str] | None = None, resume: bool = True,
                            allow_changed_config: bool = False) -> LatentClassifierTrainResult:
    """Fit a :class:`LatentClassifier` to ``wplus`` (N, n_latent, style_dim) and ``labels`` (N, A).

    ``mask``: which labels are known / modelled ((A,) or (N, A); None = all). ``out_dir``: the run
    folder (checkpoints, TensorBoard in ``tb/``, the best weights as ``latent_classifier.pt`` and
    ``.safetensors``); None uses ``cfg.out``, "" writes nothing. A run in ``out_dir`` resumes from
    its ``last.pt`` unless ``resume=False``. ``model``: start from these weights instead of a fresh
    classifier. The returned model holds the weights with the best held-out loss.
    """
    cfg = cfg or LatentClassifierTrainConfig.preset("toy")
    out = cfg.out if out_dir is None else out_dir
    out = Path(out) if str(out) else None
    trainer = LatentClassifierTrainer(wplus, labels, mask, cfg, model=model, out=out, device=device,
                                      progress=progress, attribute_names=attribute_names)
    if resume:
        trainer.loop.resume(allow_changed_config=allow_changed_config)
    history = trainer.loop.run()
    best = trainer.loop.load("best.pt")
    if best is not None:
        trainer.model.load_state_dict(best["model"])
    metrics = trainer.evaluate()
    best_epoch = next((i for i, h in enumerate(history) if h.get("val_loss") == trainer.loop.best), -1)
    result = LatentClassifierTrainResult(
        model=trainer.model.eval(), accuracy=metrics["accuracy"], mean_accuracy=metrics["mean_accuracy"],
        val_loss=metrics["loss"], best_epoch=best_epoch, epochs_run=len(history), steps=trainer.loop.step,
        stopped_early=trainer.loop.stopped, history=history)
    if out is not None:
        result.checkpoint = save_classifier_checkpoint(
            trainer.model, out / "latent_classifier.pt", cfg, result.accuracy, val_loss=result.val_loss,
            epoch=best_epoch, step=best["step"] if best else trainer.loop.step, modelled=trainer.modelled())
        result.safetensors = export_safetensors(trainer.model, out / "latent_classifier.safetensors")
    return result


def _adamw(model: torch.nn.Module, cfg: LatentClassifierTrainConfig) -> torch.optim.Optimizer:
    # The fused kernel updates the 160-odd small tensors of the 40 heads in one go (several times faster
    # than the per-tensor loop on a CPU); fall back where a build or device lacks it.
    try:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
