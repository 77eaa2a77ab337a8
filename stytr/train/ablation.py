"""Table 1 on ToyFaces: pSp, w/o self and the full Style Transformer trained with one budget and seed.

    python -m stytr ablation --preset toy [--steps N] [--ship]

Each method is an :class:`~stytr.train.inversion.InversionTrainer` run of the same
config, differing only in ``model.kind`` / ``model.use_self_attn``; runs resume from
their own ``last.pt``. The trained encoders are evaluated on one held-out set (MSE,
the toy perceptual distance, SSIM, LPIPS when its weights exist) and the table is
written in the paper's layout as CSV and PNG. ``--ship`` copies the three encoders
to ``data/`` so notebook 02 can evaluate them without training.
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from .. import artifacts
from ..config import InversionTrainConfig

# Method name (the paper's row) -> model overrides.
METHODS = {
    "pSp": {"model.kind": "psp"},
    "w/o self": {"model.kind": "transformer", "model.use_self_attn": False},
    "full": {"model.kind": "transformer", "model.use_self_attn": True},
}


def method_slug(name: str) -> str:
    return {"pSp": "psp", "w/o self": "wo_self", "full": "full"}[name]


def shipped_encoder(name: str) -> str:
    """The registered artefact name of a method's shipped ToyFaces encoder."""
    return {"pSp": "toy-psp", "w/o self": "toy-wo-self", "full": "toy-full"}[name]


def method_config(base: InversionTrainConfig, name: str) -> InversionTrainConfig:
    return base.override({**METHODS[name], "out": str(Path(base.out) / method_slug(name)), "figures": ""})


def train_ablation(base: InversionTrainConfig, ship: bool = False) -> dict:
    """Train (or resume) the three encoders; returns {method: model}."""
    from .inversion import InversionTrainer

    models = {}
    for name in METHODS:
        trainer = InversionTrainer(method_config(base, name))
        trainer.resume()
        trainer.fit()
        model = trainer.model.eval()
        artifacts.export("encoder", model, Path(trainer.cfg.out) / "encoder.safetensors", {"steps": trainer.step})
        if ship:
            art = artifacts.find("encoder", shipped_encoder(name))
            artifacts.export("encoder", model, art.path, {"steps": trainer.step, "command": art.command})
        models[name] = model
    return models


def load_shipped_ablation() -> dict:
    return {name: artifacts.load("encoder", shipped_encoder(name)) for name in METHODS}


@torch.no_grad()
def ablation_table(models: dict, images: torch.Tensor, predictor=None, batch: int = 50) -> list[dict]:
    """One row per method: encoder parameters and the held-out reconstruction metrics."""
    from ..eval.metrics import evaluate_reconstruction

    rows = []
    for name, model in models.items():
        metrics = evaluate_reconstruction(model, images, batch=batch, predictor=predictor)
        row = {"method": name, "params_m": model.encoder_parameter_count() / 1e6,
               "mse": metrics["mse"], "ssim": metrics["ssim"]}
        if metrics.get("predictor_distance") is not None:
            row["perceptual"] = metrics["predictor_distance"]   # the toy stand-in for LPIPS
        if metrics.get("lpips") is not None:
            row["lpips"] = metrics["lpips"]
        rows.append(row)
    return rows


def write_table(rows: list[dict], csv_path, png_path=None, title: str = "ToyFaces Table 1") -> None:
    """CSV, and a PNG rendering of the table with the best value of each metric in bold."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    if png_path is None:
        return
    import matplotlib.pyplot as plt

    lower_better = {"mse", "perceptual", "lpips", "params_m"}
    metrics = [c for c in columns if c != "method"]
    best = {c: (min if c in lower_better else max)(r[c] for r in rows) for c in metrics}
    fig, ax = plt.subplots(figsize=(1.4 * len(columns), 0.45 * len(rows) + 0.8))
    ax.axis("off")
    cells = [[r["method"]] + [f"{r[c]:.4f}" if c != "params_m" else f"{r[c]:.2f}" for c in metrics] for r in rows]
    arrows = {c: ("↓" if c in lower_better else "↑") for c in metrics}
    table = ax.table(cellText=cells, colLabels=["Method"] + [f"{c}{arrows[c]}" for c in metrics], loc="center",
                     cellLoc="center")
    for i, r in enumerate(rows, start=1):
        for j, c in enumerate(metrics, start=1):
            if r[c] == best[c]:
                table[i, j].get_text().set_fontweight("bold")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=150)
    plt.close(fig)
