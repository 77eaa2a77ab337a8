"""Small weight files in stytr's own formats, written by the tests that drive the command line."""
from __future__ import annotations

from pathlib import Path

import torch

from stytr.config import InversionTrainConfig
from stytr.models.inversion import build_inversion_model
from stytr.models.latent_classifier import CLASSIFIER_FORMAT, LatentClassifier


def write_smoke_encoder_and_classifier(root: Path) -> None:
    """``root/encoder.pt`` (the smoke inversion model, seeded) and ``root/classifier.pt`` (a small
    latent classifier for its 10 x 128 codes)."""
    torch.manual_seed(0)
    model = build_inversion_model(InversionTrainConfig.preset("smoke").model).eval()
    with torch.no_grad():
        model.set_latent_avg(model.decoder.mean_latent(500))
    torch.save(model.checkpoint_dict(), root / "encoder.pt")
    clf = LatentClassifier(n_latent=10, style_dim=128, hidden=(64, 32), embed_dim=8)
    torch.save({"format": CLASSIFIER_FORMAT, "model": clf.state_dict(), "model_config": clf.config()},
               root / "classifier.pt")
