"""How diverse are reference edits? One source, K references that all carry the target attribute.

The supplementary says reference editing "results in less diversity" than pixel-space
editing with a mode-seeking loss. Measured here: for each source ``s`` (predicted *without*
the attribute, by default) and the same K references ``r_1..r_K`` (predicted *with* it), the
edits ``e_k = E(s, r_k)`` are rendered, and

* ``image_diversity``: the mean over pairs ``k < l`` of a perceptual distance between the
  rendered edits (ToyFaces: the attribute predictor's feature distance,
  :class:`stytr.toy.PredictorFeatureDistance`), averaged over sources;
* ``code_diversity``: the same with the L2 distance between the edited W+ codes (flattened).

``reference_image_diversity`` / ``reference_code_diversity`` are the same quantities for
the references themselves: the spread the edits could at most inherit. The flip and keep
rates of the same S*K (source, reference) pairs come from
:func:`stytr.eval.edit_rates.reference_edit_rates`, so diversity is read next to them.
"""
from __future__ import annotations

import itertools
from typing import Callable

import torch

from ..attributes import CELEBA_ATTRIBUTES, attribute_index
from .edit_rates import reference_edit_rates
from .metrics import attribute_decisions

__all__ = ["diversity_sets", "pairwise_mean", "reference_diversity"]


def _render(G, w: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([G.synthesis(w[s:s + batch], randomize_noise=False) for s in range(0, len(w), batch)]).clamp(-1, 1)


@torch.no_grad()
def diversity_sets(G, codes: torch.Tensor, attribute, predictor, n_sources: int, k: int, target: int = 1
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sources (S, n_latent, dim), references (K, n_latent, dim))`` from ``codes``: the first
    ``n_sources`` codes the predictor decides are not ``target`` on ``attribute`` and the first ``k``
    that are (the references all carry the target value)."""
    idx = attribute_index(attribute, CELEBA_ATTRIBUTES)
    decision = torch.cat([attribute_decisions(predictor, _render(G, codes[s:s + 64]), [idx])[:, 0]
                          for s in range(0, len(codes), 64)])
    has = decision == bool(target)
    src, ref = codes[~has][:n_sources], codes[has][:k]
    if len(src) < n_sources or len(ref) < k:
        raise ValueError(f"{len(codes)} codes hold {int((~has).sum())} sources and {int(has.sum())} references "
                         f"for {CELEBA_ATTRIBUTES[idx]}={target}; asked for {n_sources} and {k}")
    return src, ref


def pairwise_mean(x: torch.Tensor, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean of ``distance(x[k], x[l])`` over the pairs ``k < l`` of the first axis; ``distance`` maps two
    batches to per-sample distances (B,)."""
    if len(x) < 2:
        raise ValueError(f"diversity needs at least two items, got {len(x)}")
    a, b = zip(*itertools.combinations(range(len(x)), 2))
    return distance(x[list(a)], x[list(b)]).mean()


def _code_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


@torch.no_grad()
def reference_diversity(editor, sources: torch.Tensor, references: torch.Tensor, attribute, predictor,
                        distance: Callable | None = None) -> dict:
    """Diversity of ``editor``'s edits of every source with every reference (see the module docstring).

    ``editor``: a reference editor ``editor(src, ref) -> edited W+`` with a ``decoder`` (as
    :class:`stytr.models.edit_transformer.EditTransformer`). ``distance``: images -> (B,) distances;
    default the ToyFaces perceptual distance of ``predictor``. Returns ``image_diversity``,
    ``code_diversity``, the references' own ``reference_image_diversity`` and
    ``reference_code_diversity``, per-source arrays ``per_source_image`` / ``per_source_code``,
    the flip/keep rates of all S*K pairs (``flip_rate``, ``keep_rate``, ``keep_rate_all``), and
    ``edited`` (S, K, n_latent, dim), the edited codes."""
    if distance is None:
        from ..toy import PredictorFeatureDistance

        distance = PredictorFeatureDistance(predictor)
    G = editor.decoder
    s, k = len(sources), len(references)
    src = sources.repeat_interleave(k, dim=0)            # source i with references 0..K-1, then source i+1
    ref = references.repeat(s, 1, 1)
    edited = torch.cat([editor(src[i:i + 64], ref[i:i + 64]) for i in range(0, len(src), 64)])
    images = _render(G, edited)
    images = images.view(s, k, *images.shape[1:])
    codes = edited.view(s, k, *edited.shape[1:])
    per_image = torch.stack([pairwise_mean(images[i], distance) for i in range(s)])
    per_code = torch.stack([pairwise_mean(codes[i], _code_distance) for i in range(s)])
    rates = reference_edit_rates(editor, src, ref, attribute, predictor)
    return {"image_diversity": per_image.mean().item(), "code_diversity": per_code.mean().item(),
            "reference_image_diversity": pairwise_mean(_render(G, references), distance).item(),
            "reference_code_diversity": pairwise_mean(references, _code_distance).item(),
            "per_source_image": per_image.numpy(), "per_source_code": per_code.numpy(),
            "flip_rate": rates["flip_rate"], "keep_rate": rates["keep_rate"], "keep_rate_all": rates["keep_rate_all"],
            "pairs": rates["pairs_considered"], "edited": codes}
