"""Paste-back through EditSession (random toy weights, a given quad), and ``python -m stytr edit ... --align
--paste-back [--all-faces]`` on the astronaut photo with the shipped ToyFaces weights: the README's
real-photo command, end to end."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from stytr.cli import main
from stytr.config import InversionTrainConfig
from stytr.data.align import Alignment, DetectedFace, align_quad, paste_back, paste_mask
from stytr.editing.session import EditSession
from stytr.models.inversion import build_inversion_model
from stytr.viz import to_uint8

COMMAND = ["edit", "--checkpoint", "toy", "--classifier", "toy", "--align", "--paste-back"]


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
    import skimage.data

    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def _record(entry: dict) -> Alignment:
    """An Alignment rebuilt from one alignment.json entry (enough for paste_mask)."""
    face = DetectedFace(entry["bbox"], np.array(entry["landmarks"]), entry["score"])
    return Alignment(Image.new("RGB", (entry["output_size"],) * 2), face, np.array(entry["quad"]),
                     tuple(entry["source_size"]))


def test_session_pastes_the_edit_back_at_the_generator_resolution():
    torch.manual_seed(0)
    cfg = dataclasses.replace(InversionTrainConfig.preset("smoke").model, input_size=32)   # generator: 64 px
    model = build_inversion_model(cfg).eval()
    with torch.no_grad():
        model.set_latent_avg(model.decoder.mean_latent(200))
    session = EditSession(model, {})
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8))
    quad = np.array([[50.0, 30.0], [50.0, 130.0], [150.0, 130.0], [150.0, 30.0]])   # a 100 px face
    record = Alignment(align_quad(photo, quad, 32, 128), DetectedFace((60, 40, 140, 120), np.zeros((68, 2)), 1.0),
                       quad, photo.size)
    session.set_image(torch.zeros(3, 32, 32))
    with pytest.raises(RuntimeError, match="aligned photo"):
        session.paste_back()
    session.set_face(photo, record)
    assert session.alignment is record and session.photo is photo and session.image.shape == (3, 32, 32)
    pasted = session.paste_back(feather=0.1)
    with torch.no_grad():
        full = model.decode(session.wplus, resize=False, randomize_noise=False)
    assert full.shape[-1] == 64 > session.size
    expected = paste_back(photo, Image.fromarray(to_uint8(full)[0]), record, feather=0.1)
    assert np.array_equal(np.asarray(pasted), np.asarray(expected))
    mask = paste_mask(record, 0.1)
    assert np.array_equal(np.asarray(pasted)[mask == 0], np.asarray(photo)[mask == 0])
    # into another copy of the photo (how --all-faces accumulates): only the disc changes
    grey = Image.new("RGB", photo.size, (128, 128, 128))
    into = np.asarray(session.paste_back(grey))
    assert np.array_equal(into[mask == 1], np.asarray(pasted)[mask == 1]) and (into[mask == 0] == 128).all()


@pytest.mark.photo
def test_edit_align_paste_back(photo_path, tmp_path, capsys):
    before = photo_path.read_bytes()
    out = tmp_path / "out"
    main(COMMAND + ["--input", str(photo_path), "--output", str(out)])
    assert "pasted 1 face(s)" in capsys.readouterr().out
    assert photo_path.read_bytes() == before                        # the input is never touched
    original = np.asarray(Image.open(photo_path).convert("RGB"))
    pasted = np.asarray(Image.open(out / "edited_photo.png").convert("RGB"))
    assert pasted.shape == original.shape == (512, 512, 3)          # full resolution
    (entry,) = json.loads((out / "alignment.json").read_text())
    assert entry["score"] > 1.0 and len(entry["detections"]) == 2 and entry["bbox"][3] < 200   # the face
    mask = paste_mask(_record(entry))
    assert np.array_equal(pasted[mask == 0], original[mask == 0])  # bit-identical outside the disc
    # the toy reconstruction of a real face is a cartoon: the disc holds something else
    assert np.abs(pasted[mask == 1].astype(int) - original[mask == 1]).mean() > 10
    for name in ("edited.png", "wplus.pt", "input.png", "reconstruction.png", "side_by_side.png"):
        assert (out / name).is_file()


@pytest.mark.photo
def test_edit_all_faces_pastes_every_face(photo_path, tmp_path, capsys):
    out = tmp_path / "all"
    main(COMMAND + ["--all-faces", "--feather", "0.2", "--input", str(photo_path), "--output", str(out)])
    assert "pasted 2 face(s)" in capsys.readouterr().out
    entries = json.loads((out / "alignment.json").read_text())
    assert [e["score"] > 1.0 for e in entries] == [True, False]     # most confident first
    assert (out / "face0" / "edited.png").is_file() and (out / "face1" / "edited.png").is_file()
    original = np.asarray(Image.open(photo_path).convert("RGB")).astype(int)
    pasted = np.asarray(Image.open(out / "edited_photo.png").convert("RGB")).astype(int)
    masks = [paste_mask(_record(e), 0.2) for e in entries]
    for mask in masks:
        assert np.abs(pasted[mask == 1] - original[mask == 1]).mean() > 10
    outside = (masks[0] == 0) & (masks[1] == 0)
    assert np.array_equal(pasted[outside], original[outside])


@pytest.mark.photo
def test_paste_back_flag_errors(photo_path, tmp_path, cli_fails):
    fails = cli_fails

    base = ["edit", "--checkpoint", "toy", "--classifier", "toy", "--input", str(photo_path)]
    assert "--paste-back needs --align" in fails(base + ["--paste-back", "--output", str(tmp_path / "a")])
    assert "--all-faces needs --align" in fails(base + ["--all-faces", "--output", str(tmp_path / "b")])
    assert "feather" in fails(base + ["--align", "--paste-back", "--feather", "0.9", "--output", str(tmp_path)])
    # the pasted photo never replaces the input
    victim = tmp_path / "c" / "edited_photo.png"
    victim.parent.mkdir()
    victim.write_bytes(photo_path.read_bytes())
    assert "refusing to overwrite" in fails(["edit", "--checkpoint", "toy", "--classifier", "toy", "--input",
                                             str(victim), "--align", "--paste-back", "--output", str(victim.parent)])
    cat = tmp_path / "cat.png"
    import skimage.data

    Image.fromarray(skimage.data.chelsea()).save(cat)
    assert "no face found in" in fails(["edit", "--checkpoint", "toy", "--classifier", "toy", "--input", str(cat),
                                        "--align", "--output", str(tmp_path / "d")])
