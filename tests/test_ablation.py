"""The ToyFaces Table 1 runner: three methods, one budget, one held-out set."""
import csv

import pytest
import torch

from stytr import artifacts
from stytr.checkpoints import REPO_ROOT
from stytr.cli import main
from stytr.config import InversionTrainConfig
from stytr.toy import AttributePredictor
from stytr.train.ablation import METHODS, ablation_table, method_config, train_ablation, write_table


def test_methods_differ_only_in_the_architecture(tmp_path):
    base = InversionTrainConfig.preset("smoke", out=str(tmp_path))
    cfgs = {name: method_config(base, name) for name in METHODS}
    assert cfgs["pSp"].model.kind == "psp" and cfgs["w/o self"].model.use_self_attn is False
    for cfg in cfgs.values():
        assert (cfg.steps, cfg.seed, cfg.lr, cfg.batch) == (base.steps, base.seed, base.lr, base.batch)
    assert len({c.out for c in cfgs.values()}) == 3


def figures_snapshot():
    return {p.name: p.read_bytes() for p in (REPO_ROOT / "figures").glob("*") if p.is_file()}


def test_ablation_trains_evaluates_and_writes_table(tmp_path):
    """A real CLI call without --ship: the table goes into --out, the repository's figures/ keeps its bytes."""
    out = tmp_path / "runs"
    before = figures_snapshot()
    main(["ablation", "--preset", "smoke", "--out", str(out), "--steps", "2"])
    assert figures_snapshot() == before
    with open(out / "table1_toyfaces.csv") as f:
        read = list(csv.DictReader(f))
    assert [r["method"] for r in read] == ["pSp", "w/o self", "full"]
    assert {"method", "params_m", "mse", "ssim", "perceptual"} <= set(read[0])
    assert (out / "table1_toyfaces.png").stat().st_size > 1000
    # A second call resumes the finished runs; the exported encoders load back with the trained outputs.
    models = train_ablation(InversionTrainConfig.preset("smoke", out=str(out), steps=2))
    assert list(models) == ["pSp", "w/o self", "full"]
    again = artifacts.load("encoder", out / "full" / "encoder.safetensors")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(again.encode(x), models["full"].encode(x), atol=1e-2)
    rows = ablation_table(models, x, predictor=AttributePredictor().eval())
    assert rows[0]["params_m"] > rows[2]["params_m"] > rows[1]["params_m"]
    write_table(rows, tmp_path / "t.csv", tmp_path / "t.png")
    with open(tmp_path / "t.csv") as f:
        read = list(csv.DictReader(f))
    assert {"method", "params_m", "mse", "ssim", "perceptual"} <= set(read[0])
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_seeds_are_scored_on_one_held_out_set_with_intervals(tmp_path):
    import math

    from stytr.eval.seeds import paired_rows, seed_summary
    from stytr.train.ablation import (TABLE_METRICS, evaluate_seeds, load_run, read_rows, run_curves,
                                      seed_report)

    for seed in (0, 1):
        train_ablation(InversionTrainConfig.preset("smoke", out=str(tmp_path / f"seed_{seed}"), steps=2, seed=seed))
    models, seed, steps = load_run(tmp_path / "seed_1")
    assert (seed, steps, list(models)) == (1, 2, ["pSp", "w/o self", "full"])
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    torch.manual_seed(0)
    rows = evaluate_seeds([tmp_path / "seed_0", tmp_path / "seed_1"], images=images,
                          predictor=AttributePredictor().eval())
    assert [(r["seed"], r["method"]) for r in rows] == [(s, m) for s in (0, 1) for m in METHODS]
    assert all(set(TABLE_METRICS) <= set(r) for r in rows)
    # The two seeds give different encoders, hence different scores and a real interval.
    assert rows[0]["mse"] != rows[3]["mse"]
    summary = {r["method"]: r for r in seed_summary(rows, TABLE_METRICS)}
    full = summary["full"]
    assert full["n_seeds"] == 2 and full["mse_lo"] < full["mse_mean"] < full["mse_hi"]
    comparison = paired_rows(rows, "full", "pSp", ["mse"], {"mse"})[0]
    assert comparison["n"] == 2 and 0 <= comparison["p"] <= 1 and comparison["lo"] < comparison["hi"]
    write_table(rows, tmp_path / "seeds.csv")
    back = read_rows(tmp_path / "seeds.csv")
    assert all(math.isclose(a["mse"], b["mse"], rel_tol=1e-12) and a["seed"] == b["seed"] for a, b in zip(rows, back))
    assert "full - w/o self" in seed_report(rows)
    curves = run_curves(tmp_path / "seed_1")
    tags = {(r["method"], r["tag"]) for r in curves}
    assert {(m, "val/l2") for m in METHODS} <= tags and all(r["seed"] == 1 for r in curves)
    assert [r["step"] for r in curves if r["method"] == "full" and r["tag"] == "train/loss"] == [1, 2]
    # One seed twice is refused: the interval would count it twice.
    with pytest.raises(ValueError, match="seeds repeat"):
        evaluate_seeds([tmp_path / "seed_1", tmp_path / "seed_1"], images=images, predictor=AttributePredictor())
