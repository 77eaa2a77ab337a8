"""Pieces every trainer shares: resumable checkpoints, RNG state, logging, EMA."""
from __future__ import annotations

import json

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import load, save_atomic


def rng_state() -> dict[str, Any]:
    """Global RNG state (torch CPU, CUDA when present, Python, numpy) in a weights_only-loadable form."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2], "numpy": _numpy_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(out: str | Path) -> Path | None:
    path = Path(out) / "last.pt"
    return path if path.exists() else None


def save_training_state(out: str | Path, name: str = "last.pt", **state) -> Path:
    """Atomically write ``state`` (+ RNG state) to ``out/name``."""
    return save_atomic({**state, "rng": rng_state()}, Path(out) / name)


def load_training_state(path: str | Path) -> dict[str, Any]:
    state = load(path)
    if "rng" in state:
        set_rng_state(state["rng"])
    return state


def restore(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Put a trainer's model, optimiser and RNGs back to a checkpoint; returns the whole state."""
    state = load_training_state(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state


def resume_latest(out: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  path: str | Path | None = None, verbose: bool = True) -> tuple[dict[str, Any], list] | None:
    """Restore ``path`` (default ``out/last.pt``) into a trainer's model and optimiser.
    Returns ``(state, history)`` with the JSON history decoded, or None when there is nothing to resume."""
    path = path or latest_checkpoint(out)
    if path is None:
        return None
    state = restore(path, model, optimizer)
    if verbose:
        print(f"resumed {path} at step {state['step']}")
    return state, json.loads(state.get("history", "[]"))


@torch.no_grad()
def ema_update(target: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    for pt, ps in zip(target.parameters(), source.parameters()):
        pt.lerp_(ps, 1 - decay)
    for bt, bs in zip(target.buffers(), source.buffers()):
        bt.copy_(bs)


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).eval().requires_grad_(False)


def summary_writer(out: str | Path, enabled: bool = True):
    """A TensorBoard writer in ``out/tb`` (None when disabled or tensorboard is missing)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency, but a trainer should not die for logging
        return None
    return SummaryWriter(str(Path(out) / "tb"))
