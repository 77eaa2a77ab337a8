"""Does an edit do what it says? Flip and keep rates judged by an image attribute predictor,
or, while a reference editor trains, by its latent classifier on the W+ codes.

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
:func:`evaluate_reference_editor` computes the same rates from the latent classifier's
decisions on source, reference and edited codes (no images), the trainer's held-out measure.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..attributes import CELEBA_ATTRIBUTES, attribute_index
from ..data.codes import load_codes
from ..losses import reference_editing_loss
from .metrics import attribute_decisions, judged_attributes

__all__ = ["edit_rates", "decision_rates", "label_edit_rates", "reference_edit_rates", "PAIR_MODES",
           "latent_decisions", "opposite_references", "evaluate_reference_editor"]

PAIR_MODES = ("random", "opposite")


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
    return {"attribute": name, "n": len(original), **decision_rates(before, after, i, target, names, skip),
            "entailed": sorted(skip & set(names))}


def decision_rates(before: torch.Tensor, after: torch.Tensor, i: int, target: torch.Tensor, names: Sequence[str],
                   skip=()) -> dict:
    """Flip and keep rates from (N, A) bool decisions before and after an edit of column ``i``
    toward ``target`` (N,); ``skip`` names attributes left out of ``keep_rate``."""
    others = [j for j in range(len(names)) if j != i]
    kept = (after[:, others] == before[:, others]).float()
    free = [k for k, j in enumerate(others) if names[j] not in skip]
    nan = float("nan")
    return {"flip_rate": (after[:, i] == target).float().mean().item() if len(target) else nan,
            "keep_rate": kept[:, free].mean().item() if free and len(kept) else nan,
            "keep_rate_all": kept.mean().item() if others and len(kept) else nan,
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


# -- reference editing judged by the latent classifier (the trainer's held-out measure) ----------------

@torch.no_grad()
def latent_decisions(classifier, latents: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The classifier's binary decisions (N, n_attr) as bool (logit > 0)."""
    device = next(classifier.parameters()).device
    out = [classifier(latents[i:i + batch].to(device))[0].cpu() > 0 for i in range(0, len(latents), batch)]
    return torch.cat(out) if out else torch.zeros(0, classifier.n_attr, dtype=torch.bool)


def opposite_references(decision: torch.Tensor, src: torch.Tensor, gen: torch.Generator,
                        pool: torch.Tensor | None = None) -> torch.Tensor:
    """For each index in ``src``, an index from ``pool`` whose decision differs (``decision`` is (N,) bool)."""
    pool = torch.arange(len(decision)) if pool is None else pool
    pos, neg = pool[decision[pool]], pool[~decision[pool]]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"pair_mode='opposite' needs codes on both sides of the classifier's decision; "
                         f"found {len(pos)} positive and {len(neg)} negative")
    pick_neg = neg[torch.randint(len(neg), (len(src),), generator=gen)]
    pick_pos = pos[torch.randint(len(pos), (len(src),), generator=gen)]
    return torch.where(decision[src], pick_neg, pick_pos)


@torch.no_grad()
def evaluate_reference_editor(model, codes, n: int = 1000, attribute: int | str = "Bangs", pair_mode: str = "random",
                              seed: int = 0, batch: int = 256) -> dict:
    """Classifier-decision metrics of ``model`` on ``n`` (source, reference) pairs drawn from ``codes``.

    ``codes``: held-out W+ codes (anything :func:`~stytr.data.codes.load_codes` reads). ``pair_mode``:
    ``random`` (two different codes) or ``opposite`` (the reference's decision on ``attribute``
    differs from the source's). Decisions are the model's classifier's (logit > 0). Returns

    * ``transfer_rate``: fraction of pairs where the edited code's decision on ``attribute``
      equals the reference's;
    * ``transfer_rate_changing`` (NaN if none): the same over the ``n_changing`` pairs whose source
      and reference disagree on it, i.e. where the edit has to change the decision;
    * ``src_ref_agreement``: the transfer rate of doing nothing (source and reference agree);
    * ``keep_rate``: fraction of (pair, other attribute) where the edited decision equals the
      source's, and ``keep_rate_per_attribute`` ({name: rate});
    * ``loss``/``l2``/``ref``/``src``: the training loss and its terms (unit weights) on these pairs;
    * ``n_pairs``, ``n_changing``, ``attribute`` (its name).
    """
    classifier = model.classifier
    if classifier is None:
        raise ValueError("the model has no latent classifier to evaluate with")
    names = list(getattr(classifier, "attribute_names", [str(i) for i in range(classifier.n_attr)]))
    attr = attribute_index(attribute, names)
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"unknown pair_mode {pair_mode!r}; choose one of {PAIR_MODES}")
    device = next(classifier.parameters()).device
    latents, _ = load_codes(codes, getattr(classifier, "n_latent", None), getattr(classifier, "style_dim", None))
    if len(latents) < 2:
        raise ValueError(f"need at least 2 codes to form pairs, got {len(latents)}")
    gen = torch.Generator().manual_seed(seed)
    src_idx = torch.randint(len(latents), (n,), generator=gen)
    if pair_mode == "random":
        ref_idx = (src_idx + torch.randint(1, len(latents), (n,), generator=gen)) % len(latents)
    else:
        ref_idx = opposite_references(latent_decisions(classifier, latents)[:, attr], src_idx, gen)

    was_training = model.training
    model.eval()
    decisions = {"src": [], "ref": [], "edit": []}
    sums = {"loss": 0.0, "l2": 0.0, "ref": 0.0, "src": 0.0}
    try:
        for i in range(0, n, batch):
            src = latents[src_idx[i:i + batch]].to(device)
            ref = latents[ref_idx[i:i + batch]].to(device)
            edited = model(src, ref)
            total, terms = reference_editing_loss(classifier, src, ref, edited, attr)
            for k, v in {"loss": total, **terms}.items():
                sums[k] += v.item() * len(src)
            for key, w in (("src", src), ("ref", ref), ("edit", edited)):
                decisions[key].append((classifier(w)[0] > 0).cpu())
    finally:
        model.train(was_training)
    d_src, d_ref, d_edit = (torch.cat(decisions[k]) for k in ("src", "ref", "edit"))
    changing = d_src[:, attr] != d_ref[:, attr]
    rates = decision_rates(d_src, d_edit, attr, d_ref[:, attr], names)
    changed = decision_rates(d_src[changing], d_edit[changing], attr, d_ref[changing, attr], names)
    return {
        "attribute": names[attr],
        "transfer_rate": rates["flip_rate"],
        "transfer_rate_changing": changed["flip_rate"] if changing.any() else math.nan,
        "src_ref_agreement": (~changing).float().mean().item(),
        "keep_rate": rates["keep_rate_all"],
        "keep_rate_per_attribute": rates["keep_per_attribute"],
        **{k: v / n for k, v in sums.items()},
        "n_pairs": n,
        "n_changing": int(changing.sum()),
    }
