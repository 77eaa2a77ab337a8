"""The reference model path against the fast path, side by side in one interleaved run.

    python -m stytr.benchmarks.speed [--threads 2] [--repeats 3] [--warmup 1]
        [--cases encoder generator forward-b1 forward-b4 train-step toy-train-step]
        [--compile] [--no-allocator] [--no-rss] [--device cpu|cuda]

Every case is built once (random weights in the paper's sizes: Style Transformer encoder on
256 px input, 1024 px StyleGAN2 generator; the toy step is ToyFaces' shipped training setup)
and then timed in rounds: each round runs every case once on every path, the path order
rotating, so the ratios hold on a busy machine. Paths (CPU): ``reference`` is
``STYTR_PATH=reference``, ``fast`` the default; ``--compile`` adds ``compiled`` (the fast path
under ``torch.compile``; its cold compile time is reported apart). On a GPU the columns are
float32 and bf16 autocast instead.

Two measurements need fresh processes and are reported apart, because they cannot be undone
inside one:

* **allocator**: the 1024 px generator, the full forward and the toy step (``--allocator-cases``),
  on both paths, in child processes with glibc's default
  allocator (``STYTR_MALLOC=system``) and with stytr's tuning, alternating. The tuning speeds up
  any PyTorch code (the published code too), so it is not part of the path ratios above: all of
  those run with it. The reference path with glibc's default is stytr as it was before the fast
  path; the last line compares the default now (fast path, tuned) with it.
* **peak RSS** of one full-size forward (encoder + 1024 px generator, batch 1) per path.

GFLOP/s use torch's FLOP count of the reference path (a multiply-add = 2 FLOPs).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils import flop_counter

from stytr.config import InversionConfig, InversionTrainConfig
from stytr.eval.complexity import count_flops
from stytr.models.inversion import build_inversion_model
from stytr.runtime import allocator_state, use_path

from .timing import interleaved, median, random_images, random_weight_loss, training_step

CASES = ("encoder", "generator", "forward-b1", "forward-b4", "train-step", "toy-train-step")
CPU_PATHS = ("reference", "fast")
GPU_PATHS = ("fp32", "bf16")


@dataclass
class Case:
    name: str
    run: Callable[[], object]          # one timed call
    count: Callable[[], int]           # FLOPs of one call (runs it once); see ``flops``
    compiled_run: Callable[[], object] | None = None
    compile_s: float | None = None
    compile_diff: float | None = None  # max |compiled - eager| of the output, inference cases

    @functools.cached_property
    def flops(self) -> int:
        """FLOPs per call on the reference path, counted when first asked (child processes never do)."""
        with use_path("reference"):
            return self.count()


def _full_model(device: torch.device, preset: str = "ffhq"):
    return build_inversion_model(InversionConfig.preset(preset)).to(device).eval()


def _inference(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return fn()
    return run


def _train_flops(fn: Callable[[], object]) -> int:
    counter = flop_counter.FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _compiled(thunk: Callable[[], object]) -> tuple[Callable[[], object], float, float]:
    """``thunk`` under torch.compile (a closure, so methods other than ``forward`` are traced too),
    the seconds its first, compiling, run took, and its largest deviation from eager (inference
    mode, fast path)."""
    compiled = torch.compile(thunk)
    with use_path("fast"):
        start = time.perf_counter()
        out = _first_tensor(_inference(compiled)())
        seconds = time.perf_counter() - start
        diff = (out - _first_tensor(_inference(thunk)())).abs().max().item()
    return _inference(compiled), seconds, diff


def build_cases(names, device: torch.device, compile_too: bool, preset: str = "ffhq", batch4: int = 4) -> list[Case]:
    """The cases ``names`` at ``preset``'s model sizes (random weights; ``toy-train-step`` is always ToyFaces')."""
    cases: list[Case] = []
    model = None
    if any(n in names for n in ("encoder", "generator", "forward-b1", "forward-b4", "train-step")):
        model = _full_model(device, preset)
    size = model.cfg.input_size if model is not None else 256
    x1 = random_images(1, size, device)
    for name in names:
        if name == "encoder":
            call = lambda m: m.encode(x1)                              # noqa: E731
        elif name == "generator":
            with torch.inference_mode():
                codes = model.encode(x1)
            call = lambda m, c=codes: m.decode(c, resize=False, randomize_noise=False)  # noqa: E731
        elif name in ("forward-b1", "forward-b4"):
            x = x1 if name == "forward-b1" else random_images(batch4, size, device, seed=1)
            call = lambda m, x=x: m(x, randomize_noise=False)         # noqa: E731
        elif name == "train-step":
            cases.append(_train_case(device, compile_too, preset))
            continue
        elif name == "toy-train-step":
            cases.append(_toy_train_case(device, compile_too))
            continue
        else:
            raise ValueError(f"unknown case {name!r}: choose from {CASES}")
        run = _inference(lambda call=call: call(model))
        case = Case(name, run, lambda call=call: count_flops(lambda: call(model)))
        if compile_too:
            case.compiled_run, case.compile_s, case.compile_diff = _compiled(lambda call=call: call(model))
        cases.append(case)
    return cases


def _train_case(device: torch.device, compile_too: bool, preset: str = "ffhq", batch: int = 2) -> Case:
    from stytr.train.inversion import build_optimizer

    cfg = InversionTrainConfig.preset(preset, batch=batch)
    model = build_inversion_model(cfg.model).to(device).train()
    loss = random_weight_loss(cfg, device)
    optimizer = build_optimizer(cfg, model.trainable_parameters())
    x = random_images(batch, cfg.model.input_size, device, seed=2)
    step = training_step(model, loss, optimizer, x)
    case = Case("train-step", step, lambda: _train_flops(step))
    if compile_too:
        compiled = training_step(torch.compile(model), loss, optimizer, x)
        start = time.perf_counter()
        with use_path("fast"):
            compiled()
        case.compile_s = time.perf_counter() - start
        case.compiled_run = compiled
    return case


def _toy_train_case(device: torch.device, compile_too: bool) -> Case:
    from stytr.train.inversion import InversionTrainer

    out = tempfile.mkdtemp(prefix="stytr_speed_")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    cfg = InversionTrainConfig.preset("toy", out=out, figures="")
    trainer = InversionTrainer(cfg)
    trainer.model.to(device)
    x = trainer.batch_for_step(0).to(device)
    step = lambda: trainer.train_step(x)                              # noqa: E731
    case = Case("toy-train-step", step, lambda: _train_flops(step))
    if compile_too:
        trainer.net = torch.compile(trainer.model)
        start = time.perf_counter()
        with use_path("fast"):
            trainer.train_step(x)
        case.compile_s = time.perf_counter() - start
        compiled_net = trainer.net
        trainer.net = trainer.model

        def compiled_step():
            trainer.net = compiled_net
            try:
                return trainer.train_step(x)
            finally:
                trainer.net = trainer.model
        case.compiled_run = compiled_step
    return case


def _on_path(run: Callable[[], object], path: str, device: torch.device) -> Callable[[], object]:
    """``run`` on the path (CPU: reference / fast / compiled) or at the precision (GPU: fp32 / bf16)."""
    def call():
        if device.type == "cuda":
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if path == "bf16" else contextlib.nullcontext()
        else:
            ctx = use_path("fast" if path == "compiled" else path)
        with ctx:
            return run()
    return call


def time_cases(cases: list[Case], paths: tuple[str, ...], repeats: int, warmup: int, device: torch.device,
               progress: Callable[[str], None] = lambda msg: None) -> dict[tuple[str, str], list[float]]:
    """Seconds per call, ``{(case, path): [samples]}``, all cases and paths in one interleaved run."""
    calls = {}
    for case in cases:
        for path in paths:
            run = case.compiled_run if path == "compiled" else case.run
            if run is not None:
                calls[case.name, path] = _on_path(run, path, device)
    samples = interleaved(calls, repeats, warmup, device, progress)
    return {(c.name, p): samples.get((c.name, p), []) for c in cases for p in paths}


def format_table(cases: list[Case], samples, paths: tuple[str, ...]) -> str:
    base = paths[0]
    head = f"{'case':16s} {'GFLOP':>8s}" + "".join(f" {p + ' s':>13s} {'GFLOP/s':>8s}" for p in paths)
    head += "".join(f" {p + '/' + base:>10s}" for p in paths[1:])
    lines = [head, "-" * len(head)]
    for case in cases:
        med = {p: median(samples[case.name, p]) for p in paths}
        row = f"{case.name:16s} {case.flops / 1e9:8.1f}"
        for p in paths:
            row += f" {med[p]:13.3f} {case.flops / med[p] / 1e9:8.1f}" if med[p] else f" {'-':>13s} {'-':>8s}"
        for p in paths[1:]:
            row += f" {med[base] / med[p]:9.2f}x" if med[p] else f" {'-':>10s}"
        lines.append(row)
    return "\n".join(lines)


# -- child processes: allocator and peak RSS ---------------------------------------------------

def _child(argv: list[str], env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "stytr.benchmarks.speed", *argv]
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_case_time(name: str, repeats: int, preset: str = "ffhq") -> dict:
    """In this (fresh) process: the median time of case ``name`` on the path ``STYTR_PATH`` selects
    (one untimed call first)."""
    case, = build_cases([name], torch.device("cpu"), compile_too=False, preset=preset)
    case.run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        case.run()
        times.append(time.perf_counter() - start)
    return {"allocator": allocator_state(), "seconds": median(times)}


def _peak_rss_gb() -> float:
    """This process's peak resident memory. ``/proc/self/status``'s VmHWM starts afresh at exec;
    ``ru_maxrss`` would carry the forking parent's peak into a child."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child_peak_rss(preset: str = "ffhq") -> dict:
    """In this (fresh) process: peak resident memory after building the full-size model and
    after one forward of it (batch 1), in GB."""
    model = _full_model(torch.device("cpu"), preset)
    x = random_images(1, model.cfg.input_size, torch.device("cpu"))
    built = _peak_rss_gb()
    with torch.inference_mode():
        model(x, randomize_noise=False)
    peak = _peak_rss_gb()
    return {"built_gb": built, "peak_gb": peak, "forward_gb": peak - built}


#: (model path, allocator) of the child processes: the reference path with glibc's default
#: allocator is stytr before issue 15 ("today's"); fast + tuned is the default now.
ALLOCATOR_GRID = (("reference", "system"), ("reference", "tuned"), ("fast", "system"), ("fast", "tuned"))


def allocator_comparison(names, rounds: int, threads: int, preset: str = "ffhq"
                         ) -> dict[tuple[str, str, str], list[float]]:
    """Median seconds of every case in ``names`` at every (path, allocator), each in a fresh
    process, the order reversed every other round."""
    grid = [(n, path, malloc) for n in names for path, malloc in ALLOCATOR_GRID]
    out: dict[tuple[str, str, str], list[float]] = {key: [] for key in grid}
    for rnd in range(rounds):
        for name, path, malloc in (grid if rnd % 2 == 0 else grid[::-1]):
            res = _child(["--child", name, "--threads", str(threads), "--preset", preset],
                         {"STYTR_MALLOC": malloc, "STYTR_PATH": path})
            out[name, path, malloc].append(res["seconds"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (medians are reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="ffhq", help="InversionConfig preset of the model sizes (ffhq = the paper's)")
    parser.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    parser.add_argument("--no-allocator", action="store_true", help="skip the allocator comparison")
    parser.add_argument("--allocator-rounds", type=int, default=2)
    parser.add_argument("--allocator-cases", nargs="+", default=["generator", "forward-b1", "toy-train-step"],
                        choices=CASES, help="cases timed in fresh processes for the allocator comparison")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--child", choices=CASES + ("rss",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 0 or args.allocator_rounds < 1:
        parser.error("--repeats and --allocator-rounds must be >= 1, --warmup and --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.child == "rss":
        print(json.dumps(child_peak_rss(args.preset)))
        return 0
    if args.child:
        print(json.dumps(child_case_time(args.child, max(args.repeats, 2), args.preset)))
        return 0

    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__} on {where}; allocator {allocator_state()}; "
          f"{args.warmup} warm-up + {args.repeats} timed rounds", flush=True)
    start = time.time()
    log = lambda msg: print(f"  [{time.time() - start:6.0f}s] {msg}", flush=True)   # noqa: E731
    paths = GPU_PATHS if device.type == "cuda" else CPU_PATHS + (("compiled",) if args.compile else ())
    cases = build_cases(args.cases, device, args.compile and device.type == "cpu", args.preset)
    log("built " + ", ".join(c.name for c in cases))
    samples = time_cases(cases, paths, args.repeats, args.warmup, device, progress=log)
    print()
    print(format_table(cases, samples, paths))
    for case in cases:
        if case.compile_s is not None:
            diff = "" if case.compile_diff is None else f", max |compiled - eager| {case.compile_diff:.1e}"
            print(f"torch.compile warm-up of {case.name}: {case.compile_s:.0f} s{diff}")
    if device.type == "cpu" and not args.no_allocator:
        log(f"allocator: child processes, both paths: {', '.join(args.allocator_cases)}")
        alloc = {k: median(v) for k, v in
                 allocator_comparison(args.allocator_cases, args.allocator_rounds, args.threads, args.preset).items()}
        print(f"\nfresh processes (s)    {'path':9s} {'glibc default':>14s} {'stytr tuning':>13s} {'gain':>6s}")
        for name in args.allocator_cases:
            for path in CPU_PATHS:
                system, tuned = alloc[name, path, "system"], alloc[name, path, "tuned"]
                print(f"  {name:20s} {path:9s} {system:14.3f} {tuned:13.3f} {system / tuned:5.2f}x")
        print("stytr's default (fast path, tuned allocator) against stytr before the fast path (reference path, "
              "glibc's default):")
        for name in args.allocator_cases:
            print(f"  {name:20s} {alloc[name, 'reference', 'system'] / alloc[name, 'fast', 'tuned']:.2f}x")
    if device.type == "cpu" and not args.no_rss:
        log("peak RSS: child processes, one full forward at batch 1")
        for path in CPU_PATHS:
            res = _child(["--child", "rss", "--threads", str(args.threads), "--preset", args.preset],
                         {"STYTR_PATH": path})
            print(f"peak RSS, {path:9s}: {res['peak_gb']:.2f} GB ({res['built_gb']:.2f} GB after building the "
                  f"model, +{res['forward_gb']:.2f} GB in the forward)")
    print(f"done in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
