"""stytr: Style Transformer for StyleGAN2 inversion and editing (Hu et al., CVPR 2022).

Importing the package keeps freed memory in glibc's heap instead of returning it to the
kernel (:func:`stytr.runtime.tune_allocator`; ``STYTR_MALLOC=system`` opts out): large
activations are otherwise faulted in again on every forward, which more than halves CPU speed.
It is here, at the package root, because every entry point (the CLI, the trainers, the
benchmarks, notebook kernels, the editor) imports stytr first.
"""
from .runtime import tune_allocator as _tune_allocator

_tune_allocator()
