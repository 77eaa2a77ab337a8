"""Time stytr's CUDA ops against the pure-PyTorch reference at StyleGAN2 shapes.

    python -m stytr.benchmarks.ops [--batch 8] [--dtype float32] [--reps 50]

Prints, for each op and shape, milliseconds per call for the forward pass and for
forward + backward, the reference's time divided by the plugin's (the speed-up), and
the largest difference between the two outputs. Without a GPU it says so and exits 0.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch


def _time_ms(fn, reps: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def _cases(batch: int):
    """(label, op name, input shape, keyword arguments) at the sizes a 1024 px StyleGAN2 meets."""
    blur = [1.0, 3.0, 3.0, 1.0]
    k = torch.outer(torch.tensor(blur), torch.tensor(blur))
    k = k / k.sum()
    return [
        ("ToRGB upsample 3ch 256->512", "upfirdn2d", (batch, 3, 256, 256), dict(kernel=k * 4, up=2, pad=(2, 1))),
        ("ToRGB upsample 3ch 512->1024", "upfirdn2d", (batch, 3, 512, 512), dict(kernel=k * 4, up=2, pad=(2, 1))),
        ("G blur 512ch 35x35", "upfirdn2d", (batch, 512, 35, 35), dict(kernel=k * 4, pad=(1, 1))),
        ("G blur 128ch 259x259", "upfirdn2d", (batch, 128, 259, 259), dict(kernel=k * 4, pad=(1, 1))),
        ("D blur 64ch 256x256", "upfirdn2d", (batch, 64, 256, 256), dict(kernel=k, pad=(2, 2))),
        ("D blur 512ch 32x32", "upfirdn2d", (batch, 512, 32, 32), dict(kernel=k, pad=(2, 2))),
        ("downsample 128ch 256->128", "upfirdn2d", (batch, 128, 256, 256), dict(kernel=k, down=2, pad=(1, 1))),
        ("act 512ch 32x32", "act", (batch, 512, 32, 32), {}),
        ("act 128ch 256x256", "act", (batch, 128, 256, 256), {}),
        ("act 32ch 1024x1024", "act", (batch, 32, 1024, 1024), {}),
        ("act linear 512", "act", (batch, 512), {}),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", choices=["float32", "float16", "float64"], default="float32")
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_ops: no CUDA GPU available, nothing to time.")
        return 0

    from stytr.ops import cuda_impl
    from stytr.ops.reference import fused_leaky_relu_ref, upfirdn2d_ref

    if not cuda_impl.plugin_available():
        print(f"bench_ops: the CUDA plugin did not build: {cuda_impl.build_error()}")
        return 1

    dev = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    print(f"device: {torch.cuda.get_device_name(dev)}; dtype {args.dtype}; batch {args.batch}; {args.reps} reps")
    header = f"{'case':32s} {'pass':9s} {'ref ms':>9s} {'cuda ms':>9s} {'speed-up':>9s} {'max |diff|':>11s}"
    print(header)
    print("-" * len(header))
    speedups = []
    for label, op, shape, kw in _cases(args.batch):
        x = torch.randn(shape, device=dev, dtype=dtype, requires_grad=True)
        if op == "upfirdn2d":
            kernel = kw["kernel"].to(dev)
            geometry = {key: kw[key] for key in ("up", "down", "pad") if key in kw}
            ref = lambda: upfirdn2d_ref(x, kernel, **geometry)  # noqa: E731
            ours = lambda: cuda_impl.upfirdn2d_cuda(  # noqa: E731
                x, kernel, kw.get("up", 1), kw.get("down", 1), kw.get("pad", (0, 0)))
        else:
            bias = torch.randn(shape[1], device=dev, dtype=dtype, requires_grad=True)
            ref = lambda: fused_leaky_relu_ref(x, bias, 0.2, math.sqrt(2))  # noqa: E731
            ours = lambda: cuda_impl.fused_leaky_relu_cuda(x, bias, 0.2, math.sqrt(2))  # noqa: E731

        with torch.no_grad():
            diff = (ref().float() - ours().float()).abs().max().item()
        grad = torch.randn_like(ref())

        def with_backward(fn):
            return lambda: fn().backward(grad)

        for name, f_ref, f_ours, ctx in [
            ("forward", ref, ours, torch.no_grad),
            ("fwd+bwd", with_backward(ref), with_backward(ours), torch.enable_grad),
        ]:
            with ctx():
                t_ref = _time_ms(f_ref, args.reps)
                t_ours = _time_ms(f_ours, args.reps)
            speedups.append(t_ref / t_ours)
            print(f"{label:32s} {name:9s} {t_ref:9.3f} {t_ours:9.3f} {t_ref / t_ours:8.2f}x {diff:11.2e}")
        x.grad = None
    geo = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
    print(f"geometric-mean speed-up of the plugin over the reference: {geo:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
