"""ToyFaces rendering speed on one core: prints images per second at each size (target: >= 500/s at 64 px)."""
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from stytr.toy import render_z, sample_z  # noqa: E402


def images_per_second(size: int, n: int = 1024, repeats: int = 3) -> float:
    z = sample_z(n, seed=0)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        render_z(z, size)
        best = min(best, time.perf_counter() - t0)
    return n / best


if __name__ == "__main__":
    for size in (32, 64, 128):
        rate = images_per_second(size)
        print(f"{size:4d} px: {rate:7.0f} images/s" + ("   (target 500)" if size == 64 else ""))
