"""Flip and keep rates of edits, judged by an image attribute predictor."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from stytr.attributes import CELEBA_ATTRIBUTES
from stytr.eval.edit_rates import edit_rates, label_edit_rates
from stytr.toy import ATTRIBUTES
from stytr.toy.render import ENTAILED

SMILING, MALE = CELEBA_ATTRIBUTES.index("Smiling"), CELEBA_ATTRIBUTES.index("Male")


class ChannelPredictor(nn.Module):
    """Smiling = mean red, Male = mean green, every other attribute a fixed positive logit; it judges
    ToyFaces (what ``Domain.load("predictor")`` attaches)."""

    modelled, entailed = tuple(ATTRIBUTES), ENTAILED

    def forward(self, x):
        logits = torch.ones(x.shape[0], 40)
        logits[:, SMILING] = x[:, 0].mean((1, 2))
        logits[:, MALE] = x[:, 1].mean((1, 2))
        return logits


class ChannelGenerator:
    """'Images' whose three channels are the first three W+ values of the first layer."""

    def synthesis(self, w, noise=None, randomize_noise=False):
        return w[:, 0, :3, None, None].expand(-1, 3, 4, 4).clamp(-1, 1)


class RedEditor:
    name = "red"

    def edit_images(self, G, wplus, attribute, strength, target=1, noise=None):
        assert attribute == "Smiling"
        w = wplus.clone()
        w[:, 0, 0] = strength * (1 if target == 1 else -1)
        return G.synthesis(w)


def images(n=20, seed=0):
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_identity_edit_flips_nothing_and_keeps_everything():
    x = images()
    r = edit_rates(ChannelPredictor(), x, x.clone(), "Smiling")
    assert r["flip_rate"] == 0.0 and r["keep_rate"] == 1.0
    assert set(r["keep_per_attribute"]) == set(ATTRIBUTES) - {"Smiling"}


def test_flip_and_keep_counts():
    x = images()
    red = x.clone(); red[:, 0] = -red[:, 0]
    r = edit_rates(ChannelPredictor(), x, red, "Smiling")
    assert r["flip_rate"] == 1.0 and r["keep_rate"] == 1.0
    both = red.clone(); both[:, 1] = -both[:, 1]
    r = edit_rates(ChannelPredictor(), x, both, "Smiling")
    others = len(ATTRIBUTES) - 1
    assert r["keep_per_attribute"]["Male"] == 0.0
    assert r["keep_rate_all"] == pytest.approx((others - 1) / others)
    # Mouth_Slightly_Open is entailed by Smiling in ToyFaces, so the keep rate leaves it out
    assert r["entailed"] == ["Mouth_Slightly_Open"]
    assert r["keep_rate"] == pytest.approx((others - 2) / (others - 1))
    # edits of Male may change its entailed attributes; with explicit attributes nothing is left out
    r = edit_rates(ChannelPredictor(), x, both, "Smiling", attributes=["Smiling", "Male", "Young"])
    assert r["entailed"] == [] and r["keep_rate"] == pytest.approx(0.5)
    # an explicit target: everyone should end up smiling
    r = edit_rates(ChannelPredictor(), x, red, "Smiling", target=1)
    assert r["flip_rate"] == pytest.approx((red[:, 0].mean((1, 2)) > 0).float().mean().item())


def test_label_edit_rates_edits_toward_the_opposite_decision():
    w = torch.randn(30, 2, 8, generator=torch.Generator().manual_seed(1)) * 0.5
    r = label_edit_rates(ChannelGenerator(), w, RedEditor(), "Smiling", 0.9, ChannelPredictor())
    assert r["flip_rate"] == 1.0 and r["keep_rate"] == 1.0 and r["n"] == 30
    weak = label_edit_rates(ChannelGenerator(), w, RedEditor(), "Smiling", 0.0, ChannelPredictor())
    assert weak["flip_rate"] < 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        edit_rates(ChannelPredictor(), images(4), images(5), "Smiling")
