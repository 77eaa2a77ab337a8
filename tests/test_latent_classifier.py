import math

import pytest
import torch
import torch.nn.functional as F

from stytr.attributes import (CELEBA_ATTRIBUTES, UnknownAttributeError, attribute_index, attribute_indices,
                              attribute_name)
from stytr.checkpoints import CheckpointError
from stytr.config import LatentClassifierTrainConfig
from stytr.models.latent_classifier import LatentClassifier
from stytr.attributes import prepare_labels
from stytr.train.latent_classifier import masked_bce, train_latent_classifier

torch.set_num_threads(1)


# -- attributes ------------------------------------------------------------------------

def test_attribute_index():
    assert len(CELEBA_ATTRIBUTES) == 40 and CELEBA_ATTRIBUTES[20] == "Male" and CELEBA_ATTRIBUTES[-1] == "Young"
    assert attribute_index("Male") == 20
    assert attribute_index("mouth slightly open") == 21
    assert attribute_index(31) == 31 and attribute_index("31") == 31
    assert attribute_indices(["Bangs", 15]) == [5, 15] and attribute_indices("Smiling") == [31]
    assert attribute_name("eyeglasses") == "Eyeglasses"
    with pytest.raises(KeyError, match="did you mean Smiling"):
        attribute_index("Smilling")
    with pytest.raises(IndexError):
        attribute_index(40)
    with pytest.raises(UnknownAttributeError):
        attribute_index(-1)
    with pytest.raises(ValueError):
        attribute_index(True)


# -- model -----------------------------------------------------------------------------

def _official_state(in_features, hidden, n_attr, embed, seed=0):
    """A state dict spelled the way the authors' LCNet_40 names its parameters."""
    g = torch.Generator().manual_seed(seed)
    sd, widths = {}, [in_features, *hidden]
    for i in range(len(hidden)):
        sd[f"fcs.{i}.weight"] = torch.randn(widths[i + 1], widths[i], generator=g) / math.sqrt(widths[i])
        sd[f"fcs.{i}.bias"] = torch.randn(widths[i + 1], generator=g) * 0.1
    for i in range(n_attr):
        sd[f"indep_fcs.{i}.weight"] = torch.randn(embed, hidden[-1], generator=g) / math.sqrt(hidden[-1])
        sd[f"indep_fcs.{i}.bias"] = torch.randn(embed, generator=g) * 0.1
        sd[f"output_fcs.{i}.weight"] = torch.randn(1, embed, generator=g) / math.sqrt(embed)
        sd[f"output_fcs.{i}.bias"] = torch.randn(1, generator=g) * 0.1
    return sd


def _reference_forward(sd, x, n_fc, n_attr):
    """LCNet written out by hand: LeakyReLU(0.2) after every trunk layer, none after the embeddings."""
    for i in range(n_fc):
        x = F.leaky_relu(x @ sd[f"fcs.{i}.weight"].T + sd[f"fcs.{i}.bias"], 0.2)
    emb = [x @ sd[f"indep_fcs.{i}.weight"].T + sd[f"indep_fcs.{i}.bias"] for i in range(n_attr)]
    logits = [e @ sd[f"output_fcs.{i}.weight"].T + sd[f"output_fcs.{i}.bias"] for i, e in enumerate(emb)]
    return torch.cat(logits, 1), torch.stack(emb, 1)


def test_shapes_and_both_input_layouts():
    model = LatentClassifier(n_latent=4, style_dim=16, n_attr=40, hidden=(32, 24), embed_dim=8)
    w = torch.randn(3, 4, 16)
    logits, emb = model(w)
    assert logits.shape == (3, 40) and emb.shape == (3, 40, 8)
    torch.testing.assert_close(model(w.flatten(1))[0], logits)
    assert model.attribute_names[20] == "Male"
    with pytest.raises(ValueError):
        model(torch.randn(3, 5, 16))


@pytest.mark.parametrize("layout", ["plain", "state_dict", "edit_release"])
def test_loads_official_key_names(tmp_path, layout):
    sd = _official_state(4 * 512, (64, 32), 40, 32)
    if layout == "plain":
        ckpt = sd
    elif layout == "state_dict":  # the classifier file: {'state_dict': LCNet keys}
        ckpt = {"state_dict": sd}
    else:  # the reference-editing release: DataParallel-prefixed sub-modules side by side
        ckpt = {"state_dict": {**{f"classifier.module.{k}": v for k, v in sd.items()},
                               "encoder.module.transformerlayer.linear1.weight": torch.zeros(2, 2),
                               "decoder.module.style.1.weight": torch.zeros(2, 2)},
                "opts": {"output_size": 1024}}
    path = tmp_path / "classifier.pt"
    torch.save(ckpt, path)
    model = LatentClassifier.from_checkpoint(path)
    assert (model.n_latent, model.style_dim, model.n_attr, model.hidden, model.embed_dim) == (4, 512, 40, (64, 32), 32)
    x = torch.randn(5, 4 * 512)
    ref_logits, ref_emb = _reference_forward(sd, x, 2, 40)
    logits, emb = model(x)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(emb, ref_emb, rtol=1e-5, atol=1e-5)
    assert set(model.state_dict()) == set(sd)


def test_from_checkpoint_rejects_foreign_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {"encoder.module.w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="no latent classifier"):
        LatentClassifier.from_checkpoint(path)
    torch.save(_official_state(3 * 7, (8,), 2, 4), path)  # 21 inputs: rows cannot be guessed
    with pytest.raises(CheckpointError, match="n_latent"):
        LatentClassifier.from_checkpoint(path)
    assert LatentClassifier.from_checkpoint(path, n_latent=3).style_dim == 7


# -- trainer ---------------------------------------------------------------------------

N_LAT, DIM, MODELLED = 3, 8, [5, 15, 20, 31, 39]


def _synthetic(n=600, seed=0):
    """W+ codes whose modelled attributes are linear functions of the code; the rest is noise."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, N_LAT, DIM, generator=g)
    normals = torch.randn(40, N_LAT * DIM, generator=g)
    labels = (w.flatten(1) @ normals.T > 0).float()
    mask = torch.zeros(40, dtype=torch.bool)
    mask[MODELLED] = True
    noise = (torch.rand(n, 40, generator=g) > 0.5).float()
    labels = torch.where(mask, labels, noise)
    return w, labels, mask


def _cfg(**kw):
    base = dict(n_latent=N_LAT, style_dim=DIM, hidden=(64, 32), embed_dim=8, lr=3e-3, weight_decay=0.0, batch=64,
                epochs=15, patience=5, val_fraction=0.2, out="")
    return LatentClassifierTrainConfig.from_dict({**LatentClassifierTrainConfig.preset("toy").to_dict(), **base, **kw})


def test_trainer_learns_separable_data(tmp_path):
    w, labels, mask = _synthetic()
    res = train_latent_classifier(w, labels * 2 - 1, mask, _cfg(), out_dir=tmp_path, log_dir=tmp_path / "tb",
                                  progress=False, device="cpu")
    assert set(res.accuracy) == {CELEBA_ATTRIBUTES[i] for i in MODELLED}   # masked attributes are not scored
    assert res.mean_accuracy > 0.9, res.accuracy
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())

    ckpt = torch.load(tmp_path / "latent_classifier.pt", weights_only=True)
    assert ckpt["format"] == "stytr-latent-classifier" and ckpt["config"]["n_latent"] == N_LAT
    assert set(ckpt["accuracy"]) == set(res.accuracy)
    for name in ("latent_classifier.pt", "latent_classifier.safetensors"):
        loaded = LatentClassifier.from_checkpoint(tmp_path / name)
        assert (loaded.n_latent, loaded.style_dim) == (N_LAT, DIM)
        torch.testing.assert_close(loaded(w[:8])[0], res.model(w[:8])[0], atol=2e-2, rtol=2e-2)


def test_masked_labels_do_not_matter():
    w, labels, mask = _synthetic(n=200)
    other = labels.clone()
    other[:, ~mask] = 1 - other[:, ~mask]
    cfg = _cfg(epochs=2, patience=0)
    a = train_latent_classifier(w, labels, mask, cfg, progress=False, device="cpu").model
    b = train_latent_classifier(w, other, mask, cfg, progress=False, device="cpu").model
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
    # Per-sample masks and NaN labels count as unknown too.
    y, known = prepare_labels(torch.tensor([[1.0, float("nan")], [-1.0, 1.0]]),
                              torch.tensor([[True, True], [False, True]]))
    assert known.tolist() == [[True, False], [False, True]] and y.tolist() == [[1, 0], [0, 1]]
    assert masked_bce(torch.zeros(2, 2), y, known).item() == pytest.approx(math.log(2))


def test_early_stopping_triggers():
    w, labels, mask = _synthetic(n=200)
    # No later epoch can improve the held-out loss by 10 nats, so training stops after 1 + patience epochs.
    res = train_latent_classifier(w, labels, mask, _cfg(epochs=50, patience=2, min_delta=10.0), progress=False,
                                  device="cpu")
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 0
    # A cap on optimiser steps ends training as well.
    res = train_latent_classifier(w, labels, mask, _cfg(epochs=50, max_steps=4), progress=False, device="cpu")
    assert res.steps == 4 and not res.stopped_early


def test_config_presets():
    toy = LatentClassifierTrainConfig.preset("toy")
    assert (toy.n_latent, toy.style_dim) == (10, 128)
    ffhq = LatentClassifierTrainConfig.preset("ffhq")
    assert (ffhq.n_latent, ffhq.style_dim, ffhq.hidden, ffhq.embed_dim) == (18, 512, (2048, 512), 32)
    assert LatentClassifierTrainConfig.from_dict(toy.to_dict()) == toy
    assert toy.override(["hidden=(16, 8)", "patience=3"]).hidden == (16, 8)
