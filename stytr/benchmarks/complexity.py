"""Supplementary Table 1's complexity columns at full size: pSp, Style Transformer w/o self, full.

    python -m stytr.benchmarks.complexity [--repeats 3] [--warmup 1]
        [--device cpu|cuda] [--preset ffhq] [--csv runs/table1_complexity.csv] [--no-total]

Builds the three models with random weights (complexity does not depend on them; the
1024 px generator included), then prints, side by side, the encoder's parameters (with
z, without the mapping MLP), its GMACs on one 256x256 image (torch's FLOP count / 2, the
unit of the paper's "FLOPs(G)"; raw GFLOPs next to it), the median time of the encoder
alone and of encoder + generator (batch 1, interleaved round-robin so the ratios hold on a
busy machine), the ratios to pSp, and the paper's numbers (2080Ti). On CPU expect a few
minutes: each round runs six forwards, three of them through the 1024 px generator.
See :mod:`stytr.eval.complexity` for the conventions.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from stytr.eval.complexity import PAPER_TABLE1, complexity_table, format_complexity_table, paper_table1_configs, \
    write_csv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ffhq", help="InversionConfig preset (ffhq = the paper's sizes)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--no-total", action="store_true", help="skip the encoder + generator timing")
    parser.add_argument("--csv", default="", help="also write the rows to this CSV")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__} on {where}; preset {args.preset}; "
          f"{args.warmup} warm-up + {args.repeats} timed rounds, batch 1", flush=True)
    configs = paper_table1_configs(args.preset)
    size = configs["full"].input_size
    start = time.time()
    rows = complexity_table(configs, repeats=args.repeats, warmup=args.warmup,
                            device=device, reference=PAPER_TABLE1, time_total=not args.no_total,
                            progress=lambda msg: print(f"  [{time.time() - start:6.1f}s] {msg}", flush=True))
    print()
    print(format_complexity_table(rows))
    print(f"\nparams: encoder incl. z, excl. mapping MLP; GMACs = torch FLOPs / 2, encoder alone on one "
          f"{size}x{size} image; enc ms = model.encode, total ms = model(x) incl. the "
          f"{configs['full'].generator.size} px generator; medians over {args.repeats} rounds.")
    if args.csv:
        print(f"wrote {write_csv(rows, args.csv)}")
    print(f"done in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
