"""What the high-fidelity stage costs on top of the W+ encoder: CPU ms per reconstruction, one interleaved run.

    python -m stytr.benchmarks.high_fidelity [--n 16] [--repeats 3] [--stage toy]

One thread, one image at a time, process time (a busy machine disturbs it far less than wall time);
each image goes through every method in turn, so a slow spell of the machine hits them alike. Prints
ms per image and the ratio to W+ (target: high-fidelity under 2x).
"""
from __future__ import annotations

import argparse

import torch

from ..eval.high_fidelity import interleaved_ms_per_image


def main(argv=None) -> None:
    from ..domains import get_domain
    from ..models.high_fidelity import HighFidelityModel

    parser = argparse.ArgumentParser(prog="python -m stytr.benchmarks.high_fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="toyfaces")
    parser.add_argument("--stage", default=None, help="high-fidelity stage spec (default: the domain's)")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    dom = get_domain(args.domain)
    encoder = dom.load("encoder")
    hifi = HighFidelityModel(encoder, dom.load("high_fidelity", spec=args.stage)).eval()
    data = dom.labelled_dataset(args.n, 60_000, encoder.cfg.input_size)
    images = torch.stack([data[i][0] for i in range(len(data))])
    ms = interleaved_ms_per_image({"W+": lambda x: encoder(x, randomize_noise=False), "high-fidelity": hifi}, images,
                                  args.repeats)
    for name, value in ms.items():
        print(f"{name:14s} {value:7.1f} ms/image  ({value / ms['W+']:.2f}x W+)")
    print("target: high-fidelity under 2x W+")


if __name__ == "__main__":
    main()
