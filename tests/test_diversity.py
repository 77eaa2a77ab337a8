"""Diversity of reference edits: one source, K references that carry the target attribute."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from stytr.attributes import CELEBA_ATTRIBUTES
from stytr.eval.diversity import diversity_sets, pairwise_mean, reference_diversity

SMILING = CELEBA_ATTRIBUTES.index("Smiling")


class RedPredictor(nn.Module):
    """Smiling = mean red; every other attribute a fixed positive logit."""

    def forward(self, x):
        logits = torch.ones(x.shape[0], 40)
        logits[:, SMILING] = x[:, 0].mean((1, 2))
        return logits


class ChannelGenerator:
    """'Images' whose three channels are the first three W+ values of the first row."""

    def synthesis(self, w, noise=None, randomize_noise=False):
        return w[:, 0, :3, None, None].expand(-1, 3, 4, 4)


class Editor:
    """Takes the source's code, and the reference's red value ("copy") or a fixed positive red ("collapse")."""

    decoder = ChannelGenerator()

    def __init__(self, mode):
        self.mode = mode

    def __call__(self, src, ref):
        out = src.clone()
        out[:, 0, :2] = ref[:, 0, :2] if self.mode == "copy" else 0.5
        return out


def pixel_distance(a, b):
    return (a - b).abs().flatten(1).mean(1)


def codes(n=60):
    return torch.rand(n, 2, 4, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8


def test_sets_carry_the_target_and_errors_name_the_shortfall():
    src, ref = diversity_sets(ChannelGenerator(), codes(), "Smiling", RedPredictor(), n_sources=5, k=4)
    assert (src[:, 0, 0] < 0).all() and (ref[:, 0, 0] > 0).all() and (len(src), len(ref)) == (5, 4)
    with pytest.raises(ValueError, match="asked for 5 and 500"):
        diversity_sets(ChannelGenerator(), codes(), "Smiling", RedPredictor(), n_sources=5, k=500)


def test_a_collapsed_editor_has_no_diversity_and_a_copying_one_has_the_references():
    src, ref = diversity_sets(ChannelGenerator(), codes(), "Smiling", RedPredictor(), n_sources=3, k=5)
    collapsed = reference_diversity(Editor("collapse"), src, ref, "Smiling", RedPredictor(), distance=pixel_distance)
    assert collapsed["image_diversity"] == 0 and collapsed["code_diversity"] == 0
    assert collapsed["flip_rate"] == 1.0 and collapsed["edited"].shape == (3, 5, 2, 4)
    assert collapsed["per_source"]["image_diversity"].shape == (3,)
    copied = reference_diversity(Editor("copy"), src, ref, "Smiling", RedPredictor(), distance=pixel_distance)
    # Only two of the reference's values are copied: the codes' spread, and two thirds of the image's.
    assert copied["code_diversity"] == pytest.approx(pairwise_mean(ref[:, 0, :2], lambda a, b: (a - b).norm(dim=1)).item())
    assert 0 < copied["image_diversity"] < copied["reference_image_diversity"]
    assert copied["flip_rate"] == 1.0 and copied["keep_rate"] == 1.0


def test_rows_per_source_summarise_to_the_means():
    from stytr.eval.diversity import diversity_rows, summarize

    copy = Editor("copy")
    rows = diversity_rows({"copy": {"Smiling": copy}}, codes(), RedPredictor(), n_sources=3, k=4,
                          distance=pixel_distance)
    assert [r["source"] for r in rows] == [0, 1, 2]
    src, ref = diversity_sets(ChannelGenerator(), codes(), "Smiling", RedPredictor(), n_sources=3, k=4)
    whole = reference_diversity(copy, src, ref, "Smiling", RedPredictor(), distance=pixel_distance)
    (mean,) = summarize(rows)
    assert mean["n_sources"] == 3 and mean["image_diversity"] == pytest.approx(whole["image_diversity"])


def test_pairwise_mean_counts_each_pair_once():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert pairwise_mean(x, lambda a, b: (a - b).abs()[:, 0]).item() == pytest.approx((1 + 3 + 2) / 3)
    with pytest.raises(ValueError, match="at least two"):
        pairwise_mean(x[:1], pixel_distance)
