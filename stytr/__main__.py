"""Command line: ``python -m stytr <command> [--preset NAME] [--key value ...]``.

Every training command takes a config preset and dotted overrides of its fields,
e.g. ``python -m stytr train-inversion --preset toy --steps 500 --lr 3e-4``.
Run ``python -m stytr <command> --help`` for a command's own flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    from .models.style_transformer import InversionModel
    from .train.inversion import train_inversion

    cfg = InversionTrainConfig.preset(args.preset).override(_config_overrides(extra))
    trainer = train_inversion(cfg, resume=not args.restart)
    if trainer.dist.is_main and trainer.history:
        last = trainer.history[-1]
        print(f"step {last['step']}: held-out MSE {last['val_l2']:.4f}; checkpoints in {cfg.out}")
    if args.ship and trainer.dist.is_main:
        from .checkpoints import data_dir
        from .toy.encoder import ENCODER_FILE, export_encoder

        best = InversionModel.from_checkpoint(Path(cfg.out) / "best.pt")
        path = export_encoder(best, data_dir() / ENCODER_FILE, {
            "steps": trainer.step, "command": f"python -m stytr train-inversion --preset {args.preset} --ship"})
        print(f"shipped the best held-out model to {path}")


def cmd_invert(args, extra):
    from .inference import invert_files, load_inversion_model

    if extra:
        raise SystemExit(f"unexpected arguments {extra}")
    model = load_inversion_model(args.checkpoint, device=args.device)
    report = invert_files(model, args.input, args.output)
    print(f"inverted {report['n']} image(s), mean MSE {report['mse']:.4f} -> {report['output']}")


def cmd_edit(args, extra):
    from .editing.session import edit_photo

    if extra:
        raise SystemExit(f"unexpected arguments {extra}")
    try:
        report = edit_photo(args.checkpoint, args.input, args.output, attributes=args.attribute or ["Smiling"],
                            alphas=args.alpha or [3.0], order=args.order, method=args.method,
                            classifier=args.classifier, interfacegan=args.interfacegan, stylespace=args.stylespace,
                            reference=args.reference, editor=args.editor, align=args.align,
                            landmarks=args.landmarks, device=args.device)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:  # missing files, bad names, no dlib
        raise SystemExit(f"stytr edit: error: {err}") from err
    what = report["method"] if report["method"] == "reference" else f"{report['method']} {report['edits']}"
    print(f"edited ({what}); reconstruction MSE {report['reconstruction_mse']:.4f} -> {report['output']}")


def cmd_train_reference_editor(args, extra):
    from .train.reference_editing import cmd_train_reference_editor as run

    run(args, extra)


def cmd_train_latent_classifier(args, extra):
    import torch

    from .config import LatentClassifierTrainConfig
    from .inference import labelled_codes, load_inversion_model
    from .train.latent_classifier import train_latent_classifier

    cfg = LatentClassifierTrainConfig.preset(args.preset).override(_config_overrides(extra))
    model = load_inversion_model(args.encoder)
    wplus, labels, mask = labelled_codes(args.preset, model, n=args.n, image_dir=args.images, attr_file=args.attr_file)
    codes_path = Path(cfg.out) / "codes.pt"
    codes_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": wplus, "labels": labels, "mask": mask}, codes_path)
    result = train_latent_classifier(wplus, labels, mask, cfg, out_dir=cfg.out)
    print(f"W+ codes: {codes_path}")
    if args.ship:
        from .checkpoints import data_dir
        from .editing.session import TOY_CLASSIFIER_FILE
        from .train.latent_classifier import export_safetensors

        print(f"shipped to {export_safetensors(result.model, data_dir() / TOY_CLASSIFIER_FILE)}")
    for name, acc in result.accuracy.items():
        print(f"{name:22s} {acc:.4f}")


def cmd_ablation(args, extra):
    from .checkpoints import REPO_ROOT
    from .config import InversionTrainConfig
    from .toy import ToyFacesDataset, load_attribute_predictor
    from .train.ablation import ablation_table, train_ablation, write_table

    base = InversionTrainConfig.preset(args.preset, out="runs/toy_ablation").override(_config_overrides(extra))
    models = train_ablation(base, ship=args.ship)
    held_out = ToyFacesDataset(base.n_val, seed=base.seed + 20_000, size=base.model.input_size)
    rows = ablation_table(models, held_out.images, predictor=load_attribute_predictor())
    write_table(rows, REPO_ROOT / "figures" / "table1_toyfaces.csv", REPO_ROOT / "figures" / "table1_toyfaces.png")
    for r in rows:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


def cmd_ablation_seeds(args, extra):
    from .checkpoints import REPO_ROOT, CheckpointError
    from .train.ablation import CURVES_CSV, SEEDS_CSV, evaluate_seeds, run_curves, seed_report, write_table

    problem = f"unexpected arguments {extra}" if extra else "" if args.ship or args.out else \
        "give --out DIR (or --ship to write figures/)"
    if problem:
        print(f"stytr ablation-seeds: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    try:
        rows = evaluate_seeds(args.runs, shipped_seed=args.shipped_seed)
        curves = [row for run in args.runs for row in run_curves(run)]
    except (OSError, ValueError, KeyError, CheckpointError) as err:
        print(f"stytr ablation-seeds: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    folder = REPO_ROOT / "figures" if args.ship else Path(args.out)
    write_table(rows, folder / SEEDS_CSV)
    if curves:
        write_table(curves, folder / CURVES_CSV)
    print(seed_report(rows))
    print(f"per-seed metrics -> {folder / SEEDS_CSV}" + (f"; learning curves -> {folder / CURVES_CSV}" if curves else ""))


COMMANDS = {
    "train-toy-predictor": (cmd_train_toy_predictor, "train the ToyFaces attribute predictor"),
    "train-toy-generator": (cmd_train_toy_generator, "distil the ToyFaces renderer into a small StyleGAN2"),
    "train-inversion": (cmd_train_inversion, "train an inversion encoder (Style Transformer, w/o self, pSp)"),
    "invert": (cmd_invert, "invert images with a trained encoder"),
    "ablation": (cmd_ablation, "Table 1 on ToyFaces: train and compare pSp, w/o self and the full model"),
    "ablation-seeds": (cmd_ablation_seeds, "score several seeds' ablation runs on one held-out set: Table 1 with intervals"),
    "train-latent-classifier": (cmd_train_latent_classifier, "invert labelled images, then train the W+ attribute classifier"),
    "train-reference-editor": (cmd_train_reference_editor, "train the reference-editing transformer on W+ codes"),
    "edit": (cmd_edit, "invert a photo and edit an attribute (label, InterFaceGAN, StyleSpace or reference)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stytr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        if name.startswith("train") or name == "ablation":
            p.add_argument("--preset", default="toy", help="config preset (toy, ffhq, smoke)")
            p.add_argument("--ship", action="store_true", help="also write the (toy) result into data/")
            if "toy" not in name and name != "ablation":
                p.add_argument("--restart", action="store_true", help="ignore out/last.pt and start afresh")
        if name == "train-latent-classifier":
            p.add_argument("--encoder", default="toy", help="inversion checkpoint, or 'toy' for the shipped encoder")
            p.add_argument("--n", type=int, default=20000, help="toy preset: faces to render and invert")
            p.add_argument("--images", default="", help="full scale: folder of aligned CelebA-HQ images")
            p.add_argument("--attr-file", dest="attr_file", default="", help="full scale: list_attr_celeba.txt")
        if name == "ablation-seeds":
            p.add_argument("--runs", nargs="*", default=[], help="finished `ablation` run folders (one per seed)")
            p.add_argument("--shipped-seed", dest="shipped_seed", type=int, default=None,
                           help="also score the shipped data/toyfaces_ablation_* encoders as this seed (they are seed 0)")
            p.add_argument("--out", default="", help="folder for table1_toyfaces_seeds.csv")
            p.add_argument("--ship", action="store_true", help="write the CSV into figures/ instead")
        if name == "invert":
            p.add_argument("--checkpoint", required=True, help="encoder checkpoint, or 'toy' for the shipped one")
            p.add_argument("--input", required=True, help="an image file or a folder of images")
            p.add_argument("--output", required=True, help="output folder")
            p.add_argument("--device", default="cpu")
        if name == "edit":
            p.add_argument("--checkpoint", required=True, help="inversion checkpoint, or 'toy' for the shipped one")
            p.add_argument("--input", required=True, help="the photo to edit")
            p.add_argument("--output", required=True, help="output folder")
            p.add_argument("--attribute", action="append", help="attribute to edit (repeatable; default Smiling)")
            p.add_argument("--alpha", action="append", type=float,
                           help="signed strength per --attribute: + toward presence, - toward absence (default 3)")
            p.add_argument("--order", default="1", choices=["1", "2", "hvp"], help="label-editing order")
            p.add_argument("--method", default="ours", choices=["ours", "interfacegan", "stylespace"])
            p.add_argument("--classifier", help="latent classifier checkpoint, or 'toy' (needed by --method ours)")
            p.add_argument("--interfacegan", help="InterFaceGAN boundaries (InterFaceGAN.save) for that method")
            p.add_argument("--stylespace", help="StyleSpace statistics (StyleSpace.save) for that method")
            p.add_argument("--reference", help="reference photo: transfer --attribute from it (needs --editor)")
            p.add_argument("--editor", help="reference-editing EditTransformer checkpoint for --attribute, or 'toy' (shipped ToyFaces editor)")
            p.add_argument("--align", action="store_true", help="FFHQ-align the photos first (dlib)")
            p.add_argument("--landmarks", help="dlib shape_predictor_68_face_landmarks.dat (with --align)")
            p.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _torch_threads(args.threads)
    COMMANDS[args.command][0](args, extra)


if __name__ == "__main__":
    main(sys.argv[1:])
