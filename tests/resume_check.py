"""Helpers of the exact-resume tests: kill a fit part-way, compare states bit for bit."""
import torch


def die_at(trainer, step):
    """Make ``trainer`` die (as a killed process would) when it starts the step after ``step`` steps."""
    real = trainer.train_step

    def train_step(batch):
        if trainer.loop.step == step:
            raise KeyboardInterrupt
        return real(batch)

    trainer.train_step = train_step


def assert_same_state(a, b, path=""):
    """Equal nested state dicts: tensors bit for bit, everything else by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def without_times(history):
    return [{k: v for k, v in entry.items() if k != "wall_s"} for entry in history]
