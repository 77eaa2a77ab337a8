"""The CPU fast path (STYTR_PATH=fast, the default) against the reference path, on random weights.

Tolerance: 1e-4 of the output's range (the issue's bound), on generators whose every parameter
-- noise weights and biases included -- is drawn at random, so no term can hide behind a zero.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from stytr import runtime
from stytr.config import InversionConfig
from stytr.models.attention import MultiHeadAttention, TransformerBlock
from stytr.models.inversion import build_inversion_model
from stytr.models.stylegan2 import Generator
from stytr.runtime import use_path


def randomised(g: Generator, seed: int = 0) -> Generator:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in g.named_parameters():
            # Unit-scale weights as in rosinality's init; noise weights and biases small but non-zero.
            scale = 1.0 if name.endswith("weight") and p.ndim > 1 else 0.3
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return g


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return bool((a - b).abs().max() <= rel * (b.max() - b.min()))


def both_paths(fn):
    with use_path("reference"):
        ref = fn()
    with use_path("fast"):
        fast = fn()
    return ref, fast


# (size, channel_max, style_dim, batch): 8 to 1024 px at batch 1 and 4; the big ones narrow and at
# batch 1 so that they stay cheap.
GENERATORS = [(8, 32, 16, 4), (16, 16, 16, 1), (32, 24, 16, 4), (64, 64, 32, 1), (64, 32, 32, 4), (128, 16, 16, 1),
              (256, 8, 16, 4), (1024, 4, 8, 1)]


@pytest.mark.parametrize("size,channels,style_dim,batch", GENERATORS)
def test_generator_forward_matches_reference(size, channels, style_dim, batch):
    torch.manual_seed(size + batch)
    g = randomised(Generator(size, style_dim=style_dim, n_mlp=2, channel_max=channels)).eval()
    w = torch.randn(batch, g.n_latent, style_dim)
    with torch.no_grad():
        ref, fast = both_paths(lambda: g([w], input_is_latent=True, randomize_noise=False)[0])
    assert fast.shape == ref.shape == (batch, 3, size, size) and fast.is_contiguous()
    assert close(fast, ref)


def test_generator_random_noise_draws_as_the_reference_does():
    g = randomised(Generator(32, style_dim=16, n_mlp=2, channel_max=16))
    z = torch.randn(2, 16)

    def sample():
        torch.manual_seed(5)
        with torch.no_grad():
            return g([z])[0]

    ref, fast = both_paths(sample)
    assert close(fast, ref)
    noise = [torch.randn(2, 1, n.shape[-1], n.shape[-1]) for n in g.make_noise()]
    with torch.no_grad():
        ref, fast = both_paths(lambda: g([z], noise=noise)[0])
    assert close(fast, ref)


@pytest.mark.parametrize("size,channels,batch", [(16, 16, 1), (64, 32, 4), (128, 8, 1)])
def test_generator_gradients_match_reference(size, channels, batch):
    """What training needs: gradients w.r.t. the W+ input (encoder training) and w.r.t. every
    generator parameter (the toy generator's distillation)."""
    torch.manual_seed(size)
    g = randomised(Generator(size, style_dim=16, n_mlp=2, channel_max=channels))
    w = torch.randn(batch, g.n_latent, 16)
    target = torch.randn(batch, 3, size, size)

    def grads():
        wi = w.clone().requires_grad_()
        g.zero_grad()
        out = g([wi], input_is_latent=True, randomize_noise=False)[0]
        ((out - target) ** 2).mean().backward()
        return [wi.grad] + [p.grad.clone() for p in g.parameters() if p.grad is not None]

    ref, fast = both_paths(grads)
    synthesis = sum(1 for name, _ in g.named_parameters() if not name.startswith("style."))  # W+ skips the MLP
    assert len(ref) == len(fast) == 1 + synthesis
    for r, f in zip(ref, fast):
        assert close(f, r, rel=1e-4) or torch.allclose(f, r, atol=1e-7)


def test_style_space_path_matches_reference():
    g = randomised(Generator(32, style_dim=16, n_mlp=2, channel_max=16)).eval()
    w = torch.randn(3, g.n_latent, 16)
    with torch.no_grad():
        s = g.w_to_s(w)
        s[4] = s[4] * 1.5  # a StyleSpace edit
        ref, fast = both_paths(lambda: g.synthesize_s(s, randomize_noise=False))
    assert close(fast, ref)


@pytest.mark.parametrize("kind", ["transformer", "psp", "e4e"])
def test_inversion_models_match_reference(kind):
    """Encoder (channels_last trunk, slice shortcuts, fused projections) and generator together,
    in evaluation and with the training step's gradients."""
    torch.manual_seed(0)
    cfg = InversionConfig.preset("toy", kind=kind, backbone_units=(1, 2, 2, 1))
    model = build_inversion_model(cfg)
    randomised(model.decoder)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    model.eval()
    with torch.no_grad():
        ref, fast = both_paths(lambda: model(x, randomize_noise=False, return_latents=True))
    assert close(fast[1], ref[1]) and close(fast[0], ref[0])

    # Gradients in float64: through training-mode batch norm, float32 rounding differences grow to
    # ~1e-4 of the range on random weights; in float64 both paths must agree to rounding.
    model = model.double().train()
    for m in model.encoder.modules():  # dropout off: both paths must see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        elif isinstance(m, MultiHeadAttention):
            m.dropout = 0.0

    def grads():
        model.zero_grad()
        images = model(x.double(), randomize_noise=False)
        ((images - x.double()) ** 2).mean().backward()
        return [p.grad.clone() for p in model.trainable_parameters()]

    ref, fast = both_paths(grads)
    assert len(ref) == len(fast) == len(model.trainable_parameters())
    for r, f in zip(ref, fast):
        assert close(f, r, rel=1e-9)


def test_attention_fused_projections_match_reference():
    torch.manual_seed(0)
    att = MultiHeadAttention(32, heads=4).eval()
    q, mem = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    for args in [(q, q, q), (q, mem, mem), (q, mem, torch.randn(2, 9, 32))]:
        ref, fast = both_paths(lambda: att(*args))
        torch.testing.assert_close(fast, ref)
    block = TransformerBlock(32, heads=4, dim_feedforward=48, dropout=0.0)
    qr = q.clone().requires_grad_()
    ref, fast = both_paths(lambda: torch.autograd.grad(block(qr, mem).sum(), [qr, *block.parameters()]))
    for r, f in zip(ref, fast):
        torch.testing.assert_close(f, r)


def test_path_switch_and_allocator_setting():
    assert runtime.current_path() == "fast"  # the default
    with use_path("reference"):
        assert not runtime.fast_path_enabled()
    assert runtime.fast_path_enabled()
    with pytest.raises(ValueError, match="path"):
        runtime.set_path("quick")
    if sys.platform.startswith("linux"):
        assert runtime.allocator_state() in ("tuned", "unavailable (not glibc)")
    probe = "import stytr.runtime as r; print(r.allocator_state(), r.current_path())"
    env = {**os.environ, "STYTR_MALLOC": "system", "STYTR_PATH": "reference"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["system", "reference"]
    bad = subprocess.run([sys.executable, "-c", "import stytr"], env={**os.environ, "STYTR_PATH": "quick"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "STYTR_PATH" in bad.stderr


def test_conv_clamp_of_stylegan2_ada_layouts_is_honoured():
    g = randomised(Generator(32, style_dim=16, n_mlp=2, channel_max=16, conv_clamp=0.5)).eval()
    w = torch.randn(2, g.n_latent, 16)
    with torch.no_grad():
        ref, fast = both_paths(lambda: g([w], input_is_latent=True, randomize_noise=False)[0])
        plain = Generator(32, style_dim=16, n_mlp=2, channel_max=16)
        plain.load_state_dict(g.state_dict())
        unclamped = plain([w], input_is_latent=True, randomize_noise=False)[0]
    assert close(fast, ref) and not close(unclamped, ref)


def test_compiled_fast_path_matches_eager():
    """torch.compile (--compile) of the fast path: the mapping network and an upsampling styled
    conv give eager's numbers. (inductor once folded ``torch.add(bias, x @ w.T, alpha=g)`` into an
    addmm that scaled the wrong operand, so the compiled mapping network was off by order 1.) The
    whole-model compile is timed, and checked, by ``python -m stytr.benchmarks.speed --compile``."""
    torch._dynamo.reset()
    g = randomised(Generator(16, style_dim=32, n_mlp=2, channel_max=16)).eval()
    gen = torch.Generator().manual_seed(1)
    z, x = torch.randn(3, 32, generator=gen), torch.randn(1, 16, 4, 4, generator=gen)
    noise = torch.randn(1, 1, 8, 8, generator=gen)
    layer = g.convs[0]
    with use_path("fast"), torch.inference_mode():
        assert close(torch.compile(g.style)(z), g.style(z))
        assert close(torch.compile(layer)(x, z[:1], noise), layer(x, z[:1], noise))
