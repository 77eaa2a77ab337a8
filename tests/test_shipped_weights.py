"""The ToyFaces weights shipped in data/: they load, fit their size budgets, say how they were made,
and do their job on a few fresh samples (the notebooks measure them on many)."""
from __future__ import annotations

import pytest
import torch

from stytr import artifacts
from stytr.checkpoints import REPO_ROOT, load_weights
from stytr.eval.metrics import average_face_mse
from stytr.toy import ToyFacesDataset

DATA = REPO_ROOT / "data"
SHIPPED = [a for a in artifacts.ARTIFACTS if a.shipped]
LIMIT_MB = {"encoder": 15, "reference_editor": 5}


def test_every_shipped_file_is_registered():
    """artifacts.ARTIFACTS is the one table of shipped files: nothing in data/ is missing from it."""
    assert {a.file for a in SHIPPED} == {p.name for p in DATA.glob("*.safetensors")}


@pytest.mark.parametrize("art", SHIPPED, ids=lambda a: a.file)
def test_shipped_file_budget_and_provenance(art):
    name = art.file
    path = DATA / name
    assert path.stat().st_size < LIMIT_MB.get(art.kind, 10) * 2 ** 20
    tensors, meta = load_weights(path)
    assert all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point())
    if art.kind not in ("classifier", "predictor"):   # shipped before the command was recorded
        assert "python -m stytr" in meta["command"]


@torch.no_grad()
def test_shipped_encoder_reconstructs_better_than_the_average_face():
    model = artifacts.load("encoder", "toy")
    x = ToyFacesDataset(32, seed=123_456).images
    recon = model(x, randomize_noise=False)
    assert ((recon - x) ** 2).mean() < 0.5 * average_face_mse(model, x)
    assert model.decoder.size == artifacts.load("generator", "toy").size


@torch.no_grad()
def test_shipped_reference_editor_copies_its_attribute():
    from stytr.attributes import CELEBA_ATTRIBUTES

    predictor = artifacts.load("predictor", "toy")
    editor = artifacts.load("reference_editor", "toy", attribute="Male")
    G, male = editor.decoder, CELEBA_ATTRIBUTES.index("Male")
    torch.manual_seed(0)
    w = G.style(torch.randn(128, G.style_dim)).unsqueeze(1).repeat(1, G.n_latent, 1)
    is_male = predictor(G.synthesis(w, randomize_noise=False))[:, male] > 0
    src, ref = w[~is_male][:16], w[is_male][:16]
    edited = predictor(G.synthesis(editor(src, ref), randomize_noise=False))[:, male] > 0
    assert edited.float().mean() >= 0.75


@torch.no_grad()
def test_shipped_high_fidelity_stage_loads_and_beats_wplus():
    """Through the artefact layer, on the shipped encoder: the stage at least halves W+'s MSE on fresh faces."""
    from stytr.models.high_fidelity import HighFidelityModel, HighFidelityStage

    encoder = artifacts.load("encoder", "toy")
    stage = artifacts.load("high_fidelity", "toy")
    assert isinstance(stage, HighFidelityStage) and stage.encoder_spec == "toy"
    x = ToyFacesDataset(16, seed=123_456).images
    wplus = ((encoder(x, randomize_noise=False) - x) ** 2).mean()
    hifi = ((HighFidelityModel(encoder, stage)(x) - x) ** 2).mean()
    assert hifi < 0.5 * wplus
