"""ToyFaces trainers (smoke sizes): the predictor and the renderer distillation, including resume."""
import json

import torch

from stytr.checkpoints import load_weights
from stytr.config import ToyDistillConfig, ToyPredictorConfig
from stytr.toy import AttributePredictor
from stytr import artifacts
from stytr.train.toy_generator import batch_z, export_from_checkpoint, multiscale_l1, train_toy_generator
from stytr.train.toy_predictor import random_blur, train_toy_predictor


def test_predictor_smoke(tmp_path):
    report = train_toy_predictor(ToyPredictorConfig.preset("smoke", out=str(tmp_path)))
    assert set(report["val_accuracy"]) >= {"Smiling", "Male", "Eyeglasses"}
    state, _ = load_weights(tmp_path / "toyfaces_attribute_predictor.safetensors")
    AttributePredictor().load_state_dict(state)


def test_blur_only_touches_selected_images():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    out = random_blur(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)
    out = random_blur(x, 1.0, torch.Generator().manual_seed(0))
    assert not torch.equal(out, x) and out.abs().max() <= 1


def test_distillation_resumes_and_exports(tmp_path):
    predictor = AttributePredictor()
    cfg = ToyDistillConfig.preset("smoke", out=str(tmp_path / "a"), steps=4, ckpt_every=2)
    train_toy_generator(cfg, predictor=predictor)
    straight = artifacts.load("generator", tmp_path / "a" / "toyfaces_generator.safetensors")

    # Stop after 2 steps, then run the same command to 4: the result equals the uninterrupted run.
    b = cfg.override({"out": str(tmp_path / "b")})
    train_toy_generator(b.override({"steps": 2}), predictor=predictor)
    report = train_toy_generator(b, predictor=predictor)
    resumed = artifacts.load("generator", tmp_path / "b" / "toyfaces_generator.safetensors")
    for (n, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), n
    assert report["steps"] == 4 and (tmp_path / "b" / "samples_000004.png").exists()
    meta = load_weights(tmp_path / "b" / "toyfaces_generator.safetensors")[1]
    assert json.loads(meta["generator_config"])["size"] == 64
    # An exported checkpoint names the command that reproduces it; one from before the end says which part.
    report = export_from_checkpoint(tmp_path / "b" / "last.pt", tmp_path / "export.safetensors")
    exported = artifacts.load("generator", tmp_path / "export.safetensors")
    assert report["steps"] == 4 and torch.equal(exported.conv1.conv.weight, resumed.conv1.conv.weight)
    assert load_weights(tmp_path / "export.safetensors")[1]["command"].endswith("--preset toy --ship")
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    state["step"] = 2
    torch.save(state, tmp_path / "mid.pt")
    export_from_checkpoint(tmp_path / "mid.pt", tmp_path / "mid.safetensors")
    assert load_weights(tmp_path / "mid.safetensors")[1]["command"].startswith("the first 2 of 4 steps of: python")


def test_batches_are_a_function_of_step():
    cfg = ToyDistillConfig.preset("smoke")
    assert torch.equal(batch_z(cfg, 3), batch_z(cfg, 3)) and not torch.equal(batch_z(cfg, 3), batch_z(cfg, 4))
    a = torch.zeros(1, 3, 8, 8)
    assert multiscale_l1(a, a + 1, (1, 2)).item() == 1.0


def test_distillation_lr_schedule_is_constant_then_linear():
    from stytr.config import ToyDistillConfig

    cfg = ToyDistillConfig(steps=100, lr_decay_start=60, lr_final_mult=0.1)
    assert cfg.lr_multiplier(0) == cfg.lr_multiplier(59) == 1.0
    assert abs(cfg.lr_multiplier(80) - 0.55) < 1e-9
    assert abs(cfg.lr_multiplier(100) - 0.1) < 1e-9
    assert ToyDistillConfig(steps=50, lr_decay_start=60).lr_multiplier(55) == 1.0
