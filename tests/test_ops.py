"""Tests for stytr.ops: the reference ops and the fast CPU ops against independent formulas,
the backend switch, the plugin's build/fallback logic, the CUDA autograd wiring (on CPU, with a
stand-in plugin), and -- on a GPU -- the compiled kernels against the reference."""
from __future__ import annotations

import math
import threading
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

import stytr.ops as ops
from stytr.ops import cuda_impl
from stytr.ops.cpu_impl import fused_leaky_relu_cpu, upfirdn2d_cpu
from stytr.ops.reference import fused_leaky_relu_ref, upfirdn2d_output_size, upfirdn2d_ref
from stytr.runtime import use_path


# --------------------------------------------------------------------------- independent formulas


def upfirdn2d_loops(x: np.ndarray, k: np.ndarray, up, down, pad) -> np.ndarray:
    """Direct definition, one output sample at a time: input sample i sits at position
    i*up + pad0 of the padded, upsampled signal; output o reads positions o*down + t
    with weight k[kh-1-t] (true convolution)."""
    (ux, uy), (dx, dy), (px0, px1, py0, py1) = up, down, pad
    n, c, h, w = x.shape
    kh, kw = k.shape
    oh = (h * uy + py0 + py1 - kh) // dy + 1
    ow = (w * ux + px0 + px1 - kw) // dx + 1
    out = np.zeros((n, c, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            acc = np.zeros((n, c))
            for i in range(h):
                ty = i * uy + py0 - oy * dy
                if not 0 <= ty < kh:
                    continue
                for j in range(w):
                    tx = j * ux + px0 - ox * dx
                    if 0 <= tx < kw:
                        acc += x[:, :, i, j] * k[kh - 1 - ty, kw - 1 - tx]
            out[:, :, oy, ox] = acc
    return out


def _cases(count: int, seed: int = 0):
    """Random but fixed up/down/pad/kernel combinations with a non-empty output."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        up = tuple(int(v) for v in rng.integers(1, 4, size=2))
        down = tuple(int(v) for v in rng.integers(1, 4, size=2))
        kernel = tuple(int(v) for v in rng.integers(1, 6, size=2))
        pad = tuple(int(v) for v in rng.integers(-3, 5, size=4))
        hw = tuple(int(v) for v in rng.integers(1, 6, size=2))
        oh, ow = upfirdn2d_output_size(hw[0], hw[1], kernel, up, down, pad)
        if oh >= 1 and ow >= 1:
            cases.append((hw, kernel, up, down, pad))
    return cases


STYLEGAN_CASES = [
    ((5, 4), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1)),  # Upsample
    ((6, 6), (4, 4), (1, 1), (2, 2), (1, 1, 1, 1)),  # Downsample
    ((5, 5), (4, 4), (1, 1), (1, 1), (2, 2, 2, 2)),  # Blur in the discriminator
    ((5, 5), (4, 4), (1, 1), (1, 1), (1, 1, 1, 1)),  # Blur after a transposed conv
    ((4, 5), (3, 2), (1, 1), (1, 1), (-1, 0, 0, -1)),  # negative pads crop
    ((3, 4), (1, 1), (3, 1), (1, 2), (0, 0, 0, 0)),  # anisotropic up/down, identity kernel
]


UPFIRDN = {"ref": upfirdn2d_ref, "cpu": upfirdn2d_cpu}
LRELU = {"ref": fused_leaky_relu_ref, "cpu": fused_leaky_relu_cpu}


@pytest.mark.parametrize("impl", sorted(UPFIRDN))
@pytest.mark.parametrize("hw,kernel,up,down,pad", STYLEGAN_CASES + _cases(28))
def test_upfirdn2d_matches_loops(hw, kernel, up, down, pad, impl):
    g = torch.Generator().manual_seed(hash((hw, kernel, up, down, pad)) % 2**31)
    x = torch.randn(2, 2, *hw, dtype=torch.float64, generator=g)
    k = torch.randn(*kernel, dtype=torch.float64, generator=g)
    expected = upfirdn2d_loops(x.numpy(), k.numpy(), up, down, pad)
    got = UPFIRDN[impl](x, k, up=up, down=down, pad=pad)
    assert got.shape == expected.shape
    assert tuple(got.shape[2:]) == upfirdn2d_output_size(*hw, kernel, up, down, pad)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_upfirdn2d_cpu_matches_reference_on_many_geometries():
    for hw, kernel, up, down, pad in _cases(300, seed=7):
        x = torch.randn(1, 3, *hw, dtype=torch.float64)
        k = torch.randn(*kernel, dtype=torch.float64)
        torch.testing.assert_close(upfirdn2d_cpu(x, k, up, down, pad), upfirdn2d_ref(x, k, up, down, pad),
                                   msg=lambda m: f"{(hw, kernel, up, down, pad)}: {m}")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_upfirdn2d_cpu_at_1024_px(layout):
    """The generator's largest calls: the 3-channel skip upsampling to 1024 px and the blur after
    a transposed convolution at 1024 px, in both memory layouts."""
    k = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    k = k / k.sum() * 4
    skip = torch.randn(1, 3, 512, 512).contiguous(memory_format=layout)
    torch.testing.assert_close(upfirdn2d_cpu(skip, k, up=2, pad=(2, 1)), upfirdn2d_ref(skip, k, up=2, pad=(2, 1)))
    feat = torch.randn(1, 2, 1025, 1025).contiguous(memory_format=layout)
    torch.testing.assert_close(upfirdn2d_cpu(feat, k, pad=(1, 1)), upfirdn2d_ref(feat, k, pad=(1, 1)))


@pytest.mark.parametrize("impl", sorted(UPFIRDN))
def test_upfirdn2d_is_a_true_convolution(impl):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 7))
    k = rng.standard_normal((3, 4))  # asymmetric: a correlation would differ
    got = UPFIRDN[impl](torch.from_numpy(x)[None, None], torch.from_numpy(k), pad=(3, 3, 2, 2))[0, 0].numpy()
    np.testing.assert_allclose(got, convolve2d(x, k, mode="full"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", sorted(UPFIRDN))
def test_upfirdn2d_pad_forms_and_errors(impl):
    upfirdn2d = UPFIRDN[impl]
    x = torch.randn(1, 3, 4, 4)
    k = torch.rand(3, 3)
    torch.testing.assert_close(upfirdn2d(x, k, pad=(1, 2)), upfirdn2d(x, k, pad=(1, 2, 1, 2)))
    torch.testing.assert_close(upfirdn2d(x, k, up=2, down=1), upfirdn2d(x, k, up=(2, 2), down=(1, 1)))
    with pytest.raises(ValueError):
        upfirdn2d(x[0], k)
    with pytest.raises(ValueError):
        upfirdn2d(x, k[0])
    with pytest.raises(ValueError):
        upfirdn2d(x, k, pad=(1, 2, 3))


@pytest.mark.parametrize("impl", sorted(LRELU))
@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3, 5), (2, 4, 2, 3, 2)])
@pytest.mark.parametrize("slope,scale", [(0.2, math.sqrt(2)), (0.0, 1.0), (0.5, 3.0), (0.2, -1.0)])
def test_fused_leaky_relu_matches_formula(shape, slope, scale, impl):
    x = torch.randn(*shape, dtype=torch.float64)
    b = torch.randn(shape[1], dtype=torch.float64)
    xn, bn = x.numpy(), b.numpy().reshape(1, -1, *([1] * (len(shape) - 2)))
    v = xn + bn
    expected = np.where(v > 0, v, slope * v) * scale
    np.testing.assert_allclose(LRELU[impl](x, b, slope, scale).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(LRELU[impl](x, None, slope, scale).numpy(),
                               np.where(xn > 0, xn, slope * xn) * scale, rtol=1e-12)


@pytest.mark.parametrize("impl", sorted(LRELU))
def test_fused_leaky_relu_rejects_bad_bias(impl):
    with pytest.raises(ValueError):
        LRELU[impl](torch.randn(2, 3, 4), torch.zeros(4))


# --------------------------------------------------------------------------- gradients of the references


SMALL_CASES = [  # the StyleGAN2 geometries and a cropping one, on tiny inputs for gradcheck
    ((3, 2), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1)),
    ((4, 4), (4, 4), (1, 1), (2, 2), (1, 1, 1, 1)),
    ((3, 3), (4, 4), (1, 1), (1, 1), (2, 2, 2, 2)),
    ((3, 4), (3, 2), (2, 1), (1, 2), (-1, 2, 1, -1)),
]


@pytest.mark.parametrize("impl", sorted(UPFIRDN))
@pytest.mark.parametrize("hw,kernel,up,down,pad", SMALL_CASES)
def test_upfirdn2d_gradcheck(hw, kernel, up, down, pad, impl):
    x = torch.randn(1, 2, *hw, dtype=torch.float64, requires_grad=True)
    k = torch.randn(*kernel, dtype=torch.float64, requires_grad=True)
    f = lambda x, k: UPFIRDN[impl](x, k, up=up, down=down, pad=pad)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, k))
    assert torch.autograd.gradgradcheck(f, (x, k), fast_mode=True)


def _away_from_kink(shape, channels_dim=1):
    """Inputs and bias whose sum stays clear of 0, where leaky ReLU has a kink."""
    x = torch.randn(*shape, dtype=torch.float64)
    x = x + 0.1 * torch.sign(x)
    b = 0.01 * torch.randn(shape[channels_dim], dtype=torch.float64)
    return x.requires_grad_(), b.requires_grad_()


@pytest.mark.parametrize("impl", sorted(LRELU))
def test_fused_leaky_relu_gradcheck(impl):
    x, b = _away_from_kink((2, 3, 2, 2))
    f = lambda x, b: LRELU[impl](x, b, 0.2, math.sqrt(2))  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, b))
    assert torch.autograd.gradgradcheck(f, (x, b))


# --------------------------------------------------------------------------- the backend switch


@pytest.fixture
def clean_plugin():
    cuda_impl._reset()
    yield
    cuda_impl._reset()


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("mode", ["ref", "auto", "cuda", "AUTO"])
def test_entry_point_on_cpu(monkeypatch, clean_plugin, mode, path):
    """CPU tensors never build the plugin; they take the fast CPU ops unless STYTR_OPS=ref or
    the reference path is selected, and both give the reference's values."""
    monkeypatch.setenv("STYTR_OPS", mode)

    def must_not_build():
        raise AssertionError("CPU tensors must not trigger a plugin build")

    monkeypatch.setattr(cuda_impl, "plugin_available", must_not_build)
    x = torch.randn(2, 3, 5, 5)
    k = torch.rand(4, 4)
    b = torch.randn(3)
    with use_path(path):
        assert ops.backend_for(x) == ("cpu" if path == "fast" and mode != "ref" else "ref")
        torch.testing.assert_close(ops.upfirdn2d(x, k, up=2, pad=(2, 1)), upfirdn2d_ref(x, k, up=2, pad=(2, 1)))
        torch.testing.assert_close(ops.fused_leaky_relu(x, b), fused_leaky_relu_ref(x, b))
        layer = ops.FusedLeakyReLU(3)
        torch.testing.assert_close(layer(x), fused_leaky_relu_ref(x, layer.bias))


def test_invalid_mode_raises(monkeypatch):
    monkeypatch.setenv("STYTR_OPS", "fast")
    with pytest.raises(ValueError, match="STYTR_OPS"):
        ops.upfirdn2d(torch.randn(1, 1, 4, 4), torch.ones(1, 1))
    with pytest.raises(ValueError, match="STYTR_OPS"):
        ops.fused_leaky_relu(torch.randn(1, 1, 4, 4))


# --------------------------------------------------------------------------- build and fallback logic

GPU_TENSOR = SimpleNamespace(is_cuda=True)  # backend_for only looks at .is_cuda


def test_missing_sources_warn_once_and_fall_back(monkeypatch, clean_plugin):
    monkeypatch.setattr(cuda_impl, "_sources", lambda: [cuda_impl.CSRC / "does_not_exist.cu"])
    monkeypatch.setenv("STYTR_OPS", "auto")
    with pytest.warns(RuntimeWarning, match="does_not_exist.cu"):
        assert ops.backend_for(GPU_TENSOR) == "ref"
    assert "does_not_exist.cu" in cuda_impl.build_error()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        assert cuda_impl.plugin_available() is False
        assert ops.backend_for(GPU_TENSOR) == "ref"


def test_broken_compiler_raises_in_cuda_mode(monkeypatch, clean_plugin):
    def broken_loader(**kwargs):
        assert all(str(s).endswith((".cpp", ".cu")) for s in kwargs["sources"])
        raise RuntimeError("nvcc exploded")

    monkeypatch.setattr(cuda_impl, "_load_extension", broken_loader)
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "12.0")
    monkeypatch.setenv("STYTR_OPS", "cuda")
    with pytest.warns(RuntimeWarning, match="nvcc exploded"):
        with pytest.raises(RuntimeError, match="nvcc exploded"):
            ops.backend_for(GPU_TENSOR)
    monkeypatch.setenv("STYTR_OPS", "auto")
    assert ops.backend_for(GPU_TENSOR) == "ref"
    monkeypatch.setenv("STYTR_OPS", "ref")
    assert ops.backend_for(GPU_TENSOR) == "ref"


def test_build_is_attempted_once_across_threads(monkeypatch, clean_plugin):
    calls = []

    def slow_build(verbose=False):
        calls.append(1)
        time.sleep(0.05)
        return FakePlugin()

    monkeypatch.setattr(cuda_impl, "build", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cuda_impl.plugin_available())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8 and len(calls) == 1
    assert cuda_impl.build_error() == ""


def test_build_directory_respects_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("STYTR_OPS_BUILD_DIR", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert cuda_impl.build_directory().parent == tmp_path / "stytr_ops"
    monkeypatch.setenv("STYTR_OPS_BUILD_DIR", str(tmp_path / "mine"))
    assert cuda_impl.build_directory().parent == tmp_path / "mine"


# --------------------------------------------------------------------------- autograd wiring, with a stand-in plugin


class FakePlugin:
    """The compiled module's interface, computed with the reference (CPU friendly)."""

    @staticmethod
    def upfirdn2d(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
        return upfirdn2d_ref(x, kernel, (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1))

    @staticmethod
    def bias_leaky_relu(x, bias, negative_slope, scale):
        return fused_leaky_relu_ref(x, bias if bias.numel() else None, negative_slope, scale)

    @staticmethod
    def leaky_relu_grad(grad, out, negative_slope, scale):
        return torch.where(out > 0, grad * scale, grad * (scale * negative_slope))


@pytest.fixture
def fake_plugin(monkeypatch, clean_plugin):
    monkeypatch.setattr(cuda_impl, "build", lambda verbose=False: FakePlugin())
    assert cuda_impl.plugin_available()


@pytest.mark.parametrize("hw,kernel,up,down,pad", SMALL_CASES + _cases(4, seed=7))
def test_upfirdn2d_autograd_wiring(fake_plugin, hw, kernel, up, down, pad):
    # The gradient pads and the kernel gradient are derived here, not by autograd: check them.
    x = torch.randn(2, 1, *hw, dtype=torch.float64, requires_grad=True)
    k = torch.randn(*kernel, dtype=torch.float64, requires_grad=True)
    f = lambda x, k: cuda_impl.upfirdn2d_cuda(x, k, up=up, down=down, pad=pad)  # noqa: E731
    torch.testing.assert_close(f(x, k), upfirdn2d_ref(x, k, up=up, down=down, pad=pad))
    assert torch.autograd.gradcheck(f, (x, k), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x, k), fast_mode=True)


def test_fused_leaky_relu_autograd_wiring(fake_plugin):
    x, b = _away_from_kink((2, 3, 2, 2))
    f = lambda x, b: cuda_impl.fused_leaky_relu_cuda(x, b, 0.2, math.sqrt(2))  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, b))
    assert torch.autograd.gradgradcheck(f, (x, b))
    x2 = x.detach().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x: cuda_impl.fused_leaky_relu_cuda(x, None), (x2,))


def test_r1_style_double_backward_matches_reference(fake_plugin):
    """grad of |d out / d img|^2 through blur + activation, as in an R1 penalty."""
    torch.manual_seed(0)
    img = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = torch.outer(k, k) / 64
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def penalty(blur, act):
        x = img.clone().requires_grad_()
        h = act(torch.nn.functional.conv2d(blur(x, k), w), b)
        (g,) = torch.autograd.grad(h.square().sum(), x, create_graph=True)
        return torch.autograd.grad(g.square().sum(), (w, b))

    ours = penalty(lambda x, k: cuda_impl.upfirdn2d_cuda(x, k, pad=(2, 1, 2, 1)), cuda_impl.fused_leaky_relu_cuda)
    ref = penalty(lambda x, k: upfirdn2d_ref(x, k, pad=(2, 1)), fused_leaky_relu_ref)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r)


# --------------------------------------------------------------------------- the compiled kernels (GPU only)

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.setenv("STYTR_OPS", "cuda")
    if not cuda_impl.plugin_available():
        pytest.fail(f"the CUDA plugin did not build: {cuda_impl.build_error()}")


GPU_UPFIRDN_CASES = STYLEGAN_CASES + [
    ((33, 17), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1)),
    ((64, 64), (4, 4), (1, 1), (2, 2), (1, 1, 1, 1)),
    ((35, 35), (4, 4), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((9, 13), (5, 3), (3, 2), (2, 3), (-2, 4, 3, -1)),
    ((1, 1), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1)),
    ((40, 7), (1, 6), (1, 4), (1, 1), (0, 0, 2, 3)),
]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("hw,kernel,up,down,pad", GPU_UPFIRDN_CASES + _cases(12, seed=3))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cuda_upfirdn2d_matches_reference(compiled, hw, kernel, up, down, pad, dtype):
    dev = torch.device("cuda")
    x = torch.randn(3, 5, *hw, device=dev, dtype=dtype, requires_grad=True)
    k = torch.rand(*kernel, device=dev, dtype=torch.float32, requires_grad=True)
    out = ops.upfirdn2d(x, k, up=up, down=down, pad=pad)
    xr, kr = x.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    ref = upfirdn2d_ref(xr, kr, up=up, down=down, pad=pad)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.double(), ref, **tol)
    g = torch.randn_like(ref)
    gx, gk = torch.autograd.grad(out, (x, k), g.to(dtype))
    gxr, gkr = torch.autograd.grad(ref, (xr, kr), g)
    torch.testing.assert_close(gx.double(), gxr, **tol)
    if dtype != torch.float16:
        torch.testing.assert_close(gk.double(), gkr, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("shape", [(4, 7), (2, 5, 9, 11), (3, 4, 2, 3, 5), (2, 512, 8, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_cuda_fused_leaky_relu_matches_reference(compiled, shape, dtype, with_bias):
    dev = torch.device("cuda")
    x = torch.randn(*shape, device=dev, dtype=dtype, requires_grad=True)
    b = torch.randn(shape[1], device=dev, dtype=torch.float32, requires_grad=True) if with_bias else None
    out = ops.fused_leaky_relu(x, b)
    xr = x.detach().double().requires_grad_()
    br = b.detach().double().requires_grad_() if with_bias else None
    ref = fused_leaky_relu_ref(xr, br)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.double(), ref, **tol)
    g = torch.randn_like(ref)
    inputs, inputs_ref = ((x, b), (xr, br)) if with_bias else ((x,), (xr,))
    for a, r in zip(torch.autograd.grad(out, inputs, g.to(dtype)), torch.autograd.grad(ref, inputs_ref, g)):
        torch.testing.assert_close(a.double(), r, rtol=1e-2 if dtype == torch.float16 else 1e-5,
                                   atol=5e-2 if dtype == torch.float16 else 1e-4)


@pytest.mark.cuda
@needs_gpu
def test_cuda_gradcheck_double(compiled):
    dev = torch.device("cuda")
    x = torch.randn(1, 2, 5, 6, device=dev, dtype=torch.float64, requires_grad=True)
    k = torch.rand(4, 3, device=dev, dtype=torch.float64, requires_grad=True)
    f = lambda x, k: ops.upfirdn2d(x, k, up=2, down=(1, 2), pad=(2, 1, 0, 1))  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, k))
    assert torch.autograd.gradgradcheck(f, (x, k))
    xa, ba = _away_from_kink((2, 3, 2, 2))
    xa, ba = xa.detach().to(dev).requires_grad_(), ba.detach().to(dev).requires_grad_()
    assert torch.autograd.gradcheck(ops.fused_leaky_relu, (xa, ba))
    assert torch.autograd.gradgradcheck(ops.fused_leaky_relu, (xa, ba))


@pytest.mark.cuda
@needs_gpu
def test_cuda_handles_non_contiguous_and_empty(compiled):
    dev = torch.device("cuda")
    x = torch.randn(2, 8, 6, 3, device=dev).permute(0, 3, 1, 2)  # (2, 3, 8, 6), not contiguous
    k = torch.rand(4, 4, device=dev)
    torch.testing.assert_close(ops.upfirdn2d(x, k, down=2, pad=(1, 1)), upfirdn2d_ref(x, k, down=2, pad=(1, 1)))
    b = torch.randn(3, device=dev)
    torch.testing.assert_close(ops.fused_leaky_relu(x, b), fused_leaky_relu_ref(x, b))
    empty = torch.randn(0, 3, 4, 4, device=dev)
    assert ops.upfirdn2d(empty, k, pad=(2, 1)).shape == (0, 3, 4, 4)
    assert ops.fused_leaky_relu(empty, b).shape == empty.shape
