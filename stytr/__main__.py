"""Command line: ``python -m stytr <command> [--preset NAME] [--key value ...]``.

Every training command takes a config preset and dotted overrides of its fields,
e.g. ``python -m stytr train-inversion --preset toy --steps 500 --optim.lr 3e-4``.
Run ``python -m stytr <command> --help`` for a command's own flags.
"""
from __future__ import annotations

import argparse
import sys


def _config_overrides(extra: list[str]) -> list[str]:
    """``--a.b 1 --c=2`` -> ["a.b=1", "c=2"]."""
    out, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise SystemExit(f"unexpected argument {tok!r}: config overrides look like --key value")
        if "=" in tok:
            out.append(tok[2:])
            i += 1
        else:
            if i + 1 >= len(extra):
                raise SystemExit(f"{tok} needs a value")
            out.append(f"{tok[2:]}={extra[i + 1]}")
            i += 2
    return out


def _torch_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_train_toy_predictor(args, extra):
    from .config import ToyPredictorConfig
    from .train.toy_predictor import train_toy_predictor

    cfg = ToyPredictorConfig.preset(args.preset).override(_config_overrides(extra))
    report = train_toy_predictor(cfg, ship=args.ship)
    for name, acc in report["val_accuracy"].items():
        print(f"{name:22s} {acc:.4f}")


def cmd_train_toy_generator(args, extra):
    from .config import ToyDistillConfig
    from .train.toy_generator import train_toy_generator

    cfg = ToyDistillConfig.preset(args.preset).override(_config_overrides(extra))
    train_toy_generator(cfg, ship=args.ship)


def cmd_train_inversion(args, extra):
    from .config import InversionTrainConfig
    from .train.inversion import train_inversion

    cfg = InversionTrainConfig.preset(args.preset).override(_config_overrides(extra))
    trainer = train_inversion(cfg, resume=not args.restart)
    if trainer.dist.is_main and trainer.history:
        last = trainer.history[-1]
        print(f"step {last['step']}: held-out MSE {last['val_l2']:.4f}; checkpoints in {cfg.out}")


def cmd_invert(args, extra):
    from .inference import invert_files, load_inversion_model

    if extra:
        raise SystemExit(f"unexpected arguments {extra}")
    model = load_inversion_model(args.checkpoint, device=args.device)
    report = invert_files(model, args.input, args.output)
    print(f"inverted {report['n']} image(s), mean MSE {report['mse']:.4f} -> {report['output']}")


COMMANDS = {
    "train-toy-predictor": (cmd_train_toy_predictor, "train the ToyFaces attribute predictor"),
    "train-toy-generator": (cmd_train_toy_generator, "distil the ToyFaces renderer into a small StyleGAN2"),
    "train-inversion": (cmd_train_inversion, "train an inversion encoder (Style Transformer, w/o self, pSp)"),
    "invert": (cmd_invert, "invert images with a trained encoder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stytr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        if name.startswith("train"):
            p.add_argument("--preset", default="toy", help="config preset (toy, ffhq, smoke)")
            if "toy" in name:
                p.add_argument("--ship", action="store_true", help="also write the result into data/")
            else:
                p.add_argument("--restart", action="store_true", help="ignore out/last.pt and start afresh")
        if name == "invert":
            p.add_argument("--checkpoint", required=True, help="encoder checkpoint, or 'toy' for the shipped one")
            p.add_argument("--input", required=True, help="an image file or a folder of images")
            p.add_argument("--output", required=True, help="output folder")
            p.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _torch_threads(args.threads)
    COMMANDS[args.command][0](args, extra)


if __name__ == "__main__":
    main(sys.argv[1:])
