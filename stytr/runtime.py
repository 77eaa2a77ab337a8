"""Process-wide execution settings: the memory allocator and the fast or reference model path.

**Allocator.** glibc serves every block above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and gives it back with ``munmap`` on free, so each 128 MB activation of a 1024 px
generator is faulted in again, page by page, on every forward: that alone more than halves
the speed of any PyTorch code on a CPU. :func:`tune_allocator` tells glibc (``mallopt``) to
keep freed memory in its heap: no mmap for large blocks (``M_MMAP_MAX=0``), never trim the
heap below 2 GB of free space (``M_TRIM_THRESHOLD``), grow it in 256 MB steps
(``M_TOP_PAD``). The price: the process keeps its peak memory until it exits instead of
returning it. ``import stytr`` applies it, so the CLI, the trainers, the benchmarks and every
notebook kernel get it from their first stytr import; ``STYTR_MALLOC=system`` (in the
environment before Python starts) leaves glibc as it is. It does nothing on other C libraries.

**Model path.** ``STYTR_PATH=fast`` (default) runs the CPU fast path of the generator, the
encoders and the CPU ops (weight modulation, fused in-place epilogues, channels_last,
polyphase filtering); ``STYTR_PATH=reference`` runs the straightforward reference code, which
the fast path is tested against. :func:`use_path` switches it inside a process (tests,
benchmarks). GPU tensors always take the reference model code and the CUDA ops.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform

__all__ = ["tune_allocator", "allocator_state", "fast_path_enabled", "set_path", "use_path", "current_path",
           "PATHS"]

# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TUNED = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 256 * 2**20, _M_MMAP_MAX: 0}

_allocator = "system"


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_allocator() -> str:
    """Keep freed memory in glibc's heap, unless ``STYTR_MALLOC=system``; returns
    :func:`allocator_state`. Idempotent. (There is no way back to glibc's defaults inside a
    process: any mallopt call also freezes its adaptive mmap threshold. The benchmarks measure
    the untuned allocator in a child process started with ``STYTR_MALLOC=system``.)"""
    global _allocator
    choice = os.environ.get("STYTR_MALLOC", "tuned").lower()
    if choice not in ("tuned", "system"):
        raise ValueError(f"STYTR_MALLOC must be 'tuned' or 'system', not {choice!r}")
    if choice == "system":
        _allocator = "system"
        return _allocator
    libc = _libc()
    if libc is None:
        _allocator = "unavailable (not glibc)"
        return _allocator
    ok = all(libc.mallopt(param, value) == 1 for param, value in _TUNED.items())
    _allocator = "tuned" if ok else "system (mallopt refused)"
    return _allocator


def allocator_state() -> str:
    """'tuned', 'system' or 'unavailable (not glibc)'."""
    return _allocator


# -- fast or reference path ------------------------------------------------------------------

PATHS = ("fast", "reference")


def _path_from_env() -> str:
    value = os.environ.get("STYTR_PATH", "fast").lower()
    if value not in PATHS:
        raise ValueError(f"STYTR_PATH must be one of {PATHS}, not {value!r}")
    return value


# Read once: torch.compile guards on this module global, so a switch recompiles instead of
# silently running the other path.
_path = _path_from_env()


def current_path() -> str:
    return _path


def fast_path_enabled() -> bool:
    return _path == "fast"


def set_path(name: str) -> str:
    """Select 'fast' or 'reference' for this process; returns the previous choice."""
    global _path
    if name not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, not {name!r}")
    previous, _path = _path, name
    return previous


@contextlib.contextmanager
def use_path(name: str):
    """``with use_path("reference"): ...`` runs the block on that path."""
    previous = set_path(name)
    try:
        yield
    finally:
        set_path(previous)
