"""The ToyFaces weights shipped in data/: they load, fit their size budgets, say how they were made,
and do their job on a few fresh samples (the notebooks measure them on many)."""
from __future__ import annotations

import pytest
import torch

from stytr.checkpoints import REPO_ROOT, load_weights
from stytr.eval.metrics import average_face_mse
from stytr.toy import ToyFacesDataset, load_attribute_predictor, load_generator
from stytr.toy.encoder import ENCODER_FILE, load_encoder
from stytr.toy.generator import GENERATOR_FILE
from stytr.toy.reference_editor import EDITOR_ATTRIBUTES, editor_file, load_reference_editor

DATA = REPO_ROOT / "data"


@pytest.mark.parametrize("name, limit_mb", [(GENERATOR_FILE, 10), (ENCODER_FILE, 15),
                                            ("toyfaces_latent_classifier.safetensors", 10)]
                         + [(editor_file(a), 5) for a in EDITOR_ATTRIBUTES])
def test_shipped_file_budget_and_provenance(name, limit_mb):
    path = DATA / name
    assert path.stat().st_size < limit_mb * 2 ** 20
    tensors, meta = load_weights(path)
    assert all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point())
    if name != "toyfaces_latent_classifier.safetensors":
        assert "python -m stytr" in meta["command"]


@torch.no_grad()
def test_shipped_encoder_reconstructs_better_than_the_average_face():
    model = load_encoder()
    x = ToyFacesDataset(32, seed=123_456).images
    recon = model(x, randomize_noise=False)
    assert ((recon - x) ** 2).mean() < 0.5 * average_face_mse(model, x)
    assert model.decoder.size == load_generator().size


@torch.no_grad()
def test_shipped_reference_editor_copies_its_attribute():
    from stytr.attributes import CELEBA_ATTRIBUTES

    predictor = load_attribute_predictor()
    editor = load_reference_editor("Male")
    G, male = editor.decoder, CELEBA_ATTRIBUTES.index("Male")
    torch.manual_seed(0)
    w = G.style(torch.randn(128, G.style_dim)).unsqueeze(1).repeat(1, G.n_latent, 1)
    is_male = predictor(G.synthesis(w, randomize_noise=False))[:, male] > 0
    src, ref = w[~is_male][:16], w[is_male][:16]
    edited = predictor(G.synthesis(editor(src, ref), randomize_noise=False))[:, male] > 0
    assert edited.float().mean() >= 0.75
