"""InterFaceGAN's re-scoring analysis of attribute edits (supplementary Figure 1).

Edit held-out codes along one attribute at a time, let an image attribute classifier
score the original and the edited images, and tabulate how every scored attribute
moved. A disentangled editor moves the edited attribute a lot (large diagonal) and the
others little (small off-diagonal).

Definition used here (:func:`rescoring_matrix`), for N codes ``w_n``, edited attributes
``a_1..a_K``, the classifier's probabilities ``p_j(x) = sigmoid(logit_j(x))``:

* **Direction of each edit** (``direction="flip"``, the default): every image is edited
  toward the *opposite* of the classifier's current decision for the edited attribute
  ``a_i``: toward presence (``target=1``, sign ``s_in = +1``) where ``p_{a_i}(x_n) < 0.5``,
  toward absence (``target=0``, ``s_in = -1``) otherwise, so every image has room to
  change. ``direction="positive"`` / ``"negative"`` edit every image toward presence /
  absence (``s = +1`` / ``-1``), closer to the paper's wording "edit toward the attribute".
* **Matrix** ``M[i, j] = mean_n  s_in * (p_{a_j}(edit_i(x_n)) - p_{a_j}(x_n))``: row ``i`` is the
  edited attribute, column ``j`` the scored one; the change is signed by the direction of
  edit ``i`` (for every ``j``), so the diagonal is positive for an edit that works, and an
  off-diagonal entry reads "moving ``a_i`` toward presence moves ``a_j`` by this much".
  ``score="logit"`` uses logits instead of probabilities.

The paper's caption says "the top row lists edited attributes" (columns = edited) and calls the
numbers "classification logits changes"; the printed values (diagonal 0.45-0.55, all within
[-1, 1]) look like probability changes. :data:`PAPER_FIGURE1` keeps the matrices as
printed; ``PAPER_FIGURE1[name].T`` is in our orientation (rows = edited).
:func:`plot_rescoring` draws the paper's layout (edited attributes along the top).

**The predictor interface.** Any callable ``images -> logits`` of shape (B, 40) over CelebA's
attributes in ``stytr.attributes.CELEBA_ATTRIBUTES`` order (a tuple whose first item is the
logits also works), taking images in [-1, 1] at the generator's resolution, or at
``image_size`` when given (images are then resized with antialiased bilinear
interpolation). On ToyFaces use :func:`stytr.toy.load_attribute_predictor`. At full
scale supply your own CelebA attribute classifier (e.g. a ResNet-50 trained on CelebA's
40 labels at 224 or 256 px) wrapped to this interface -- stytr ships none.

The paper's five attributes (Smile, Bangs, Gender, Glass, Age) are CelebA's
``Smiling, Bangs, Male, Eyeglasses, Young`` (:data:`PAPER_ATTRIBUTES`); note that Age is
scored as ``Young``, so "toward presence" means younger.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..attributes import CELEBA_ATTRIBUTES, attribute_index

__all__ = ["PAPER_ATTRIBUTES", "PAPER_ATTRIBUTE_LABELS", "PAPER_FIGURE1", "rescoring_matrix", "disentanglement_score",
           "plot_rescoring", "predict_probabilities"]

#: CelebA names of the paper's Smile, Bangs, Gender, Glass, Age.
PAPER_ATTRIBUTES = ("Smiling", "Bangs", "Male", "Eyeglasses", "Young")
PAPER_ATTRIBUTE_LABELS = {"Smiling": "Smile", "Bangs": "Bangs", "Male": "Gender", "Eyeglasses": "Glass",
                          "Young": "Age"}

#: Supplementary Figure 1 as printed (rows and columns Smile, Bangs, Gender, Glass, Age; by the
#: caption the columns are the edited attributes -- transpose for rows = edited).
PAPER_FIGURE1 = {
    "Ours-1": np.array([[0.45, -0.02, 0.00, -0.05, -0.03],
                        [0.00, 0.52, 0.00, 0.00, -0.01],
                        [-0.03, -0.03, 0.54, 0.02, 0.03],
                        [0.00, 0.00, 0.01, 0.52, 0.01],
                        [-0.05, -0.04, 0.06, 0.13, 0.45]]),
    "Ours-2": np.array([[0.45, -0.01, 0.00, -0.03, -0.02],
                        [0.00, 0.52, 0.00, 0.00, 0.00],
                        [-0.01, -0.02, 0.55, 0.02, 0.03],
                        [0.00, 0.00, 0.01, 0.52, 0.01],
                        [-0.02, -0.03, 0.04, 0.12, 0.45]]),
}

_DIRECTIONS = ("flip", "positive", "negative")


def predict_probabilities(predictor, images: torch.Tensor, image_size: int | None = None,
                          score: str = "prob") -> torch.Tensor:
    """(B, 40) probabilities (``score="prob"``) or logits (``"logit"``) of ``predictor`` on images in [-1, 1]."""
    if image_size is not None and images.shape[-1] != image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False,
                               antialias=True)
    with torch.no_grad():
        logits = predictor(images)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if logits.ndim != 2:
        raise ValueError(f"the predictor must return (B, n_attributes) logits, got shape {tuple(logits.shape)}")
    logits = logits.float()
    if score == "prob":
        return torch.sigmoid(logits)
    if score == "logit":
        return logits
    raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")


def _render(G, wplus: torch.Tensor, noise) -> torch.Tensor:
    with torch.no_grad():
        return G.synthesis(wplus, noise=noise, randomize_noise=False)


def rescoring_matrix(G, wplus: torch.Tensor, editor, attributes: Sequence[int | str], strength, predictor,
                     direction: str = "flip", score: str = "prob", batch: int = 16, noise=None,
                     image_size: int | None = None,
                     attribute_names: Sequence[str] = CELEBA_ATTRIBUTES) -> tuple[np.ndarray, dict[str, Any]]:
    """Re-scoring matrix ``M`` (K, K) of ``editor`` on the codes ``wplus`` (N, n_latent, style_dim).

    ``M[i, j] = mean_n s_in * (p_j(edited_i) - p_j(original))`` with ``s_in = +1`` when image n
    is edited toward presence of attribute i and ``-1`` toward absence (see the module
    docstring for ``direction`` and ``score``). ``editor`` has the shared call shape
    ``editor.edit_images(G, wplus, attribute, strength, target=0|1, noise=..., randomize_noise=False)``
    (:mod:`stytr.editing`); images are rendered with fixed noise (``noise``, or the
    generator's stored noise), so the originals and the edits differ only by the edit.
    ``strength``: one number, or ``{attribute name: strength}`` for every edited attribute.
    ``attributes`` are names or indices into ``attribute_names`` (the predictor's columns); the
    editor receives the attribute's *name*.

    Returns ``(M, details)`` with ``details``: ``attributes`` (names), ``indices``,
    ``p_original`` (N, K), ``p_edited`` (K, N, K; ``[i]`` after editing attribute i),
    ``sign`` (K, N), ``flip_rate`` (K,: fraction of images whose decision on the edited
    attribute crossed 0.5 in the edit's direction), ``disentanglement`` (see
    :func:`disentanglement_score`), and the settings.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    indices = [attribute_index(a, attribute_names) for a in attributes]
    names = [attribute_names[i] for i in indices]
    if len(set(indices)) != len(indices):
        raise ValueError(f"attributes repeat: {names}")
    wplus = wplus.detach()
    n, k = wplus.shape[0], len(indices)
    chunks = [slice(s, min(s + batch, n)) for s in range(0, n, batch)]

    def logits_of(images):
        return predict_probabilities(predictor, images, image_size, "logit")[:, indices].cpu()

    def to_score(logits):
        return torch.sigmoid(logits) if score == "prob" else logits

    if isinstance(strength, Mapping):
        missing = [a for a in names if a not in strength]
        if missing:
            raise ValueError(f"strength has no value for {missing}")
        strengths = [float(strength[a]) for a in names]
    else:
        strengths = [float(strength)] * k
    if score not in ("prob", "logit"):
        raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")
    logit_orig = torch.cat([logits_of(_render(G, wplus[c], noise)) for c in chunks])
    p_orig = to_score(logit_orig)
    p_edit = torch.empty(k, n, k)
    signs = torch.empty(k, n)
    for i in range(k):
        if direction == "flip":
            target = (logit_orig[:, i] < 0).long()     # predicted absent -> edit toward presence
        else:
            target = torch.full((n,), 1 if direction == "positive" else 0, dtype=torch.long)
        signs[i] = 2 * target.float() - 1
        for c in chunks:
            idx = torch.arange(n)[c]
            for t in (0, 1):
                sel = idx[target[idx] == t]
                if len(sel) == 0:
                    continue
                edited = editor.edit_images(G, wplus[sel], names[i], strengths[i], target=t, noise=noise,
                                            randomize_noise=False)
                p_edit[i, sel] = to_score(logits_of(edited.detach()))
    delta = p_edit - p_orig.unsqueeze(0)               # (K, N, K): edit i, image n, scored j
    matrix = (signs.unsqueeze(-1) * delta).mean(1).numpy().astype(np.float64)
    own = p_edit[torch.arange(k), :, torch.arange(k)]  # (K, N): the edited attribute's own score
    crossed = (own >= (0.5 if score == "prob" else 0.0)) == (signs > 0)
    details = {"attributes": names, "indices": indices, "p_original": p_orig.numpy(), "p_edited": p_edit.numpy(),
               "sign": signs.numpy(), "flip_rate": crossed.float().mean(1).numpy(),
               "disentanglement": disentanglement_score(matrix), "strength": dict(zip(names, strengths)), "direction": direction,
               "score": score, "editor": getattr(editor, "name", type(editor).__name__), "n": n}
    return matrix, details


def disentanglement_score(matrix) -> float:
    """``mean |off-diagonal| / mean diagonal`` of a square re-scoring matrix (lower is better;
    the paper's Figure 1 gives 0.052 for Ours-1 and 0.037 for Ours-2)."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"expected a square matrix of size >= 2, got shape {m.shape}")
    off = ~np.eye(m.shape[0], dtype=bool)
    return float(np.abs(m[off]).mean() / np.diag(m).mean())


def off_diagonal(matrix) -> float:
    """Mean absolute off-diagonal entry: how much an edit moves the attributes it should leave alone."""
    m = np.asarray(matrix, dtype=float)
    return float(np.abs(m[~np.eye(len(m), dtype=bool)]).mean())


def _label(name: str) -> str:
    return PAPER_ATTRIBUTE_LABELS.get(name, name.replace("_", " "))


def plot_rescoring(matrices: Mapping[str, Any], attributes: Sequence[str], path=None,
                   edited_on: str = "columns", labels: Sequence[str] | None = None, vmax: float | None = None,
                   title: str | None = None):
    """Annotated heat maps of re-scoring matrices, one panel per method, in the paper's layout.

    ``matrices``: ``{method: M}`` with ``M[i, j]`` as returned by :func:`rescoring_matrix`
    (row i = edited attribute). ``edited_on="columns"`` (default) draws the edited attributes
    along the top, as the paper's Figure 1 caption describes (the panel shows ``M.T``);
    ``"rows"`` draws ``M`` as is. Two decimals per cell, the diagonal in bold, a shared
    symmetric colour scale, panels captioned "(a) method", "(b) ...". ``labels`` default to the
    paper's short names (Smile, Bangs, Gender, Glass, Age) for its attributes. Saves to
    ``path`` when given (use a name containing "rescoring" under ``figures/``); returns the figure.
    """
    import matplotlib.pyplot as plt

    if edited_on not in ("columns", "rows"):
        raise ValueError(f"edited_on must be 'columns' or 'rows', got {edited_on!r}")
    names = list(labels) if labels is not None else [_label(a) for a in attributes]
    mats = {m: np.asarray(v, dtype=float) for m, v in matrices.items()}
    for method, m in mats.items():
        if m.shape != (len(names), len(names)):
            raise ValueError(f"{method}: matrix of shape {m.shape} does not fit {len(names)} attributes")
    scale = vmax if vmax is not None else max(max(float(np.abs(m).max()) for m in mats.values()), 1e-6)
    k = len(names)
    panel = 0.62 * k + 1.0
    fig, axes = plt.subplots(1, len(mats), figsize=(panel * len(mats) + 0.8, panel + 0.6), squeeze=False)
    image = None
    for p, (ax, (method, m)) in enumerate(zip(axes[0], mats.items())):
        shown = m.T if edited_on == "columns" else m
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_xticks(range(k), names, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.xaxis.tick_top()
        ax.tick_params(length=0)
        for r in range(k):
            for c in range(k):
                value = shown[r, c]
                colour = "white" if abs(value) > 0.6 * scale else "black"
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour,
                        fontweight="bold" if r == c else "normal")
        ax.set_xlabel(f"({chr(ord('a') + p)}) {method}", fontsize=9)
        if p == 0:
            axis = "edited (top) / scored (left)" if edited_on == "columns" else "edited (left) / scored (top)"
            ax.set_ylabel(axis, fontsize=7)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.025, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130, bbox_inches="tight")
    return fig
