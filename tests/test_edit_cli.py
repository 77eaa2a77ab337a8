"""``python -m stytr edit``: invert -> edit -> save, with random toy-configuration weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stytr.__main__ import main
from stytr.checkpoints import load
from stytr.config import EditTransformerConfig, GeneratorConfig, InversionTrainConfig
from stytr.editing.interfacegan import InterFaceGAN
from stytr.models.edit_transformer import EditTransformer
from stytr.models.latent_classifier import CLASSIFIER_FORMAT, LatentClassifier
from stytr.models.inversion import build_inversion_model
from stytr.toy import render_faces

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit_cli")
    torch.manual_seed(0)
    model = build_inversion_model(InversionTrainConfig.preset("smoke").model).eval()
    with torch.no_grad():
        model.set_latent_avg(model.decoder.mean_latent(500))
    torch.save(model.checkpoint_dict(), root / "encoder.pt")
    clf = LatentClassifier(n_latent=10, style_dim=128, hidden=(64, 32), embed_dim=8)
    torch.save({"format": CLASSIFIER_FORMAT, "model": clf.state_dict(), "model_config": clf.config()},
               root / "classifier.pt")
    normals = torch.nn.functional.normalize(torch.randn(40, 128), dim=1)
    InterFaceGAN(normals, torch.zeros(40)).save(root / "interfacegan.pt")
    ecfg = EditTransformerConfig.preset("toy", generator=dict(GeneratorConfig.PRESETS["toy"], checkpoint=""),
                                        dim_feedforward=64, n_attr=4, classifier_hidden=(32, 16),
                                        classifier_embed_dim=4)
    torch.save(EditTransformer(ecfg).checkpoint_dict(), root / "editor.pt")
    faces, _ = render_faces(2, seed=7, size=128)
    pics = ((faces.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(pics[0]).save(root / "photo.png")
    Image.fromarray(pics[1]).save(root / "ref.png")
    return root


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_label_edit_writes_outputs(files, tmp_path, capsys):
    out = tmp_path / "out"
    main(["edit", "--checkpoint", str(files / "encoder.pt"), "--input", str(files / "photo.png"),
          "--classifier", str(files / "classifier.pt"), "--attribute", "Smiling", "--alpha", "3",
          "--attribute", "Eyeglasses", "--alpha", "-2", "--order", "hvp", "--output", str(out)])
    assert "edited (ours" in capsys.readouterr().out
    for name in ("edited.png", "input.png", "reconstruction.png", "side_by_side.png", "wplus.pt"):
        assert (out / name).is_file(), name
    side, edited, recon = _png(out / "side_by_side.png"), _png(out / "edited.png"), _png(out / "reconstruction.png")
    assert edited.shape == (64, 64, 3) and side.shape[1] > 3 * 64 and side.shape[0] >= 64
    assert np.abs(edited.astype(int) - recon.astype(int)).mean() > 0.5      # the edit changed the picture
    record = load(out / "wplus.pt")
    assert record["wplus"].shape == (1, 10, 128) and record["space"] == "w+"
    assert record["edits"] == {"Smiling": 3.0, "Eyeglasses": -2.0} and record["order"] == "hvp"
    assert not torch.allclose(record["wplus"], record["source_wplus"])


def test_interfacegan_method(files, tmp_path):
    out = tmp_path / "ifg"
    main(["edit", "--checkpoint", str(files / "encoder.pt"), "--input", str(files / "photo.png"),
          "--method", "interfacegan", "--interfacegan", str(files / "interfacegan.pt"), "--attribute", "Male",
          "--alpha", "2", "--output", str(out)])
    record = load(out / "wplus.pt")
    n = InterFaceGAN.load(files / "interfacegan.pt").direction("Male")
    assert torch.allclose(record["wplus"] - record["source_wplus"], 2 * n.expand(1, 10, 128), atol=1e-5)


def test_reference_edit(files, tmp_path):
    out = tmp_path / "ref"
    main(["edit", "--checkpoint", str(files / "encoder.pt"), "--input", str(files / "photo.png"),
          "--reference", str(files / "ref.png"), "--editor", str(files / "editor.pt"), "--attribute", "Smiling",
          "--output", str(out)])
    record = load(out / "wplus.pt")
    assert record["method"] == "reference" and record["reference"]["attribute"] == "Smiling"
    assert _png(out / "side_by_side.png").shape[1] > 4 * 64       # input | recon | reference | edit


@pytest.mark.parametrize("flag, message", [("--input", "input photo not found"),
                                           ("--checkpoint", "inversion checkpoint not found"),
                                           ("--classifier", "latent classifier checkpoint not found")])
def test_missing_files_are_clear_errors(files, tmp_path, flag, message):
    args = {"--checkpoint": str(files / "encoder.pt"), "--input": str(files / "photo.png"),
            "--classifier": str(files / "classifier.pt"), "--output": str(tmp_path / "x")}
    args[flag] = str(tmp_path / "missing.png")
    argv = ["edit"] + [tok for kv in args.items() for tok in kv]
    with pytest.raises(SystemExit, match=message) as err:
        main(argv)
    assert "missing.png" in str(err.value)
    assert not (tmp_path / "x").exists()


def test_usage_errors(files, tmp_path):
    base = ["edit", "--checkpoint", str(files / "encoder.pt"), "--input", str(files / "photo.png"),
            "--output", str(tmp_path / "x")]
    with pytest.raises(SystemExit, match="needs --classifier"):
        main(base)
    with pytest.raises(SystemExit, match="needs --editor"):
        main(base + ["--reference", str(files / "ref.png")])
    with pytest.raises(SystemExit, match="Smilling|Smiling"):
        main(base + ["--classifier", str(files / "classifier.pt"), "--attribute", "Smilling"])
    with pytest.raises(SystemExit, match="needs --stylespace"):
        main(base + ["--method", "stylespace"])


def test_toy_weights_missing_is_a_clear_error(files, tmp_path, monkeypatch):
    monkeypatch.setenv("STYTR_DATA", str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match="shipped ToyFaces encoder"):
        main(["edit", "--checkpoint", "toy", "--classifier", "toy", "--input", str(files / "photo.png"),
              "--output", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="shipped ToyFaces latent classifier"):
        main(["edit", "--checkpoint", str(files / "encoder.pt"), "--classifier", "toy",
              "--input", str(files / "photo.png"), "--output", str(tmp_path / "x")])


def test_shipped_toy_weights_end_to_end(tmp_path):
    """The CLI on the shipped ToyFaces weights: copy Male from a reference face, then add glasses by label."""
    from stytr.attributes import CELEBA_ATTRIBUTES
    from stytr.toy import load_attribute_predictor, sample_z, labels_z, render_z

    z = sample_z(200, seed=9)
    male = labels_z(z)[:, CELEBA_ATTRIBUTES.index("Male")].astype(bool)
    src, ref = z[~male][:1], z[male][:1]
    for name, code in (("src.png", src), ("ref.png", ref)):
        image = ((render_z(code)[0].transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / name)
    main(["edit", "--checkpoint", "toy", "--input", str(tmp_path / "src.png"), "--reference", str(tmp_path / "ref.png"),
          "--attribute", "Male", "--editor", "toy", "--output", str(tmp_path / "ref_edit")])
    main(["edit", "--checkpoint", "toy", "--classifier", "toy", "--input", str(tmp_path / "src.png"),
          "--attribute", "Eyeglasses", "--alpha", "8", "--output", str(tmp_path / "label_edit")])
    predictor = load_attribute_predictor()

    def predicted(path, attribute):
        x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1)
        with torch.no_grad():
            return bool(predictor(x.permute(2, 0, 1)[None])[0, CELEBA_ATTRIBUTES.index(attribute)] > 0)

    assert not predicted(tmp_path / "ref_edit" / "reconstruction.png", "Male")
    assert predicted(tmp_path / "ref_edit" / "edited.png", "Male")
    assert not predicted(tmp_path / "label_edit" / "reconstruction.png", "Eyeglasses")
    assert predicted(tmp_path / "label_edit" / "edited.png", "Eyeglasses")
