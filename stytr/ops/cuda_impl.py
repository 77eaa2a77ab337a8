"""CUDA implementations of upfirdn2d and fused_leaky_relu, built on first use.

The plugin (``csrc/`` next to this file) is compiled with
:func:`torch.utils.cpp_extension.load` the first time :func:`plugin_available` is
called, never at import. The build directory is ``$STYTR_OPS_BUILD_DIR`` if set,
else ``$TORCH_EXTENSIONS_DIR/stytr_ops``, else ``~/.cache/stytr/ops``, with one
sub-folder per Python/torch/CUDA combination. A failed build warns once, is
remembered (:func:`build_error` says why) and makes :func:`plugin_available`
return False, so callers can fall back to the reference implementation.

The compiled module exposes three forward-only functions; everything about
gradients is here:

* ``upfirdn2d(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)``
* ``bias_leaky_relu(x, bias, negative_slope, scale)`` (an empty ``bias`` means none)
* ``leaky_relu_grad(grad, out, negative_slope, scale)``

upfirdn2d's input gradient is another upfirdn2d (flipped kernel, up and down
swapped, pads adjusted), so it is differentiable to any order; its kernel gradient
is a correlation computed with torch ops. The leaky ReLU's gradient is a mask that
depends only on the sign of the saved output, applied by a second autograd Function
whose own backward applies the same mask -- so R1-style double backward works.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd import Function

from .reference import _pair

__all__ = ["plugin_available", "build_error", "build", "upfirdn2d_cuda", "fused_leaky_relu_cuda"]

CSRC = Path(__file__).resolve().parent / "csrc"
EXTENSION_NAME = "stytr_ops_plugin"

_lock = threading.Lock()
_plugin = None  # the compiled module once built
_error: str | None = None  # why the build failed, once it has
_attempted = False


def _sources() -> list[Path]:
    return [CSRC / "ops.cpp", CSRC / "upfirdn2d_kernel.cu", CSRC / "fused_bias_act_kernel.cu"]


def _load_extension(**kwargs):
    """Indirection so tests can substitute the loader."""
    from torch.utils import cpp_extension

    return cpp_extension.load(**kwargs)


def build_directory() -> Path:
    base = os.environ.get("STYTR_OPS_BUILD_DIR")
    if base:
        root = Path(base)
    elif os.environ.get("TORCH_EXTENSIONS_DIR"):
        root = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "stytr_ops"
    else:
        root = Path.home() / ".cache" / "stytr" / "ops"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__.split('+')[0]}_cu{torch.version.cuda}"
    return root / re.sub(r"[^A-Za-z0-9_.-]", "_", tag)


def build(verbose: bool = False):
    """Compile (or reuse a previous build of) the plugin and return the module. Raises on failure."""
    sources = [Path(s) for s in _sources()]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"plugin sources not found: {', '.join(missing)}")
    if torch.version.cuda is None:
        raise RuntimeError("this torch build has no CUDA support")
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    # Name the module after its sources so a stale build in a shared directory is never reused.
    digest = hashlib.sha1(b"".join(s.read_bytes() for s in sorted(sources) + sorted(CSRC.glob("*.h")))).hexdigest()[:8]
    return _load_extension(
        name=f"{EXTENSION_NAME}_{digest}",
        sources=[str(s) for s in sources],
        extra_include_paths=[str(CSRC)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
        build_directory=str(directory),
        verbose=verbose,
    )


def plugin_available() -> bool:
    """True when the plugin is built (building it now if this is the first call)."""
    global _plugin, _error, _attempted
    if _attempted:
        return _plugin is not None
    with _lock:
        if not _attempted:
            try:
                _plugin = build(verbose=os.environ.get("STYTR_OPS_VERBOSE", "") not in ("", "0"))
            except Exception as exc:  # any failure means: fall back, say so once
                _plugin = None
                _error = f"{type(exc).__name__}: {exc}".strip()
                warnings.warn(
                    f"stytr.ops: could not build the CUDA plugin, falling back to the PyTorch reference ({_error})",
                    RuntimeWarning,
                    stacklevel=2,
                )
            _attempted = True
    return _plugin is not None


def build_error() -> str:
    """Why the build failed ('' if it has not failed, or not been tried)."""
    return _error or ""


def _reset() -> None:
    """Forget the build result (for tests)."""
    global _plugin, _error, _attempted
    with _lock:
        _plugin, _error, _attempted = None, None, False


def _module():
    if not plugin_available():
        raise RuntimeError(f"the stytr CUDA plugin is not available: {build_error()}")
    return _plugin


# ----------------------------------------------------------------------------- upfirdn2d


def _gradient_pad(in_hw, out_hw, kernel_hw, up, down, pad) -> tuple[int, int, int, int]:
    """Pads that make upfirdn2d(grad_out, flip(kernel), up=down, down=up) the adjoint of the forward."""
    (h, w), (oh, ow), (kh, kw) = in_hw, out_hw, kernel_hw
    (upx, upy), (downx, downy) = up, down
    px0, _, py0, _ = pad
    gx0, gy0 = kw - 1 - px0, kh - 1 - py0
    gx1 = w * upx - ow * downx + px0 - upx + 1
    gy1 = h * upy - oh * downy + py0 - upy + 1
    return gx0, gx1, gy0, gy1


class _UpFirDn2d(Function):
    @staticmethod
    def forward(ctx, x, kernel, up, down, pad):
        out = _module().upfirdn2d(x.contiguous(), kernel, up[0], up[1], down[0], down[1], *pad)
        ctx.up, ctx.down, ctx.pad = up, down, pad
        ctx.in_hw, ctx.out_hw = tuple(x.shape[2:]), tuple(out.shape[2:])
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, kernel)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, kernel = ctx.saved_tensors
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[0]:
            gpad = _gradient_pad(ctx.in_hw, ctx.out_hw, tuple(kernel.shape), ctx.up, ctx.down, ctx.pad)
            grad_x = _UpFirDn2d.apply(grad_out, torch.flip(kernel, [0, 1]), ctx.down, ctx.up, gpad)
        if ctx.needs_input_grad[1]:
            grad_kernel = _kernel_gradient(x, grad_out, kernel, ctx.up, ctx.down, ctx.pad)
        return grad_x, grad_kernel, None, None, None


def _kernel_gradient(x, grad_out, kernel, up, down, pad):
    """d loss / d kernel: correlate the upsampled, padded input with the output gradient."""
    b, c = x.shape[:2]
    kh, kw = kernel.shape
    if up != (1, 1) or any(pad):
        identity = torch.ones(1, 1, dtype=kernel.dtype, device=x.device)
        x = _UpFirDn2d.apply(x, identity, up, (1, 1), pad)
    signal = x.reshape(1, b * c, *x.shape[2:])
    grad = grad_out.to(x.dtype).reshape(1, b * c, *grad_out.shape[2:])
    corr = F.conv2d(signal, grad, dilation=(down[1], down[0]))[0, 0, :kh, :kw]
    # The op applies flip(kernel) as a correlation, so flip the result back.
    return torch.flip(corr, [0, 1]).to(kernel.dtype)


def upfirdn2d_cuda(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0, 0, 0)) -> torch.Tensor:
    """upfirdn2d on the CUDA plugin; ``pad`` is (px0, px1, py0, py1), ``up``/``down`` ints or (x, y)."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if kernel.ndim != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel, got shape {tuple(kernel.shape)}")
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    if len(pad) != 4:
        raise ValueError(f"pad must have 2 or 4 entries, got {pad!r}")
    if kernel.device != x.device:
        kernel = kernel.to(x.device)
    return _UpFirDn2d.apply(x, kernel, _pair(up), _pair(down), pad)


# ----------------------------------------------------------------------------- fused leaky ReLU


class _LeakyReLUGrad(Function):
    """grad * scale * (1 if out > 0 else negative_slope); linear in grad, so its backward is itself."""

    @staticmethod
    def forward(ctx, grad, out, negative_slope, scale):
        ctx.save_for_backward(out)
        ctx.negative_slope, ctx.scale = negative_slope, scale
        return _module().leaky_relu_grad(grad.contiguous(), out, negative_slope, scale)

    @staticmethod
    def backward(ctx, gradgrad):
        (out,) = ctx.saved_tensors
        # The mask is piecewise constant in `out`, so nothing flows to it.
        return _LeakyReLUGrad.apply(gradgrad, out, ctx.negative_slope, ctx.scale), None, None, None


class _BiasLeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, bias, negative_slope, scale):
        if bias is None:
            bias = x.new_empty(0)
        out = _module().bias_leaky_relu(x.contiguous(), bias, negative_slope, scale)
        ctx.save_for_backward(out)
        ctx.negative_slope, ctx.scale = negative_slope, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        grad_x = _LeakyReLUGrad.apply(grad_out, out, ctx.negative_slope, ctx.scale)
        grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_bias = grad_x.sum(dim=[0, *range(2, grad_x.ndim)])
        return grad_x, grad_bias, None, None


def fused_leaky_relu_cuda(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float = 0.2,
                          scale: float = 2 ** 0.5) -> torch.Tensor:
    """scale * leaky_relu(x + bias) on the CUDA plugin; ``bias`` broadcast along dimension 1."""
    if bias is not None:
        if bias.ndim != 1 or x.ndim < 2 or bias.shape[0] != x.shape[1]:
            raise ValueError(f"bias of shape {tuple(bias.shape)} does not match input of shape {tuple(x.shape)}")
        bias = bias.to(device=x.device, dtype=x.dtype)
    return _BiasLeakyReLU.apply(x, bias, float(negative_slope), float(scale))
