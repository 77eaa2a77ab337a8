"""Reconstruction metrics: MSE, SSIM, LPIPS, the ToyFaces perceptual distance, attribute agreement.

Images are (B, 3, H, W) tensors in [-1, 1], the package-wide convention.

* :func:`mse` -- per-image mean squared error **on the [-1, 1] scale** (as pSp's
  ``calc_losses_on_images.py`` and the paper's Table 1 compute it; on a [0, 1] scale
  it would be 4x smaller).
* :func:`ssim` -- our own SSIM (Wang et al. 2004): images mapped to [0, 1] (data range
  1), an 11x11 Gaussian window with sigma 1.5, ``C1 = 0.01^2``, ``C2 = 0.03^2``, "valid"
  filtering (no padding), averaged over channels and positions per image.
* LPIPS (AlexNet, via :class:`stytr.losses.LPIPSLoss`) when its weights are present
  (:func:`stytr.losses.lpips_available`); otherwise it is skipped.
* The ToyFaces perceptual distance (:class:`stytr.toy.PredictorFeatureDistance`) and the
  per-attribute agreement of the ToyFaces attribute predictor's decisions (logit > 0)
  on input vs reconstruction, when a predictor is given.

:func:`evaluate_reconstruction` runs an inversion model over a set of images and returns
the means and the per-image arrays.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from ..attributes import CELEBA_ATTRIBUTES, attribute_index

__all__ = ["mse", "ssim", "gaussian_window", "lpips_distance", "attribute_decisions", "evaluate_reconstruction",
           "summarize"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two image batches of the same shape (B, C, H, W), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error (B,) of images in [-1, 1] (computed on that scale)."""
    _check_pair(a, b)
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float32,
                    device=None) -> torch.Tensor:
    """The normalised 1-D Gaussian (size,) used separably by :func:`ssim`."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable "valid" Gaussian filter, channel by channel."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
         value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Per-image SSIM (B,): ``value_range`` (default [-1, 1]) is mapped to [0, 1] first
    (data range 1); Gaussian window ``window`` x ``window`` with ``sigma``; valid filtering;
    mean over channels and positions. Identical images give exactly 1."""
    _check_pair(a, b)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM with an {window}x{window} window needs images of at least that size, "
                         f"got {tuple(a.shape[-2:])}")
    lo, hi = value_range
    x = (a.double() - lo) / (hi - lo)
    y = (b.double() - lo) / (hi - lo)
    g = gaussian_window(window, sigma, dtype=x.dtype, device=x.device)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x**2
    syy = _filter(y * y, g) - mu_y**2
    sxy = _filter(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1).to(a.dtype if a.is_floating_point() else torch.float32)


def lpips_distance(lpips_module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS (B,) from a :class:`stytr.losses.LPIPSLoss` (whose ``forward`` averages)."""
    inner = getattr(lpips_module, "model", None)
    if inner is not None:
        return inner(a, b, normalize=False).flatten()
    return torch.stack([lpips_module(a[i:i + 1], b[i:i + 1]).reshape(()) for i in range(a.shape[0])])


def attribute_decisions(predictor, images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """Boolean (B, len(indices)): the predictor's decision (logit > 0) for each attribute."""
    logits = predictor(images)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits[:, list(indices)] > 0


@torch.no_grad()
def average_face_mse(model, images: torch.Tensor) -> float:
    """MSE of the trivial inversion -- the image of the model's average latent -- against ``images``:
    the baseline an inversion encoder must beat (notebook 01 asks for at most half of it)."""
    avg = model.decode(model.latent_avg[None], randomize_noise=False)
    if avg.shape[-2:] != images.shape[-2:]:
        avg = F.interpolate(avg, size=images.shape[-2:], mode="area")
    return ((images - avg) ** 2).mean().item()


def _batches(images, batch: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch):
            yield images[start:start + batch]
    else:
        for item in images:
            yield item[0] if isinstance(item, (tuple, list)) else item


def judged_attributes(predictor, attributes=None) -> list[str]:
    """The attributes to score: ``attributes``, else those the judge's domain models (``predictor.modelled``,
    set by :meth:`stytr.domains.Domain.load`), else every attribute the judge names."""
    if attributes is not None:
        return list(attributes)
    return list(getattr(predictor, "modelled", None) or getattr(predictor, "attribute_names", CELEBA_ATTRIBUTES))


@torch.no_grad()
def evaluate_reconstruction(model, images, batch: int = 16, predictor=None, lpips: bool | str | Any = "auto",
                            attributes: Sequence[int | str] | None = None, device=None,
                            randomize_noise: bool = False) -> dict[str, Any]:
    """Reconstruct ``images`` with an inversion ``model`` and score the reconstructions.

    ``images``: a (N, 3, H, W) tensor in [-1, 1] (split into chunks of ``batch``) or an
    iterable of batches (tensors or tuples whose first item is the images). Each batch is
    reconstructed with ``model(x, randomize_noise=randomize_noise)`` (fixed noise by
    default, so the result is deterministic); a reconstruction whose size differs from the
    input's is resized to it (area interpolation).

    ``lpips``: ``"auto"`` uses LPIPS when :func:`stytr.losses.lpips_available`, ``True``
    requires it, ``False`` skips it, or pass a built :class:`~stytr.losses.LPIPSLoss`.
    ``predictor``: an attribute predictor (images -> (B, 40) logits in CelebA order, e.g.
    ``Domain.load("predictor")``); it adds ``predictor_distance`` (the ToyFaces
    perceptual distance of its feature maps, when it has ``features``) and the agreement of
    its decisions on input and reconstruction for ``attributes`` (default: :func:`judged_attributes`).

    Returns ``{"n", "mse", "ssim", "lpips" (or None), "predictor_distance" (with a predictor),
    "attribute_agreement": {name: fraction} and "attribute_agreement_mean" (with a predictor),
    "per_image": {metric: (N,) ndarray}}``; for agreement ``per_image["attribute_agreement"]``
    is an (N, A) boolean array.
    """
    from ..losses import LPIPSLoss, lpips_available
    from ..toy import PredictorFeatureDistance

    was_training = getattr(model, "training", False)
    model.eval()
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if lpips == "auto":
        lpips = LPIPSLoss() if lpips_available() else None
    elif lpips is True:
        lpips = LPIPSLoss()
    elif lpips is False:
        lpips = None
    if lpips is not None:
        lpips = lpips.to(device).eval()
    distance = None
    names: list[str] = []
    indices: list[int] = []
    if predictor is not None:
        predictor = predictor.to(device).eval() if hasattr(predictor, "to") else predictor
        if hasattr(predictor, "features"):
            distance = PredictorFeatureDistance(predictor)
        attrs = judged_attributes(predictor, attributes)
        names_all = list(getattr(predictor, "attribute_names", CELEBA_ATTRIBUTES))
        indices = [attribute_index(a, names_all) for a in attrs]
        names = [names_all[i] for i in indices]

    per: dict[str, list] = {"mse": [], "ssim": []}
    if lpips is not None:
        per["lpips"] = []
    if distance is not None:
        per["predictor_distance"] = []
    if predictor is not None:
        per["attribute_agreement"] = []
    try:
        for x in _batches(images, batch):
            x = x.to(device).float()
            recon = model(x, randomize_noise=randomize_noise)
            if isinstance(recon, (tuple, list)):
                recon = recon[0]
            if recon.shape[-2:] != x.shape[-2:]:
                recon = F.interpolate(recon, size=x.shape[-2:], mode="area")
            per["mse"].append(mse(recon, x).cpu())
            per["ssim"].append(ssim(recon, x).cpu())
            if lpips is not None:
                per["lpips"].append(lpips_distance(lpips, recon, x).float().cpu())
            if distance is not None:
                per["predictor_distance"].append(distance(recon, x).cpu())
            if predictor is not None:
                same = attribute_decisions(predictor, x, indices) == attribute_decisions(predictor, recon, indices)
                per["attribute_agreement"].append(same.cpu())
    finally:
        model.train(was_training)

    per_image = {k: torch.cat(v).numpy() for k, v in per.items() if v}
    if "mse" not in per_image:
        raise ValueError("no images to evaluate")
    out: dict[str, Any] = {"n": int(per_image["mse"].shape[0]), "mse": float(per_image["mse"].mean()),
                           "ssim": float(per_image["ssim"].mean()),
                           "lpips": float(per_image["lpips"].mean()) if "lpips" in per_image else None}
    if "predictor_distance" in per_image:
        out["predictor_distance"] = float(per_image["predictor_distance"].mean())
    if "attribute_agreement" in per_image:
        agree = per_image["attribute_agreement"].astype(bool)
        per_image["attribute_agreement"] = agree
        out["attribute_agreement"] = {n: float(agree[:, k].mean()) for k, n in enumerate(names)}
        out["attribute_agreement_mean"] = float(agree.mean())
    out["per_image"] = per_image
    return out


def summarize(results: dict[str, Any]) -> str:
    """One line: ``n=.. MSE .. SSIM .. LPIPS .. [feature dist ..] [attr agreement ..]``."""
    parts = [f"n={results['n']}", f"MSE {results['mse']:.4f}", f"SSIM {results['ssim']:.4f}"]
    parts.append("LPIPS -" if results.get("lpips") is None else f"LPIPS {results['lpips']:.4f}")
    if "predictor_distance" in results:
        parts.append(f"feature dist {results['predictor_distance']:.4f}")
    if "attribute_agreement_mean" in results:
        parts.append(f"attr agreement {results['attribute_agreement_mean']:.3f}")
    return "  ".join(parts)

