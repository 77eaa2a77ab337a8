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

    python -m stytr.eval.diversity --out DIR     # or --ship: figures/reference_diversity.csv (notebook 05)

scores the shipped ToyFaces editors, with and without the mode-seeking term, on held-out codes.
"""
from __future__ import annotations

import csv
import itertools
from typing import Callable

import numpy as np
import torch

from ..attributes import CELEBA_ATTRIBUTES, attribute_index
from .edit_rates import edit_rates
from .metrics import attribute_decisions
from .script_args import measurement_args

__all__ = ["DIVERSITY_CSV", "EDITORS", "CODES_SEED", "CODES_N", "N_SOURCES", "K_REFERENCES", "diversity_sets", "pairwise_mean",
           "reference_diversity", "diversity_rows", "summarize", "read_rows", "main"]

DIVERSITY_CSV = "reference_diversity.csv"
#: Notebook 05's held-out faces, and the set sizes: S sources, each edited with the same K references.
CODES_SEED, CODES_N = 60_000, 300
N_SOURCES, K_REFERENCES = 16, 8
#: The two ToyFaces editor sets compared: label -> registered reference-editor name.
EDITORS = {"published loss": "toy", "mode-seeking": "toy-mode-seeking"}


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
    default the ToyFaces perceptual distance of ``predictor``. The flip target of a pair is the
    predictor's decision on its reference. Returns the means over sources ``image_diversity``,
    ``code_diversity``, ``flip_rate``, ``keep_rate``, ``keep_rate_all``; the references' own
    ``reference_image_diversity`` and ``reference_code_diversity``; the per-source values
    ``per_source`` ({name: (S,) array} for those five); and ``edited`` (S, K, n_latent, dim)."""
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
    src_images, ref_images = _render(G, sources), _render(G, references)
    idx = attribute_index(attribute, CELEBA_ATTRIBUTES)
    want = attribute_decisions(predictor, ref_images, [idx])[:, 0]
    per: dict[str, list[float]] = {n: [] for n in ("image_diversity", "code_diversity", "flip_rate", "keep_rate",
                                                   "keep_rate_all")}
    for i in range(s):
        rates = edit_rates(predictor, src_images[i:i + 1].expand(k, -1, -1, -1), images[i], attribute, want)
        per["image_diversity"].append(pairwise_mean(images[i], distance).item())
        per["code_diversity"].append(pairwise_mean(codes[i], _code_distance).item())
        for name in ("flip_rate", "keep_rate", "keep_rate_all"):
            per[name].append(rates[name])
    out = {name: float(np.mean(v)) for name, v in per.items()}
    out.update(reference_image_diversity=pairwise_mean(ref_images, distance).item(),
               reference_code_diversity=pairwise_mean(references, _code_distance).item(),
               per_source={name: np.asarray(v) for name, v in per.items()}, edited=codes)
    return out


def diversity_rows(editors: dict, codes: torch.Tensor, predictor, n_sources: int = N_SOURCES,
                   k: int = K_REFERENCES, distance: Callable | None = None) -> list[dict]:
    """One row per (editor label, attribute, source) of :func:`reference_diversity`'s per-source values,
    with the references' own diversity: ``editors`` is ``{label: {attribute: editor}}``; the sources and
    references of an attribute are the same for every label (the first ones the predictor qualifies)."""
    rows = []
    for label, per_attribute in editors.items():
        for attribute, editor in per_attribute.items():
            src, ref = diversity_sets(editor.decoder, codes, attribute, predictor, n_sources, k)
            r = reference_diversity(editor, src, ref, attribute, predictor, distance)
            for i in range(n_sources):
                rows.append({"editor": label, "attribute": attribute, "source": i, "k": k,
                             **{c: float(r["per_source"][c][i]) for c in r["per_source"]},
                             "reference_image_diversity": r["reference_image_diversity"],
                             "reference_code_diversity": r["reference_code_diversity"]})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Means over sources of :func:`diversity_rows`' rows, one per (editor, attribute) in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["editor"], r["attribute"]), []).append(r)
    numeric = [c for c in rows[0] if c not in ("editor", "attribute", "source", "k")]
    return [{"editor": e, "attribute": a, "n_sources": len(g), "k": g[0]["k"],
             **{c: float(np.mean([r[c] for r in g])) for c in numeric}} for (e, a), g in groups.items()]


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v if k in ("editor", "attribute") else int(v) if k in ("source", "k") else float(v)
                 for k, v in r.items()} for r in csv.DictReader(f)]


def main(argv=None) -> None:
    from .. import artifacts
    from ..domains import get_domain
    from ..inference import labelled_codes

    _, folder = measurement_args("python -m stytr.eval.diversity", __doc__, DIVERSITY_CSV, "notebook 05", argv)
    domain = get_domain("toyfaces")
    codes, _, _ = labelled_codes(domain.name, domain.load("encoder"), n=CODES_N, seed=CODES_SEED)
    editors = {label: {a: artifacts.load("reference_editor", name, attribute=a) for a in domain.reference_editors}
               for label, name in EDITORS.items()}
    rows = diversity_rows(editors, codes, domain.load("predictor"))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / DIVERSITY_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for r in summarize(rows):
        print(f"{r['editor']:15s} {r['attribute']:8s} image diversity {r['image_diversity']:.4f} "
              f"code diversity {r['code_diversity']:.3f} flip {r['flip_rate']:.3f} keep {r['keep_rate']:.3f}")
    print("written:", folder / DIVERSITY_CSV)


if __name__ == "__main__":
    main()
