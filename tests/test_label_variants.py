"""Algorithm 2 as printed, as released and hvp measured side by side, on random weights in the toy layouts."""
from __future__ import annotations

import math

import pytest
import torch

from stytr.config import EditingConfig, GeneratorConfig
from stytr.eval.label_variants import RELEASED_ALPHA, VARIANTS, compare_variants, read_comparison, write_comparison
from stytr.models.latent_classifier import LatentClassifier
from stytr.toy import AttributePredictor

torch.set_num_threads(1)
ATTRS = ["Smiling", "Male"]


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    G = GeneratorConfig.preset("toy", checkpoint="").build().eval()
    classifier = LatentClassifier(G.n_latent, 128, 40, hidden=(32, 16), embed_dim=4).eval()
    with torch.no_grad():
        w = G.get_latent(torch.randn(4, 128)).unsqueeze(1).repeat(1, G.n_latent, 1)
    return G, classifier, AttributePredictor().eval(), w


def test_every_variant_is_measured_and_the_probe_shows_in_the_step(toy, tmp_path):
    G, classifier, predictor, w = toy
    cfg = EditingConfig.preset("toy")
    rows, matrices = compare_variants(G, w, classifier, predictor, attributes=ATTRS, cfg=cfg)
    labels = list(VARIANTS) + [f"as released, alpha {RELEASED_ALPHA:g}"]
    assert [(r["variant"], r["attribute"]) for r in rows] == [(v, a) for v in labels for a in ATTRS]
    by = {(r["variant"], r["attribute"]): r for r in rows}
    for a in ATTRS:
        strength = cfg.strength("label-2", a)
        # Algorithm 2 as printed moves every row by exactly its step; as released adds alpha * N(0, I).
        assert by["as printed", a]["edit_w_row"] == pytest.approx(strength, rel=1e-4)
        released = by["as released", a]["edit_w_row"]
        assert released == pytest.approx(strength * math.sqrt(128 + 1), rel=0.1)
        assert by[labels[-1], a]["strength"] == RELEASED_ALPHA
        assert all(0 <= by[v, a][k] <= 1 for v in labels for k in ("flip_rate", "keep_rate"))
    assert set(matrices) == set(labels) and all(m.shape == (2, 2) for m in matrices.values())
    write_comparison(rows, matrices, ATTRS, tmp_path)
    back_rows, back_matrices = read_comparison(tmp_path)
    assert back_rows == rows
    for label in labels:
        assert (back_matrices[label] == matrices[label]).all()
