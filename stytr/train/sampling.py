"""What makes a run reproducible: global RNG state, seeded generators, a step-indexed sampler.

Every batch is a pure function of ``(seed, step, rank)``: :class:`StepSampler` gives the
indices of a step (epoch ``e`` is a permutation of the data seeded by ``(seed, e)``) and a
generator for the step's other randomness (flips, noise, pairings, latent codes). A resumed
run therefore needs no sampler state: it asks for step ``k`` and gets the batch that the
uninterrupted run saw. Dropout and the generator's noise use the global RNG, which the
training loop saves and restores with :func:`rng_state` / :func:`set_rng_state`.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["StepSampler", "seeded", "split_indices", "rng_state", "set_rng_state"]


def seeded(*key: int) -> torch.Generator:
    """A torch generator whose state depends on the integers in ``key`` only."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split into (train, held-out) indices; the held-out part has at least one
    sample when ``val_fraction > 0`` and ``n >= 2``. The one train/val split of every trainer."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = 0 if val_fraction == 0 or n < 2 else max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


class StepSampler:
    """Indices of the global batch of a step, and this rank's share of it.

    ``batch`` is the global batch; under DDP rank ``r`` of ``world`` takes every ``world``-th
    index of it, so the ranks of one step together see exactly what a single process would.
    ``drop_last=False`` keeps a smaller last batch in each epoch."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1, drop_last: bool = True):
        if batch % world:
            raise ValueError(f"batch {batch} does not split over {world} processes")
        if n < (batch if drop_last else 1):
            raise ValueError(f"{n} training samples, fewer than one batch ({batch})")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.steps_per_epoch = n // batch if drop_last else -(-n // batch)
        self._epoch: tuple[int, torch.Tensor] = (-1, torch.empty(0, dtype=torch.long))

    def global_indices(self, step: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.steps_per_epoch)
        if self._epoch[0] != epoch:
            self._epoch = (epoch, torch.randperm(self.n, generator=seeded(self.seed, 0, epoch)))
        return self._epoch[1][offset * self.batch:(offset + 1) * self.batch]

    def indices(self, step: int) -> torch.Tensor:
        return self.share(self.global_indices(step))

    def generator(self, step: int, stream: int = 1) -> torch.Generator:
        """Randomness of one step, the same on every rank: draw it for the global batch, then :meth:`share`."""
        return seeded(self.seed, stream, step)

    def share(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.rank::self.world]


def rng_state() -> dict[str, Any]:
    """Global RNG state (torch CPU, CUDA when present, Python, numpy) in a weights_only-loadable form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
