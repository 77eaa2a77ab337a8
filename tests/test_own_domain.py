"""A user's own domain, end to end: the README walkthrough's commands on a tiny folder drawn here, and
the domain file format."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stytr import artifacts
from stytr.checkpoints import load
from stytr.cli import main
from stytr.data.folders import write_celeba_attr_file
from stytr.domains import get_domain, load_domain_file

torch.set_num_threads(1)

README = Path(__file__).resolve().parents[1] / "README.md"

# What the test changes in the walkthrough's commands: toy sizes instead of the paper's.
TINY = {
    "train-generator": ["--size", "32", "--steps", "2"],
    "train-inversion": ["--steps", "2", "--n_val", "4"],
    "train-latent-classifier": [],
    "edit": [],
}


def walkthrough() -> tuple[dict, list[list[str]]]:
    """The domain file and the commands of the README's own-domain section."""
    text = README.read_text()
    section = text[text.index("## Your own domain"):]
    section = section[:section.index("\n## ", 1)]
    domain = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    bash = re.findall(r"```bash\n(.*?)```", section, re.S)[-1]
    commands = [shlex.split(line)[3:] for line in bash.splitlines() if line.startswith("python -m stytr ")]
    return domain, commands


def draw_cars(root: Path, n: int = 12) -> None:
    """``cars/train``: a coloured box on grey; Red = the box is red, Convertible = it is wide."""
    rng = np.random.default_rng(0)
    folder = root / "cars" / "train"
    folder.mkdir(parents=True)
    names, labels = [], []
    for i in range(n):
        img = np.full((48, 48, 3), 128, np.uint8)
        red, wide = i % 2 == 0, i % 3 == 0
        w = 36 if wide else 20
        img[18:34, (48 - w) // 2:(48 + w) // 2] = (220, 30, 30) if red else (30, 30, 220)
        img = np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:04d}.jpg")
        names.append(f"{i:04d}.jpg")
        labels.append([red, wide])
    write_celeba_attr_file(root / "cars" / "list_attr_cars.txt", names, np.array(labels, float), ["Red", "Convertible"])
    Image.open(folder / "0001.jpg").save(root / "my_car.png")        # a blue car: make it red


def test_readme_walkthrough_runs_end_to_end(tmp_path, monkeypatch, capsys):
    domain, commands = walkthrough()
    assert [c[0] for c in commands] == list(TINY), "the README walkthrough's commands changed: update TINY"
    monkeypatch.chdir(tmp_path)
    draw_cars(tmp_path)
    domain["image_size"] = 32
    (tmp_path / "cars.json").write_text(json.dumps(domain))
    for argv in commands:
        argv = ["smoke" if a == "ffhq" and argv[i - 1] == "--preset" else a for i, a in enumerate(argv)]
        main(argv + TINY[argv[0]])
    out = capsys.readouterr().out
    assert "edited (label-1 {'Red': 3.0})" in out

    # Every artefact loads through the registry, by path and through the domain file.
    dom = get_domain("cars.json")
    g = artifacts.load("generator", domain["generator"])
    assert g.size == 32 and torch.equal(dom.load("generator").input.input, g.input.input)
    assert set(load(domain["generator"])) >= {"g", "d", "g_ema", "latent_avg"}     # rosinality's layout
    encoder = dom.load("encoder")
    assert encoder.cfg.generator.size == 32 and encoder.cfg.input_size == 32
    for k, v in g.state_dict().items():       # the synthesis stays frozen (the mapping MLP trains)
        if not k.startswith("style."):
            assert torch.equal(encoder.decoder.state_dict()[k], v), f"the encoder's synthesis differs at {k}"
    classifier = dom.load("classifier", style_dim=g.style_dim)
    assert classifier.attribute_names == ["Red", "Convertible"] and classifier.n_latent == g.n_latent

    # The edit changed the image, and moved the code toward "Red" in the classifier's eyes.
    edited = np.asarray(Image.open("edits/my_car/edited.png"), dtype=float)
    recon = np.asarray(Image.open("edits/my_car/reconstruction.png"), dtype=float)
    assert np.abs(edited - recon).mean() > 0.5
    codes = load("edits/my_car/wplus.pt")
    with torch.no_grad():
        before, after = (classifier.logits(codes[k])[0, 0].item() for k in ("source_wplus", "wplus"))
    assert after > before


def test_domain_file_paths_names_and_attributes(tmp_path):
    draw_cars(tmp_path)
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "cars.json"
    path.write_text(json.dumps({"name": "cars", "generator": "ffhq", "encoder": "../enc.pt",
                                "image_dir": "../cars/train", "attr_file": str(tmp_path / "cars/list_attr_cars.txt"),
                                "modelled": ["Red"], "image_size": 64}))
    dom = load_domain_file(path)
    assert dom.generator == "ffhq"                                  # a registered name stays a name
    assert Path(dom.encoder) == tmp_path / "sub" / "../enc.pt"      # paths are the file's folder's
    assert Path(dom.image_dir).resolve() == (tmp_path / "cars/train").resolve()
    assert dom.attributes == ("Red", "Convertible") and dom.modelled == ("Red",)
    assert dom.image_size == 64 and dom.preset == "ffhq"
    with pytest.raises(ValueError, match="Convertible"):
        dom.check_attribute("Convertible")


def test_toml_domain_files(tmp_path):
    pytest.importorskip("tomllib")
    path = tmp_path / "d.toml"
    path.write_text('name = "d"\ngenerator = "g.pt"\nattributes = ["A", "B"]\nimage_size = 32\n')
    dom = get_domain(path)
    assert dom.attributes == ("A", "B") and Path(dom.generator) == tmp_path / "g.pt"


@pytest.mark.parametrize("content, message", [
    ({"name": "x", "generator": "g.pt", "colour": "red"}, "unknown key"),
    ({"name": "x"}, "needs 'generator'"),
    ({"name": "x", "generator": "g.pt", "attr_file": "missing.txt"}, "attribute file not found"),
])
def test_bad_domain_files_fail_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as err:
        main(["edit", "--domain", str(path), "--input", "x.png", "--output", str(tmp_path / "o")])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "d.json").write_text("{name: cars")
    with pytest.raises(ValueError, match="not a valid domain file"):
        get_domain(tmp_path / "d.json")
    with pytest.raises(FileNotFoundError, match="domain file not found"):
        get_domain(str(tmp_path / "nope.json"))


def test_a_domain_on_a_registered_generator_gets_its_architecture(tmp_path):
    """``"generator": "toy"`` (our shipped safetensors): --domain puts the toy architecture into the
    paper's preset, and the flags still win."""
    from stytr.cli import COMMANDS, _config_from_args, build_parser

    (tmp_path / "pics").mkdir()
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"name": "d", "generator": "toy", "image_dir": "pics", "image_size": 64}))
    argv = ["train-inversion", "--preset", "ffhq", "--domain", str(path), "--steps", "7"]
    parser, keys = build_parser(argv)
    cfg = _config_from_args(COMMANDS["train-inversion"], parser.parse_args(argv), keys["train-inversion"])
    toy = artifacts.load("generator", "toy")
    assert (cfg.model.generator.size, cfg.model.generator.style_dim, cfg.model.generator.n_latent) == \
        (64, 128, toy.n_latent)
    cfg.model.generator.build().load_state_dict(toy.state_dict())     # strict: raises unless the layout is the same
    assert cfg.model.input_size == 64 and cfg.train_dir == str(tmp_path / "pics") and cfg.val_dir == ""
    assert cfg.steps == 7 and cfg.domain == str(path) and cfg.lpips == 0.8     # the preset's recipe, the flags' steps
