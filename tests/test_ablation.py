"""The ToyFaces Table 1 runner: three methods, one budget, one held-out set."""
import csv

import torch

from stytr import artifacts
from stytr.checkpoints import REPO_ROOT
from stytr.config import InversionTrainConfig
from stytr.toy import AttributePredictor
from stytr.train.ablation import METHODS, ablation_table, method_config, run_ablation, train_ablation, write_table


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
    base = InversionTrainConfig.preset("smoke", out=str(tmp_path / "runs"), steps=2)
    before = figures_snapshot()
    rows = run_ablation(base, predictor=AttributePredictor().eval())
    assert figures_snapshot() == before           # no --ship: nothing is written outside out
    assert [r["method"] for r in rows] == ["pSp", "w/o self", "full"]
    assert rows[0]["params_m"] > rows[2]["params_m"] > rows[1]["params_m"]
    with open(tmp_path / "runs" / "table1_toyfaces.csv") as f:
        read = list(csv.DictReader(f))
    assert {"method", "params_m", "mse", "ssim", "perceptual"} <= set(read[0])
    assert (tmp_path / "runs" / "table1_toyfaces.png").stat().st_size > 1000
    # The exported encoders load back with the trained outputs; a second call resumes, not retrains.
    models = train_ablation(base)
    again = artifacts.load("encoder", tmp_path / "runs" / "full" / "encoder.safetensors")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(again.encode(x), models["full"].encode(x), atol=1e-2)
    write_table(ablation_table(models, x, predictor=AttributePredictor().eval()), tmp_path / "t.csv")
    assert (tmp_path / "t.csv").exists()
