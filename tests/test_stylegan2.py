"""StyleGAN2: rosinality layout, strict loading of rosinality-format files, sampling semantics."""
import re

import pytest
import torch

from stytr.checkpoints import CheckpointError
from stytr.models.stylegan2 import Discriminator, Generator, generator_kwargs_from_state, load_rosinality_generator

# A few keys of rosinality's 1024 px config-f generator with their shapes (facts about the published file).
FFHQ_KEY_SHAPES = {
    "style.1.weight": (512, 512), "style.8.bias": (512,), "input.input": (1, 512, 4, 4),
    "conv1.conv.weight": (1, 512, 512, 3, 3), "conv1.conv.modulation.weight": (512, 512),
    "conv1.conv.modulation.bias": (512,), "conv1.noise.weight": (1,), "conv1.activate.bias": (512,),
    "to_rgb1.conv.weight": (1, 3, 512, 1, 1), "to_rgb1.bias": (1, 3, 1, 1),
    "convs.0.conv.blur.kernel": (4, 4), "convs.0.conv.weight": (1, 512, 512, 3, 3),
    "convs.15.conv.weight": (1, 32, 32, 3, 3), "to_rgbs.7.upsample.kernel": (4, 4),
    "to_rgbs.7.conv.weight": (1, 3, 32, 1, 1), "noises.noise_0": (1, 1, 4, 4), "noises.noise_16": (1, 1, 1024, 1024),
}


def tiny(size=32, **kw):
    return Generator(size, style_dim=32, n_mlp=2, channel_max=16, **kw)


def test_ffhq_layout_keys_and_shapes():
    with torch.device("meta"):
        g = Generator(1024, 512, 8, channel_multiplier=2)
    sd = g.state_dict()
    assert len(sd) == 171  # parameters and buffers (blur kernels, noise maps) of config-f
    for key, shape in FFHQ_KEY_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    assert g.n_latent == 18 and g.num_layers == 17
    n_params = sum(p.numel() for p in g.parameters())
    assert 30.0e6 < n_params < 30.5e6  # config-f's generator has ~30.4 M parameters
    with torch.device("meta"):
        d = Discriminator(1024)
    assert {"convs.0.0.weight", "convs.1.conv1.0.weight", "convs.1.conv2.0.kernel", "convs.1.skip.1.weight",
            "final_conv.0.weight", "final_linear.0.weight", "final_linear.1.bias"} <= set(d.state_dict())


@pytest.mark.parametrize("size", [32, 64, 128, 256, 512, 1024])
def test_shapes_all_sizes(size):
    g = tiny(size)
    z = torch.randn(2, 32)
    img, latent = g([z], return_latents=True, randomize_noise=False)
    assert img.shape == (2, 3, size, size)
    assert latent.shape == (2, g.n_latent, 32) and g.n_latent == 2 * (size.bit_length() - 1) - 2
    d = Discriminator(size, channel_max=16)
    assert d(img).shape == (2, 1)


def test_rosinality_checkpoint_loads_strictly(tmp_path):
    torch.manual_seed(0)
    src = Generator(256, 64, 3, channel_multiplier=1, channel_max=64)
    latent_avg = torch.randn(64)
    path = tmp_path / "stylegan2-test.pt"
    torch.save({"g_ema": src.state_dict(), "g": src.state_dict(), "d": Discriminator(256, 1, channel_max=64).state_dict(),
                "latent_avg": latent_avg}, path)
    g, avg = load_rosinality_generator(path)
    assert torch.equal(avg, latent_avg)
    assert (g.size, g.style_dim, g.n_mlp) == (256, 64, 3)
    z = torch.randn(2, 64)
    with torch.no_grad():
        a, _ = src([z], randomize_noise=False)
        b, _ = g([z], randomize_noise=False)
    assert torch.equal(a, b)


def test_arch_inference_matches_config_f():
    with torch.device("meta"):
        sd = Generator(512, 512, 8, channel_multiplier=2).state_dict()
    kw = generator_kwargs_from_state(sd)
    assert kw["size"] == 512 and kw["style_dim"] == 512 and kw["n_mlp"] == 8 and kw["channel_multiplier"] == 2


def test_wrong_layout_errors_name_the_file(tmp_path):
    path = tmp_path / "notagan.pt"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="notagan.pt.*g_ema"):
        load_rosinality_generator(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_rosinality_generator(tmp_path / "missing.pt")
    bad = tmp_path / "truncated.pt"
    torch.save({"g_ema": tiny().state_dict()}, bad)
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_rosinality_generator(bad)
    # Right keys, wrong shapes: the message names the mismatch.
    sd = tiny().state_dict()
    sd["conv1.conv.weight"] = torch.zeros(1, 3, 3, 3, 3)
    torch.save({"g_ema": sd}, path)
    with pytest.raises(CheckpointError, match="conv1.conv.weight"):
        load_rosinality_generator(path)


def test_determinism_with_stored_noise():
    g = tiny()
    z = torch.randn(3, 32)
    with torch.no_grad():
        a, _ = g([z], randomize_noise=False)
        b, _ = g([z], randomize_noise=False)
    assert torch.equal(a, b)
    for name, p in g.named_parameters():
        if re.search(r"noise\.weight$", name):
            p.data.fill_(1.0)  # make noise visible: random noise must then change the image
    with torch.no_grad():
        c, _ = g([z], randomize_noise=True)
        d, _ = g([z], randomize_noise=True)
    assert not torch.allclose(c, d)


def test_style_mixing_changes_only_layers_after_crossover():
    g = tiny(64)
    z1, z2 = torch.randn(2, 32), torch.randn(2, 32)
    _, mixed = g([z1, z2], inject_index=4, return_latents=True, randomize_noise=False)
    w1, w2 = g.get_latent(z1), g.get_latent(z2)
    assert torch.allclose(mixed[:, :4], w1[:, None].expand(-1, 4, -1))
    assert torch.allclose(mixed[:, 4:], w2[:, None].expand(-1, g.n_latent - 4, -1))


def test_truncation_and_input_is_latent_agree():
    g = tiny()
    mean = g.mean_latent(256)
    z = torch.randn(2, 32)
    w = g.get_latent(z)
    with torch.no_grad():
        a, _ = g([z], truncation=0.5, truncation_latent=mean, randomize_noise=False)
        b, _ = g([mean + 0.5 * (w - mean)], input_is_latent=True, randomize_noise=False)
    assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="truncation_latent"):
        g([z], truncation=0.5)


def test_style_space_roundtrip_and_validation():
    g = tiny()
    w = g.get_latent(torch.randn(2, 32))[:, None].repeat(1, g.n_latent, 1)
    s = g.w_to_s(w)
    assert len(s) == len(g.style_layers()) == 3 * (g.log_size - 2) + 2
    with torch.no_grad():
        assert torch.allclose(g.synthesize_s(s, randomize_noise=False), g.synthesis(w, randomize_noise=False))
    with pytest.raises(ValueError, match="style must be"):
        g([torch.randn(2, 33)])


def test_fused_and_unfused_modulation_agree():
    from stytr.models.stylegan2 import ModulatedConv2d

    torch.manual_seed(0)
    x, style = torch.randn(3, 8, 8, 8), torch.randn(3, 16)
    for up, down in [(False, False), (True, False), (False, True)]:
        m = ModulatedConv2d(8, 5, 3, 16, upsample=up, downsample=down)
        s = m.modulation(style)
        unfused = m._forward_s_unfused(x, s)
        fused = m._forward_s_fused(x, s)
        assert torch.allclose(unfused, fused, atol=1e-5), (up, down)
