"""The shared training loop: what it keeps when a run goes wrong, resume rules, strict JSON, files."""
import json
import math
from dataclasses import dataclass

import pytest
import torch

from stytr.config import Config, ConfigError
from stytr.train.loop import ConfigMismatch, Loop, NonFiniteError, set_hyperparameters
from stytr.train.sampling import StepSampler

from resume_check import assert_same_state, die_at, without_times


@dataclass
class TinyConfig(Config):
    lr: float = 0.05
    batch: int = 4
    seed: int = 0
    steps: int = 8
    out: str = "runs/tiny"


class Tiny:
    """Least squares with a dropout-like random mask: the global RNG matters, as in the real trainers."""

    def __init__(self, cfg, out, **loop):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1))
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.opt = torch.optim.SGD([self.w], lr=cfg.lr)
        self.sampler = StepSampler(20, cfg.batch, cfg.seed)
        self.metric = None            # when set, evaluate() returns it as the held-out loss
        self.loop = Loop(self, out, cfg.steps, **{"ckpt_every": 2, "eval_every": 2, **loop})

    def state_dict(self):
        return {"format": "tiny", "config": {}, "model": {"w": self.w.detach().clone()},
                "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["model"]["w"])
        self.opt.load_state_dict(state["optimizer"])
        set_hyperparameters(self.opt, lr=self.cfg.lr)

    def batch_for_step(self, step):
        return self.sampler.indices(step)

    def train_step(self, idx):
        keep = (torch.rand(3) > 0.2).float()
        loss = ((self.x[idx] @ (self.w * keep) - self.y[idx]) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "mse": loss.item()}

    def evaluate(self):
        if self.metric is not None:
            return {"loss": self.metric.pop(0), "note": "text is kept out of the history"}
        return {"loss": ((self.x @ self.w - self.y) ** 2).mean().item(), "undefined": math.nan}

    def sample(self):
        return None


def strict_json(path):
    """json.loads that refuses NaN/Infinity literals."""
    def refuse(token):
        raise ValueError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_killed_and_resumed_equals_one_run(tmp_path):
    whole = Tiny(TinyConfig(), tmp_path / "a")
    whole.loop.run()
    killed = Tiny(TinyConfig(), tmp_path / "b", ckpt_every=3)
    die_at(killed, 4)                         # last.pt at step 3, between two evaluations
    with pytest.raises(KeyboardInterrupt):
        killed.loop.run()
    torch.manual_seed(11)
    resumed = Tiny(TinyConfig(), tmp_path / "b")
    assert resumed.loop.resume() and resumed.loop.step == 3
    resumed.loop.run()
    assert_same_state(whole.state_dict(), resumed.state_dict())
    assert without_times(whole.loop.history) == without_times(resumed.loop.history)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "best.pt", "final.pt", "history.json", "last.pt", "metrics.json", "tb"]


def test_non_finite_loss_stops_without_touching_the_checkpoints(tmp_path):
    trainer = Tiny(TinyConfig(), tmp_path)
    trainer.loop.steps = 4
    trainer.loop.run()
    kept = {name: (tmp_path / name).read_bytes() for name in ("last.pt", "best.pt", "final.pt", "history.json")}
    trainer = Tiny(TinyConfig(lr=1e30), tmp_path)     # a finite but absurd learning rate diverges
    trainer.loop.resume(allow_changed_config=True)
    with pytest.raises(NonFiniteError, match=r"step \d+: loss term\(s\) loss=(nan|inf), mse=(nan|inf) went non-finite"):
        trainer.loop.run()
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept
    assert [h["step"] for h in strict_json(tmp_path / "history.json")] == [2, 4]


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = Tiny(TinyConfig(), tmp_path)
    trainer.loop.steps = 2
    trainer.loop.run()
    kept = (tmp_path / "last.pt").read_bytes()
    real = trainer.train_step

    def poisoned(idx):                        # step 4's loss is finite, its update is not
        logs = real(idx)
        if trainer.loop.step == 3:
            with torch.no_grad():
                trainer.w[1] = math.inf
        return logs

    trainer.train_step = poisoned
    trainer.loop.steps = 4
    with pytest.raises(NonFiniteError, match=r"step 4: model\.w holds NaN/inf values.*last good checkpoint is kept"):
        trainer.loop.run()
    assert (tmp_path / "last.pt").read_bytes() == kept


def test_history_is_strict_json_with_nan_metrics(tmp_path):
    trainer = Tiny(TinyConfig(steps=4), tmp_path)
    trainer.loop.run()
    history = strict_json(tmp_path / "history.json")
    assert history[-1]["val_undefined"] is None and "val_note" not in history[-1]
    assert strict_json(tmp_path / "metrics.json")["undefined"] is None


def test_resume_with_another_config_is_refused_unless_allowed(tmp_path):
    Tiny(TinyConfig(steps=2), tmp_path).loop.run()
    changed = Tiny(TinyConfig(steps=4, lr=0.1, batch=5, seed=3), tmp_path)
    with pytest.raises(ConfigMismatch, match=r"last\.pt was trained with another config \(batch 4 -> 5; lr 0\.05 -> "
                                             r"0\.1; seed 0 -> 3\).*allow_changed_config"):
        changed.loop.resume()
    longer = Tiny(TinyConfig(steps=4), tmp_path)           # a longer run of the same config is fine
    assert longer.loop.resume() and longer.opt.param_groups[0]["lr"] == 0.05
    assert changed.loop.resume(allow_changed_config=True)
    assert changed.opt.param_groups[0]["lr"] == 0.1 and changed.sampler.batch == 5   # the new values apply
    changed.loop.run()
    assert changed.loop.step == 4


def test_early_stopping_survives_a_resume(tmp_path):
    trainer = Tiny(TinyConfig(steps=20), tmp_path, patience=2, min_delta=0.0)
    trainer.metric = [1.0, 0.5, 0.6, 0.7, 0.1]
    trainer.loop.run()
    assert trainer.loop.stopped and trainer.loop.step == 8 and trainer.loop.best == 0.5
    again = Tiny(TinyConfig(steps=20), tmp_path, patience=2)
    assert again.loop.resume() and again.loop.run() == trainer.loop.history and again.loop.step == 8
    assert torch.equal(again.loop.load("best.pt")["model"]["w"], torch.load(tmp_path / "best.pt")["model"]["w"])


def test_stale_temporaries_are_removed_on_start(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = [tmp_path / ".last.pt.k2j3l4m5.tmp", tmp_path / ".latent_classifier.safetensors.a1b2_c3d.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    other = tmp_path / ".notes.txt.tmp"
    other.write_text("not ours")
    Tiny(TinyConfig(), tmp_path)
    assert not any(p.exists() for p in stale) and other.exists()


def test_in_memory_runs_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Tiny(TinyConfig(steps=4), None)
    trainer.loop.run()
    assert list(tmp_path.iterdir()) == [] and trainer.loop.load("best.pt")["step"] in (2, 4)


def test_step_sampler_is_a_function_of_seed_step_and_rank():
    one = StepSampler(10, 4, seed=1)
    assert torch.equal(one.indices(7), StepSampler(10, 4, seed=1).indices(7))
    assert one.steps_per_epoch == 2 and len(set(one.indices(0).tolist()) | set(one.indices(1).tolist())) == 8
    ranks = [StepSampler(10, 4, seed=1, rank=r, world=2).indices(5) for r in (0, 1)]
    assert sorted(torch.cat(ranks).tolist()) == sorted(one.indices(5).tolist())   # the ranks share the global batch
    assert StepSampler(10, 4, seed=1, drop_last=False).steps_per_epoch == 3
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepSampler(3, 4, seed=0)


def test_config_validates_itself():
    with pytest.raises(ConfigError, match=r"^steps=2\.5 is not allowed \(TinyConfig\): expected an integer$"):
        TinyConfig(steps=2.5)
