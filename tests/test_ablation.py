"""The ToyFaces Table 1 runner: three methods, one budget, one held-out set."""
import csv

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
    write_table(rows, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").exists()
