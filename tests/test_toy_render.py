"""ToyFaces renderer: determinism, exact labels, correlations, sizes, export."""
import numpy as np
import pytest
import torch

from stytr.attributes import CELEBA_ATTRIBUTES
from stytr.toy import (ATTRIBUTE_MASK, ATTRIBUTES, FACTORS, N_FACTORS, ToyFacesDataset, binary_factors, export,
                       labels_z, render_faces, render_z, sample_z)


def col(name):
    return CELEBA_ATTRIBUTES.index(name)


def test_render_is_deterministic_and_in_range():
    z = sample_z(8, seed=1)
    a, b = render_z(z), render_z(z.copy())
    assert a.shape == (8, 3, 64, 64) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    # Only the first N_FACTORS coordinates matter.
    z2 = z.copy()
    z2[:, N_FACTORS:] = np.random.default_rng(0).standard_normal((8, z.shape[1] - N_FACTORS))
    assert np.array_equal(render_z(z2), a)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_sizes(size):
    images, labels = render_faces(4, seed=0, size=size)
    assert images.shape == (4, 3, size, size) and labels.shape == (4, 40)


def test_bad_inputs():
    with pytest.raises(ValueError, match="sizes"):
        render_z(sample_z(1, 0), size=48)
    with pytest.raises(ValueError, match="D >= 24"):
        render_z(np.zeros((2, 10)))


def test_labels_exact_and_masked():
    z = sample_z(4000, seed=3)
    labels = labels_z(z)
    assert set(np.unique(labels)) <= {0.0, 1.0}
    assert not labels[:, ~ATTRIBUTE_MASK].any()
    for name in ["Smiling", "Bangs", "Eyeglasses", "Goatee", "Male", "Young", "Gray_Hair", "Mouth_Slightly_Open"]:
        assert name in ATTRIBUTES
        rate = labels[:, col(name)].mean()
        assert 0.05 < rate < 0.95, (name, rate)
    # Each binary attribute is a threshold on its own coordinate.
    z_flip = z.copy()
    z_flip[:, FACTORS["smiling"]] = -z[:, FACTORS["smiling"]]
    assert np.array_equal(labels_z(z_flip)[:, col("Smiling")], 1 - labels[:, col("Smiling")])


def test_correlations_like_celeba():
    labels = labels_z(sample_z(20000, seed=4))
    male, goatee, young, gray = (labels[:, col(n)] for n in ["Male", "Goatee", "Young", "Gray_Hair"])
    assert goatee[male == 0].sum() == 0                       # goatee only on men
    assert gray[young == 0].mean() > 5 * gray[young == 1].mean()  # gray hair mostly on the old
    assert np.array_equal(labels[:, col("No_Beard")], 1 - goatee)
    bangs = labels[:, col("Bangs")]
    assert bangs[male == 0].mean() > 2 * bangs[male == 1].mean()
    assert not (labels[:, col("Black_Hair")] * labels[:, col("Blond_Hair")]).any()


def test_attributes_are_visible():
    """Flipping one binary attribute's coordinate changes the image, and only around the feature."""
    z = sample_z(16, seed=5)
    base = render_z(z)
    for factor in ["smiling", "eyeglasses", "bangs", "male"]:
        z2 = z.copy()
        z2[:, FACTORS[factor]] = -z2[:, FACTORS[factor]] * 3
        changed = labels_z(z2) != labels_z(z)
        diff = np.abs(render_z(z2) - base).max(axis=1)
        flipped = changed.any(1)
        assert flipped.any()
        # A clearly visible change: at least 8 pixels move by 15 % of the range.
        assert ((diff > 0.3).sum(axis=(1, 2))[flipped] >= 8).all(), factor


def test_dataset_and_export(tmp_path):
    ds = ToyFacesDataset(6, seed=2)
    img, lab, mask = ds[0]
    assert img.shape == (3, 64, 64) and lab.shape == (40,) and mask.dtype == torch.bool
    assert torch.equal(mask, torch.from_numpy(ATTRIBUTE_MASK))
    out = export(tmp_path / "toy", n=5, seed=2)
    lines = (out / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "5" and lines[1].split() == list(CELEBA_ATTRIBUTES)
    name, *values = lines[2].split()
    assert name == "000000.png" and len(values) == 40 and set(values) <= {"1", "-1"}
    _, labels = render_faces(5, seed=2)
    assert [v == "1" for v in values] == labels[0].bool().tolist()
    assert len(list((out / "images").glob("*.png"))) == 5
    assert binary_factors(sample_z(3, 0))["Male"].shape == (3,)


def test_entailed_attributes_cover_every_coupling_of_the_labelling_rules():
    """Moving one attribute's coordinate changes only that attribute and the ones ENTAILED lists for it."""
    import numpy as np

    from stytr.toy.render import ATTRIBUTES, ENTAILED, FACTORS, binary_factors

    assert set(ENTAILED) == set(ATTRIBUTES)
    coordinate_of = {"Male": "male", "Young": "young", "Smiling": "smiling", "Mouth_Slightly_Open": "mouth_open",
                     "Goatee": "goatee", "Gray_Hair": "gray_hair", "Wearing_Lipstick": "lipstick",
                     "Black_Hair": "hair_colour", "Eyeglasses": "eyeglasses", "Bangs": "bangs",
                     "Pale_Skin": "pale_skin"}
    base = np.random.default_rng(0).standard_normal((2000, 24))
    before = binary_factors(base)
    for attr, factor in coordinate_of.items():
        for value in np.linspace(-3, 3, 13):
            z = base.copy()
            z[:, FACTORS[factor]] = value
            after = binary_factors(z)
            changed = {a for a in ATTRIBUTES if (after[a] != before[a]).any()}
            allowed = {attr, *ENTAILED[attr]} | ({"Blond_Hair"} if factor == "hair_colour" else set())
            assert changed <= allowed, (attr, value, changed - allowed)
