"""Does an edit do what it says? Flip and keep rates judged by an image attribute predictor.

For held-out images and one edited attribute ``a``:

* **flip rate**: the fraction of images whose predicted ``a`` after the edit equals the
  target (by default the opposite of the prediction on the unedited image, so every
  image has to change);
* **keep rate**: the fraction of (image, other attribute) pairs whose prediction is the
  same before and after the edit, over the ``attributes`` scored except those that the
  edit may legitimately change (``entailed``; by default the judge's domain's, e.g. ToyFaces'
  :data:`stytr.toy.render.ENTAILED`, e.g. a face made female loses its goatee and may
  gain lipstick); ``keep_rate_all`` counts every other attribute, and
  ``keep_per_attribute`` splits it by attribute.

The unedited image is the generator's rendering of the same code with the same noise, so
the two differ only by the edit (inversion error does not count as an attribute change).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..attributes import CELEBA_ATTRIBUTES, attribute_index
from .metrics import attribute_decisions, judged_attributes

__all__ = ["edit_rates", "label_edit_rates", "reference_edit_rates"]


def _scored(predictor, attributes) -> list[str]:
    return [CELEBA_ATTRIBUTES[attribute_index(a, CELEBA_ATTRIBUTES)] for a in judged_attributes(predictor, attributes)]


def _entailed(name: str, predictor, attributes, entailed) -> set[str]:
    if entailed is not None:
        return set(entailed)
    if attributes is None:             # the judge's domain says what an edit of ``name`` may change
        return set(getattr(predictor, "entailed", {}).get(name, ()))
    return set()


@torch.no_grad()
def _decide(predictor, images: torch.Tensor, names: Sequence[str], batch: int = 64) -> torch.Tensor:
    idx = [CELEBA_ATTRIBUTES.index(n) for n in names]
    return torch.cat([attribute_decisions(predictor, images[s:s + batch], idx) for s in range(0, len(images), batch)])


def edit_rates(predictor, original: torch.Tensor, edited: torch.Tensor, attribute, target=None,
               attributes: Sequence[str] | None = None, entailed: Sequence[str] | None = None) -> dict:
    """Flip and keep rates of ``edited`` against ``original`` (both (N, 3, H, W) in [-1, 1]).

    ``target``: the wanted decision on ``attribute`` per image (bool/0-1 tensor, or a scalar);
    default the opposite of the predictor's decision on ``original``. ``attributes``: the scored
    attributes (default: those the judge's domain models, ``predictor.modelled``); ``entailed``: those
    left out of ``keep_rate`` (default: the domain's entailments, ``predictor.entailed``, when
    ``attributes`` is None, else none)."""
    if original.shape != edited.shape:
        raise ValueError(f"original {tuple(original.shape)} and edited {tuple(edited.shape)} differ in shape")
    names = _scored(predictor, attributes)
    name = CELEBA_ATTRIBUTES[attribute_index(attribute, CELEBA_ATTRIBUTES)]
    if name not in names:
        names = [name] + names
    i = names.index(name)
    before, after = _decide(predictor, original, names), _decide(predictor, edited, names)
    if target is None:
        target = ~before[:, i]
    else:
        target = torch.as_tensor(target).bool().expand(len(original))
    skip = _entailed(name, predictor, attributes, entailed)
    others = [j for j in range(len(names)) if j != i]
    kept = (after[:, others] == before[:, others]).float()
    free = [k for k, j in enumerate(others) if names[j] not in skip]
    nan = float("nan")
    return {"attribute": name, "n": len(original), "flip_rate": (after[:, i] == target).float().mean().item(),
            "keep_rate": kept[:, free].mean().item() if free else nan,
            "keep_rate_all": kept.mean().item() if others else nan,
            "entailed": sorted(skip & set(names)),
            "keep_per_attribute": {names[j]: kept[:, k].mean().item() for k, j in enumerate(others)}}


@torch.no_grad()
def label_edit_rates(G, wplus: torch.Tensor, editor, attribute, strength: float, predictor,
                     attributes: Sequence[str] | None = None, batch: int = 32, noise=None,
                     entailed: Sequence[str] | None = None) -> dict:
    """Edit every code toward the opposite of the predictor's current decision on ``attribute``
    with ``editor`` (the shared call shape of :mod:`stytr.editing`) and return :func:`edit_rates`."""
    name = CELEBA_ATTRIBUTES[attribute_index(attribute, CELEBA_ATTRIBUTES)]
    original = torch.cat([G.synthesis(wplus[s:s + batch], noise=noise, randomize_noise=False)
                          for s in range(0, len(wplus), batch)]).clamp(-1, 1)
    target = ~_decide(predictor, original, [name])[:, 0]
    edited = torch.empty_like(original)
    for s in range(0, len(wplus), batch):
        idx = torch.arange(s, min(s + batch, len(wplus)))
        for t in (0, 1):
            sel = idx[target[idx] == bool(t)]
            if len(sel):
                with torch.enable_grad():     # the label editors differentiate the classifier
                    images = editor.edit_images(G, wplus[sel], name, strength, target=t, noise=noise)
                edited[sel] = images.detach().clamp(-1, 1)
    return edit_rates(predictor, original, edited, name, target, attributes, entailed)


@torch.no_grad()
def reference_edit_rates(editor, src: torch.Tensor, ref: torch.Tensor, attribute, predictor,
                         attributes: Sequence[str] | None = None, batch: int = 32,
                         entailed: Sequence[str] | None = None) -> dict:
    """Reference editing: the target is the predictor's decision on the *reference* image; pairs
    whose source and reference already agree on ``attribute`` are left out (nothing to flip)."""
    name = CELEBA_ATTRIBUTES[attribute_index(attribute, CELEBA_ATTRIBUTES)]
    G = editor.decoder

    def render(w):
        return torch.cat([G.synthesis(w[s:s + batch], randomize_noise=False)
                          for s in range(0, len(w), batch)]).clamp(-1, 1)

    src_img, ref_img = render(src), render(ref)
    want = _decide(predictor, ref_img, [name])[:, 0]
    differ = want != _decide(predictor, src_img, [name])[:, 0]
    if not differ.any():
        raise ValueError(f"no pair's source and reference differ on {name}: nothing to evaluate")
    edited = torch.cat([editor(src[s:s + batch], ref[s:s + batch]) for s in range(0, len(src), batch)])
    out = edit_rates(predictor, src_img[differ], render(edited[differ]), name, want[differ], attributes, entailed)
    out["pairs_considered"] = int(differ.sum())
    return out
