"""stytr.eval: reconstruction metrics, complexity (Table 1) and re-scoring (Figure 1), on tiny models."""
import csv
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from stytr.config import GeneratorConfig
from stytr.editing import Editor, LabelEditor
from stytr.eval import complexity as cx
from stytr.eval import metrics, rescoring
from stytr.models.latent_classifier import LatentClassifier
from stytr.models.inversion import build_inversion_model
from stytr.toy import ATTRIBUTES, AttributePredictor, render_faces

torch.set_num_threads(1)
TINY = dict(backbone_units=(1, 1, 1, 1), generator=dict(GeneratorConfig.PRESETS["toy"], checkpoint=""))


# -- metrics ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faces():
    return render_faces(6, seed=3)[0]


def test_mse_known_values():
    a = torch.zeros(2, 3, 8, 8)
    b = torch.full((2, 3, 8, 8), 0.5)
    b[1] = -1.0
    torch.testing.assert_close(metrics.mse(a, b), torch.tensor([0.25, 1.0]))


def test_ssim_identity_and_noise(faces):
    torch.testing.assert_close(metrics.ssim(faces, faces), torch.ones(len(faces)), atol=1e-6, rtol=0)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(faces.shape, generator=gen)
    scores = [metrics.ssim((faces + s * noise).clamp(-1, 1), faces).mean().item() for s in (0.02, 0.1, 0.3, 0.8)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 1 and scores[-1] < 0.3


def test_ssim_constant_images_give_the_luminance_term():
    # Constant images: zero variances, so SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) on the [0, 1] scale.
    a, b = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), -0.4)   # 0.6 and 0.3 on [0, 1]
    m1, m2, c1 = 0.6, 0.3, 0.01**2
    expected = (2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1)
    assert metrics.ssim(a, b).item() == pytest.approx(expected, abs=1e-6)


def test_ssim_matches_scikit_image(faces):
    skm = pytest.importorskip("skimage.metrics")
    noisy = (faces + 0.2 * torch.randn(faces.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    ours = metrics.ssim(noisy, faces)
    for i in range(2):
        x = ((noisy[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        y = ((faces[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        ref = skm.structural_similarity(x, y, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)


class _Identity(nn.Module):
    def forward(self, x, randomize_noise=False):
        return x.clone()


def test_evaluate_reconstruction_identity_and_model(faces):
    predictor = AttributePredictor().eval()
    predictor.modelled = tuple(ATTRIBUTES)      # as Domain.load('predictor') sets it
    perfect = metrics.evaluate_reconstruction(_Identity(), faces, batch=4, predictor=predictor, lpips=False)
    assert perfect["n"] == 6 and perfect["mse"] == 0 and perfect["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["lpips"] is None and perfect["predictor_distance"] == pytest.approx(0.0, abs=1e-6)
    assert list(perfect["attribute_agreement"]) == list(ATTRIBUTES)
    assert perfect["attribute_agreement_mean"] == 1.0
    assert perfect["per_image"]["attribute_agreement"].shape == (6, len(ATTRIBUTES))

    torch.manual_seed(0)
    model = build_inversion_model(cx.paper_table1_configs("toy", **TINY)["full"])
    out = metrics.evaluate_reconstruction(model, faces, batch=4, predictor=predictor, lpips=False)
    assert set(out["per_image"]) == {"mse", "ssim", "predictor_distance", "attribute_agreement"}
    assert out["per_image"]["mse"].shape == (6,) and out["mse"] > 0 and out["ssim"] < 1
    np.testing.assert_allclose(out["mse"], out["per_image"]["mse"].mean(), rtol=1e-6)
    assert model.training  # the model's mode is restored
    # Batches as an iterable of (images, labels) tuples give the same numbers (fixed noise).
    again = metrics.evaluate_reconstruction(model, [(faces[:3], None), (faces[3:], None)], lpips=False)
    assert again["mse"] == pytest.approx(out["mse"], rel=1e-5)
    assert "LPIPS -" in metrics.summarize(again)


# -- complexity -------------------------------------------------------------------------------

def test_count_flops_conventions():
    lin = nn.Linear(32, 16)
    assert cx.count_flops(lambda: lin(torch.zeros(4, 32))) == 2 * 4 * 32 * 16   # a multiply-add = 2 FLOPs
    q, k = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8)
    # PyTorch's fused CPU attention kernel is counted too (q k^T and attention @ v).
    assert cx.count_flops(lambda: F.scaled_dot_product_attention(q, k, k)) == 2 * (2 * 2 * 4 * 5 * 7 * 8)


def test_paper_configs_and_reference():
    cfgs = cx.paper_table1_configs()
    assert list(cfgs) == ["pSp", "w/o self", "full"] == list(cx.TABLE1_METHODS)
    assert (cfgs["pSp"].kind, cfgs["w/o self"].kind, cfgs["full"].kind) == ("psp", "transformer", "transformer")
    assert not cfgs["w/o self"].use_self_attn and cfgs["full"].use_self_attn
    assert cfgs["full"].generator.size == 1024 and cfgs["full"].input_size == 256
    assert cx.PAPER_TABLE1["full"] == dict(params_m=40.6, gflops=36.37, time_s=0.0436, mse=0.0363, lpips=0.1665)


def test_complexity_table_on_tiny_models(tmp_path):
    cfgs = cx.paper_table1_configs("toy", **TINY)
    torch.manual_seed(0)
    models = {name: build_inversion_model(cfg) for name, cfg in cfgs.items()}
    rows = cx.complexity_table(cfgs, repeats=2, warmup=1, reference=cx.PAPER_TABLE1, models=models)
    assert [r["method"] for r in rows] == ["pSp", "w/o self", "full"]
    by = {r["method"]: r for r in rows}
    for r in rows:
        assert r["gflops"] > 0 and r["gmacs"] == pytest.approx(r["gflops"] / 2)
        assert r["params_m"] == models[r["method"]].encoder_parameter_count() / 1e6
        assert 0 < r["encoder_ms"] and 0 < r["total_ms"]
        assert r["paper_params_m"] == cx.PAPER_TABLE1[r["method"]]["params_m"]
    assert by["full"]["params_m"] > by["w/o self"]["params_m"] and by["full"]["gmacs"] > by["w/o self"]["gmacs"]
    # The encoder alone costs less than encoder + generator.
    model = models["full"].eval()
    x = torch.zeros(1, 3, 64, 64)
    whole = cx.count_flops(lambda: model(x, randomize_noise=False))
    assert 0 < cx.encoder_flops(model) < cx.encoder_flops(model, include_mapping=True) < whole
    assert cx.encoder_flops(cfgs["pSp"]) == cx.encoder_flops(models["pSp"])   # from a config, no generator

    path = cx.write_csv(rows, tmp_path / "table1.csv")
    with open(path) as f:
        read = list(csv.DictReader(f))
    assert list(read[0])[:6] == ["method", "params_m", "gflops", "gmacs", "encoder_ms", "total_ms"]
    assert {"paper_params_m", "paper_gmacs", "paper_time_ms"} <= set(read[0])
    assert [r["method"] for r in read] == ["pSp", "w/o self", "full"]
    text = cx.format_complexity_table(rows)
    assert "w/o self" in text and "ratios are to pSp" in text


def test_time_models_interleaves():
    calls = []

    class Fake(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name
            self.cfg = cx.paper_table1_configs("toy", **TINY)["full"]

        def encode(self, x):
            calls.append(self.name)
            return self.name

        def decode(self, codes, randomize_noise=False):
            calls.append(f"decode {codes}")      # renders the code the encoder just produced
            time.sleep(0.002)

    out = cx.time_models({"a": Fake("a"), "b": Fake("b"), "c": Fake("c")}, repeats=2, warmup=1)
    encodes = [c for c in calls if not c.startswith("decode")]
    assert encodes == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]   # round robin, rotating start
    assert calls[:2] == ["a", "decode a"]
    assert all(len(v["encoder_samples"]) == 2 for v in out.values())
    assert all(t > e for v in out.values() for e, t in zip(v["encoder_samples"], v["total_samples"]))


# -- re-scoring --------------------------------------------------------------------------------

class ShiftEditor(Editor):
    """Adds +-strength times a fixed random unit direction per attribute to every W+ row."""

    name = "shift"

    def __init__(self, n_latent, dim, seed=0):
        self.dirs = torch.randn(40, n_latent, dim, generator=torch.Generator().manual_seed(seed))
        self.dirs = self.dirs / self.dirs.norm(dim=-1, keepdim=True)
        self.calls = []

    def edit_latent(self, wplus, attribute, strength, target=1, G=None):
        from stytr.attributes import attribute_index

        self.calls.append((attribute, target, wplus.shape[0]))
        return wplus + (1 if target == 1 else -1) * strength * self.dirs[attribute_index(attribute)]


@pytest.fixture(scope="module")
def toy_setup():
    torch.manual_seed(0)
    G = GeneratorConfig.preset("toy", checkpoint="").build().eval()
    predictor = AttributePredictor().eval()
    with torch.no_grad():
        w = G.get_latent(torch.randn(6, G.style_dim, generator=torch.Generator().manual_seed(2)))
    wplus = w.unsqueeze(1).repeat(1, G.n_latent, 1)
    return G, predictor, wplus


def test_rescoring_matrix_definition(toy_setup):
    G, predictor, wplus = toy_setup
    editor = ShiftEditor(G.n_latent, G.style_dim)
    attrs = rescoring.PAPER_ATTRIBUTES
    M, det = rescoring.rescoring_matrix(G, wplus, editor, attrs, 2.0, predictor, batch=4)
    assert M.shape == (5, 5) and det["p_edited"].shape == (5, 6, 5) and det["sign"].shape == (5, 6)
    assert det["attributes"] == list(attrs) and det["n"] == 6
    assert {c[0] for c in editor.calls} == set(attrs)     # editors receive attribute names

    # Manual M[i, j] for one entry: flip each image's decision on attribute i.
    i, j = 1, 3
    ai, aj = rescoring.CELEBA_ATTRIBUTES.index(attrs[i]), rescoring.CELEBA_ATTRIBUTES.index(attrs[j])
    with torch.no_grad():
        orig = G.synthesis(wplus, randomize_noise=False)
        lo = predictor(orig)
        s = torch.where(lo[:, ai] < 0, 1.0, -1.0)
        edited = G.synthesis(wplus + s[:, None, None] * 2.0 * editor.dirs[ai], randomize_noise=False)
        le = predictor(edited)
        manual = (s * (torch.sigmoid(le[:, aj]) - torch.sigmoid(lo[:, aj]))).mean().item()
    assert M[i, j] == pytest.approx(manual, abs=1e-5)
    np.testing.assert_allclose(det["sign"][i], s.numpy())
    assert det["disentanglement"] == pytest.approx(rescoring.disentanglement_score(M))

    # "positive": every image toward presence, sign +1; logits as scores.
    Mp, detp = rescoring.rescoring_matrix(G, wplus, editor, attrs[:2], 2.0, predictor, direction="positive",
                                          score="logit")
    assert (detp["sign"] == 1).all()
    np.testing.assert_allclose(Mp, (detp["p_edited"] - detp["p_original"][None]).mean(1), atol=1e-5)


def test_rescoring_with_a_label_editor(toy_setup):
    G, predictor, wplus = toy_setup
    torch.manual_seed(1)
    classifier = LatentClassifier(G.n_latent, G.style_dim, 40, hidden=(32, 16), embed_dim=4).eval()
    M, det = rescoring.rescoring_matrix(G, wplus[:3], LabelEditor(classifier, 1), ["Smiling", "Male"], 1.0,
                                        predictor)
    assert M.shape == (2, 2) and np.isfinite(M).all() and det["editor"] == "label-1"


def test_disentanglement_score_and_plot(tmp_path):
    m = np.array([[0.5, -0.1], [0.1, 0.3]])
    assert rescoring.disentanglement_score(m) == pytest.approx(0.1 / 0.4)
    assert rescoring.disentanglement_score(rescoring.PAPER_FIGURE1["Ours-2"]) < \
        rescoring.disentanglement_score(rescoring.PAPER_FIGURE1["Ours-1"])
    path = tmp_path / "figures" / "rescoring_test.png"
    fig = rescoring.plot_rescoring({k: v.T for k, v in rescoring.PAPER_FIGURE1.items()}, rescoring.PAPER_ATTRIBUTES,
                                   path)
    assert path.is_file() and path.stat().st_size > 1000
    texts = [t for t in fig.axes[0].texts]
    assert len(texts) == 25 and texts[0].get_text() == "0.45" and texts[0].get_fontweight() == "bold"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["Smile", "Bangs", "Gender", "Glass", "Age"]
    import matplotlib.pyplot as plt

    plt.close(fig)
    with pytest.raises(ValueError):
        rescoring.plot_rescoring({"x": np.zeros((2, 2))}, rescoring.PAPER_ATTRIBUTES)


def test_average_face_mse_uses_the_average_latent_and_resizes():
    class Fake:
        latent_avg = torch.zeros(2, 4)

        def decode(self, w, randomize_noise=False):
            assert w.shape == (1, 2, 4) and not randomize_noise
            return torch.full((1, 3, 8, 8), 0.5)

    images = torch.ones(3, 3, 4, 4)
    assert metrics.average_face_mse(Fake(), images) == pytest.approx(0.25)
