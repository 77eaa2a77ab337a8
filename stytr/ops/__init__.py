"""StyleGAN2's custom ops behind one entry point.

``STYTR_OPS`` picks the implementation: ``auto`` (default) uses the CUDA kernels
for GPU tensors when the plugin builds and the pure-PyTorch reference otherwise;
``cuda`` insists on the plugin for GPU tensors (CPU tensors still use the
reference); ``ref`` always uses the reference. A plugin that fails to build warns
once and falls back; it never breaks import.
"""
from __future__ import annotations

import math
import os
import sys

import torch
from torch import nn

from .reference import fused_leaky_relu_ref, normalize_pad, upfirdn2d_ref

__all__ = ["upfirdn2d", "fused_leaky_relu", "FusedLeakyReLU", "backend_for", "ops_mode"]

_announced: set[str] = set()


def ops_mode() -> str:
    mode = os.environ.get("STYTR_OPS", "auto").lower()
    if mode not in {"auto", "cuda", "ref"}:
        raise ValueError(f"STYTR_OPS must be auto, cuda or ref, not {mode!r}")
    return mode


def _announce(op: str, backend: str) -> None:
    key = f"{op}:{backend}"
    if key not in _announced:
        _announced.add(key)
        name = "CUDA plugin" if backend == "cuda" else "pure-PyTorch reference"
        print(f"stytr.ops: {op} runs on the {name} (STYTR_OPS={ops_mode()})", file=sys.stderr)


def backend_for(x: torch.Tensor) -> str:
    """'cuda' or 'ref': which implementation an op on ``x`` will use."""
    mode = ops_mode()
    if mode == "ref" or not x.is_cuda:
        return "ref"
    from . import cuda_impl  # deferred: building the plugin is only worth it for GPU tensors

    if cuda_impl.plugin_available():
        return "cuda"
    if mode == "cuda":
        raise RuntimeError(f"STYTR_OPS=cuda but the CUDA plugin could not be built: {cuda_impl.build_error()}")
    return "ref"


def upfirdn2d(input: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0)) -> torch.Tensor:
    backend = backend_for(input)
    _announce("upfirdn2d", backend)
    if backend == "cuda":
        from .cuda_impl import upfirdn2d_cuda

        return upfirdn2d_cuda(input, kernel, up=up, down=down, pad=normalize_pad(pad))
    return upfirdn2d_ref(input, kernel, up=up, down=down, pad=pad)


def fused_leaky_relu(input: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = math.sqrt(2)) -> torch.Tensor:
    backend = backend_for(input)
    _announce("fused_leaky_relu", backend)
    if backend == "cuda":
        from .cuda_impl import fused_leaky_relu_cuda

        return fused_leaky_relu_cuda(input, bias, negative_slope, scale)
    return fused_leaky_relu_ref(input, bias, negative_slope, scale)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU and the sqrt(2) gain of StyleGAN2 in one op."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2, scale: float = math.sqrt(2)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)
