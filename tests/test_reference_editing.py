"""Reference-editing trainer: loss, frozen parts, exact resume, export, evaluation, errors."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from stytr.attributes import UnknownAttributeError
from stytr.config import ReferenceEditTrainConfig
from stytr.models.edit_transformer import EditTransformer
from stytr import artifacts
from stytr.cli import main
from stytr.train.reference_editing import (ReferenceEditTrainer, build_model, evaluate_reference_editor, load_codes,
                                           train_reference_editor)

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:model.classifier_checkpoint is empty")

N_LATENT, STYLE_DIM = 6, 32   # the smoke preset: a 16-px generator config with style_dim 32


def codes(n: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, N_LATENT, STYLE_DIM, generator=torch.Generator().manual_seed(seed))


def smoke(tmp_path, name: str = "run", **kw) -> ReferenceEditTrainConfig:
    return ReferenceEditTrainConfig.preset("smoke", out=str(tmp_path / name), **kw)


def balanced_model(cfg, data):
    """The smoke model whose random classifier decides each attribute positive for half of ``data``
    (a random classifier's decisions are otherwise mostly one-sided)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    with torch.no_grad():
        logits = model.classifier(data)[0]
        for head, median in zip(model.classifier.output_fcs, logits.median(0).values):
            head.bias -= median
    return model


def run_steps(trainer, n):
    return [trainer.train_step(*trainer.pairs_for_step(trainer.step))["loss"] for _ in range(n)]


def _mean(values):
    return sum(values) / len(values)


def test_loss_decreases_on_synthetic_codes(tmp_path):
    data = codes(64)
    cfg = smoke(tmp_path, attribute="Smiling", lr=3e-3)
    losses = run_steps(ReferenceEditTrainer(cfg, codes=data, model=balanced_model(cfg, data)), 50)
    assert _mean(losses[-10:]) < 0.65 * _mean(losses[:10]), losses
    # The reference term alone also decreases: its gradient reaches the encoder through the frozen classifier.
    cfg = smoke(tmp_path, "ref_only", attribute="Smiling", lr=3e-3, l2=0.0, src=0.0, pair_mode="opposite")
    losses = run_steps(ReferenceEditTrainer(cfg, codes=data, model=balanced_model(cfg, data)), 50)
    assert _mean(losses[-10:]) < 0.8 * _mean(losses[:10]), losses


def test_trainable_set_is_the_encoder_only(tmp_path):
    from stytr.checkpoints import save_weights

    cfg = smoke(tmp_path, image_every=1, eval_every=0)
    torch.manual_seed(5)
    gen_file = save_weights(cfg.model.generator.build().state_dict(), tmp_path / "g.safetensors", half=False)
    cfg = cfg.override({"model.generator.checkpoint": str(gen_file)})
    trainer = ReferenceEditTrainer(cfg, codes=codes())
    model = trainer.model
    assert model.decoder is not None and model.classifier is not None
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.encoder.parameters()}
    assert not any(p.requires_grad for p in model.classifier.parameters())
    assert not any(p.requires_grad for p in model.decoder.parameters())
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    run_steps(trainer, 2)
    assert not model.classifier.training and not model.decoder.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder.items())
    grid = trainer.sample_grid()          # (source, reference, edited) rows from the loaded generator
    assert grid is not None and grid.shape[0] == 3


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    data = codes(40)                       # 36 training codes, batch 4: the resume crosses an epoch
    full = run_steps(ReferenceEditTrainer(smoke(tmp_path, "a"), codes=data), 12)

    first = ReferenceEditTrainer(smoke(tmp_path, "b"), codes=data)
    part = run_steps(first, 7)
    first.save("last.pt")
    run_steps(first, 2)                    # lost when the process dies
    del first

    torch.manual_seed(123)                 # a different global RNG state before the restart
    resumed = ReferenceEditTrainer(smoke(tmp_path, "b"), codes=data)
    assert resumed.resume()
    assert resumed.step == 7
    assert part + run_steps(resumed, 5) == pytest.approx(full, rel=1e-6, abs=1e-7)


def test_fit_exports_a_checkpoint_that_loads(tmp_path):
    cfg = smoke(tmp_path, pair_mode="opposite")
    result = train_reference_editor(cfg, codes=codes(), model=balanced_model(cfg, codes()))
    out = tmp_path / "run"
    for name in ["last.pt", "final.pt", "history.json", "metrics.json"]:
        assert (out / name).exists(), name
    assert result.steps == 4 and [h["step"] for h in result.history] == [2, 4]
    assert any((out / "tb").iterdir())
    assert 0 <= result.metrics["transfer_rate"] <= 1 and 0 <= result.metrics["keep_rate"] <= 1
    loaded = EditTransformer.from_checkpoint(out / "final.pt")
    src, ref = codes(3, seed=1), codes(3, seed=2)
    with torch.no_grad():
        assert torch.allclose(loaded(src, ref), result.model(src, ref), atol=1e-6)
    # Finished work is not repeated: a second call resumes at the last step.
    again = train_reference_editor(cfg, codes=codes(), model=balanced_model(cfg, codes()))
    assert again.steps == 4 and json.loads((out / "history.json").read_text())[-1]["step"] == 4


def test_opposite_pairs_disagree_on_the_attribute(tmp_path):
    cfg = smoke(tmp_path, pair_mode="opposite", batch=8)
    trainer = ReferenceEditTrainer(cfg, codes=codes(64), model=balanced_model(cfg, codes(64)))
    assert trainer.decision.any() and (~trainer.decision).any()
    for step in range(5):
        src, ref = trainer.pairs_for_step(step)
        assert len(src) == len(ref) == 4
        assert (trainer.decision[src] != trainer.decision[ref]).all()
        assert set(ref.tolist()) <= set(trainer.train_idx.tolist())


class _Fixed(nn.Module):
    """An "editor" that returns the source or the reference unchanged."""

    def __init__(self, classifier, returns):
        super().__init__()
        self.classifier, self.returns = classifier, returns

    def forward(self, src, ref):
        return src if self.returns == "src" else ref


def test_evaluate_rates_on_trivial_editors(tmp_path):
    data = codes(32, seed=3)
    classifier = balanced_model(smoke(tmp_path), data).classifier
    copy_ref = evaluate_reference_editor(_Fixed(classifier, "ref"), data, n=50, attribute="Smiling")
    assert copy_ref["transfer_rate"] == 1.0 and copy_ref["n_pairs"] == 50
    keep_src = evaluate_reference_editor(_Fixed(classifier, "src"), data, n=50, attribute="Smiling")
    assert keep_src["keep_rate"] == 1.0 and keep_src["l2"] == 0.0
    assert keep_src["transfer_rate"] == pytest.approx(keep_src["src_ref_agreement"])
    opposite = evaluate_reference_editor(_Fixed(classifier, "src"), data, n=50, attribute="Smiling",
                                         pair_mode="opposite")
    assert opposite["n_changing"] == 50 and opposite["transfer_rate"] == 0.0
    assert len(keep_src["keep_rate_per_attribute"]) == 39 and "Smiling" not in keep_src["keep_rate_per_attribute"]


def test_bad_attribute_name_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownAttributeError, match="unknown attribute 'Smilng'.*Smiling"):
        ReferenceEditTrainer(smoke(tmp_path, attribute="Smilng"), codes=codes())


def test_missing_codes_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "latents.pt"
    with pytest.raises(FileNotFoundError, match="W\\+ codes file not found.*nowhere/latents.pt"):
        ReferenceEditTrainer(smoke(tmp_path, codes=str(missing)))
    with pytest.raises(FileNotFoundError, match="no W\\+ codes file given"):
        ReferenceEditTrainer(smoke(tmp_path))


def test_codes_file_formats_and_shape_check(tmp_path):
    import numpy as np

    from stytr.checkpoints import save_atomic

    data = codes(8)
    save_atomic({"latents": data, "labels": torch.ones(8, 40)}, tmp_path / "c.pt")
    np.save(tmp_path / "c.npy", data.numpy())
    latents, labels = load_codes(tmp_path / "c.pt", N_LATENT, STYLE_DIM)
    assert torch.equal(latents, data) and labels.shape == (8, 40)
    assert torch.equal(load_codes(str(tmp_path / "c.npy"))[0], data)
    with pytest.raises(ValueError, match="do not fit"):
        load_codes(tmp_path / "c.pt", 18, 512)


def test_cli_function(tmp_path, capsys):
    from stytr.checkpoints import save_atomic

    save_atomic({"latents": codes()}, tmp_path / "latents.pt")
    main(["train-reference-editor", "--preset", "smoke", "--codes", str(tmp_path / "latents.pt"),
          "--out", str(tmp_path / "cli"), "--attribute", "Male", "--steps", "2"])
    assert "[Male]: transfer" in capsys.readouterr().out
    assert (tmp_path / "cli" / "final.pt").exists()


def test_ship_and_load_toy_editor(tmp_path, monkeypatch, capsys):
    """--ship writes only the editing block; artifacts.load reassembles it with the shipped generator and
    classifier (here smoke-sized stand-ins in a temporary data folder)."""
    from stytr.checkpoints import CheckpointError, save_atomic, save_weights

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("STYTR_DATA", str(data))
    save_atomic({"latents": codes()}, tmp_path / "latents.pt")
    cfg = smoke(tmp_path, "ship", codes=str(tmp_path / "latents.pt"), attribute="Bangs", steps=2)
    model = build_model(cfg)
    generator = cfg.model.generator.build()
    save_weights(generator.state_dict(), artifacts.find("generator", "toy").path,
                 metadata={"generator_config": json.dumps(cfg.model.generator.to_dict())})
    artifacts.export("classifier", model.classifier, artifacts.find("classifier", "toy").path)
    cfg = cfg.override({"model.generator.checkpoint": "toy", "model.classifier_checkpoint": "toy"})
    from stytr.config import ReferenceEditTrainConfig as RC
    monkeypatch.setattr(RC, "PRESETS", {**RC.PRESETS, "toy": cfg.to_dict()})
    main(["train-reference-editor", "--preset", "toy", "--ship"])
    assert "shipped" in capsys.readouterr().out
    path = artifacts.find("reference_editor", "toy", "Bangs").path
    assert path.stat().st_size < 2_000_000
    trained = EditTransformer.from_checkpoint(tmp_path / "ship" / "final.pt")
    loaded = artifacts.load("reference_editor", "toy", attribute="bangs")
    src, ref = codes(4, seed=1), codes(4, seed=2)
    with torch.no_grad():
        assert torch.allclose(loaded(src, ref), trained(src, ref), atol=5e-3)   # fp16 storage
    with pytest.raises(CheckpointError, match="toyfaces_reference_editor_smiling"):
        artifacts.load("reference_editor", "toy", attribute="Smiling")   # no such shipped file: the error names it
