"""Reference-editing trainer: loss, frozen parts, exact resume, export, evaluation, errors."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from stytr.attributes import UnknownAttributeError
from stytr.config import ReferenceEditTrainConfig
from stytr import artifacts
from stytr.cli import main
from stytr.models.edit_transformer import EditTransformer
from stytr.data.codes import load_codes
from stytr.eval.edit_rates import evaluate_reference_editor
from stytr.train.reference_editing import ReferenceEditTrainer, build_model, train_reference_editor

from resume_check import assert_same_state, die_at, without_times

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
    return [trainer.loop.advance()["loss"] for _ in range(n)]


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


def test_mode_seeking_term_values_and_training():
    from stytr.losses import mode_seeking_loss

    ref_a, ref_b = codes(4, seed=1), codes(4, seed=2)
    edit = codes(4, seed=3)
    # Edits twice as far apart as their references: 1 / 2; identical edits: the largest penalty.
    twice = mode_seeking_loss(edit, edit + 2 * (ref_a - ref_b), ref_a, ref_b)
    assert twice.item() == pytest.approx(0.5, rel=1e-4)
    assert mode_seeking_loss(edit, edit, ref_a, ref_b).item() > 1e4
    with pytest.raises(ValueError, match="one batch"):
        mode_seeking_loss(edit, edit[:2], ref_a, ref_b)


def test_mode_seeking_option_trains_the_editor_apart(tmp_path):
    data = codes(64)
    cfg = smoke(tmp_path, attribute="Smiling", lr=3e-3, l2=0.0, ref=0.0, src=0.0, mode_seeking=1.0)
    trainer = ReferenceEditTrainer(cfg, codes=data, model=balanced_model(cfg, data))
    logs = []
    for step in range(40):
        logs.append(trainer.train_step(trainer.batch_for_step(step)))
    assert _mean([x["ms"] for x in logs[-10:]]) < 0.8 * _mean([x["ms"] for x in logs[:10]])
    assert "ms" not in ReferenceEditTrainer(smoke(tmp_path, "off"), codes=data).train_step(
        trainer.batch_for_step(0))                        # off by default, as published
    with pytest.raises(ValueError, match="mode_seeking"):
        ReferenceEditTrainer(smoke(tmp_path, "bad", mode_seeking=-1.0), codes=data)


def test_trainable_set_is_the_encoder_only(tmp_path):
    from stytr.checkpoints import save_weights

    cfg = smoke(tmp_path, image_every=1, eval_every=0)
    torch.manual_seed(5)
    gen_file = save_weights(cfg.model.generator.build().state_dict(), tmp_path / "g.safetensors", half=False,
                            metadata={"generator_config": json.dumps(cfg.model.generator.to_dict())})
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
    grid = trainer.sample()               # (source, reference, edited) rows from the loaded generator
    assert grid is not None and grid.shape[0] == 3


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    data = codes(40)                       # 36 training codes, batch 4: the resume crosses an epoch
    full = run_steps(ReferenceEditTrainer(smoke(tmp_path, "a"), codes=data), 12)

    first = ReferenceEditTrainer(smoke(tmp_path, "b"), codes=data)
    part = run_steps(first, 7)
    first.loop.save("last.pt")
    run_steps(first, 2)                    # lost when the process dies
    del first

    torch.manual_seed(123)                 # a different global RNG state before the restart
    resumed = ReferenceEditTrainer(smoke(tmp_path, "b"), codes=data)
    assert resumed.resume()
    assert resumed.step == 7
    assert part + run_steps(resumed, 5) == pytest.approx(full, rel=1e-6, abs=1e-7)


def test_fit_killed_and_resumed_equals_one_run(tmp_path):
    data = codes(80)                       # 72 training codes, batch 8: 9 steps an epoch
    cfg = smoke(tmp_path, "a", steps=12, batch=8, eval_every=4, ckpt_every=5, pair_mode="opposite")
    model = balanced_model(cfg, data)
    whole = ReferenceEditTrainer(cfg, codes=data, model=model)
    whole.fit()
    b = cfg.override({"out": str(tmp_path / "b")})
    killed = ReferenceEditTrainer(b, codes=data, model=balanced_model(b, data))
    die_at(killed, 8)                      # last.pt is from step 5
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    torch.manual_seed(7)
    resumed = ReferenceEditTrainer(b, codes=data, model=balanced_model(b, data))
    assert resumed.resume() and resumed.step == 5
    resumed.fit()
    assert_same_state(whole.state_dict(), resumed.state_dict())
    assert without_times(whole.loop.history) == without_times(resumed.loop.history)


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
        src, ref = trainer.batch_for_step(step)
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


def test_cli_command(tmp_path, capsys):
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
        artifacts.load("reference_editor", "toy", attribute="Smiling")   # no such file here: the error names it
    with pytest.raises(ValueError, match="registered shipped reference editor"):
        train_reference_editor(cfg.override({"attribute": "Young", "out": str(tmp_path / "young")}), ship=True)
    # With the mode-seeking term the editor ships as its own artefact; the published-loss one stays as it was.
    before = path.read_bytes()
    main(["train-reference-editor", "--preset", "toy", "--ship", "--mode_seeking", "0.5", "--out", str(tmp_path / "ms")])
    assert path.read_bytes() == before
    seeking = artifacts.load("reference_editor", "toy-mode-seeking", attribute="Bangs")
    assert artifacts.find("reference_editor", "toy-mode-seeking", "Bangs").path.name == \
        "toyfaces_reference_editor_bangs_mode_seeking.safetensors"
    with torch.no_grad():
        assert not torch.allclose(seeking(src, ref), loaded(src, ref))


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    """A run resumed with an absurd learning rate diverges: it stops naming the step and the loss
    terms, last.pt and best.pt keep their bytes and history.json stays strict JSON."""
    from stytr.train.loop import NonFiniteError

    data = codes()
    cfg = smoke(tmp_path, steps=2)
    train_reference_editor(cfg, codes=data)
    out = tmp_path / "run"
    kept = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt", "final.pt", "history.json")}
    with pytest.raises(NonFiniteError, match=r"step \d+: loss term\(s\) loss=nan, l2=nan.* went non-finite"):
        train_reference_editor(cfg.override({"lr": 1e30, "steps": 8}), codes=data, allow_changed_config=True)
    assert {name: (out / name).read_bytes() for name in kept} == kept
    json.loads((out / "history.json").read_text(), parse_constant=lambda c: pytest.fail(f"history holds {c}"))
