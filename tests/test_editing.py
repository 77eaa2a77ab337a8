import math

import pytest
import torch
from torch import nn

from stytr.config import GeneratorConfig
from stytr.editing import (AS_RELEASED, Editor, InterFaceGAN, InterFaceGANEditor, LabelEditor, StyleSpace, StyleSpaceEditor,
                           direction, direction_cosine, hvp_direction, label_edit, layer_hessian, style_layout)
from stytr.editing.label import _trust_region_coefficients
from stytr.models.latent_classifier import LatentClassifier

torch.set_num_threads(1)
N_LAT, DIM, MALE = 4, 16, 20


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return LatentClassifier(N_LAT, DIM, 40, hidden=(48, 24), embed_dim=8).eval()


@pytest.fixture(scope="module")
def codes():
    return torch.randn(6, N_LAT, DIM, generator=torch.Generator().manual_seed(1))


class SmoothClassifier(nn.Module):
    """A tanh MLP: its logit has a genuinely non-zero Hessian (unlike a LeakyReLU network)."""

    def __init__(self, n_in, n_attr=40):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(n_in, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, n_attr))

    def forward(self, x):
        return self.net(x)


def _logit(c, w, a=MALE):
    return c(w)[0][:, a]


# -- label editing ---------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2, "hvp"])
def test_edit_moves_toward_target(classifier, codes, order):
    base = _logit(classifier, codes)
    up = _logit(classifier, label_edit(codes, classifier, "Male", target=1, alpha=0.3, order=order))
    down = _logit(classifier, label_edit(codes, classifier, MALE, target=0, alpha=0.3, order=order))
    assert (up > base).all() and (down < base).all()


def test_per_layer_unit_norm_and_layer_restriction(classifier, codes):
    for order in (1, 2):
        d = direction(codes, classifier, "Male", 1, order=order)
        torch.testing.assert_close(d.norm(dim=-1), torch.ones(6, N_LAT))
    edited = label_edit(codes, classifier, "Male", 1, alpha=2.0, layers=[1, 3])
    delta = edited - codes
    assert delta[:, [0, 2]].abs().max() == 0
    torch.testing.assert_close(delta[:, [1, 3]].norm(dim=-1), torch.full((6, 2), 2.0))
    single = label_edit(codes[0], classifier, "Male", 1, alpha=1.0)         # one code (n_latent, style_dim)
    torch.testing.assert_close(single, label_edit(codes[:1], classifier, "Male", 1, alpha=1.0)[0])


def test_first_order_matches_algorithm_1(classifier, codes):
    w = codes[0].clone().requires_grad_(True)
    predicted = torch.sigmoid(classifier(w.reshape(1, -1))[0][:, MALE])
    torch.nn.BCELoss()(predicted, torch.ones(1)).backward()
    direct = w.grad / torch.norm(w.grad, dim=1, keepdim=True)
    torch.testing.assert_close(label_edit(codes[:1], classifier, MALE, 1, alpha=1.5, order=1)[0],
                               codes[0] - 1.5 * direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", [0, 1])
def test_second_order_matches_algorithm_2_as_written(classifier, codes, target):
    xi, alpha = 1e-4, 2.0
    r = torch.randn(codes.shape, generator=torch.Generator().manual_seed(7))
    ours = label_edit(codes, classifier, "Male", target, alpha=alpha, order=2, xi=xi, r=r)
    y_t = torch.full((1,), float(1 - target))   # the label Algorithm 2 is handed for the desired value `target`
    for i in range(codes.shape[0]):
        w = codes[i]
        r_d = r[i].clone().requires_grad_(True)
        r_0 = torch.zeros(N_LAT, DIM, requires_grad=True)
        predicted_d = torch.sigmoid(classifier((w + xi * r_d).reshape(1, -1))[0][:, MALE])
        torch.nn.BCELoss()(predicted_d, y_t).backward()
        predicted_0 = torch.sigmoid(classifier((w + r_0).reshape(1, -1))[0][:, MALE])
        torch.nn.BCELoss()(predicted_0, y_t).backward()
        direct = r_d.grad - r_0.grad
        direct = direct / torch.norm(direct, dim=1, keepdim=True)
        torch.testing.assert_close(ours[i], w - alpha * direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", [0, 1])
def test_as_released_matches_the_released_coach(classifier, codes, target):
    # The released coach: label = the desired value, d = normalised difference of the gradients with
    # respect to the probe a and to a zero offset, then w - 3 * (a - d).
    xi, alpha = 1e-4, 3.0
    a = torch.randn(codes.shape, generator=torch.Generator().manual_seed(5))
    ours = label_edit(codes, classifier, "Male", target, alpha=alpha, order=AS_RELEASED, xi=xi, r=a)
    label = torch.full((1,), float(target))
    for i in range(codes.shape[0]):
        probe = a[i].clone().requires_grad_(True)
        zero = torch.zeros(N_LAT, DIM, requires_grad=True)
        predicted = torch.sigmoid(classifier((codes[i] + xi * probe).reshape(1, -1))[0][:, MALE])
        torch.nn.BCELoss()(predicted, label).backward()
        predicted_0 = torch.sigmoid(classifier((codes[i] + zero).reshape(1, -1))[0][:, MALE])
        torch.nn.BCELoss()(predicted_0, label).backward()
        d = probe.grad - zero.grad
        d = d / torch.norm(d, dim=1, keepdim=True)
        torch.testing.assert_close(ours[i], codes[i] - alpha * (a[i] - d), atol=1e-5, rtol=1e-5)


def test_as_released_is_algorithm_1_plus_the_probe(classifier, codes):
    # With a zero probe the released edit is Algorithm 1's; with a random one the probe is added at scale alpha.
    zero = torch.zeros_like(codes)
    torch.testing.assert_close(label_edit(codes, classifier, "Male", 1, alpha=2.0, order=AS_RELEASED, r=zero),
                               label_edit(codes, classifier, "Male", 1, alpha=2.0, order=1), atol=1e-5, rtol=1e-5)
    big = torch.zeros(400, N_LAT, DIM)
    delta = label_edit(big, classifier, "Male", 1, alpha=2.0, order=AS_RELEASED,
                       generator=torch.Generator().manual_seed(0)) - big
    assert 1.9 < delta.std().item() < 2.1
    editor = LabelEditor(classifier, AS_RELEASED, seed=3)
    assert editor.name == f"label-{AS_RELEASED}" and LabelEditor(classifier).order == 1      # off by default
    torch.testing.assert_close(editor.edit_latent(codes, "Male", 2.0), editor.edit_latent(codes, "Male", 2.0))


def test_directions_cosine(classifier, codes):
    d1 = direction(codes, classifier, "Male", 1, order=1)
    d2 = direction(codes, classifier, "Male", 1, order=2, generator=torch.Generator().manual_seed(0))
    cos = direction_cosine(d1, d2)
    assert cos.shape == (6,) and (cos > 0.99).all()        # the xi**2 Hessian term is invisible in float32
    torch.testing.assert_close(direction_cosine(d1, d1), torch.ones(6))
    torch.testing.assert_close(direction_cosine(d1, -d1), -torch.ones(6))


def test_layer_hessian_is_exact():
    torch.manual_seed(0)
    C = SmoothClassifier(N_LAT * DIM).double()
    w = torch.randn(2, N_LAT, DIM, dtype=torch.float64)
    e, a, M = layer_hessian(C, w, "Smiling", 1)
    for i in range(2):
        def loss(x):
            z = C(x.reshape(1, -1))[0, 31]
            return nn.functional.softplus(-z)        # BCE toward 1
        g = torch.autograd.functional.jacobian(loss, w[i])
        H = torch.autograd.functional.hessian(loss, w[i]).reshape(N_LAT * DIM, N_LAT * DIM)
        torch.testing.assert_close(a[i], g.norm(dim=-1))
        E = torch.zeros(N_LAT * DIM, N_LAT, dtype=torch.float64)   # columns: e_l embedded in row l
        for l in range(N_LAT):
            E[l * DIM:(l + 1) * DIM, l] = g[l] / g[l].norm()
        torch.testing.assert_close(M[i], E.T @ H @ E)
    assert M.abs().max() > 1e-6                      # a smooth classifier has curvature to see


def test_trust_region_solution_beats_the_ball():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        A = torch.randn(4, 4, generator=g, dtype=torch.float64)
        M = (A + A.T).unsqueeze(0)                         # indefinite
        a = torch.rand(1, 4, generator=g, dtype=torch.float64) + 0.1
        radius = torch.tensor([0.7], dtype=torch.float64)
        c = _trust_region_coefficients(a, M, radius)[0]
        def model(c):  # c: (k,) or (n, k)
            return -(c @ a[0]) + 0.5 * ((c @ M[0]) * c).sum(-1)
        assert c.norm() <= 0.7 + 1e-9
        rand = torch.randn(4000, 4, generator=g, dtype=torch.float64)
        rand = rand / rand.norm(dim=1, keepdim=True) * 0.7 * torch.rand(4000, 1, generator=g, dtype=torch.float64)
        best = model(rand).min()
        assert model(c) <= best + 1e-9
        assert a[0] @ c > 0                                 # a descent step for the attribute loss


def test_hvp_direction_properties(codes):
    C = SmoothClassifier(N_LAT * DIM)
    for alpha in (0.0, 0.5, 5.0):
        d = hvp_direction(C, codes, "Smiling", 1, alpha=alpha)
        torch.testing.assert_close(d.flatten(1).norm(dim=1), torch.full((6,), math.sqrt(N_LAT)))
    base = C(codes.flatten(1))[:, 31]
    for target, sign in ((1, 1), (0, -1)):
        moved = C(label_edit(codes, C, "Smiling", target, alpha=0.2, order="hvp").flatten(1))[:, 31]
        assert (sign * (moved - base) > 0).all()
    away = C(label_edit(codes, C, "Smiling", 1, alpha=-0.2, order="hvp").flatten(1))[:, 31]
    assert (away < base).all()
    # Restricted to two rows, the other rows stay put.
    d = hvp_direction(C, codes, "Smiling", 1, alpha=1.0, layers=[0, 2])
    assert d[:, [1, 3]].abs().max() == 0


def test_bad_arguments(classifier, codes):
    with pytest.raises(KeyError):
        label_edit(codes, classifier, "Moustache", 1)
    with pytest.raises(ValueError):
        label_edit(codes, classifier, "Male", 1, order=3)
    with pytest.raises(ValueError):
        label_edit(codes, classifier, "Male", 2)
    with pytest.raises(ValueError):
        label_edit(codes, classifier, "Male", 1, layers=[N_LAT])


# -- InterFaceGAN ----------------------------------------------------------------------

def _separable(n=1500, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    normals = torch.randn(3, d, generator=g)
    normals = normals / normals.norm(dim=1, keepdim=True)
    w = torch.randn(n, d, generator=g) * 2 + 0.5
    labels = torch.zeros(n, 40)
    for j, a in enumerate((5, 20, 31)):
        labels[:, a] = (w @ normals[j] + 0.3 > 0).float()
    return w, labels, normals


def test_interfacegan_recovers_normal(tmp_path):
    w, labels, normals = _separable()
    model = InterFaceGAN.fit(w, labels, attributes=["Bangs", "Male", "Smiling"])
    for j, a in enumerate(("Bangs", "Male", "Smiling")):
        assert torch.dot(model.direction(a), normals[j]) > 0.95
    assert not model.fitted[0] and model.fitted[20]
    # Edits: positive alpha raises the score, on every W+ row.
    wplus = w[:4].unsqueeze(1).repeat(1, 5, 1)
    edited = model.edit(wplus, "Male", 2.0)
    torch.testing.assert_close(model.score(edited, "Male") - model.score(wplus, "Male"), torch.full((4,), 2.0))
    torch.testing.assert_close(edited - wplus, (2.0 * model.direction("Male")).expand_as(wplus))
    # Conditional: no movement along the conditioning normals.
    n = model.direction("Male", conditioned_on=["Bangs", "Smiling"])
    assert abs(torch.dot(n, model.normals[5])) < 1e-5 and abs(torch.dot(n, model.normals[31])) < 1e-5
    assert abs(n.norm() - 1) < 1e-5
    model.save(tmp_path / "ifg.pt")
    torch.testing.assert_close(InterFaceGAN.load(tmp_path / "ifg.pt").direction("Male"), model.direction("Male"))
    with pytest.raises(ValueError, match="no boundary"):
        model.direction("Young")


# -- StyleSpace ------------------------------------------------------------------------

def _planted_s(n=800, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes, rgb = [8, 3, 8, 8, 3], [False, True, False, False, True]
    s = [torch.randn(n, c, generator=g) * (1 + torch.arange(c)) for c in sizes]   # channels of different scales
    labels = torch.zeros(n, 40)
    labels[:, 31] = (torch.rand(n, generator=g) < 0.3).float()
    pos = labels[:, 31].bool()
    s[2][pos, 5] -= 1.5 * 6          # planted: 1.5 std lower for smiling samples (channel std ~ 6)
    s[4][pos, 1] += 3 * 2.0          # a larger shift in a to_rgb layer, which the default search skips
    return s, labels, sizes, rgb


def test_stylespace_finds_planted_channel(tmp_path):
    s, labels, sizes, rgb = _planted_s()
    model = StyleSpace.fit_s(s, labels, layer_sizes=sizes, to_rgb=rgb)
    assert [(l, c) for l, c, _ in model.top_channels("Smiling")] == [(2, 5)]
    assert model.top_channels("Smiling", exclude_to_rgb=False)[0][:2] == (4, 1)
    assert model.top_channels("Smiling", criterion="consistency")[0][:2] == (2, 5)
    edited = model.edit_s(s, "Smiling", 2.0)
    diff = edited[2] - s[2]
    std = s[2][:, 5].std(unbiased=False)
    torch.testing.assert_close(diff[:, 5], torch.full((800,), -2.0 * std.item()), atol=1e-3, rtol=1e-3)  # sign: down
    assert diff[:, [0, 1, 2, 3, 4, 6, 7]].abs().max() == 0
    assert all(torch.equal(e, o) for i, (e, o) in enumerate(zip(edited, s)) if i != 2)
    model.save(tmp_path / "ss.pt")
    assert StyleSpace.load(tmp_path / "ss.pt").top_channels("Smiling") == model.top_channels("Smiling")


# -- editors on the toy generator ------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    G = GeneratorConfig.preset("toy").build().eval()
    with torch.no_grad():
        w = G.style(torch.randn(48, G.style_dim)).unsqueeze(1).repeat(1, G.n_latent, 1)
    labels = torch.zeros(48, 40)
    labels[:, 20] = (w[:, 0, 0] > w[:, 0, 0].median()).float()
    return G, w, labels


def test_editors_share_one_call_shape(toy):
    G, w, labels = toy
    C = LatentClassifier(G.n_latent, G.style_dim, 40, hidden=(32, 16), embed_dim=8).eval()
    ss = StyleSpace.fit(G, w, labels)
    assert style_layout(G)[1] == [isinstance(l, type(G.to_rgb1)) for l in G.style_layers()]
    ifg = InterFaceGAN.fit(w, labels, attributes=["Male"])
    editors = [LabelEditor(C, 1), LabelEditor(C, 2, seed=0), LabelEditor(C, "hvp"), InterFaceGANEditor(ifg),
               StyleSpaceEditor(ss)]
    x = w[:2]
    for ed in editors:
        assert isinstance(ed, Editor)
        img = ed.edit_images(G, x, "Male", 1.0, target=1)
        assert img.shape == (2, 3, G.size, G.size) and torch.isfinite(img).all()
        if ed.space == "w+":
            assert ed.edit_latent(x, "Male", 1.0).shape == x.shape
        else:
            assert len(ed.edit_latent(x, "Male", 1.0, G=G)) == len(G.style_layers())
    # target=0 mirrors the baselines' step; label editing moves the classifier the other way.
    ifg_ed = InterFaceGANEditor(ifg)
    torch.testing.assert_close(ifg_ed.edit_latent(x, "Male", 1.5, 0) - x, -(ifg_ed.edit_latent(x, "Male", 1.5, 1) - x))
    s_up, s_down = StyleSpaceEditor(ss).edit_latent(x, "Male", 1.5, 1, G=G), StyleSpaceEditor(ss).edit_latent(
        x, "Male", 1.5, 0, G=G)
    s0 = G.w_to_s(x)
    assert all(torch.allclose(u - o, -(d - o), atol=1e-5) for u, d, o in zip(s_up, s_down, s0))
    base = _logit(C, x)
    assert (_logit(C, editors[0].edit_latent(x, "Male", 0.5, 0)) < base).all()
    with pytest.raises(ValueError):
        ifg_ed.edit_latent(x, "Male", 1.0, target=2)


def test_directions_survive_a_saturated_classifier():
    """A confident classifier (|logit| ~ 50) still gives unit-norm directions for both orders:
    Algorithm 2's dominant term is the gradient toward the label the code already has."""
    from stytr.editing import direction

    torch.manual_seed(0)
    v = torch.randn(3 * 8)

    def classifier(flat):                         # linear: only the loss can make the gradient vanish
        return (flat @ v)[:, None].repeat(1, 40)

    w = torch.randn(4, 3, 8)
    sign = (w.flatten(1) @ v > 0).float()          # the classifier's current decision
    w = w + 50 * (2 * sign - 1)[:, None, None] * v.view(3, 8) / v.norm() ** 2
    assert (classifier(w.flatten(1))[:, 0].abs() > 40).all()
    for order in (1, 2):
        d = direction(w, classifier, 0, target=1 - sign, order=order, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(d.norm(dim=-1), torch.ones(4, 3), atol=1e-4), (order, d.norm(dim=-1))
