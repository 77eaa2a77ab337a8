"""High-fidelity inversion beyond W+: the generator's residual entry point, the stage, PTI, the session."""
import pytest
import torch

from stytr.config import GeneratorConfig, HighFidelityConfig, PTIConfig
from stytr.editing import Method
from stytr.fidelity import Fidelity, PTIModel
from stytr.models.high_fidelity import HighFidelityModel, HighFidelityStage
from stytr.pti import locality_codes, pivotal_tuning
from stytr.toy.baselines import random_toy_session
from weight_files import write_smoke_encoder_and_classifier

TOY = dict(GeneratorConfig.PRESETS["toy"], checkpoint="")


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return GeneratorConfig.from_dict(TOY).build().eval().requires_grad_(False)


def _codes(G, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return G.style(torch.randn(n, G.style_dim, generator=g))[:, None].repeat(1, G.n_latent, 1)


def _randomise(stage: HighFidelityStage, scale=0.05, seed=0):
    """A stage whose zero-initialised last layers carry weights, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in stage.parameters():
            if not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return stage


def test_zero_residual_equals_the_plain_generator(G):
    w = _codes(G)
    plain = G.synthesis(w, randomize_noise=False)
    for res in (16, 32):
        c = G.channels[res]
        zero = {res: (torch.zeros(2, c, res, res), torch.zeros(2, c, res, res))}
        assert torch.equal(G.synthesis(w, randomize_noise=False, residual=zero), plain)
        assert torch.equal(G.synthesize_s(G.w_to_s(w), randomize_noise=False, residual=zero), plain)
    shift = torch.full((2, G.channels[32], 32, 32), 0.5)
    moved = G.synthesis(w, randomize_noise=False, residual={32: (torch.zeros_like(shift), shift)})
    assert (moved - plain).abs().mean() > 1e-3
    # an untrained stage starts exactly at the W+ image
    model = _model(G, HighFidelityStage(HighFidelityConfig.preset("smoke", layers=(16, 32))))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    d, g = model.distortion(x, w)
    assert torch.equal(model.render(w, d, g), G.synthesis(w, randomize_noise=False))


def test_residual_shapes_are_checked(G):
    w = _codes(G)
    with pytest.raises(ValueError, match="32x32"):
        G.synthesis(w, residual={32: (torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32))})
    with pytest.raises(ValueError, match="blocks are 8"):
        G.synthesis(w, residual={4: (torch.zeros(2, 64, 4, 4), torch.zeros(2, 64, 4, 4))})
    with pytest.raises(ValueError, match="layers"):
        HighFidelityConfig.preset("smoke", layers=(128,))


class _Inversion(torch.nn.Module):
    """The parts of an inversion model the stage uses: cfg.input_size, decoder, encode."""

    def __init__(self, G):
        super().__init__()
        self.decoder = G
        self.cfg = type("Cfg", (), {"input_size": 64})()

    def encode(self, x):
        return _codes(self.decoder, len(x))


def _model(G, stage):
    return HighFidelityModel(_Inversion(G), stage.eval())


def test_alignment_changes_the_residual_for_an_edited_code(G):
    stage = _randomise(HighFidelityStage(HighFidelityConfig.preset("smoke")))
    model = _model(G, stage)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    w = _codes(G, 1)
    d, g = model.distortion(x, w)
    edited = w + 0.5 * torch.randn(w.shape, generator=torch.Generator().manual_seed(3))
    g_edit = model._image(edited).clamp(-1, 1)
    with torch.no_grad():
        same = stage(d, g, g)
        moved = stage(d, g_edit, g)
        raw = stage.residual(d)
    assert all(not torch.allclose(moved[r][k], same[r][k]) for r in same for k in (0, 1))
    assert not torch.allclose(stage.align(d, g_edit, g), d)
    # without the aligner the edited code gets the input's distortion as it is
    bypass = HighFidelityStage(HighFidelityConfig.preset("smoke", align=False))
    bypass.residual = stage.residual
    assert all(torch.equal(bypass(d, g_edit, g)[r][k], raw[r][k]) for r in raw for k in (0, 1))


def test_pti_never_modifies_the_shared_generator(G):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    flags = {k: p.requires_grad for k, p in G.named_parameters()}
    w = _codes(G, 1)
    target = torch.rand(1, 3, 64, 64) * 2 - 1
    cfg = PTIConfig.preset("toy", steps=4, lr=1e-2)
    result = pivotal_tuning(G, w, target, cfg)
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad == flags[k] and p.grad is None for k, p in G.named_parameters())
    tuned = dict(result.generator.named_parameters())
    assert any(not torch.equal(tuned[k], p) for k, p in G.named_parameters() if not k.startswith("style."))
    assert all(torch.equal(tuned[k], p) for k, p in G.named_parameters() if k.startswith("style."))
    assert result.losses[-1]["l2"] < result.losses[0]["l2"]
    assert all(not p.requires_grad for p in result.generator.parameters())


def test_locality_codes_lie_alpha_from_the_pivot(G):
    w = _codes(G, 3)
    codes = locality_codes(G, w, 15.0, 0.5, w.mean((0, 1)), torch.Generator().manual_seed(0))
    assert torch.allclose((codes - w).flatten(1).norm(dim=1), torch.full((3,), 15.0), atol=1e-3)


@pytest.fixture(scope="module")
def session():
    torch.manual_seed(0)
    s = random_toy_session(seed=0, editors=("Smiling",))
    stage = _randomise(HighFidelityStage(HighFidelityConfig.preset("smoke", layers=(32,))))
    s2 = random_toy_session(seed=0, editors=("Smiling",), high_fidelity=stage, pti_steps=2)
    return s, s2


def test_every_editor_renders_through_the_high_fidelity_entry_point(session):
    plain, hifi = session
    x = torch.rand(3, 64, 64) * 2 - 1
    for s in (plain, hifi):
        s.set_image(x)
    assert hifi.fidelities == [Fidelity.WPLUS, Fidelity.HIGH, Fidelity.PTI]
    assert plain.fidelities == [Fidelity.WPLUS, Fidelity.PTI]
    with pytest.raises(ValueError, match="high-fidelity stage"):
        plain.set_fidelity("high-fidelity")
    hifi.set_fidelity("high-fidelity")
    assert not torch.allclose(hifi.reconstruction, plain.reconstruction)
    for method in (Method.LABEL_1, Method.LABEL_2, Method.LABEL_HVP, Method.INTERFACEGAN, Method.STYLESPACE):
        a = hifi.attributes(method)[0]
        edited, unedited = hifi.render({a: 3.0}, method=method), plain.render({a: 3.0}, method=method)
        assert edited.shape == (3, 64, 64) and torch.isfinite(edited).all()
        assert not torch.allclose(edited, unedited) and not torch.allclose(edited, hifi.reconstruction)
    ref = hifi.reference_edit(torch.rand(3, 64, 64) * 2 - 1, "Smiling")
    assert not torch.allclose(ref, plain.reference_edit(torch.rand(3, 64, 64) * 2 - 1, "Smiling"))
    hifi.set_fidelity("w+")
    assert torch.equal(hifi.render({"Smiling": 3.0}), plain.render({"Smiling": 3.0}))


def test_session_pti_tunes_a_copy(session, tmp_path):
    _, hifi = session
    hifi.set_image(torch.rand(3, 64, 64) * 2 - 1)
    before = {k: v.clone() for k, v in hifi.G.state_dict().items()}
    recon_w = hifi.reconstruction
    hifi.set_fidelity("pti", steps=3)
    assert hifi.renderer.generator is not hifi.G and len(hifi.renderer.result.losses) == 3
    assert not torch.allclose(hifi.reconstruction, recon_w)
    img = hifi.render({"Smiling": 3.0}, method=Method.STYLESPACE)
    assert torch.isfinite(img).all()
    assert torch.load(hifi.save(tmp_path)["wplus"], weights_only=True)["fidelity"] == "pti"
    assert all(torch.equal(v, hifi.G.state_dict()[k]) for k, v in before.items())
    hifi.set_fidelity("w+")


def test_pti_model_reconstructs_like_an_inversion_model(G):
    inv = _Inversion(G)
    model = PTIModel(inv, PTIConfig.preset("toy", steps=2, locality_every=0))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    images, w = model(x, return_latents=True)
    assert images.shape == x.shape and len(model.results) == 2 and w.shape == (2, G.n_latent, G.style_dim)


def test_editor_app_switches_between_wplus_and_high_fidelity(session, tmp_path):
    pytest.importorskip("ipywidgets")
    from stytr.apps.editor import EditorApp

    plain, hifi = session
    app = EditorApp(hifi, output_dir=str(tmp_path), seed=3)
    assert [v for _, v in app.fidelity.options] == ["w+", "high-fidelity"]
    recon_w, preview_w = app.recon_view.value, app.preview.value
    app.fidelity.value = "high-fidelity"
    app.wait()
    assert hifi.fidelity is Fidelity.HIGH and app.recon_view.value != recon_w and app.preview.value != preview_w
    app.sliders["Smiling"].value = 3.0
    app.update_now()
    assert app.last_error is None and hifi.result.edits == {"Smiling": 3.0}
    app.fidelity.value = "w+"
    app.wait()
    assert app.recon_view.value == recon_w
    assert EditorApp(plain, output_dir=str(tmp_path), seed=3).fidelity.disabled


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    import numpy as np
    from PIL import Image

    from stytr import artifacts
    from stytr.toy import render_faces

    root = tmp_path_factory.mktemp("hifi_cli")
    write_smoke_encoder_and_classifier(root)
    stage = _randomise(HighFidelityStage(HighFidelityConfig.preset("smoke")))
    artifacts.export("high_fidelity", stage, root / "stage.safetensors", {"encoder": "encoder.pt", "command": "test"})
    faces, _ = render_faces(2, seed=7, size=64)
    for i, face in enumerate(faces):
        Image.fromarray(((face.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).save(root / f"{i}.png")
    return root, stage


def test_stage_export_round_trip(cli_files):
    from stytr import artifacts

    root, stage = cli_files
    loaded = artifacts.load("high_fidelity", root / "stage.safetensors")
    assert loaded.cfg == stage.cfg and loaded.encoder_spec == "encoder.pt"
    assert all(torch.allclose(a, b.half().float()) for a, b in zip(loaded.state_dict().values(),
                                                                     stage.state_dict().values()))


def test_invert_refine(cli_files, tmp_path, capsys):
    from stytr.checkpoints import load
    from stytr.cli import main

    root, _ = cli_files
    base = ["invert", "--checkpoint", str(root / "encoder.pt"), "--input", str(root / "0.png")]
    mse = {}
    for refine, extra in (("none", []), ("high-fidelity", ["--stage", str(root / "stage.safetensors")]),
                          ("pti", ["--steps", "3"])):
        main(base + ["--output", str(tmp_path / refine), "--refine", refine, *extra])
        line = capsys.readouterr().out.strip().splitlines()[-1]
        mse[refine] = float(line.split("mean MSE ")[1].split()[0])
        assert (tmp_path / refine / "reconstructions" / "0.png").is_file()
        assert load(tmp_path / refine / "latents.pt")["latents"].shape == (1, 10, 128)
    assert mse["high-fidelity"] != mse["none"] and mse["pti"] < mse["none"]
    with pytest.raises(SystemExit) as err:
        main(base + ["--output", str(tmp_path / "bad"), "--refine", "pti", "--steps", "-1"])
    assert err.value.code == 2 and "--steps" in capsys.readouterr().err


def test_fidelity_table_rows(tmp_path):
    """On the shipped encoder: an untrained stage reproduces the W+ row exactly; PTI improves on it."""
    from stytr.domains import get_domain
    from stytr.eval.high_fidelity import fidelity_table, write_fidelity_table

    dom = get_domain("toyfaces")
    stage = HighFidelityStage(HighFidelityConfig.preset("toy"))
    table = fidelity_table(dom, n=4, pti_n=1, pti_steps=3, high_fidelity=stage, attributes=("Smiling",),
                           timing_n=1, progress=False)
    rows = {r["method"].split(" (")[0].split(",")[0]: r for r in table["rows"]}
    wplus, hifi, pti = rows["W+ Style Transformer"], rows["+ high-fidelity stage"], rows["+ PTI"]
    for key in ("mse", "ssim", "perceptual", "agreement", "flip_Smiling", "keep_Smiling"):
        assert hifi[key] == pytest.approx(wplus[key], abs=1e-6), key
    assert pti["n"] == 1 and all(r["ms_per_image"] > 0 for r in table["rows"])
    assert table["per_image"][pti["method"]]["mse"][0] < table["per_image"][wplus["method"]]["mse"][0]
    paths = write_fidelity_table(table, tmp_path / "t.csv", tmp_path / "t.png", tmp_path / "t.json")
    assert all(p.is_file() for p in paths)
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("method,n,mse,ssim,perceptual,agreement,flip_")


def test_trainer_resumes_exactly(tmp_path):
    from stytr.config import HighFidelityTrainConfig
    from stytr.train.high_fidelity import train_high_fidelity

    cfg = HighFidelityTrainConfig.preset("smoke", out=str(tmp_path / "once"))
    once = train_high_fidelity(cfg, progress=False)
    half = train_high_fidelity(cfg.override({"out": str(tmp_path / "twice"), "steps": 2}), progress=False)
    assert half["step"] == 2 and half["trainer"].optimizer.param_groups[0]["lr"] == cfg.lr
    twice = train_high_fidelity(cfg.override({"out": str(tmp_path / "twice")}), progress=False)
    assert twice["step"] == once["step"] == cfg.steps
    a, b = once["trainer"].stage.state_dict(), twice["trainer"].stage.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert twice["trainer"].optimizer.param_groups[0]["lr"] == pytest.approx(cfg.lr * cfg.lr_multiplier(3))
    assert cfg.lr_multiplier(3) < 1
    opt_a, opt_b = once["trainer"].optimizer.state_dict()["state"], twice["trainer"].optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)
    assert (tmp_path / "once" / "tb").is_dir() and (tmp_path / "once" / "best.pt").is_file()
    metrics = once["metrics"]
    assert {"loss", "l2", "align", "mse", "mse_edited", "mse_wplus"} <= set(metrics)
    # the stage it trained moved away from the W+ rendering it started at
    assert any(v.abs().sum() > 0 for k, v in once["best"].state_dict().items() if k.startswith("residual.heads"))


def test_edit_refine(cli_files, tmp_path):
    from stytr.checkpoints import load
    from stytr.cli import main

    root, _ = cli_files
    base = ["edit", "--checkpoint", str(root / "encoder.pt"), "--classifier", str(root / "classifier.pt"),
            "--input", str(root / "0.png"), "--attribute", "Smiling", "--alpha", "3"]
    main(base + ["--output", str(tmp_path / "hifi"), "--refine", "high-fidelity", "--stage",
                 str(root / "stage.safetensors")])
    main(base + ["--output", str(tmp_path / "pti"), "--refine", "pti", "--steps", "2"])
    for name in ("hifi", "pti"):
        record = load(tmp_path / name / "wplus.pt")
        assert record["fidelity"] == {"hifi": "high-fidelity", "pti": "pti"}[name]
        assert (tmp_path / name / "edited.png").is_file()


def test_image_folder_warp_pairs_train(tmp_path):
    """The image-folder path (HFGI's warp pairs, what the ffhq preset uses) trains and validates."""
    import numpy as np
    from PIL import Image

    from stytr.config import HighFidelityTrainConfig
    from stytr.toy import render_faces
    from stytr.train.high_fidelity import train_high_fidelity

    faces, _ = render_faces(6, seed=11, size=64)
    for split, part in (("train", faces[:4]), ("val", faces[4:])):
        (tmp_path / split).mkdir()
        for i, face in enumerate(part):
            pixels = ((face.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / split / f"{i}.png")
    cfg = HighFidelityTrainConfig.preset("smoke", data="folder", pairs="warp", train_dir=str(tmp_path / "train"),
                                         val_dir=str(tmp_path / "val"), batch=2, out=str(tmp_path / "run"))
    result = train_high_fidelity(cfg, progress=False)
    assert result["step"] == cfg.steps and np.isfinite(result["metrics"]["loss"])
    # the residual heads start at zero: training on warp pairs moved them
    assert any(v.abs().sum() > 0 for k, v in result["best"].state_dict().items() if k.startswith("residual.heads"))


def test_ffhq_stage_features_fit_the_1024px_generator():
    """The published-size stage: 256 px distortion maps -> (scale, shift) for config-f's 64x64 block."""
    from stytr.models.stylegan2 import base_channels

    cfg = HighFidelityConfig.preset("ffhq")
    stage = HighFidelityStage(cfg).eval()
    channels = base_channels(cfg.generator.channel_multiplier, cfg.generator.channel_max)
    d = torch.zeros(1, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        features = stage(d, d, d)
    assert cfg.input_size == 256 and cfg.generator.size == 1024 and set(features) == {64}
    assert all(t.shape == (1, channels[64], 64, 64) for t in features[64])
