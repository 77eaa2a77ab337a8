"""InterFaceGAN baseline (Shen et al.): linear attribute boundaries in W.

For every attribute a hyperplane ``n·w + b = 0`` separates codes with and without
it. The original fits linear SVMs; we fit L2-regularised logistic regression in
torch (full-batch L-BFGS in float64, no scikit-learn), which gives the same kind
of boundary. Codes are the mapping network's W, or W+ codes reduced to one vector
by averaging their rows (for codes from the mapping network all rows are equal,
so the mean is that W). An edit moves every W+ row by ``alpha * n``; ``n`` is the
unit normal pointing to the side where the attribute is present, so a positive
``alpha`` adds the attribute. The conditional variant removes from ``n`` its
components along the normals of other attributes (projection onto the
orthogonal complement of their span), so that — to first order — those
attributes' scores stay put.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from ..attributes import CELEBA_ATTRIBUTES, attribute_index, attribute_indices, prepare_labels
from ..checkpoints import CheckpointError, load, save_atomic

__all__ = ["InterFaceGAN", "fit_logistic", "to_w"]

FORMAT = "stytr-interfacegan"


def to_w(codes: torch.Tensor) -> torch.Tensor:
    """(N, D) W codes as they are, (N, n_latent, D) W+ codes averaged over their rows."""
    if codes.ndim == 3:
        return codes.mean(1)
    if codes.ndim != 2:
        raise ValueError(f"expected W (N, D) or W+ (N, n_latent, D) codes, got {tuple(codes.shape)}")
    return codes


def fit_logistic(x: torch.Tensor, y: torch.Tensor, known: torch.Tensor | None = None, l2: float = 1e-3,
                 max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression for several independent binary targets at once.

    ``x`` (N, D), ``y`` (N, A) in {0, 1}, ``known`` (N, A) bool (None = all). For each
    target ``a`` minimises ``mean_known BCE(x·W_a + b_a, y_a) + l2/2 |W_a|^2``; the
    targets do not interact, so one L-BFGS run over all of them finds each one's
    optimum. Returns ``(W (A, D), b (A,))`` in float64.
    """
    x, y = x.double(), y.double()
    known = torch.ones_like(y, dtype=torch.bool) if known is None else known.bool()
    k = known.double()
    count = k.sum(0).clamp_min(1.0)
    # Centre and scale the inputs so the problem is well conditioned; undo it at the end.
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    xs = (x - mu) / sd
    W = torch.zeros(y.shape[1], x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = xs @ W.T + b
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        # The penalty acts on the weights of the original (unscaled) inputs, W / sd.
        loss = ((bce * k).sum(0) / count).sum() + 0.5 * l2 * ((W / sd) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    W_orig = (W / sd).detach()
    b_orig = (b - (W * (mu / sd)).sum(1)).detach()
    return W_orig, b_orig


class InterFaceGAN:
    """Per-attribute unit normals ``normals`` (A, D) and offsets (signed distance = n·w + offset)."""

    def __init__(self, normals: torch.Tensor, offsets: torch.Tensor, fitted: torch.Tensor | None = None,
                 attribute_names: Sequence[str] = CELEBA_ATTRIBUTES):
        if normals.ndim != 2 or offsets.shape != normals.shape[:1] or len(attribute_names) != normals.shape[0]:
            raise ValueError(f"normals (A, D), offsets (A,) and A names expected; got {tuple(normals.shape)}, "
                             f"{tuple(offsets.shape)}, {len(attribute_names)} names")
        self.normals = normals.float()
        self.offsets = offsets.float()
        self.fitted = torch.ones(normals.shape[0], dtype=torch.bool) if fitted is None else fitted.bool()
        self.attribute_names = list(attribute_names)

    @property
    def dim(self) -> int:
        return self.normals.shape[1]

    @classmethod
    def fit(cls, codes: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
            attributes: Iterable[int | str] | None = None, l2: float = 1e-3, max_iter: int = 200,
            attribute_names: Sequence[str] = CELEBA_ATTRIBUTES) -> "InterFaceGAN":
        """Fit boundaries from codes (N, D) or (N, n_latent, D) and labels (N, A) (0/1 or -1/1).

        ``mask`` ((A,) or (N, A)) marks known labels; ``attributes`` limits the fit
        to some attributes (the others get zero normals and ``fitted`` False).
        Attributes whose known labels are all equal cannot be fitted and are
        marked unfitted too.
        """

        x = to_w(torch.as_tensor(codes)).detach().cpu()
        y, known = prepare_labels(torch.as_tensor(labels).cpu(), None if mask is None else torch.as_tensor(mask).cpu())
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} codes but {y.shape[0]} label rows")
        A = y.shape[1]
        names = list(attribute_names) if len(attribute_names) == A else [f"attribute_{i}" for i in range(A)]
        chosen = torch.zeros(A, dtype=torch.bool)
        chosen[attribute_indices(range(A) if attributes is None else attributes, names)] = True
        pos = (y * known).sum(0)
        neg = ((1 - y) * known).sum(0)
        fitted = chosen & (pos > 0) & (neg > 0)
        normals = torch.zeros(A, x.shape[1])
        offsets = torch.zeros(A)
        idx = torch.nonzero(fitted).flatten()
        if len(idx):
            W, b = fit_logistic(x, y[:, idx], known[:, idx], l2=l2, max_iter=max_iter)
            norm = W.norm(dim=1, keepdim=True).clamp_min(1e-12)
            normals[idx] = (W / norm).float()
            offsets[idx] = (b / norm.squeeze(1)).float()
        return cls(normals, offsets, fitted, names)

    # -- directions and edits -------------------------------------------------------
    def _index(self, attribute) -> int:
        i = attribute_index(attribute, self.attribute_names)
        if not self.fitted[i]:
            raise ValueError(f"no boundary was fitted for {self.attribute_names[i]!r}")
        return i

    def direction(self, attribute: int | str, conditioned_on: Iterable[int | str] | None = None) -> torch.Tensor:
        """Unit edit direction (D,) for ``attribute``; with ``conditioned_on`` the part orthogonal to
        those attributes' normals (renormalised)."""
        n = self.normals[self._index(attribute)].double()
        if conditioned_on:
            others = [self._index(a) for a in ([conditioned_on] if isinstance(conditioned_on, (str, int))
                                               else conditioned_on)]
            B = self.normals[others].double().T                          # (D, k)
            n = n - B @ torch.linalg.lstsq(B, n.unsqueeze(1)).solution.squeeze(1)
            if n.norm() < 1e-6:
                raise ValueError("the attribute's normal lies in the span of the conditioning normals")
        return (n / n.norm()).float()

    def score(self, codes: torch.Tensor, attribute: int | str) -> torch.Tensor:
        """Signed distance of codes (N, D) / (N, n_latent, D) to the attribute's boundary."""
        i = self._index(attribute)
        return to_w(codes) @ self.normals[i].to(codes) + self.offsets[i].to(codes)

    def edit(self, w: torch.Tensor, attribute: int | str, alpha: float | torch.Tensor,
             conditioned_on: Iterable[int | str] | None = None) -> torch.Tensor:
        """``w + alpha * n`` on every W+ row (w: (B, n_latent, D) or (B, D)); alpha may be (B,)."""
        n = self.direction(attribute, conditioned_on).to(w)
        alpha = torch.as_tensor(alpha, dtype=w.dtype, device=w.device)
        if alpha.ndim == 1:
            alpha = alpha.view(-1, *([1] * (w.ndim - 1)))
        return w + alpha * n

    # -- persistence ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": FORMAT, "normals": self.normals, "offsets": self.offsets, "fitted": self.fitted,
                "attribute_names": list(self.attribute_names)}

    def save(self, path: str | os.PathLike) -> Path:
        return save_atomic(self.state_dict(), path)

    @classmethod
    def from_state_dict(cls, state: dict) -> "InterFaceGAN":
        if state.get("format") != FORMAT:
            raise CheckpointError(f"not an InterFaceGAN file (format {state.get('format')!r})")
        return cls(state["normals"], state["offsets"], state["fitted"], state["attribute_names"])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InterFaceGAN":
        return cls.from_state_dict(load(path))
