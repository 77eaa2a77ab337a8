"""The one training loop of stytr. A trainer supplies the model-specific parts:

    cfg                             its config (stored in every checkpoint; a resume must match it)
    batch_for_step(step)            the data of a step, a pure function of (seed, step, rank) (StepSampler)
    train_step(batch) -> {term: v}  one optimiser step; "loss" is the total
    evaluate() -> {name: value}     held-out numbers ({} for none); the lowest "loss" goes to best.pt
    sample() -> image or None       a (3, H, W) grid in [-1, 1] for TensorBoard and samples_*.png
    state_dict() / load_state_dict(state)    model, optimiser and whatever else a restart needs

The loop does the rest: tqdm progress, TensorBoard, history.json and metrics.json (strict JSON),
best/last/final checkpoints written atomically, exact resume, early stopping, and under DDP
only rank 0 writes. A non-finite loss term or weight stops the run before anything is written,
so the last good checkpoint keeps its bytes. Checkpoints hold the trainer's keys (``format``,
``config``, ``model``, ``optimizer``, ...) plus ``step``, ``train_config``, ``rng``, ``history``
(JSON text) and ``loop`` (best loss, evaluations without improvement, wall time, last metrics).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from ..checkpoints import load, load_state_strict, remove_stale_temporaries, save_atomic, save_json
from ..viz import save_image
from .sampling import rng_state, set_rng_state

__all__ = ["Loop", "NonFiniteError", "ConfigMismatch", "FREE_KEYS", "json_safe", "upgrade", "set_hyperparameters"]

# Config keys a resumed run may change freely: they set how long and how verbosely it runs, not what it learns.
FREE_KEYS = frozenset({"steps", "out", "threads", "workers", "log_every", "ckpt_every", "val_every", "eval_every",
                       "image_every", "sample_every", "figures", "compile", "val_batches", "eval_pairs", "epochs",
                       "max_steps", "patience", "min_delta"})


class NonFiniteError(FloatingPointError):
    """A loss term or a weight went NaN/inf; nothing was written."""


class ConfigMismatch(ValueError):
    """``out`` holds a run of another config."""


def json_safe(x):
    """``x`` with NaN/inf as None and tensors as numbers, so that it is valid JSON."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, torch.Tensor):
        x = x.item() if x.numel() == 1 else x.tolist()
    return None if isinstance(x, float) and not math.isfinite(x) else x


def upgrade(state: dict) -> dict:
    """A checkpoint from before the loop in today's keys (the toy generator wrote g/g_ema/opt/config)."""
    state = dict(state)
    if "g" in state:
        for old, new in {"g": "model", "g_ema": "ema", "opt": "optimizer", "d": "discriminator",
                         "d_opt": "d_optimizer", "config": "train_config"}.items():
            if old in state:
                state[new] = state.pop(old)
    state.setdefault("loop", {"best": state.pop("best_val", math.inf), "wall_s": state.pop("elapsed", 0.0)})
    state.setdefault("history", "[]")
    return state


def set_hyperparameters(optimizer: torch.optim.Optimizer, **values) -> None:
    """Put config values (lr, weight_decay) into every parameter group, e.g. after loading an optimiser state."""
    for group in optimizer.param_groups:
        group.update(values)


class ModelOptimizerState:
    """What a trainer with one model (``checkpoint_dict()``) and one optimiser hands its :class:`Loop`:
    ``step``, ``history``, ``resume`` and the checkpoint state. On loading, the config's ``lr`` and
    ``weight_decay`` replace the stored ones (a resumed run with a changed lr uses the new one)."""

    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def history(self) -> list[dict]:
        return self.loop.history

    def state_dict(self) -> dict:
        return {**self.model.checkpoint_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        load_state_strict(self.model, state["model"], "the checkpoint's model")
        self.optimizer.load_state_dict(state["optimizer"])
        set_hyperparameters(self.optimizer, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def resume(self, path=None, allow_changed_config: bool = False) -> bool:
        return self.loop.resume(path, allow_changed_config)


def _changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if not prefix and key in FREE_KEYS:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{key}.")
        elif json_safe(a) != json_safe(b):      # tuples and lists compare equal
            out.append(f"{prefix}{key} {a!r} -> {b!r}")
    return out


def _non_finite(tree, path: str = "") -> str | None:
    """The first tensor entry of ``tree`` holding NaN/inf, by its dotted key."""
    if isinstance(tree, torch.Tensor):
        return path if tree.is_floating_point() and not torch.isfinite(tree).all() else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return next((bad for k, v in items if (bad := _non_finite(v, f"{path}.{k}" if path else str(k)))), None)


@contextlib.contextmanager
def _rng_untouched():
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class Loop:
    def __init__(self, trainer, out, steps: int, *, ckpt_every: int, eval_every: int = 0, image_every: int = 0,
                 log_every: int = 1, patience: int = 0, min_delta: float = 0.0, desc: str = "train",
                 is_main: bool = True, progress: bool = True):
        """``out=None`` keeps checkpoints in memory and writes nothing (notebooks' short runs)."""
        self.trainer, self.out, self.steps, self.desc = trainer, Path(out) if out else None, steps, desc
        self.ckpt_every, self.eval_every, self.image_every, self.log_every = ckpt_every, eval_every, image_every, log_every
        self.patience, self.min_delta, self.is_main, self.progress = patience, min_delta, is_main, progress
        self.step, self.history, self.metrics, self.memory, self.logs = 0, [], {}, {}, {}
        self.best, self.bad_evals, self.wall_s, self.stopped = math.inf, 0, 0.0, False
        self.sums: dict[str, float] = {}    # training logs summed since the last evaluation, and their count
        self.n = 0
        self.writer = None
        if is_main and self.out is not None:
            remove_stale_temporaries(self.out)
            self.writer = SummaryWriter(str(self.out / "tb"))

    # -- checkpoints ----------------------------------------------------------------
    def state(self) -> dict:
        return {**self.trainer.state_dict(), "step": self.step, "train_config": self.trainer.cfg.to_dict(),
                "rng": rng_state(), "history": json.dumps(self.history),
                "loop": {"best": self.best, "bad_evals": self.bad_evals, "wall_s": self.wall_s, "stopped": self.stopped,
                         "metrics": json.dumps(json_safe(self.metrics)), "sums": dict(self.sums), "n": self.n}}

    def save(self, name: str) -> None:
        state = self.state()       # checked on every rank, so that all of them stop together
        bad = _non_finite({k: v for k, v in state.items() if k != "rng"})
        if bad is not None:
            raise NonFiniteError(f"step {self.step}: {bad} holds NaN/inf values; training stopped without "
                                 f"writing {name} (the last good checkpoint is kept)")
        if not self.is_main:
            return
        if self.out is None:
            self.memory[name] = copy.deepcopy(state)
            return
        save_atomic(state, self.out / name)
        save_json(self.history, self.out / "history.json")

    def load(self, name: str) -> dict | None:
        """A checkpoint this loop wrote (``best.pt`` ...), from ``out`` or memory; None when absent."""
        if self.out is None:
            return self.memory.get(name)
        return upgrade(load(self.out / name)) if (self.out / name).is_file() else None

    def resume(self, path=None, allow_changed_config: bool = False) -> bool:
        """Restore ``path`` (default ``out/last.pt``); False when there is nothing to resume."""
        path = Path(path) if path else (self.out / "last.pt" if self.out is not None else None)
        if path is None or not path.is_file():
            return False
        state = upgrade(load(path))
        changed = _changes(state["train_config"], self.trainer.cfg.to_dict())
        if changed and not allow_changed_config:
            raise ConfigMismatch(f"{path} was trained with another config ({'; '.join(changed)}); pass "
                                 f"allow_changed_config=True (--allow-changed-config) to continue with the new "
                                 f"values, or train into another out folder")
        self.trainer.load_state_dict(state)
        loop = state["loop"]
        self.step, self.history = state["step"], json.loads(state["history"])
        self.best, self.bad_evals, self.wall_s = loop["best"], loop.get("bad_evals", 0), loop.get("wall_s", 0.0)
        self.stopped, self.metrics = loop.get("stopped", False), json.loads(loop.get("metrics", "{}"))
        self.sums, self.n = dict(loop.get("sums", {})), loop.get("n", 0)
        set_rng_state(state["rng"])
        if self.is_main and self.progress:
            print(f"resumed {path} at step {self.step}" + (f" with changes: {'; '.join(changed)}" if changed else ""))
        return True

    # -- the loop ----------------------------------------------------------------------
    def advance(self) -> dict[str, float]:
        """One optimiser step on the batch of ``self.step``; a non-finite loss term stops here."""
        logs = self.trainer.train_step(self.trainer.batch_for_step(self.step))
        self.step += 1
        bad = [f"{k}={v}" for k, v in logs.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteError(f"step {self.step}: loss term(s) {', '.join(bad)} went non-finite; training "
                                 f"stopped and the last good checkpoint is kept (lower the learning rate?)")
        return logs

    def run(self) -> list[dict]:
        """Train from ``self.step`` to ``steps`` (or an early stop); returns the history."""
        bar = tqdm(range(self.step, self.steps), initial=self.step, total=self.steps, desc=self.desc,
                   disable=not (self.is_main and self.progress))
        start = time.time() - self.wall_s
        for _ in bar:
            if self.stopped:
                break
            self.logs = logs = self.advance()
            self.sums, self.n = {k: self.sums.get(k, 0.0) + v for k, v in logs.items()}, self.n + 1
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            self.wall_s = time.time() - start
            if self.writer is not None and self.step % self.log_every == 0:
                for k, v in logs.items():
                    self.writer.add_scalar(f"train/{k}", v, self.step)
            end = self.step == self.steps
            if end or (self.eval_every and self.step % self.eval_every == 0):
                self._evaluate({k: v / self.n for k, v in self.sums.items()})
                self.sums, self.n = {}, 0
            if self.image_every and (end or self.stopped or self.step % self.image_every == 0):
                self._sample()
            if end or self.stopped or self.step % self.ckpt_every == 0:
                self.save("last.pt")
        bar.close()
        self.save("final.pt")
        if self.is_main and self.out is not None:
            save_json(json_safe(self.metrics), self.out / "metrics.json")
        if self.writer is not None:
            self.writer.flush()
        return self.history

    def _evaluate(self, train: dict[str, float]) -> None:
        with _rng_untouched():      # so that where a run evaluates does not change how it trains
            self.metrics = self.trainer.evaluate()
        scalars = {k: float(v) for k, v in self.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.history.append(json_safe({"step": self.step, "wall_s": self.wall_s,
                                       **{f"train_{k}": v for k, v in train.items()},
                                       **{f"val_{k}": v for k, v in scalars.items()}}))
        if self.writer is not None:
            for k, v in scalars.items():
                if math.isfinite(v):
                    self.writer.add_scalar(f"val/{k}", v, self.step)
        loss = scalars.get("loss", math.nan)
        if loss < self.best - self.min_delta:
            self.best, self.bad_evals = loss, 0
            self.save("best.pt")
        elif not math.isnan(loss):
            self.bad_evals += 1
            self.stopped = bool(self.patience) and self.bad_evals >= self.patience

    def _sample(self) -> None:
        if not self.is_main or self.out is None:
            return
        with _rng_untouched():
            grid = self.trainer.sample()
        if grid is not None:
            self.writer.add_image("samples", (grid.clamp(-1, 1) + 1) / 2, self.step)
            save_image(grid, self.out / f"samples_{self.step:06d}.png", scale=2)
