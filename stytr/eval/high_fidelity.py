"""Beyond W+ on held-out faces: reconstruction quality, what edits still do, and the cost.

One row per way of rendering the inverted codes (:mod:`stytr.fidelity`): the W+ encoder alone, the
high-fidelity stage (and the stage without its alignment step, which pastes the input's distortion
onto every edit as it is), and PTI. Columns: MSE, SSIM, the domain's perceptual distance, the
judge's agreement on input vs reconstruction, flip / keep rates of label edits of the listed
attributes (judged on images rendered the same way, unedited vs edited: a residual that pastes the
old attribute back shows up as a low flip rate) and the CPU time per reconstruction.

    rows = fidelity_table(get_domain("toyfaces"), n=300, pti_n=30, pti_steps=100)
    write_fidelity_table(rows, "figures/table_high_fidelity.csv", "figures/table_high_fidelity.png")
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import EditingConfig, PTIConfig
from ..editing import Method, build_editors
from ..fidelity import PTIModel, PTIRenderer
from ..losses import domain_perceptual
from ..models.high_fidelity import HighFidelityModel
from .edit_rates import label_edit_rates
from .metrics import evaluate_reconstruction

__all__ = ["EDIT_ATTRIBUTES", "fidelity_table", "write_fidelity_table", "interleaved_ms_per_image", "COLUMNS"]

EDIT_ATTRIBUTES = ("Smiling", "Bangs", "Male", "Eyeglasses", "Young")
COLUMNS = ("method", "n", "mse", "ssim", "perceptual", "agreement", "ms_per_image")


def interleaved_ms_per_image(fns: Mapping[str, Callable[[torch.Tensor], object]], images: torch.Tensor,
                             repeats: int = 3) -> dict[str, float]:
    """Median (over ``repeats`` passes) single-thread CPU ms per image of each ``fn(one image)``; the
    methods alternate image by image, starting each image with the next method."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    names = list(fns)
    try:
        with torch.no_grad():
            for fn in fns.values():
                fn(images[:1])                  # warm-up: allocations, first-call dispatch
            passes = {n: [] for n in names}
            for _ in range(repeats):
                spent = dict.fromkeys(names, 0.0)
                for i in range(len(images)):
                    for k in range(len(names)):
                        name = names[(i + k) % len(names)]
                        start = time.process_time()
                        fns[name](images[i:i + 1])
                        spent[name] += time.process_time() - start
                for n in names:
                    passes[n].append(spent[n] / len(images) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return {n: float(np.median(v)) for n, v in passes.items()}


def _edit_columns(rates: dict[str, dict]) -> dict:
    out = {}
    for a, r in rates.items():
        out[f"flip_{a}"], out[f"keep_{a}"] = r["flip_rate"], r["keep_rate"]
    return out


def _rates(G, wplus, editor, strengths, predictor, domain, render, attributes) -> dict[str, dict]:
    return {a: label_edit_rates(G, wplus, editor, a, strengths[a], predictor, attributes=list(domain.modelled),
                                entailed=tuple(domain.entailed.get(a, ())), render=render)
            for a in attributes}


def fidelity_table(domain, n: int = 300, seed: int = 60_000, pti_n: int = 30, pti_steps: int | None = None,
                   encoder=None, high_fidelity=None, classifier=None, method: Method = Method.LABEL_1,
                   attributes: Sequence[str] = EDIT_ATTRIBUTES, timing_n: int = 16, progress: bool = True) -> dict:
    """The table's rows on ``n`` held-out faces of ``domain`` (rendered from ``seed``); PTI on the first
    ``pti_n`` of them (it tunes a generator per face). Pieces default to the domain's artefacts.

    Returns ``{"rows": [...], "per_image": {row: {"mse": [...]}}, "settings": {...}}``."""
    encoder = encoder if encoder is not None else domain.load("encoder")
    stage = high_fidelity if high_fidelity is not None else domain.load("high_fidelity")
    classifier = classifier if classifier is not None else domain.load("classifier", style_dim=encoder.cfg.style_dim)
    predictor = domain.load("predictor")
    perceptual = domain_perceptual(domain)
    G = encoder.decoder
    hifi = HighFidelityModel(encoder, stage).eval()
    plain = HighFidelityModel(encoder, stage.without_alignment()).eval()
    pti_cfg = PTIConfig.for_domain(domain)
    steps = pti_cfg.steps if pti_steps is None else int(pti_steps)
    pti = PTIModel(encoder, pti_cfg, perceptual, steps=steps)
    editor = build_editors(classifier, seed=0)[method]
    edit_cfg = EditingConfig.preset(domain.preset)
    strengths = {a: edit_cfg.strength(method, a) for a in attributes}

    data = domain.labelled_dataset(n, seed, encoder.cfg.input_size)
    images = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        wplus = torch.cat([encoder.encode(images[s:s + 64]) for s in range(0, len(images), 64)])

    def hifi_render(model):
        """Codes of face ``idx`` rendered with that face's distortion (computed once per face)."""
        parts = [model.distortion(images[s:s + 64], wplus[s:s + 64]) for s in range(0, len(images), 64)]
        d, g = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return lambda latent, idx: model.render(latent, d[idx], g[idx])

    def score(model, x):
        return evaluate_reconstruction(model, x, batch=len(x) if model is pti else 32, predictor=predictor,
                                       lpips=False, attributes=domain.modelled)

    rows, per_image = [], {}
    specs = [("W+ Style Transformer (shipped)", encoder, images, None),
             ("+ high-fidelity stage", hifi, images, hifi_render(hifi)),
             ("+ high-fidelity stage, no alignment", plain, images, hifi_render(plain))]
    timing = interleaved_ms_per_image({name: (lambda im, m=model: m(im, randomize_noise=False))
                                       for name, model, _, _ in specs}, images[:timing_n])
    for name, model, x, render in tqdm(specs, desc="fidelity rows", disable=not progress):
        rec = score(model, x)
        rates = _rates(G, wplus, editor, strengths, predictor, domain, render, attributes)
        rows.append({"method": name, "n": rec["n"], "mse": rec["mse"], "ssim": rec["ssim"],
                     "perceptual": rec["predictor_distance"], "agreement": rec["attribute_agreement_mean"],
                     **_edit_columns(rates), "ms_per_image": timing[name]})
        per_image[name] = {"mse": rec["per_image"]["mse"].tolist()}

    if pti_n:
        x = images[:pti_n]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)        # timed like the other rows: one thread, process time
        try:
            start = time.process_time()
            rec = score(pti, x)
            ms = (time.process_time() - start) / len(x) * 1e3
        finally:
            torch.set_num_threads(threads)
        renderers = [PTIRenderer(r, encoder.cfg.input_size) for r in pti.results]

        def pti_render(latent, idx):
            if not isinstance(latent, torch.Tensor):
                raise ValueError("the PTI rows render W+ edits only")
            return torch.cat([renderers[int(i)].render(latent[k:k + 1]) for k, i in enumerate(idx)])

        rates = _rates(G, wplus[:pti_n], editor, strengths, predictor, domain, pti_render, attributes)
        name = f"+ PTI ({steps} steps, first {len(x)} faces)"
        rows.append({"method": name, "n": rec["n"], "mse": rec["mse"], "ssim": rec["ssim"],
                     "perceptual": rec["predictor_distance"], "agreement": rec["attribute_agreement_mean"],
                     **_edit_columns(rates), "ms_per_image": ms})
        per_image[name] = {"mse": rec["per_image"]["mse"].tolist()}
    settings = {"domain": domain.name, "n": n, "seed": seed, "pti_n": pti_n, "pti_steps": steps,
                "method": str(method), "strengths": strengths, "attributes": list(attributes),
                "encoder": getattr(stage, "encoder_spec", ""), "timing": f"single-thread CPU time, one image at a "
                f"time, the feed-forward rows interleaved, median of 3 passes over {timing_n} faces (PTI: the "
                f"whole tuning of each face, one pass)"}
    return {"rows": rows, "per_image": per_image, "settings": settings}


def write_fidelity_table(table: dict, csv_path, png_path=None, json_path=None) -> list[Path]:
    """The rows as CSV (and a PNG rendering, and the whole result as JSON with per-image MSEs)."""
    rows = table["rows"]
    attrs = table["settings"]["attributes"]
    keys = list(COLUMNS[:-1]) + [f"{k}_{a}" for a in attrs for k in ("flip", "keep")] + ["ms_per_image"]
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in keys})
    paths = [csv_path]
    if json_path is not None:
        Path(json_path).write_text(json.dumps(table, indent=1))
        paths.append(Path(json_path))
    if png_path is not None:
        paths.append(_plot_table(rows, attrs, Path(png_path)))
    return paths


def _plot_table(rows, attrs, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    header = ["method", "n", "MSE", "SSIM", "perceptual", "agreement",
              *[f"{a}\nflip / keep" for a in attrs], "CPU ms\nper image"]
    cells = [[r["method"], str(r["n"]), f"{r['mse']:.4f}", f"{r['ssim']:.3f}", f"{r['perceptual']:.4f}",
              f"{r['agreement']:.3f}", *[f"{r['flip_' + a]:.2f} / {r['keep_' + a]:.2f}" for a in attrs],
              f"{r['ms_per_image']:.0f}"] for r in rows]
    fig, ax = plt.subplots(figsize=(17, 0.5 + 0.45 * len(rows)))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 2.0)
    for (r, c), cell in table.get_celld().items():
        if c == 0:
            cell.set_width(0.22)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
