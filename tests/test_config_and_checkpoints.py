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


# -- validation (issue 11) ------------------------------------------------------------------

from stytr.config import (ConfigError, EditingConfig, LatentClassifierTrainConfig, ReferenceEditTrainConfig,
                          ToyPredictorConfig)

TRAIN_CONFIGS = [InversionTrainConfig, ReferenceEditTrainConfig, LatentClassifierTrainConfig, ToyDistillConfig,
                 ToyPredictorConfig]


@pytest.mark.parametrize("cls", TRAIN_CONFIGS)
@pytest.mark.parametrize("assignment, message", [
    ("ckpt_every=0", "ckpt_every=0 is not allowed ({cls}): expected a positive integer"),
    ("batch=-4", "batch=-4 is not allowed ({cls}): expected "),
    ("steps=2.5", "steps=2.5 is not allowed ({cls}): expected an integer"),
    ("steps=0", "steps=0 is not allowed ({cls}): expected a positive integer"),
    ("lr=abc", "lr: 'abc' is not a valid float"),
    ("lr=1e999", "lr=inf is not allowed ({cls}): expected a finite number > 0"),
    ("lr=-1e-3", "lr=-0.001 is not allowed ({cls}): expected a finite number > 0"),
    ("out=", "out='' is not allowed ({cls}): expected a non-empty path"),
])
def test_bad_values_are_refused_naming_key_value_and_range(cls, assignment, message):
    key = assignment.split("=")[0]
    cfg = cls.preset(next(iter(cls.PRESETS)))
    if not hasattr(cfg, key):
        pytest.skip(f"{cls.__name__} has no {key}")
    with pytest.raises(ConfigError) as err:
        cfg.override([assignment])
    assert str(err.value).startswith(message.format(cls=cls.__name__)) and "\n" not in str(err.value)


def test_validation_covers_nested_fields_presets_and_direct_construction():
    with pytest.raises(ConfigError, match=r"^model\.generator\.size=-1 is not allowed \(InversionTrainConfig\)"):
        InversionTrainConfig.preset("toy").override(["model.generator.size=-1"])
    with pytest.raises(ConfigError, match=r"preset='imagenet'.*one of \['ffhq', 'smoke', 'toy'\]"):
        InversionTrainConfig.preset("imagenet")
    with pytest.raises(ConfigError, match=r"optimizer='sgd'.*one of 'ranger', 'adam'"):
        InversionTrainConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match=r"batch=3.*an even integer >= 2"):
        ReferenceEditTrainConfig.preset("smoke", batch=3)
    with pytest.raises(ConfigError, match=r"val_fraction=1\.0.*\[0, 1\)"):
        LatentClassifierTrainConfig.preset("toy", val_fraction=1.0)
    with pytest.raises(ConfigError, match=r"label_1=nan"):
        EditingConfig(label_1=float("nan"))
    for cls in TRAIN_CONFIGS + [EditingConfig, GeneratorConfig]:
        for name in cls.PRESETS:
            assert cls.from_dict(cls.preset(name).to_dict()) == cls.preset(name)


def test_atomic_writes_fsync_file_then_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace", os.path.basename(a)))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for write in (lambda: save_atomic({"v": 1}, tmp_path / "a.pt"),
                  lambda: save_weights({"w": torch.ones(2)}, tmp_path / "b.safetensors")):
        events.clear()
        path = write()
        mine = events
        tmp_name = mine[1][1]
        assert tmp_name.startswith(f".{path.name}.") and tmp_name.endswith(".tmp")
        assert mine == [("fsync", str(tmp_path / tmp_name)), ("replace", tmp_name), ("fsync", str(tmp_path))]


# -- a tiny checkpoint describing a huge model (issue 11) --------------------------------------

def _record_builds(monkeypatch, module, name):
    """Wrap ``module.name`` so that the device each build happens on is recorded."""
    devices, real = [], getattr(module, name)

    def build(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, build)
    return devices


def test_tiny_inversion_checkpoint_with_a_huge_config_allocates_nothing(tmp_path, monkeypatch):
    import stytr.models.inversion as inversion
    from stytr.config import InversionConfig

    huge = InversionConfig.preset("ffhq", backbone_layers=152, dim_feedforward=1 << 20).to_dict()
    huge["generator"].update(channel_max=8192, channel_multiplier=16)       # tens of GB if built
    torch.save({"format": "stytr", "model_class": "StyleTransformer", "config": huge,
                "model": {"latent_avg": torch.zeros(2, 2)}}, tmp_path / "tiny.pt")
    assert (tmp_path / "tiny.pt").stat().st_size < 4096
    devices = _record_builds(monkeypatch, inversion, "build_inversion_model")
    with pytest.raises(CheckpointError, match=r"tiny\.pt does not fit StyleTransformer: .*missing.*latent_avg: file \(2, 2\)"):
        inversion.InversionModel.from_checkpoint(tmp_path / "tiny.pt")
    assert devices == ["meta"]


def test_tiny_edit_checkpoint_with_a_huge_config_allocates_nothing(tmp_path, monkeypatch):
    import stytr.models.edit_transformer as edit
    from stytr.config import EditTransformerConfig

    huge = EditTransformerConfig.preset("ffhq", dim_feedforward=1 << 22, classifier_hidden=(1 << 16, 512)).to_dict()
    torch.save({"format": "stytr-edit", "config": huge, "model": {"classifier.fcs.0.bias": torch.zeros(3)}},
               tmp_path / "tiny.pt")
    devices = []
    real_init = edit.EditTransformer.__init__

    def init(self, *args, **kwargs):
        devices.append(torch.empty(0).device.type)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(edit.EditTransformer, "__init__", init)
    with pytest.raises(CheckpointError, match=r"tiny\.pt does not fit EditTransformer"):
        edit.EditTransformer.from_checkpoint(tmp_path / "tiny.pt")
    assert devices == ["meta"]


def test_tiny_classifier_checkpoint_with_a_huge_config_is_refused(tmp_path):
    from stytr.models.latent_classifier import LatentClassifier

    small = LatentClassifier(n_latent=2, style_dim=4, n_attr=2, hidden=(8,), embed_dim=2)
    torch.save({"format": "stytr-latent-classifier", "model": small.state_dict(),
                "config": {**small.config(), "n_latent": 1 << 20, "style_dim": 1 << 12}}, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="input width 8 does not split into n_latent=1048576"):
        LatentClassifier.from_checkpoint(tmp_path / "tiny.pt")
