"""Algorithm 2 as printed, as released, and our exact second order, side by side on ToyFaces.

    python -m stytr.eval.label_variants --out runs/label_variants      # or --ship: into figures/

The supplementary's Algorithm 2 (``order=2``), the authors' released coach
(``order=AS_RELEASED``: the random probe enters the edit, ``w - alpha*(a - d)``) and
``order="hvp"`` edit the same held-out codes at the same strengths (the toy
:class:`~stytr.config.EditingConfig`); the released variant is also run at the released
script's literal ``alpha = 3``. For every (variant, attribute) :func:`variant_report` gives

* ``flip_rate`` / ``keep_rate`` / ``keep_rate_all`` judged by the image attribute predictor
  (:func:`stytr.eval.edit_rates.edit_rates`; every face is edited toward the opposite of the
  predictor's decision);
* the reconstruction-to-edit distance: ``edit_mse`` (pixels, [-1, 1] scale), ``edit_perceptual``
  (the ToyFaces perceptual distance) between the rendering of the code and of its edit, and
  ``edit_w_row`` (the mean L2 norm of the W+ step per row);

and the re-scoring matrix (:func:`stytr.eval.rescoring.rescoring_matrix`, rows = edited).
The two CSVs (:data:`VARIANTS_CSV`, :data:`RESCORING_CSV`) are what notebook 04 shows.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ..attributes import CELEBA_ATTRIBUTES, attribute_index
from ..config import EditingConfig
from ..editing import AS_RELEASED, LabelEditor
from .edit_rates import edit_rates
from .metrics import attribute_decisions, mse
from .rescoring import rescoring_matrix
from .script_args import measurement_args

__all__ = ["VARIANTS", "RELEASED_ALPHA", "VARIANTS_CSV", "RESCORING_CSV", "variant_editors", "variant_report",
           "compare_variants", "write_comparison", "read_comparison", "main"]

#: Variant label -> label-editing order.
VARIANTS = {"as printed": 2, "as released": AS_RELEASED, "hvp": "hvp"}
#: The released script's step (``w - 3 * (a - d)``).
RELEASED_ALPHA = 3.0
VARIANTS_CSV = "label_variants.csv"
RESCORING_CSV = "label_variants_rescoring.csv"
#: The held-out codes of notebook 04 (not the faces the toy strengths were chosen on).
CODES_SEED, CODES_N = 51_000, 100


def variant_editors(classifier, seed: int = 0) -> dict[str, LabelEditor]:
    """One :class:`~stytr.editing.LabelEditor` per :data:`VARIANTS`; ``seed`` fixes the random probes."""
    return {name: LabelEditor(classifier, order, seed=seed) for name, order in VARIANTS.items()}


def _render(G, w: torch.Tensor, batch: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([G.synthesis(w[s:s + batch], randomize_noise=False) for s in range(0, len(w), batch)]).clamp(-1, 1)


def variant_report(G, wplus: torch.Tensor, editor, attribute, strength: float, predictor, distance) -> dict:
    """Flip/keep rates and reconstruction-to-edit distances of ``editor`` on ``wplus`` for ``attribute``
    (see the module docstring); ``distance``: images -> (B,) perceptual distances."""
    name = CELEBA_ATTRIBUTES[attribute_index(attribute, CELEBA_ATTRIBUTES)]
    original = _render(G, wplus)
    with torch.no_grad():
        target = ~attribute_decisions(predictor, original, [CELEBA_ATTRIBUTES.index(name)])[:, 0]
    edited_w = wplus.clone()
    for t in (0, 1):
        sel = target == bool(t)
        if sel.any():
            edited_w[sel] = editor.edit_latent(wplus[sel], name, strength, target=t).detach()
    edited = _render(G, edited_w)
    out = edit_rates(predictor, original, edited, name, target)
    with torch.no_grad():
        out.update(edit_mse=mse(edited, original).mean().item(), edit_perceptual=distance(edited, original).mean().item(),
                   edit_w_row=(edited_w - wplus).norm(dim=-1).mean().item(), strength=float(strength))
    return out


def _runs(classifier, cfg: EditingConfig, seed: int) -> list[tuple[str, LabelEditor, object]]:
    """(label, editor, strength for an attribute) of every measured setting."""
    editors = variant_editors(classifier, seed)
    runs = [(label, ed, lambda a, ed=ed: cfg.strength(ed.name, a)) for label, ed in editors.items()]
    runs.append((f"as released, alpha {RELEASED_ALPHA:g}", editors["as released"], lambda a: RELEASED_ALPHA))
    return runs


def compare_variants(G, wplus: torch.Tensor, classifier, predictor, attributes=None, cfg: EditingConfig | None = None,
                     seed: int = 0, rescoring: bool = True) -> tuple[list[dict], dict[str, np.ndarray]]:
    """``(rows, matrices)``: one row per (variant, attribute) of :func:`variant_report`, and per variant the
    re-scoring matrix over ``attributes`` (default the paper's five, :attr:`EditingConfig.attributes`)."""
    from ..toy import PredictorFeatureDistance

    cfg = cfg or EditingConfig.preset("toy")
    attributes = list(attributes or cfg.attributes)
    distance = PredictorFeatureDistance(predictor)
    rows, matrices = [], {}
    for label, editor, strength in _runs(classifier, cfg, seed):
        for a in attributes:
            r = variant_report(G, wplus, editor, a, strength(a), predictor, distance)
            rows.append({"variant": label, "attribute": a, "strength": r["strength"], "n": r["n"],
                         **{k: r[k] for k in ("flip_rate", "keep_rate", "keep_rate_all", "edit_mse",
                                              "edit_perceptual", "edit_w_row")}})
        if rescoring:
            matrices[label], _ = rescoring_matrix(G, wplus, editor, attributes, {a: strength(a) for a in attributes},
                                                  predictor)
    return rows, matrices


def write_comparison(rows: list[dict], matrices: dict[str, np.ndarray], attributes, folder) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / VARIANTS_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(folder / RESCORING_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "edited", "scored", "value"])
        for label, m in matrices.items():
            for i, a in enumerate(attributes):
                for j, b in enumerate(attributes):
                    writer.writerow([label, a, b, repr(float(m[i, j]))])
    return folder / VARIANTS_CSV, folder / RESCORING_CSV


def read_comparison(folder) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The two CSVs of :func:`write_comparison`: rows (numbers as floats) and ``{variant: matrix}`` (rows = edited)."""
    folder = Path(folder)
    with open(folder / VARIANTS_CSV, newline="") as f:
        rows = [{k: v if k in ("variant", "attribute") else float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    cells: dict[str, dict] = {}
    with open(folder / RESCORING_CSV, newline="") as f:
        for r in csv.DictReader(f):
            cells.setdefault(r["variant"], {})[r["edited"], r["scored"]] = float(r["value"])
    matrices = {}
    for label, c in cells.items():
        names = list(dict.fromkeys(e for e, _ in c))
        matrices[label] = np.array([[c[e, s] for s in names] for e in names])
    return rows, matrices


def main(argv=None) -> None:
    from ..domains import get_domain
    from ..inference import labelled_codes

    _, folder = measurement_args("python -m stytr.eval.label_variants", __doc__,
                                 f"{VARIANTS_CSV} and {RESCORING_CSV}", "notebook 04", argv)
    domain = get_domain("toyfaces")
    encoder = domain.load("encoder")
    wplus, _, _ = labelled_codes(domain.name, encoder, n=CODES_N, seed=CODES_SEED)
    cfg = EditingConfig.preset("toy")
    rows, matrices = compare_variants(encoder.decoder, wplus, domain.load("classifier"), domain.load("predictor"),
                                      cfg=cfg)
    paths = write_comparison(rows, matrices, cfg.attributes, folder)
    for r in rows:
        print(f"{r['variant']:24s} {r['attribute']:11s} flip {r['flip_rate']:.3f} keep {r['keep_rate']:.3f} "
              f"edit MSE {r['edit_mse']:.4f} perceptual {r['edit_perceptual']:.3f} W+ row step {r['edit_w_row']:.2f}")
    print("written:", *paths)


if __name__ == "__main__":
    main()
