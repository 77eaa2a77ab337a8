"""The ToyFaces Table 1 runner: three methods, one budget, one held-out set."""
import csv

import torch

from stytr.config import InversionTrainConfig
from stytr.toy import AttributePredictor
from stytr import artifacts
from stytr.train.ablation import METHODS, ablation_table, method_config, train_ablation, write_table


def test_methods_differ_only_in_the_architecture(tmp_path):
    base = InversionTrainConfig.preset("smoke", out=str(tmp_path))
    cfgs = {name: method_config(base, name) for name in METHODS}
    assert cfgs["pSp"].model.kind == "psp" and cfgs["w/o self"].model.use_self_attn is False
    for cfg in cfgs.values():
        assert (cfg.steps, cfg.seed, cfg.lr, cfg.batch) == (base.steps, base.seed, base.lr, base.batch)
    assert len({c.out for c in cfgs.values()}) == 3


def test_ablation_trains_evaluates_and_writes_table(tmp_path):
    base = InversionTrainConfig.preset("smoke", out=str(tmp_path / "runs"), steps=2)
    models = train_ablation(base)
    assert list(models) == ["pSp", "w/o self", "full"]
    # The exported encoders load back with identical outputs.
    again = artifacts.load("encoder", tmp_path / "runs" / "full" / "encoder.safetensors")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(again.encode(x), models["full"].encode(x), atol=1e-2)
    rows = ablation_table(models, x, predictor=AttributePredictor().eval())
    assert [r["method"] for r in rows] == ["pSp", "w/o self", "full"]
    assert rows[0]["params_m"] > rows[2]["params_m"] > rows[1]["params_m"]
    write_table(rows, tmp_path / "t.csv", tmp_path / "t.png")
    with open(tmp_path / "t.csv") as f:
        read = list(csv.DictReader(f))
    assert {"method", "params_m", "mse", "ssim", "perceptual"} <= set(read[0])
    assert (tmp_path / "t.png").stat().st_size > 1000
