"""StyleGAN2 training (``train-generator``): losses, DiffAugment, checkpoints, exact resume, DDP, the
Fréchet distance."""
from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from stytr import artifacts
from stytr.checkpoints import load
from stytr.cli import main
from stytr.config import ConfigError, GeneratorTrainConfig
from stytr.eval.frechet import FeatureStatistics, feature_statistics, frechet_distance
from stytr.train.augment import diff_augment
from stytr.train.distributed import DistInfo
from stytr.train.loop import Loop
from stytr.train.stylegan2 import (StyleGAN2Trainer, d_logistic_loss, g_nonsaturating_loss, lazy_adam,
                                   path_length_penalty, r1_penalty, train_generator)

torch.set_num_threads(1)


def smoke(tmp_path, **changes) -> GeneratorTrainConfig:
    return GeneratorTrainConfig.preset("smoke", out=str(tmp_path / "run"), **changes)


# -- losses and optimiser -----------------------------------------------------------------------

def test_losses_at_known_points():
    zero = torch.zeros(4, 1)
    assert d_logistic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating_loss(zero).item() == pytest.approx(math.log(2))
    # D(x) = <a, x> has the gradient a everywhere: R1 = |a|^2.
    a = torch.randn(3, 4, 4)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert r1_penalty((x * a).flatten(1).sum(1), x).item() == pytest.approx(a.pow(2).sum().item(), rel=1e-5)


def test_path_length_of_a_linear_map():
    """G(w) = M w per row: |J^T y| for y ~ N(0, I/(HW)) has expectation ~ |M|_F / sqrt(HW) per row."""
    torch.manual_seed(0)
    m = torch.randn(3 * 8 * 8, 16)
    w = torch.randn(512, 2, 16, requires_grad=True)
    fake = (w @ m.T).sum(1).view(512, 3, 8, 8)
    penalty, new_mean, length = path_length_penalty(fake, w, torch.zeros(()), 0.01, torch.Generator().manual_seed(1))
    expected = m.pow(2).sum().sqrt() / 8       # sqrt(2 rows * |M|^2 / 2 / 64): mean over the two rows
    assert length.item() == pytest.approx(expected.item(), rel=0.05)
    assert new_mean.item() == pytest.approx(0.01 * length.item())
    assert penalty.item() > 0


def test_lazy_regularisation_scales_lr_and_betas():
    opt = lazy_adam([torch.nn.Parameter(torch.zeros(1))], 0.002, (0.0, 0.99), every=16)
    c = 16 / 17
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * c)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** c))


# -- DiffAugment ----------------------------------------------------------------------------

def test_diffaugment_is_seeded_differentiable_and_does_what_it_says():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_()
    a = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(3))
    b = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(8, 3, 16, 16)
    cut = diff_augment(ones, "cutout", torch.Generator().manual_seed(0))
    zeros = (cut == 0).all(1).flatten(1).sum(1)
    assert (zeros <= 64).all() and (zeros > 0).all()        # at most one 8x8 square per image
    shifted = diff_augment(ones, "translation", torch.Generator().manual_seed(0))
    assert ((shifted == 0) | (shifted == 1)).all()
    with pytest.raises(ValueError, match="rotate"):
        diff_augment(x, "color,rotate", torch.Generator())


# -- Fréchet distance ---------------------------------------------------------------------------

def test_frechet_distance_closed_forms():
    d = 6
    mean_a, mean_b = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    var_a, var_b = torch.rand(d, dtype=torch.float64) + 0.1, torch.rand(d, dtype=torch.float64) + 0.1
    a = FeatureStatistics(mean_a, torch.diag(var_a), 100)
    b = FeatureStatistics(mean_b, torch.diag(var_b), 100)
    expected = (mean_a - mean_b).pow(2).sum() + (var_a.sqrt() - var_b.sqrt()).pow(2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 5)), rng.standard_normal((300, 5)) @ rng.standard_normal((5, 5)) + 1
    a, b = feature_statistics(x), feature_statistics(y)
    s1, s2 = a.cov.numpy(), b.cov.numpy()
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = ((a.mean - b.mean) ** 2).sum().item() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


# -- training runs ------------------------------------------------------------------------------

def test_cli_writes_rosinality_checkpoints_that_load_as_generators(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train-generator", "--preset", "smoke", "--out", str(out), "--steps", "2"])
    assert "final.pt" in capsys.readouterr().out
    ckpt = load(out / "final.pt")
    assert {"g", "d", "g_ema", "g_optim", "d_optim", "latent_avg"} <= set(ckpt)
    assert ckpt["step"] == 2
    g = artifacts.load("generator", out / "final.pt")
    assert g.size == 32 and g.style_dim == 32
    for k, v in g.state_dict().items():
        assert torch.equal(v, ckpt["g_ema"][k]), k
    assert torch.allclose(g.latent_avg, ckpt["latent_avg"])


def test_training_changes_both_nets_and_follows_the_ema(tmp_path):
    trainer = StyleGAN2Trainer(smoke(tmp_path))
    g0 = {k: v.clone() for k, v in trainer.g.state_dict().items()}
    d0 = {k: v.clone() for k, v in trainer.d.state_dict().items()}
    for step in range(3):
        logs = trainer.train_step(trainer.batch_for_step(step))
        assert all(math.isfinite(v) for v in logs.values())
    assert {"d", "g", "r1", "path", "path_length"} <= set(trainer.train_step(trainer.batch_for_step(4)))
    assert not torch.equal(g0["convs.0.conv.weight"], trainer.g.state_dict()["convs.0.conv.weight"])
    assert not torch.equal(d0["convs.0.0.weight"], trainer.d.state_dict()["convs.0.0.weight"])
    # The EMA trails the trained weights.
    ema = trainer.g_ema.state_dict()["convs.0.conv.weight"]
    assert not torch.equal(ema, trainer.g.state_dict()["convs.0.conv.weight"])
    assert trainer.ema_decay(0) == pytest.approx(0.5 ** (4 / 10_000))       # half-life of ema_kimg = 10


def test_ema_rampup(tmp_path):
    trainer = StyleGAN2Trainer(smoke(tmp_path, ema_rampup=0.05))
    assert trainer.ema_decay(0) == 0.0                                       # g_ema = g at the start
    assert 0 < trainer.ema_decay(10) < trainer.ema_decay(1000) < trainer.ema_decay(10**6) < 1
    assert trainer.ema_decay(10**6) == pytest.approx(0.5 ** (4 / 10_000))


def test_resume_is_exact(tmp_path):
    """4 steps in one go == 2 steps, a new process state, then 2 more from last.pt (R1 and path length
    fall on steps 0 and 2)."""
    straight, _ = train_generator(smoke(tmp_path / "a"), resume=False, progress=False)
    first, _ = train_generator(smoke(tmp_path / "b", steps=2), resume=False, progress=False)
    torch.manual_seed(1234)                    # the resumed run must not depend on the RNG it starts with
    resumed, loop = train_generator(smoke(tmp_path / "b"), resume=True, progress=False)
    assert loop.step == 4
    for name in ("g", "d", "g_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k}"
    assert torch.equal(straight.mean_path_length, resumed.mean_path_length)


def test_image_folder_with_diffaugment_and_a_judge(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = smoke(tmp_path, data=str(folder), augment="diffaugment", flip=True, judge="toy", n_eval=8, steps=2)
    trainer, loop = train_generator(cfg, resume=False, progress=False)
    assert trainer.batch_for_step(0)["real"].shape == (4, 3, 32, 32)
    assert math.isfinite(loop.metrics["frechet"]) and loop.metrics["loss"] == loop.metrics["frechet"]
    assert (tmp_path / "run" / "best.pt").is_file()


def test_bad_settings_fail_with_the_key(tmp_path, capsys):
    with pytest.raises(ConfigError, match="augment"):
        smoke(tmp_path, augment="ada")
    with pytest.raises(ValueError, match="--data"):
        StyleGAN2Trainer(smoke(tmp_path, data=""))
    with pytest.raises(FileNotFoundError):
        StyleGAN2Trainer(smoke(tmp_path, data=str(tmp_path / "missing")))
    with pytest.raises(SystemExit) as err:
        main(["train-generator", "--preset", "smoke", "--out", str(tmp_path / "x"), "--size", "48"])
    assert err.value.code == 2 and "resolution" in capsys.readouterr().err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_dict, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from stytr.train.distributed import cleanup, setup

    info = setup("cpu")
    trainer = StyleGAN2Trainer(GeneratorTrainConfig.from_dict(cfg_dict), info)
    logs = trainer.train_step(trainer.batch_for_step(0))      # step 0: R1 and path length too
    torch.save({"g": trainer.g.state_dict(), "d": trainer.d.state_dict(), "logs": logs,
                "real": trainer.batch_for_step(0)["real"]}, f"{result_path}.{rank}")
    cleanup()


def test_ddp_ranks_share_the_batch_and_stay_in_sync(tmp_path):
    cfg = smoke(tmp_path)
    result = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg.to_dict(), str(result)), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{result}.{r}", weights_only=True) for r in (0, 1))
    full = StyleGAN2Trainer(cfg, DistInfo()).batch_for_step(0)["real"]
    assert torch.equal(torch.cat([r0["real"], r1["real"]]), full[[0, 2, 1, 3]])
    for name in ("g", "d"):
        for k in r0[name]:
            assert torch.equal(r0[name][k], r1[name][k]), f"{name}.{k} differs between ranks"
    assert r0["logs"] == r1["logs"] and {"r1", "path"} <= set(r0["logs"])


def test_toy_comparison_rows():
    """The shipped distilled generator agrees with the renderer; a random one does not, and sits
    further from the renders in the predictor's features."""
    from stytr.config import GeneratorConfig
    from stytr.toy.generator import compare_generators

    torch.manual_seed(0)
    rows = compare_generators({"shipped": artifacts.load("generator", "toy"),
                               "random": GeneratorConfig.preset("toy", checkpoint="").build().eval()},
                              artifacts.load("predictor", "toy"), n=64)
    by = {r["generator"]: r for r in rows}
    assert list(by) == ["renders", "shipped", "random"]
    assert by["shipped"]["agreement"] > 0.9 > by["random"]["agreement"]
    assert by["renders"]["frechet"] < by["shipped"]["frechet"] < by["random"]["frechet"]
    assert 0 <= by["random"]["rate_gap"] <= 1
