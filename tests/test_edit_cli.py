"""``python -m stytr edit``: invert -> edit -> save, with random toy-configuration weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stytr import artifacts
from stytr.cli import main
from stytr.checkpoints import load
from stytr.config import EditTransformerConfig, GeneratorConfig
from stytr.editing.interfacegan import InterFaceGAN
from stytr.models.edit_transformer import EditTransformer
from stytr.toy import render_faces
from weight_files import write_smoke_encoder_and_classifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit_cli")
    write_smoke_encoder_and_classifier(root)
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
          "--attribute", "Eyeglasses", "--alpha", "-2", "--method", "label-hvp", "--output", str(out)])
    assert "edited (label-hvp" in capsys.readouterr().out
    for name in ("edited.png", "input.png", "reconstruction.png", "side_by_side.png", "wplus.pt"):
        assert (out / name).is_file(), name
    side, edited, recon = _png(out / "side_by_side.png"), _png(out / "edited.png"), _png(out / "reconstruction.png")
    assert edited.shape == (64, 64, 3) and side.shape[1] > 3 * 64 and side.shape[0] >= 64
    assert np.abs(edited.astype(int) - recon.astype(int)).mean() > 0.5      # the edit changed the picture
    record = load(out / "wplus.pt")
    assert record["wplus"].shape == (1, 10, 128) and record["space"] == "w+"
    assert record["edits"] == {"Smiling": 3.0, "Eyeglasses": -2.0} and record["method"] == "label-hvp"
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
                                           ("--checkpoint", "encoder file not found"),
                                           ("--classifier", "classifier file not found")])
def test_missing_files_are_clear_errors(files, tmp_path, capsys, cli_fails, flag, message):
    args = {"--checkpoint": str(files / "encoder.pt"), "--input": str(files / "photo.png"),
            "--classifier": str(files / "classifier.pt"), "--output": str(tmp_path / "x")}
    args[flag] = str(tmp_path / "missing.png")
    line = cli_fails(["edit"] + [tok for kv in args.items() for tok in kv])
    assert message in line and "missing.png" in line
    assert not (tmp_path / "x").exists()


def test_usage_errors(files, tmp_path, capsys, cli_fails):
    base = ["edit", "--checkpoint", str(files / "encoder.pt"), "--input", str(files / "photo.png"),
            "--classifier", str(files / "classifier.pt"), "--output", str(tmp_path / "x")]
    assert "Smiling" in cli_fails(base + ["--attribute", "Smilling"])
    assert "needs --stylespace" in cli_fails(base + ["--method", "stylespace"])
    assert "no reference editor for 'Eyeglasses'" in cli_fails(
        base + ["--reference", str(files / "ref.png"), "--attribute", "Eyeglasses"])


@pytest.mark.parametrize("alpha", ["nan", "inf", "1e30", "abc"])
def test_absurd_strengths_are_refused(files, tmp_path, capsys, cli_fails, alpha):
    line = cli_fails(["edit", "--checkpoint", str(files / "encoder.pt"), "--input", str(files / "photo.png"),
                   "--classifier", str(files / "classifier.pt"), "--alpha", alpha, "--output", str(tmp_path / "x")])
    assert alpha in line and ("outside" in line or "not a number" in line)
    assert not (tmp_path / "x" / "wplus.pt").exists()


def test_unmodelled_attribute_is_refused(files, tmp_path, capsys, cli_fails):
    """ToyFaces does not model Wearing_Hat: an edit of it is an error, not a silent no-op."""
    line = cli_fails(["edit", "--checkpoint", str(files / "encoder.pt"), "--input", str(files / "photo.png"),
                   "--classifier", str(files / "classifier.pt"), "--attribute", "Wearing_Hat", "--alpha", "3",
                   "--output", str(tmp_path / "x")])
    assert "Wearing_Hat" in line and "does not model" in line


def test_output_never_overwrites_the_input(files, tmp_path, capsys, cli_fails):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "input.png").write_bytes((files / "photo.png").read_bytes())
    before = (photos / "input.png").read_bytes()
    line = cli_fails(["edit", "--checkpoint", str(files / "encoder.pt"), "--input", str(photos / "input.png"),
                   "--classifier", str(files / "classifier.pt"), "--output", str(photos)])
    assert "refusing to overwrite the input" in line
    assert (photos / "input.png").read_bytes() == before
    assert sorted(p.name for p in photos.iterdir()) == ["input.png"]
    assert "--output is empty" in cli_fails(["edit", "--checkpoint", str(files / "encoder.pt"), "--input",
                                          str(photos / "input.png"), "--output", ""])


def test_invert_refuses_its_input_folder_and_skips_unreadable_images(files, tmp_path, capsys, cli_fails):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        (photos / name).write_bytes((files / "photo.png").read_bytes())
    (photos / "a.jpg").write_bytes((files / "photo.png").read_bytes())   # same stem, other extension
    (photos / "broken.png").write_bytes(b"not an image")
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    line = cli_fails(["invert", "--checkpoint", str(files / "encoder.pt"), "--input", str(photos),
                   "--output", str(photos / "out")])
    assert "inside the input folder" in line
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
    main(["invert", "--checkpoint", str(files / "encoder.pt"), "--input", str(photos), "--output",
          str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "inverted 3 image(s)" in captured.out
    names = sorted(p.name for p in (tmp_path / "out" / "reconstructions").iterdir())
    assert names == ["a_jpg.png", "a_png.png", "b.png"]
    # a rerun into an output folder inside the input, forced, never takes the outputs as inputs
    main(["invert", "--checkpoint", str(files / "encoder.pt"), "--input", str(photos), "--output",
          str(photos / "out"), "--force"])
    main(["invert", "--checkpoint", str(files / "encoder.pt"), "--input", str(photos), "--output",
          str(photos / "out"), "--force"])
    assert "inverted 3 image(s)" in capsys.readouterr().out.splitlines()[-1]


def test_toy_weights_missing_is_a_clear_error(files, tmp_path, monkeypatch, capsys, cli_fails):
    monkeypatch.setenv("STYTR_DATA", str(tmp_path / "empty"))
    line = cli_fails(["edit", "--checkpoint", "toy", "--classifier", "toy", "--input", str(files / "photo.png"),
                   "--output", str(tmp_path / "x")])
    assert "shipped encoder 'toy' is missing" in line and "toyfaces_style_transformer" in line
    line = cli_fails(["edit", "--checkpoint", str(files / "encoder.pt"), "--classifier", "toy",
                   "--input", str(files / "photo.png"), "--output", str(tmp_path / "x")])
    assert "shipped classifier 'toy' is missing" in line


def test_shipped_toy_weights_end_to_end(tmp_path):
    """The CLI on the shipped ToyFaces weights: copy Male from a reference face, then add glasses by label."""
    from stytr.attributes import CELEBA_ATTRIBUTES
    from stytr.toy import sample_z, labels_z, render_z

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
    predictor = artifacts.load("predictor", "toy")

    def predicted(path, attribute):
        x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1)
        with torch.no_grad():
            return bool(predictor(x.permute(2, 0, 1)[None])[0, CELEBA_ATTRIBUTES.index(attribute)] > 0)

    assert not predicted(tmp_path / "ref_edit" / "reconstruction.png", "Male")
    assert predicted(tmp_path / "ref_edit" / "edited.png", "Male")
    assert not predicted(tmp_path / "label_edit" / "reconstruction.png", "Eyeglasses")
    assert predicted(tmp_path / "label_edit" / "edited.png", "Eyeglasses")
