"""Inversion trainer: exact resume, DDP equivalence, checkpoints, CLI."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from stytr.config import InversionTrainConfig
from stytr.models.inversion import InversionModel
from stytr.train.distributed import DistInfo
from stytr.train.inversion import InversionTrainer


def smoke(tmp_path, **kw):
    return InversionTrainConfig.preset("smoke", out=str(tmp_path / "run"), **kw)


def run_steps(trainer, n):
    losses = []
    for _ in range(n):
        losses.append(trainer.train_step(trainer.batch_for_step(trainer.step))["loss"])
    return losses


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    cfg = smoke(tmp_path, steps=4, n_train=16, batch=4)  # 4 steps per epoch: the resume crosses into epoch 1
    full = run_steps(InversionTrainer(cfg.override({"out": str(tmp_path / "a")})), 6)

    first = InversionTrainer(cfg.override({"out": str(tmp_path / "b")}))
    part = run_steps(first, 3)
    first.save("last.pt")
    run_steps(first, 2)          # work after the checkpoint is lost when the process dies
    del first

    resumed = InversionTrainer(cfg.override({"out": str(tmp_path / "b")}))
    assert resumed.resume()
    assert resumed.step == 3
    rest = run_steps(resumed, 3)
    assert part + rest == pytest.approx(full, rel=1e-6, abs=1e-7)


def test_fit_writes_checkpoints_that_load(tmp_path):
    cfg = smoke(tmp_path)
    trainer = InversionTrainer(cfg)
    history = trainer.fit()
    out = tmp_path / "run"
    for name in ["last.pt", "best.pt", "final.pt", "history.json"]:
        assert (out / name).exists(), name
    assert [h["step"] for h in history] == [2, 4]
    assert any((out / "tb").iterdir())
    model = InversionModel.from_checkpoint(out / "final.pt")
    x = trainer.val_images[:2]
    with torch.no_grad():
        a = model(x, randomize_noise=False)
        trainer.model.eval()
        b = trainer.model(x, randomize_noise=False)
    assert torch.allclose(a, b, atol=1e-6)
    # fit() resumes rather than repeating finished work.
    again = InversionTrainer(cfg)
    assert again.resume() and again.step == 4


def test_trainable_sets(tmp_path):
    trainer = InversionTrainer(smoke(tmp_path))
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.") for n in trainable)
    assert any(n.startswith("decoder.style.") for n in trainable)        # the mapping MLP trains
    assert not any(n.startswith("decoder.") and not n.startswith("decoder.style.") for n in trainable)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    run_steps(trainer, 1)
    for n, p in trainer.model.named_parameters():
        if n.startswith("decoder.convs") or n.startswith("decoder.to_rgb"):
            assert torch.equal(before[n], p), n   # synthesis frozen


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_dict, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from stytr.train.distributed import cleanup, setup

    info = setup("cpu")
    trainer = InversionTrainer(InversionTrainConfig.from_dict(cfg_dict), info)
    loss = trainer.train_step(trainer.batch_for_step(0))["loss"]
    if rank == 0:
        torch.save({"params": {n: p.detach() for n, p in trainer.model.named_parameters()}, "loss": loss},
                   result_path)
    cleanup()


def test_one_ddp_step_equals_single_process_step(tmp_path):
    """Two gloo processes with 2 images each == one process with the 4 images.

    Dropout is off, flips are off and batch-norm uses running statistics, because those are
    per-process by nature (on GPUs the trainer switches to SyncBatchNorm instead)."""
    cfg = smoke(tmp_path, batch=4, n_train=16, flip=False, freeze_bn=True)
    cfg = cfg.override({"model.dropout": 0.0})
    result = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg.to_dict(), str(result)), nprocs=2, join=True)
    ddp = torch.load(result, weights_only=True)

    single = InversionTrainer(cfg, DistInfo())
    loss = single.train_step(single.batch_for_step(0))["loss"]
    assert loss == pytest.approx(ddp["loss"], rel=1e-5)
    for n, p in single.model.named_parameters():
        assert torch.allclose(p, ddp["params"][n], atol=1e-6), n


def test_bad_config_errors(tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        InversionTrainer(smoke(tmp_path, optimizer="sgdx"))
    with pytest.raises(ValueError, match="data source"):
        InversionTrainer(smoke(tmp_path, data="imagenet"))
    with pytest.raises(FileNotFoundError):
        InversionTrainer(smoke(tmp_path, data="folder", train_dir=str(tmp_path / "nope")))
