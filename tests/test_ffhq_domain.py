"""The ``ffhq`` domain runs through exactly the calls ToyFaces uses: invert -> label edit -> reference edit.

The published files are stood in for by random, reduced-size weights written in the published layouts
(rosinality's ``{'g_ema', 'latent_avg'}``, the authors' ``{'state_dict': encoder.module.* ...,
'opts', 'latent_avg'}`` releases) under the registered names, in a folder that ``STYTR_PRETRAINED``
points at.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stytr import artifacts
from stytr.checkpoints import load
from stytr.cli import main
from stytr.config import EditTransformerConfig, GeneratorConfig, InversionConfig
from stytr.domains import get_domain
from stytr.models.edit_transformer import EditTransformer
from stytr.models.inversion import build_inversion_model

GEN = GeneratorConfig(size=32, style_dim=64, n_mlp=2, channel_multiplier=0.25, channel_max=32, checkpoint="")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained_models")
    torch.manual_seed(0)
    cfg = InversionConfig.preset("ffhq", generator=GEN.to_dict(), backbone_units=(1, 1, 1, 1), backbone_width=0.25,
                                 dim_feedforward=64, backbone_weights="", input_size=256, output_size=256)
    model = build_inversion_model(cfg).eval()
    with torch.no_grad():
        avg = model.decoder.mean_latent(500)
        model.set_latent_avg(avg)
    torch.save({"g_ema": model.decoder.state_dict(), "latent_avg": avg[0]}, root / "stylegan2-ffhq-config-f.pt")
    torch.save({"state_dict": model.official_state_dict(), "latent_avg": avg[0],
                "opts": {"start_from_latent_avg": True}}, root / "style_transformer_ffhq.pt")
    ecfg = EditTransformerConfig(generator=GEN, dim_feedforward=64, classifier_hidden=(64, 32),
                                 classifier_embed_dim=8)
    editor = EditTransformer(ecfg).eval()
    release = {"state_dict": editor.official_state_dict(), "opts": {}}
    torch.save(release, root / "reference_editor_ffhq_bangs.pt")     # the reference-editing release layout
    torch.save(release, root / "latent_classifier_ffhq.pt")          # its classifier.module.* is LCNet's
    faces = (np.random.default_rng(0).random((2, 96, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(faces[0]).save(root / "photo.png")
    Image.fromarray(faces[1]).save(root / "ref.png")
    return root


def test_ffhq_domain_invert_label_and_reference_edit(pretrained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STYTR_PRETRAINED", str(pretrained))
    dom = get_domain("ffhq")
    assert artifacts.resolve("generator", dom.generator) == pretrained / "stylegan2-ffhq-config-f.pt"
    G = dom.load("generator")
    assert G.size == 32 and G.latent_avg is not None
    main(["invert", "--checkpoint", "ffhq", "--input", str(pretrained / "photo.png"), "--output", str(tmp_path / "inv")])
    assert "inverted 1 image(s)" in capsys.readouterr().out
    codes = load(tmp_path / "inv" / "latents.pt")["latents"]
    assert codes.shape == (1, G.n_latent, 64)

    main(["edit", "--domain", "ffhq", "--input", str(pretrained / "photo.png"), "--attribute", "Bangs",
          "--method", "label-1", "--output", str(tmp_path / "label")])
    record = load(tmp_path / "label" / "wplus.pt")
    assert record["method"] == "label-1" and record["edits"] == {"Bangs": 3.0}   # FFHQ's default alpha
    assert not torch.allclose(record["wplus"], record["source_wplus"])
    torch.testing.assert_close(record["source_wplus"], codes)                  # the same inversion as `invert`

    main(["edit", "--domain", "ffhq", "--input", str(pretrained / "photo.png"), "--reference",
          str(pretrained / "ref.png"), "--attribute", "Bangs", "--output", str(tmp_path / "ref")])
    record = load(tmp_path / "ref" / "wplus.pt")
    assert record["method"] == "reference" and record["reference"]["attribute"] == "Bangs"
    assert not torch.allclose(record["wplus"], record["source_wplus"])


def test_ffhq_missing_weights_name_the_file_and_the_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STYTR_PRETRAINED", str(tmp_path / "nothing_here"))
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    with pytest.raises(SystemExit) as err:
        main(["edit", "--domain", "ffhq", "--input", str(photo), "--output", str(tmp_path / "x")])
    line = capsys.readouterr().err.strip()
    assert err.value.code == 2 and "style_transformer_ffhq.pt" in line and "nothing_here" in line
