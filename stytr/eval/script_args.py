"""The command line that every measurement script ``python -m stytr.eval.<name>`` shares."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def measurement_args(prog: str, description: str, files: str, notebook: str, argv=None
                     ) -> tuple[argparse.Namespace, Path]:
    """Parse ``--out DIR`` or ``--ship`` (the repository's ``figures/``, which ``notebook`` reads) and
    ``--threads`` (applied here). Returns the arguments and the output folder. Giving neither
    ``--out`` nor ``--ship`` is a one-line error with exit status 2."""
    from ..checkpoints import REPO_ROOT

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="", help=f"folder for {files}")
    parser.add_argument("--ship", action="store_true", help=f"write into figures/ (what {notebook} reads)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads")
    args = parser.parse_args(argv)
    if not args.out and not args.ship:
        parser.error("give --out DIR (or --ship)")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, REPO_ROOT / "figures" if args.ship else Path(args.out)
