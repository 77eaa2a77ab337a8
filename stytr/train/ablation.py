"""Table 1 on ToyFaces: pSp, w/o self and the full Style Transformer trained with one budget and seed.

    python -m stytr ablation --preset toy [--steps N] [--ship]

Each method is an :class:`~stytr.train.inversion.InversionTrainer` run of the same
config, differing only in ``model.kind`` / ``model.use_self_attn``; runs resume from
their own ``last.pt``. The trained encoders are evaluated on one held-out set (MSE,
the toy perceptual distance, SSIM, LPIPS when its weights exist) and the table is
written in the paper's layout as CSV and PNG into ``out``. ``--ship`` also writes the
three encoders as the registered ``toy-psp``/``toy-wo-self``/``toy-full`` artefacts in
``data/`` (so notebook 02 can evaluate them without training) and the table into the
repository's ``figures/``.

Several seeds (issue 18): train each seed into its own folder, then score every seed's
encoders on one held-out set that no run trains or validates on::

    python -m stytr ablation --preset toy --steps 800 --seed 1 --out runs/toy_ablation/seed_1
    python -m stytr ablation-seeds --runs runs/toy_ablation/seed_1 runs/toy_ablation/seed_2 --shipped-seed 0 --ship

:func:`evaluate_seeds` writes one row per (seed, method); :mod:`stytr.eval.seeds` turns them
into means with t-intervals and paired per-seed comparisons.
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from .. import artifacts
from ..checkpoints import CheckpointError, load, load_weights
from ..config import InversionTrainConfig
from ..eval.metrics import evaluate_reconstruction
from .inversion import InversionTrainer

# Method name (the paper's row) -> model overrides.
METHODS = {
    "pSp": {"model.kind": "psp"},
    "w/o self": {"model.kind": "transformer", "model.use_self_attn": False},
    "full": {"model.kind": "transformer", "model.use_self_attn": True},
}


#: Table 1's quality columns; ``agreement`` is the attribute predictor's agreement on input vs reconstruction.
TABLE_METRICS = ("mse", "ssim", "perceptual", "agreement")
LOWER_BETTER = frozenset({"mse", "perceptual", "lpips", "params_m"})
#: The one held-out set of the multi-seed table: a seed no trainer uses (training sets are
#: seed + 10_000, validation sets seed + 20_000, the latent classifier's faces 30_000-70_000).
HELD_OUT_SEED, HELD_OUT_N = 80_000, 200
SEEDS_CSV = "table1_toyfaces_seeds.csv"
CURVES_CSV = "table1_toyfaces_curves.csv"
#: TensorBoard scalars of a run kept for the learning-curve look.
CURVE_TAGS = ("train/loss", "val/loss", "val/l2", "val/perceptual")


def method_slug(name: str) -> str:
    return {"pSp": "psp", "w/o self": "wo_self", "full": "full"}[name]


def shipped_encoder(name: str) -> str:
    """The registered artefact name of a method's shipped ToyFaces encoder."""
    return {"pSp": "toy-psp", "w/o self": "toy-wo-self", "full": "toy-full"}[name]


def method_config(base: InversionTrainConfig, name: str) -> InversionTrainConfig:
    return base.override({**METHODS[name], "out": str(Path(base.out) / method_slug(name)), "figures": ""})


def train_ablation(base: InversionTrainConfig, ship: bool = False) -> dict:
    """Train (or resume) the three encoders; returns {method: model}."""
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
    rows = []
    for name, model in models.items():
        metrics = evaluate_reconstruction(model, images, batch=batch, predictor=predictor)
        row = {"method": name, "params_m": model.encoder_parameter_count() / 1e6,
               "mse": metrics["mse"], "ssim": metrics["ssim"]}
        if metrics.get("predictor_distance") is not None:
            row["perceptual"] = metrics["predictor_distance"]   # the toy stand-in for LPIPS
        if metrics.get("attribute_agreement_mean") is not None:
            row["agreement"] = metrics["attribute_agreement_mean"]
        if metrics.get("lpips") is not None:
            row["lpips"] = metrics["lpips"]
        rows.append(row)
    return rows


def held_out_images() -> torch.Tensor:
    """The multi-seed table's held-out faces (:data:`HELD_OUT_N` at :data:`HELD_OUT_SEED`)."""
    from ..toy import ToyFacesDataset

    return ToyFacesDataset(HELD_OUT_N, seed=HELD_OUT_SEED).images


def load_run(run_dir) -> tuple[dict, int, int]:
    """``({method: encoder}, seed, steps)`` of a finished ``ablation`` run folder (``<method>/encoder.safetensors``
    and ``<method>/last.pt`` for the seed); every method must have trained with the same seed and steps."""
    run_dir = Path(run_dir)
    models, seeds, steps = {}, set(), set()
    for name in METHODS:
        folder = run_dir / method_slug(name)
        encoder = folder / "encoder.safetensors"
        if not encoder.is_file():
            raise CheckpointError(f"{encoder} not found: is {run_dir} a finished `python -m stytr ablation` run?")
        models[name] = artifacts.load("encoder", str(encoder))
        steps.add(int(load_weights(encoder)[1].get("steps", -1)))
        seeds.add(int(load(folder / "last.pt")["train_config"]["seed"]))
    if len(seeds) != 1 or len(steps) != 1:
        raise CheckpointError(f"{run_dir}: the methods differ in seed {sorted(seeds)} or steps {sorted(steps)}")
    return models, seeds.pop(), steps.pop()


def seed_rows(models: dict, seed: int, steps: int, images: torch.Tensor, predictor) -> list[dict]:
    """:func:`ablation_table` rows of one seed's encoders, with ``seed`` and ``steps`` in front."""
    return [{"seed": seed, "steps": steps, **row} for row in ablation_table(models, images, predictor=predictor)]


def evaluate_seeds(run_dirs=(), shipped_seed: int | None = None, images: torch.Tensor | None = None,
                   predictor=None) -> list[dict]:
    """One row per (seed, method) on :func:`held_out_images`: the shipped encoders as ``shipped_seed``
    (when given) and every finished run folder in ``run_dirs``. Seeds must not repeat."""
    images = held_out_images() if images is None else images
    from ..domains import get_domain

    # The domain's judge knows which attributes ToyFaces models: agreement is scored on those.
    predictor = get_domain("toyfaces").load("predictor") if predictor is None else predictor
    runs = []
    if shipped_seed is not None:
        steps = {int(load_weights(artifacts.find("encoder", shipped_encoder(m)).path)[1]["steps"]) for m in METHODS}
        if len(steps) != 1:
            raise CheckpointError(f"the shipped ablation encoders differ in steps: {sorted(steps)}")
        runs.append((load_shipped_ablation(), int(shipped_seed), steps.pop()))
    runs += [load_run(d) for d in run_dirs]
    seeds = [r[1] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat across the runs: {seeds}")
    budgets = {r[2] for r in runs}
    if len(budgets) > 1:
        raise ValueError(f"the runs trained for different budgets {sorted(budgets)}: one budget for all, please")
    return [row for models, seed, steps in runs for row in seed_rows(models, seed, steps, images, predictor)]


def seed_report(rows: list[dict], metrics=TABLE_METRICS) -> str:
    """Text: per method the mean and 95 % t-interval over seeds of each metric, then the paired
    per-seed comparisons full vs w/o self and full vs pSp (difference, interval, p, seeds won)."""
    from ..eval.seeds import paired_rows, seed_summary

    lines = ["method     seeds " + "".join(f"{m:>28s}" for m in metrics)]
    for r in seed_summary(rows, metrics):
        cells = "".join(f"{r[m + '_mean']:>10.4f} [{r[m + '_lo']:.4f}, {r[m + '_hi']:.4f}]" for m in metrics)
        lines.append(f"{r['method']:10s} {r['n_seeds']:5d} {cells}")
    for other in ("w/o self", "pSp"):
        for c in paired_rows(rows, "full", other, metrics, LOWER_BETTER):
            lines.append(f"{c['comparison']:16s} {c['metric']:10s} diff {c['mean_diff']:+.4f} "
                         f"[{c['lo']:+.4f}, {c['hi']:+.4f}]  p={c['p']:.3f}  full better on {c['a_better']}/{c['n']} seeds")
    return "\n".join(lines)


def run_curves(run_dir) -> list[dict]:
    """Learning curves of a finished run folder from its TensorBoard events (every method's ``tb/``):
    rows ``{seed, method, tag, step, value}`` for :data:`CURVE_TAGS`. A resumed run has several event
    files; the latest value of a step wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, seed, _ = load_run(run_dir)
    rows = []
    for name in METHODS:
        values: dict[tuple[str, int], float] = {}
        for events in sorted((Path(run_dir) / method_slug(name) / "tb").glob("events.out.tfevents.*")):
            acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
            acc.Reload()
            for tag in set(CURVE_TAGS) & set(acc.Tags()["scalars"]):
                values.update({(tag, e.step): e.value for e in acc.Scalars(tag)})
        rows += [{"seed": seed, "method": name, "tag": tag, "step": step, "value": v}
                 for (tag, step), v in sorted(values.items())]
    return rows


def read_rows(csv_path) -> list[dict]:
    """Rows of a CSV written by :func:`write_table`, numbers as floats (``seed``/``steps`` as ints)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: (int(v) if k in ("seed", "steps", "step") else v if k in ("method", "tag") else float(v))
                    for k, v in r.items()})
    return out


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
