"""The shared config system, safe checkpoint I/O and the CLI's argument handling."""
import os

import pytest
import torch

from stytr.cli import build_parser, main
from stytr.checkpoints import CheckpointError, load, load_weights, save_atomic, save_weights
from stytr.config import GeneratorConfig, InversionTrainConfig, ToyDistillConfig


def test_presets_and_nested_overrides():
    cfg = InversionTrainConfig.preset("toy")
    assert cfg.model.generator.size == 64 and cfg.data == "toyfaces" and cfg.optimizer == "ranger"
    paper = InversionTrainConfig.preset("ffhq")
    assert (paper.lr, paper.batch, paper.steps, paper.l2, paper.lpips, paper.id) == (1e-4, 8, 600000, 1.0, 0.8, 0.1)
    assert paper.model.generator.size == 1024 and paper.model.input_size == 256
    new = cfg.override(["lr=3e-4", "model.use_self_attn=false", "model.generator.channel_max=32", "out=x"])
    assert new.lr == 3e-4 and new.model.use_self_attn is False and new.model.generator.channel_max == 32
    assert cfg.lr == 5e-4  # the original is untouched
    assert InversionTrainConfig.from_dict(new.to_dict()) == new


def test_override_errors():
    cfg = ToyDistillConfig.preset("toy")
    with pytest.raises(KeyError, match="no field"):
        cfg.override(["learning_rate=1"])
    with pytest.raises(KeyError, match="no section"):
        cfg.override(["optim.lr=1"])
    with pytest.raises(ValueError, match="preset"):
        GeneratorConfig.preset("imagenet")
    with pytest.raises(ValueError, match="boolean"):
        InversionTrainConfig.preset("toy").override(["bf16=maybe"])


def test_cli_config_fields_are_flags(capsys):
    parser, keys = build_parser(["train-inversion", "--preset", "toy"])
    assert "model.use_self_attn" in keys["train-inversion"] and "lr" in keys["train-inversion"]
    args = parser.parse_args(["train-inversion", "--preset", "toy", "--lr", "3e-4", "--model.use_self_attn=false"])
    assert args.preset == "toy" and getattr(args, "cfg:lr") == "3e-4"
    with pytest.raises(SystemExit):
        parser.parse_args(["invert", "--restart"])            # invert resumes nothing: no --restart
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    with pytest.raises(SystemExit) as err:
        main(["train-inversion", "--preset", "smoke", "--lr", "abc"])
    assert err.value.code == 2 and "lr" in capsys.readouterr().err


class Foreign:
    """Stands for any pickled code object, which weights_only loading must refuse."""


def test_atomic_save_and_safe_load(tmp_path):
    path = save_atomic({"a": torch.ones(2), "step": 3}, tmp_path / "sub" / "ckpt.pt")
    assert load(path)["step"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left behind

    torch.save({"obj": Foreign()}, tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="pickle.pt"):
        load(tmp_path / "pickle.pt")  # weights_only refuses arbitrary objects
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load(tmp_path / "nothing.pt")


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = save_atomic({"v": 1}, tmp_path / "ckpt.pt")

    def broken(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"v": 2}, path)
    monkeypatch.undo()
    assert load(path)["v"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_safetensors_weights_roundtrip(tmp_path):
    state = {"w": torch.randn(3, 4), "n": torch.tensor([1, 2])}
    path = save_weights(state, tmp_path / "w.safetensors", metadata={"note": "x"})
    loaded, meta = load_weights(path)
    assert meta["note"] == "x" and loaded["w"].dtype == torch.float32 and loaded["n"].dtype == torch.int64
    assert torch.allclose(loaded["w"], state["w"], atol=1e-2)  # stored as fp16
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_weights(tmp_path / "bad.safetensors")


def test_written_files_are_readable_by_others(tmp_path):
    """Shipped weights must not end up 0600 (mkstemp and safetensors create private files)."""
    old = os.umask(0o022)
    try:
        a = save_atomic({"v": 1}, tmp_path / "a.pt")
        b = save_weights({"w": torch.ones(2)}, tmp_path / "b.safetensors")
    finally:
        os.umask(old)
    for path in (a, b):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_editing_config_strengths():
    from stytr.config import EditingConfig

    toy = EditingConfig.preset("toy")
    assert toy.strength("label-1") == 8.0 and toy.strength("label-1", "Male") == 12.0
    assert toy.strength("interfacegan-conditional", "Young") == 6.0
    assert EditingConfig.preset("ffhq").strength("label-2", "Male") == 3.0    # the authors' alpha
    assert EditingConfig.from_dict(toy.to_dict()) == toy
    with pytest.raises(ValueError, match="no default strength"):
        toy.strength("attributes")
