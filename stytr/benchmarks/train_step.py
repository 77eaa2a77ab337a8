"""One inversion training step of pSp, w/o self and the full Style Transformer, side by side.

    python -m stytr.benchmarks.train_step [--sizes toy ffhq] [--batch 2] [--toy-batch 16]
        [--repeats 3] [--warmup 1] [--threads 2] [--device cpu]

The supplementary says the attention makes training slower; this measures by how much. A step
is what the trainer does: forward through encoder and frozen generator, the loss, backward,
the optimiser step (Ranger, as published). ``toy``: ToyFaces' training setup (its loss: L2 +
the attribute predictor's perceptual term; batch ``--toy-batch``). ``ffhq``: the paper's sizes
(256 px input, 1024 px generator) with random weights and the paper's loss (L2 + LPIPS + ID, on
randomly initialised networks of the published shapes; no weight file is read), batch
``--batch``. The preset's own weight files are used where present (a workstation with them gets
its real loss networks). All six models run in one interleaved loop, so the ratios hold on a busy machine.
Goal (issue 18): the full model's step within 1.1x the w/o-self step.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from stytr.config import InversionTrainConfig
from stytr.eval.complexity import TABLE1_METHODS, paper_table1_configs
from stytr.models.inversion import build_inversion_model
from stytr.train.inversion import build_loss, build_optimizer, build_model

from .timing import interleaved, median, random_images, random_weight_loss, training_step


def _loss(cfg: InversionTrainConfig, device: torch.device):
    """The trainer's loss; where its weight files are missing (LPIPS's AlexNet, IR-SE50 at full size),
    the same terms on random networks of the published shapes."""
    try:
        return build_loss(cfg).to(device)
    except FileNotFoundError:
        return random_weight_loss(cfg, device)


def _model(cfg: InversionTrainConfig, model_cfg):
    """The model as the trainer builds it (the domain's generator loaded); random weights of the
    same layout where the generator or backbone file is missing."""
    try:
        return build_model(cfg.override({"model": model_cfg.to_dict()}))
    except FileNotFoundError:
        return build_inversion_model(model_cfg)


def _steps_for(size: str, batch: int, device: torch.device) -> dict[tuple[str, str], callable]:
    cfg = InversionTrainConfig.preset(size, batch=batch)
    loss = _loss(cfg, device)
    x = random_images(batch, cfg.model.input_size, device, seed=0)
    steps = {}
    for method, model_cfg in paper_table1_configs(size).items():
        model = _model(cfg, model_cfg).to(device).train()
        steps[size, method] = training_step(model, loss, build_optimizer(cfg, model.trainable_parameters()), x)
    return steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["toy", "ffhq"], choices=["toy", "ffhq"])
    parser.add_argument("--batch", type=int, default=2, help="batch of the full-size step")
    parser.add_argument("--toy-batch", type=int, default=16, help="batch of the toy step (the toy trainer's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 0 or min(args.batch, args.toy_batch) < 1:
        parser.error("--repeats and the batches must be >= 1, --warmup and --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__} on {where}; {args.warmup} warm-up + {args.repeats} timed rounds", flush=True)
    start = time.time()
    batches = {size: args.batch for size in args.sizes} | ({"toy": args.toy_batch} if "toy" in args.sizes else {})
    calls = {}
    for size in args.sizes:
        calls.update(_steps_for(size, batches[size], device))
    samples = interleaved(calls, args.repeats, args.warmup, device,
                          progress=lambda msg: print(f"  [{time.time() - start:6.0f}s] {msg}", flush=True))
    print(f"\n{'size':6s} {'method':9s} {'batch':>5s} {'step s':>9s} {'/ pSp':>7s} {'/ w/o self':>11s}")
    for size in args.sizes:
        t = {m: median(samples[size, m]) for m in TABLE1_METHODS}
        for m in TABLE1_METHODS:
            print(f"{size:6s} {m:9s} {batches[size]:5d} {t[m]:9.3f} {t[m] / t['pSp']:7.2f} {t[m] / t['w/o self']:11.3f}")
        verdict = "within" if t["full"] <= 1.1 * t["w/o self"] else "above"
        print(f"{size}: full / w/o self = {t['full'] / t['w/o self']:.3f} ({verdict} the 1.1 goal)")
    print(f"done in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
