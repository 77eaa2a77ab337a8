"""StyleGAN2's custom ops behind one entry point.

``STYTR_OPS`` picks the implementation: ``auto`` (default) uses the CUDA kernels
for GPU tensors when the plugin builds and the pure-PyTorch reference otherwise;
``cuda`` insists on the plugin for GPU tensors; ``ref`` always uses the reference.
CPU tensors take the fast CPU implementations (:mod:`stytr.ops.cpu_impl`) unless
``STYTR_OPS=ref`` or the reference model path is selected (``STYTR_PATH=reference``,
see :mod:`stytr.runtime`). A plugin that fails to build warns once and falls back;
it never breaks import. Which implementation runs is said once per op, never from
inside a torch.compile trace (:func:`announce_backends` says it up front).
"""
from __future__ import annotations

import math
import os
import sys

import torch
from torch import nn

from ..runtime import fast_path_enabled
from .cpu_impl import fused_leaky_relu_cpu, upfirdn2d_cpu
from .reference import fused_leaky_relu_ref, normalize_pad, upfirdn2d_ref

__all__ = ["upfirdn2d", "fused_leaky_relu", "FusedLeakyReLU", "backend_for", "ops_mode", "announce_backends"]

_NAMES = {"cuda": "CUDA plugin", "cpu": "fast CPU implementation", "ref": "pure-PyTorch reference"}

_announced: set[str] = set()


def ops_mode() -> str:
    mode = os.environ.get("STYTR_OPS", "auto").lower()
    if mode not in {"auto", "cuda", "ref"}:
        raise ValueError(f"STYTR_OPS must be auto, cuda or ref, not {mode!r}")
    return mode


def _announce(op: str, backend: str) -> None:
    # Printing and the set are Python side effects that torch.compile would break its graph on.
    if torch.compiler.is_compiling():
        return
    key = f"{op}:{backend}"
    if key not in _announced:
        _announced.add(key)
        print(f"stytr.ops: {op} runs on the {_NAMES[backend]} (STYTR_OPS={ops_mode()})", file=sys.stderr)


def announce_backends(device: torch.device | str = "cpu") -> None:
    """Say (once) which implementation each op will use on ``device``; called before compiling."""
    probe = torch.empty(0, device=device)
    for op in ("upfirdn2d", "fused_leaky_relu"):
        _announce(op, backend_for(probe))


def backend_for(x: torch.Tensor) -> str:
    """'cuda', 'cpu' (fast CPU implementation) or 'ref': which implementation an op on ``x`` will use."""
    mode = ops_mode()
    if mode == "ref":
        return "ref"
    if not x.is_cuda:
        return "cpu" if x.device.type == "cpu" and fast_path_enabled() else "ref"
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
    if backend == "cpu":
        return upfirdn2d_cpu(input, kernel, up=up, down=down, pad=pad)
    return upfirdn2d_ref(input, kernel, up=up, down=down, pad=pad)


def fused_leaky_relu(input: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = math.sqrt(2)) -> torch.Tensor:
    backend = backend_for(input)
    _announce("fused_leaky_relu", backend)
    if backend == "cuda":
        from .cuda_impl import fused_leaky_relu_cuda

        return fused_leaky_relu_cuda(input, bias, negative_slope, scale)
    if backend == "cpu":
        return fused_leaky_relu_cpu(input, bias, negative_slope, scale)
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
