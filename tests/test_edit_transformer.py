"""Reference-editing transformer: shapes, frozen parts, and the authors' release layout.

The release checkpoint is written key by key from the published layout
(``encoder.module.transformerlayer.*``, ``decoder.module.*``, ``classifier.module.*``)
and its forward pass recomputed with torch.nn.functional only.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from stytr.checkpoints import CheckpointError
from stytr.config import EditTransformerConfig, GeneratorConfig
from stytr.models.edit_transformer import EditTransformer

torch.set_num_threads(1)
pytest.importorskip("stytr.models.latent_classifier", reason="the latent classifier module is not there yet")

D, FF, N_ATTR, HIDDEN, EMBED = 128, 64, 4, (64, 32), 8
GEN = dict(size=16, style_dim=D, n_mlp=2, channel_multiplier=2, channel_max=16, lr_mlp=0.01)
N_LATENT = 6


def small_cfg(**kw) -> EditTransformerConfig:
    base = dict(generator=dict(GEN, checkpoint=""), dim_feedforward=FF, output_size=0, n_attr=N_ATTR,
                classifier_hidden=HIDDEN, classifier_embed_dim=EMBED)
    return EditTransformerConfig.from_dict({**base, **kw})


def release_layout() -> dict:
    p = "encoder.module.transformerlayer."
    shapes = {}
    for attn in ("self_attn", "multihead_attn"):
        shapes.update({f"{p}{attn}.in_proj_weight": (3 * D, D), f"{p}{attn}.in_proj_bias": (3 * D,),
                       f"{p}{attn}.out_proj.weight": (D, D), f"{p}{attn}.out_proj.bias": (D,)})
    shapes.update({f"{p}linear1.weight": (FF, D), f"{p}linear1.bias": (FF,), f"{p}linear2.weight": (D, FF),
                   f"{p}linear2.bias": (D,)})
    for i in (1, 2, 3):
        shapes.update({f"{p}norm{i}.weight": (D,), f"{p}norm{i}.bias": (D,)})
    c, widths = "classifier.module.", (N_LATENT * D, *HIDDEN)
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        shapes.update({f"{c}fcs.{i}.weight": (b, a), f"{c}fcs.{i}.bias": (b,)})
    for i in range(N_ATTR):
        shapes.update({f"{c}indep_fcs.{i}.weight": (EMBED, HIDDEN[-1]), f"{c}indep_fcs.{i}.bias": (EMBED,),
                       f"{c}output_fcs.{i}.weight": (1, EMBED), f"{c}output_fcs.{i}.bias": (1,)})
    return shapes


def release_state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in release_layout().items():
        if key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
    torch.manual_seed(seed + 1)
    state.update({f"decoder.module.{k}": v for k, v in GeneratorConfig(**GEN).build().state_dict().items()})
    return state


def official_forward(state, src, ref):
    s = {k[len("encoder.module.transformerlayer."):]: v for k, v in state.items()
         if k.startswith("encoder.module.transformerlayer.")}

    def mha(p, q, kv):
        return F.multi_head_attention_forward(q, kv, kv, D, 4, s[p + "in_proj_weight"], s[p + "in_proj_bias"], None,
                                              None, False, 0.0, s[p + "out_proj.weight"], s[p + "out_proj.bias"],
                                              training=False, need_weights=False)[0]

    ln = lambda x, n: F.layer_norm(x, (D,), s[f"{n}.weight"], s[f"{n}.bias"])
    tgt, mem = src.permute(1, 0, 2), ref.permute(1, 0, 2)
    tgt = ln(tgt + mha("self_attn.", tgt, tgt), "norm1")
    tgt = ln(tgt + mha("multihead_attn.", tgt, mem), "norm2")
    tgt = ln(tgt + F.linear(F.relu(F.linear(tgt, s["linear1.weight"], s["linear1.bias"])), s["linear2.weight"],
                            s["linear2.bias"]), "norm3")
    codes = tgt.permute(1, 0, 2)
    gen = GeneratorConfig(**GEN).build()
    gen.load_state_dict({k[len("decoder.module."):]: v for k, v in state.items() if k.startswith("decoder.module.")})
    images = F.adaptive_avg_pool2d(gen([codes], input_is_latent=True, randomize_noise=False)[0], (256, 256))
    return images, codes


def official_classifier(state, w):
    c = {k[len("classifier.module."):]: v for k, v in state.items() if k.startswith("classifier.module.")}
    x = w.flatten(1)
    for i in range(len(HIDDEN)):
        x = F.leaky_relu(F.linear(x, c[f"fcs.{i}.weight"], c[f"fcs.{i}.bias"]), 0.2)
    feats = [F.linear(x, c[f"indep_fcs.{i}.weight"], c[f"indep_fcs.{i}.bias"]) for i in range(N_ATTR)]
    logits = [F.linear(f, c[f"output_fcs.{i}.weight"], c[f"output_fcs.{i}.bias"]) for i, f in enumerate(feats)]
    return torch.cat(logits, 1), torch.stack(feats, 1)


def test_shapes_and_frozen_parts():
    torch.manual_seed(0)
    model = EditTransformer(small_cfg())
    src, ref = torch.randn(3, N_LATENT, D), torch.randn(3, N_LATENT, D)
    edited = model(src, ref)
    assert edited.shape == (3, N_LATENT, D)
    images, codes = model(src, ref, return_images=True)
    assert images.shape == (3, 3, 16, 16) and codes.shape == edited.shape
    logits, emb = model.classifier(codes)
    assert logits.shape == (3, N_ATTR) and emb.shape == (3, N_ATTR, EMBED)

    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.encoder.parameters()} == {id(p) for p in model.trainable_parameters()}
    model.train()
    assert model.encoder.training and not model.decoder.training and not model.classifier.training

    no_self = EditTransformer(small_cfg(use_self_attn=False, heads=2, head_dim=32), build_generator=False)
    assert not any("self_attn" in k for k in no_self.state_dict()) and no_self.decoder is None
    assert no_self.encoder.transformerlayer.multihead_attn.in_proj_weight.shape == (3 * 64, D)
    assert no_self(src, ref).shape == (3, N_LATENT, D)


def test_toy_preset():
    model = EditTransformer(EditTransformerConfig.preset("toy")).eval()
    src = torch.randn(2, 10, 128)
    images, codes = model(src, src.flip(0), return_images=True)
    assert codes.shape == (2, 10, 128) and images.shape == (2, 3, 64, 64)
    assert model.classifier(codes)[0].shape == (2, 40)


def test_release_loads_and_reproduces_outputs(tmp_path):
    state = release_state()
    path = tmp_path / "ref_edit_bangs.pt"
    torch.save({"state_dict": state, "opts": {"output_size": 16, "learning_rate": 1e-3, "device": "cuda",
                                              "checkpoint_path": None}}, path)
    model = EditTransformer.from_checkpoint(path)
    assert not model.training and model.cfg.n_attr == N_ATTR and tuple(model.cfg.classifier_hidden) == HIDDEN
    assert set(model.official_state_dict()) == set(state)

    src, ref = torch.randn(2, N_LATENT, D), torch.randn(2, N_LATENT, D)
    images, codes = model(src, ref, return_images=True, randomize_noise=False)
    with torch.no_grad():
        ref_images, ref_codes = official_forward(state, src, ref)
        ref_logits, ref_emb = official_classifier(state, codes)
        logits, emb = model.classifier(codes)
    assert torch.allclose(codes, ref_codes, atol=1e-5)
    assert torch.allclose(images, ref_images, atol=1e-4, rtol=1e-4)
    assert torch.allclose(logits, ref_logits, atol=1e-5) and torch.allclose(emb, ref_emb, atol=1e-5)

    # Our checkpoint round trip.
    ours = tmp_path / "ours.pt"
    torch.save(model.checkpoint_dict(), ours)
    again = EditTransformer.from_checkpoint(ours)
    assert again.cfg == model.cfg
    assert torch.allclose(again(src, ref), codes)

    # A release without classifier weights needs classifier_path.
    clf_path = tmp_path / "latent_classifier.pt"
    torch.save({"state_dict": {k[len("classifier.module."):]: v for k, v in state.items()
                               if k.startswith("classifier.module.")}}, clf_path)
    bare = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    torch.save({"state_dict": bare, "opts": {}}, path)
    with pytest.raises(CheckpointError, match="classifier_path"):
        EditTransformer.from_checkpoint(path)
    loaded = EditTransformer.from_checkpoint(path, classifier_path=clf_path)
    assert torch.allclose(loaded.classifier(codes)[0], ref_logits, atol=1e-5)
    assert all(not p.requires_grad for p in loaded.classifier.parameters())


def test_wrong_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {"encoder.module.z": torch.zeros(1)}, "opts": {}}, path)
    with pytest.raises(CheckpointError, match="reference-editing"):
        EditTransformer.from_checkpoint(path)
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointError, match="neither"):
        EditTransformer.from_checkpoint(path)
