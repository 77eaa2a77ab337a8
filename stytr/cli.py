"""Command line: ``python -m stytr <command> [--preset NAME] [--key value ...]``.

Each command declares its own flags. Training commands take a config preset, and every field of
their config is a flag (``--lr 3e-4``, ``--model.use_self_attn false``); ``--help`` lists the
fields with the preset's values. A bad value, a missing file or an unknown name ends the command
with one line on stderr and exit status 2 (``STYTR_DEBUG=1`` shows the traceback instead).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import artifacts
from .checkpoints import CheckpointError
from .config import (Config, GeneratorTrainConfig, HighFidelityTrainConfig, InversionTrainConfig,
                     LatentClassifierTrainConfig,
                     ReferenceEditTrainConfig, ToyDistillConfig, ToyPredictorConfig)
from .domains import domain_for_preset, get_domain
from .editing import Method
from .fidelity import Fidelity
from .models.stylegan2 import convert_nvidia_pickle
from .train.for_domain import inversion_config, latent_classifier_config

__all__ = ["main", "COMMANDS", "build_parser"]

# What a user can get wrong: these become one-line errors with exit status 2 (FloatingPointError: a
# training run diverged, stopped by stytr.train.loop with its last good checkpoint kept).
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, CheckpointError, ImportError, OSError, FloatingPointError)


@dataclass
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace, Any], None]
    config: type[Config] | None = None      # its fields become flags, after --preset
    flags: list[tuple[tuple, dict]] = field(default_factory=list)
    ship: bool = False                      # --ship writes the result into data/
    resumes: bool = False                   # --restart ignores out/last.pt; --allow-changed-config
    # With --domain: adapts the preset to the domain (generator, sizes, images) before the flags apply.
    for_domain: Callable[[Any, Any], Any] | None = None


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, config=None, ship=False, resumes=False, flags=(), for_domain=None):
    def register(fn):
        COMMANDS[name] = Command(name, help, fn, config, list(flags), ship, resumes, for_domain)
        return fn
    return register


def flag(*names, **kwargs):
    return names, kwargs


# -- config fields as flags -----------------------------------------------------------------

def _config_fields(cfg: Config, prefix: str = ""):
    """(dotted name, value) of every leaf field of a config."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            yield from _config_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def _add_config_flags(parser: argparse.ArgumentParser, cfg: Config) -> list[str]:
    group = parser.add_argument_group(f"{type(cfg).__name__} fields (defaults: this preset's)")
    keys = []
    for key, value in _config_fields(cfg):
        group.add_argument(f"--{key}", dest=f"cfg:{key}", default=None, metavar="V",
                           help=f"(default: {value!r})".replace("%", "%%"))
        keys.append(key)
    return keys


def _config_from_args(cmd: Command, args: argparse.Namespace, keys: list[str]) -> Config:
    overrides = {k: getattr(args, f"cfg:{k}") for k in keys if getattr(args, f"cfg:{k}") is not None}
    cfg = cmd.config.preset(args.preset)
    domain = overrides.get("domain") or getattr(args, "domain", None)
    if domain and cmd.for_domain is not None:
        cfg = cmd.for_domain(cfg, get_domain(domain))
    return cfg.override({k: v for k, v in overrides.items()})


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    """The parser; config flags come from the preset named in ``argv`` (default ``toy``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    preset = "toy"
    for i, tok in enumerate(argv):
        if tok == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif tok.startswith("--preset="):
            preset = tok.split("=", 1)[1]
    parser = argparse.ArgumentParser(prog="python -m stytr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    config_keys = {}
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        base = cmd.config.preset(preset if preset in cmd.config.PRESETS else "toy") if cmd.config else None
        if base is None or not hasattr(base, "threads"):     # configs with a threads field set it themselves
            p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        if cmd.config is not None:
            p.add_argument("--preset", default="toy", choices=sorted(cmd.config.PRESETS), help="config preset")
        if cmd.ship:
            p.add_argument("--ship", action="store_true", help="also write the result into data/ (and figures/)")
        if cmd.resumes:
            p.add_argument("--restart", action="store_true", help="ignore out/last.pt and start afresh")
            p.add_argument("--allow-changed-config", action="store_true",
                           help="resume out/last.pt although the config differs (the new values apply)")
        for names, kwargs in cmd.flags:
            p.add_argument(*names, **kwargs)
        if base is not None:
            config_keys[cmd.name] = _add_config_flags(p, base)
    return parser, config_keys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser, keys = build_parser(argv)
    except USER_ERRORS as err:
        _fail("", err)
    args = parser.parse_args(argv)
    cmd = COMMANDS[args.command]
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        cfg = _config_from_args(cmd, args, keys[cmd.name]) if cmd.config is not None else None
        cmd.run(args, cfg)
    except USER_ERRORS as err:
        if os.environ.get("STYTR_DEBUG"):
            raise
        _fail(cmd.name, err)


def _fail(name: str, err: BaseException):
    msg = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    print(f"stytr {name}: error: {msg}".replace("  ", " ").splitlines()[0], file=sys.stderr)
    raise SystemExit(2)


# -- output safety ----------------------------------------------------------------------------

PASTED_PHOTO, ALIGNMENT_FILE = "edited_photo.png", "alignment.json"   # edit --paste-back
PASTE_FILES = (PASTED_PHOTO, ALIGNMENT_FILE)

def check_outputs(outputs, inputs, force: bool = False) -> None:
    """Refuse (unless ``force``) when an output file would replace an input file, or when two
    outputs of the run share a path."""
    seen = set()
    ins = {Path(p).expanduser().resolve() for p in inputs}
    for out in outputs:
        path = Path(out).expanduser().resolve()
        if path in seen:
            raise ValueError(f"two outputs of this run would both be written to {path}")
        seen.add(path)
        if path in ins and not force:
            raise ValueError(f"refusing to overwrite the input {path} with an output; choose another --output "
                             f"(or pass --force)")


def output_folder(path: str) -> Path:
    if not str(path).strip():
        raise ValueError("--output is empty: name a folder for the results")
    return Path(path).expanduser()


# -- commands ----------------------------------------------------------------------------------

@command("train-toy-predictor", "train the ToyFaces attribute predictor", ToyPredictorConfig, ship=True,
         resumes=True)
def _train_toy_predictor(args, cfg):
    from .train.toy_predictor import train_toy_predictor

    report = train_toy_predictor(cfg, ship=args.ship, resume=not args.restart,
                                 allow_changed_config=args.allow_changed_config)
    for name, acc in report["val_accuracy"].items():
        print(f"{name:22s} {acc:.4f}")


@command("train-toy-generator", "distil the ToyFaces renderer into a small StyleGAN2", ToyDistillConfig, ship=True,
         resumes=True)
def _train_toy_generator(args, cfg):
    from .train.toy_generator import train_toy_generator

    train_toy_generator(cfg, ship=args.ship, resume=not args.restart, allow_changed_config=args.allow_changed_config)


@command("train-generator", "train StyleGAN2 on an image folder (--data DIR --size N) or on ToyFaces renders",
         GeneratorTrainConfig, resumes=True)
def _train_generator(args, cfg):
    from .train.stylegan2 import train_generator

    trainer, loop = train_generator(cfg, resume=not args.restart, allow_changed_config=args.allow_changed_config)
    if not trainer.dist.is_main:
        return
    print(f"step {loop.step}: checkpoints (rosinality layout, g_ema inside) in {cfg.out}; "
          f"use one as a domain's generator: {Path(cfg.out) / 'final.pt'}")
    if "frechet" in loop.metrics:
        print(f"Fréchet distance in the {cfg.judge!r} judge's features: {loop.metrics['frechet']:.3f}")
    if cfg.data == "toyfaces" and cfg.size == 64:
        from .toy.generator import compare_generators

        judge = artifacts.load("predictor", cfg.judge or "toy")
        rows = compare_generators({"trained (g_ema)": trainer.g_ema.eval(),
                                   "shipped distilled": artifacts.load("generator", "toy")}, judge)
        print(f"{'generator':20s} {'frechet':>8s} {'rate_gap':>8s} {'agreement':>9s} {'confident':>9s}")
        for r in rows:
            print(f"{r['generator']:20s} {r['frechet']:8.3f} {r['rate_gap']:8.3f} {r['agreement']:9.3f} "
                  f"{r['confident']:9.3f}")


@command("train-inversion", "train an inversion encoder (Style Transformer, w/o self, pSp, e4e); "
         "--domain NAME|FILE trains it for that domain's generator and images",
         InversionTrainConfig, ship=True, resumes=True, for_domain=inversion_config)
def _train_inversion(args, cfg):
    from .train.inversion import train_inversion

    trainer = train_inversion(cfg, resume=not args.restart, ship=args.ship,
                              allow_changed_config=args.allow_changed_config)
    if trainer.dist.is_main and trainer.history:
        last = trainer.history[-1]
        print(f"step {last['step']}: held-out MSE {last['val_l2']:.4f}; checkpoints in {cfg.out}")


@command("ablation", "Table 1 on ToyFaces: train and compare pSp, w/o self and the full model",
         InversionTrainConfig, ship=True)
def _ablation(args, cfg):
    from .checkpoints import REPO_ROOT
    from .train.ablation import ablation_table, train_ablation, write_table

    if cfg.out == InversionTrainConfig.preset(args.preset).out:
        cfg = cfg.override({"out": "runs/toy_ablation"})
    models = train_ablation(cfg, ship=args.ship)
    held_out = get_domain(cfg.domain).labelled_dataset(cfg.n_val, cfg.seed + 20_000, cfg.model.input_size)
    images = torch.stack([held_out[i][0] for i in range(len(held_out))])
    rows = ablation_table(models, images, predictor=get_domain(cfg.domain).load("predictor"))
    folder = REPO_ROOT / "figures" if args.ship else Path(cfg.out)   # tracked figures only when shipping
    write_table(rows, folder / "table1_toyfaces.csv", folder / "table1_toyfaces.png")
    for r in rows:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


@command("ablation-seeds", "score several seeds' ablation runs on one held-out set: Table 1 with intervals",
         ship=True, flags=[
             flag("--runs", nargs="*", default=[], help="finished `ablation` run folders (one per seed)"),
             flag("--shipped-seed", dest="shipped_seed", type=int, default=None,
                  help="also score the shipped toy-psp/-wo-self/-full encoders as this seed (they are seed 0)"),
             flag("--out", default="", help="folder for table1_toyfaces_seeds.csv (and the learning curves)")])
def _ablation_seeds(args, cfg):
    from .checkpoints import REPO_ROOT
    from .train.ablation import CURVES_CSV, SEEDS_CSV, evaluate_seeds, run_curves, seed_report, write_table

    if not args.ship and not args.out:
        raise ValueError("give --out DIR (or --ship to write figures/)")
    rows = evaluate_seeds(args.runs, shipped_seed=args.shipped_seed)
    curves = [row for run in args.runs for row in run_curves(run)]
    folder = REPO_ROOT / "figures" if args.ship else Path(args.out)
    write_table(rows, folder / SEEDS_CSV)
    if curves:
        write_table(curves, folder / CURVES_CSV)
    print(seed_report(rows))
    print(f"per-seed metrics -> {folder / SEEDS_CSV}" + (f"; learning curves -> {folder / CURVES_CSV}" if curves else ""))


@command("train-latent-classifier", "invert labelled images, then train the W+ attribute classifier",
         LatentClassifierTrainConfig, ship=True, resumes=True, for_domain=latent_classifier_config, flags=[
             flag("--encoder", default=None, help="inversion model spec (default: the domain's)"),
             flag("--domain", default=None, help="domain whose labelled images to invert: a registered name or a "
                                                 "domain file (default: the preset's)"),
             flag("--n", type=int, default=20000, help="synthetic domains: faces to render and invert")])
def _train_latent_classifier(args, cfg):
    from .checkpoints import save_atomic
    from .inference import labelled_codes
    from .train.latent_classifier import train_latent_classifier

    dom = get_domain(args.domain) if args.domain else domain_for_preset(args.preset)
    model = dom.load("encoder", spec=args.encoder)
    if args.n <= 0:
        raise ValueError(f"--n must be a positive number of faces, got {args.n}")
    wplus, labels, mask = labelled_codes(dom, model, n=args.n)
    codes_path = save_atomic({"latents": wplus, "labels": labels, "mask": mask}, Path(cfg.out) / "codes.pt")
    result = train_latent_classifier(wplus, labels, mask, cfg, out_dir=cfg.out, resume=not args.restart,
                                     allow_changed_config=args.allow_changed_config,
                                     attribute_names=list(dom.attributes))
    print(f"W+ codes: {codes_path}")
    if args.ship:
        art = artifacts.find("classifier", args.preset)
        if art is None:
            raise ValueError(f"--ship writes a registered classifier into data/; preset {args.preset!r} has none")
        print(f"shipped to {artifacts.export('classifier', result.model, art.path, {'command': art.command})}")
    for name, acc in result.accuracy.items():
        print(f"{name:22s} {acc:.4f}")


@command("train-reference-editor", "train the reference-editing transformer on W+ codes",
         ReferenceEditTrainConfig, ship=True, resumes=True)
def _train_reference_editor(args, cfg):
    from .train.reference_editing import train_reference_editor

    result = train_reference_editor(cfg, ship=args.ship, resume=not args.restart,
                                    allow_changed_config=args.allow_changed_config)
    m = result.metrics
    if m:
        print(f"step {result.steps} [{result.attribute}]: transfer {m['transfer_rate']:.3f} "
              f"(changing pairs {m['transfer_rate_changing']:.3f}, n={m['n_changing']}), "
              f"keep {m['keep_rate']:.3f}; checkpoint {result.checkpoint}")
    else:
        print(f"step {result.steps}: no held-out codes to evaluate; checkpoint {result.checkpoint}")
    if result.shipped:
        print(f"shipped {result.shipped}")


_FIDELITY_FLAGS = [
    flag("--refine", default=str(Fidelity.WPLUS), choices=["none"] + [str(f) for f in Fidelity],
         help="beyond W+: 'high-fidelity' (the residual stage) or 'pti' (pivotal tuning of a generator copy)"),
    flag("--steps", type=int, default=None, help="PTI steps per image (default: the domain's PTIConfig)"),
    flag("--stage", default=None, help="high-fidelity stage spec (default: the domain's)")]


def _refined_model(dom, model, args):
    """The inversion model, or it wrapped for --refine (the shipped generator is never modified)."""
    from .config import PTIConfig
    from .fidelity import PTIModel
    from .losses import domain_perceptual
    from .models.high_fidelity import HighFidelityModel

    fidelity = Fidelity.parse(args.refine)
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if fidelity is Fidelity.HIGH:
        return HighFidelityModel(model, dom.load("high_fidelity", args.device, spec=args.stage))
    if fidelity is Fidelity.PTI:
        cfg = PTIConfig.for_domain(dom)
        return PTIModel(model, cfg, domain_perceptual(dom).to(args.device), steps=args.steps, progress=True)
    return model


@command("invert", "invert images with a trained encoder (optionally beyond W+: --refine)", flags=[
    flag("--checkpoint", required=True, help="inversion model: a registered name ('toy') or a file"),
    flag("--input", required=True, help="an image file or a folder of images"),
    flag("--output", required=True, help="output folder (never scanned as input)"),
    flag("--domain", default="toyfaces", help="domain of the weights (its stage and perceptual distance)"),
    *_FIDELITY_FLAGS,
    flag("--force", action="store_true", help="allow outputs inside the input folder"),
    flag("--compile", action="store_true", help="run the model under torch.compile (minutes to compile; "
         "pays for large folders)"),
    flag("--device", default="cpu")])
def _invert(args, cfg):
    from .inference import invert_files

    dom = get_domain(args.domain)
    if args.compile and Fidelity.parse(args.refine) is Fidelity.PTI:
        raise ValueError("--compile works with --refine w+ or high-fidelity (PTI tunes a new generator per image)")
    model = _refined_model(dom, artifacts.load("encoder", args.checkpoint, args.device), args)
    report = invert_files(model, args.input, output_folder(args.output), force=args.force, compile=args.compile)
    for path, why in report["skipped"]:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(f"inverted {report['n']} image(s) ({Fidelity.parse(args.refine)}), mean MSE {report['mse']:.4f} "
          f"-> {report['output']}")


@command("edit", "invert a photo and edit an attribute (label, InterFaceGAN, StyleSpace or reference)", flags=[
    flag("--domain", default="toyfaces", help="domain of the weights: toyfaces, ffhq, or a domain file (.json)"),
    flag("--checkpoint", default=None, help="inversion model spec (default: the domain's)"),
    flag("--input", required=True, help="the photo to edit"),
    flag("--output", required=True, help="output folder"),
    flag("--attribute", action="append", help="attribute to edit (repeatable; default Smiling)"),
    flag("--alpha", action="append", help="signed strength per --attribute: + toward presence, - toward absence "
                                          "(default: the domain's EditingConfig)"),
    flag("--method", default=str(Method.LABEL_1), choices=[str(m) for m in Method if m is not Method.REFERENCE],
         help="latent editing method"),
    flag("--classifier", default=None, help="latent classifier spec (label methods; default: the domain's)"),
    flag("--interfacegan", help="InterFaceGAN boundaries (InterFaceGAN.save), for --method interfacegan"),
    flag("--stylespace", help="StyleSpace statistics (StyleSpace.save), for --method stylespace"),
    flag("--reference", help="reference photo: transfer --attribute from it (uses --editor)"),
    flag("--editor", help="reference-editing EditTransformer spec for --attribute ('toy' = shipped)"),
    flag("--align", action="store_true", help="FFHQ-align the photos first: the most confident face (dlib, from "
                                              "pip install -e \".[align]\")"),
    flag("--all-faces", action="store_true", help="with --align: edit every detected face (out/face<i>/)"),
    flag("--paste-back", action="store_true", help=f"with --align: write the edit back into the photo at full "
                                                   f"resolution ({PASTED_PHOTO}, {ALIGNMENT_FILE})"),
    flag("--feather", type=float, default=0.1, help="paste-back: soft edge of the face disc, fraction of the crop"),
    flag("--landmarks", help="another dlib 68-point landmark model than the bundled one (with --align)"),
    *_FIDELITY_FLAGS,
    flag("--force", action="store_true", help="allow outputs to replace input files"),
    flag("--device", default="cpu")])
def _edit(args, cfg):
    from .data.align import detect_and_align, open_photo
    from .editing.session import EditSession

    dom = get_domain(args.domain)
    method = Method.parse(args.method)
    attributes = args.attribute or ["Smiling" if "Smiling" in dom.modelled else dom.modelled[0]]
    out = output_folder(args.output)
    inputs = [args.input] + ([args.reference] if args.reference else [])
    for p in inputs:
        if not Path(p).expanduser().is_file():
            raise FileNotFoundError(f"input photo not found: {Path(p).expanduser()}")
    if (args.paste_back or args.all_faces) and not args.align:
        raise ValueError(f"--{'paste-back' if args.paste_back else 'all-faces'} needs --align (faces are found by "
                         f"the alignment)")
    if not 0.0 <= args.feather <= 0.5:
        raise ValueError(f"--feather is a fraction of the crop side in [0, 0.5], got {args.feather}")
    check_outputs([out / n for n in EditSession.OUTPUT_FILES + PASTE_FILES], inputs, force=args.force)
    label = method.order is not None
    session = EditSession.for_domain(
        dom, encoder=args.checkpoint, classifier=(args.classifier or None) if label else False,
        interfacegan=args.interfacegan if method is Method.INTERFACEGAN else None,
        stylespace=args.stylespace if method is Method.STYLESPACE else None,
        reference_editors={attributes[0]: args.editor or dom.reference_editors.get(attributes[0])}
        if args.reference else None, device=args.device,
        high_fidelity=(args.stage or True) if Fidelity.parse(args.refine) is Fidelity.HIGH else None,
        fidelity=Fidelity.parse(args.refine), pti_steps=args.steps)
    if method is Method.INTERFACEGAN and not args.interfacegan:
        raise ValueError("--method interfacegan needs --interfacegan (a file written by InterFaceGAN.save)")
    if method is Method.STYLESPACE and not args.stylespace:
        raise ValueError("--method stylespace needs --stylespace (a file written by StyleSpace.save)")
    edits = None
    if not args.reference:
        alphas = args.alpha or [session.default_strength(method, a) for a in attributes]
        if len(alphas) == 1 and len(attributes) > 1:
            alphas = alphas * len(attributes)
        if len(alphas) != len(attributes):
            raise ValueError(f"{len(attributes)} --attribute but {len(alphas)} --alpha values")
        edits = {a: s for a, s in zip(attributes, alphas)}

    def edit_current(folder: Path) -> str:
        if args.reference:
            session.reference_edit(Path(args.reference).expanduser(), attributes[0], align=args.align,
                                   landmarks=args.landmarks)
            what = f"reference {attributes[0]}"
        else:
            session.render(edits, method=method)
            what = f"{method} {dict(session.result.edits)}"
        session.save(folder)
        mse = ((session.image - session.reconstruction) ** 2).mean().item()
        return f"edited ({what}); reconstruction MSE {mse:.4f} -> {folder}"

    if not args.align:
        session.set_image(Path(args.input).expanduser())
        print(edit_current(out))
        return
    photo = open_photo(args.input)
    faces = detect_and_align(photo, output_size=session.size, all_faces=args.all_faces, name=str(args.input),
                             predictor_path=args.landmarks)
    if args.all_faces:
        check_outputs([out / f"face{i}" / n for i in range(len(faces)) for n in EditSession.OUTPUT_FILES], inputs,
                      force=args.force)
    pasted = photo
    for i, face in enumerate(faces):
        session.set_face(photo, face)
        print(f"face {i}: box {tuple(round(v) for v in face.face.bbox)}, detector score {face.face.score:.2f}; "
              + edit_current(out / f"face{i}" if args.all_faces else out))
        if args.paste_back:
            pasted = session.paste_back(pasted, feather=args.feather)
    if args.paste_back:
        out.mkdir(parents=True, exist_ok=True)
        pasted.save(out / PASTED_PHOTO)
        (out / ALIGNMENT_FILE).write_text(json.dumps([f.to_dict() for f in faces], indent=1))
        print(f"pasted {len(faces)} face(s) back into the {photo.size[0]}x{photo.size[1]} photo -> "
              f"{out / PASTED_PHOTO}")


@command("train-high-fidelity", "train the high-fidelity stage (residual features beyond W+) on a frozen encoder",
         HighFidelityTrainConfig, ship=True, resumes=True)
def _train_high_fidelity(args, cfg):
    from .train.high_fidelity import train_high_fidelity

    result = train_high_fidelity(cfg, resume=not args.restart, ship=args.ship,
                                 allow_changed_config=args.allow_changed_config)
    m = result["metrics"]
    if m:
        print(f"step {result['step']}: held-out MSE {m['mse']:.4f} (W+ {m['mse_wplus']:.4f}), edited pairs "
              f"{m['mse_edited']:.4f}; checkpoints in {cfg.out}")
    if result["shipped"]:
        print(f"shipped the best held-out stage to {result['shipped']}")


@command("high-fidelity-table", "ToyFaces table: W+ vs the high-fidelity stage vs PTI (quality, edits, cost)",
         flags=[flag("--domain", default="toyfaces"), flag("--n", type=int, default=300, help="held-out faces"),
                flag("--pti-n", type=int, default=30, help="faces PTI tunes a generator for (a subset: it is slow)"),
                flag("--steps", type=int, default=None, help="PTI steps (default: the domain's PTIConfig)"),
                flag("--stage", default=None, help="high-fidelity stage spec (default: the domain's)"),
                flag("--out", default="runs/high_fidelity_table", help="output folder (--ship: figures/)"),
                flag("--ship", action="store_true", help="write the table into figures/")])
def _high_fidelity_table(args, cfg):
    from .checkpoints import REPO_ROOT
    from .eval.high_fidelity import fidelity_table, write_fidelity_table

    if args.n <= 0 or args.pti_n < 0 or args.pti_n > args.n:
        raise ValueError(f"need --n > 0 and 0 <= --pti-n <= --n, got {args.n} and {args.pti_n}")
    dom = get_domain(args.domain)
    stage = dom.load("high_fidelity", spec=args.stage)
    table = fidelity_table(dom, n=args.n, pti_n=args.pti_n, pti_steps=args.steps, high_fidelity=stage)
    table["settings"]["command"] = "python -m stytr high-fidelity-table " + " ".join(sys.argv[2:])
    folder = REPO_ROOT / "figures" if args.ship else Path(args.out)
    paths = write_fidelity_table(table, folder / "table_high_fidelity.csv", folder / "table_high_fidelity.png",
                                 folder / "table_high_fidelity.json")
    for r in table["rows"]:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    print("wrote " + ", ".join(map(str, paths)))


@command("convert-nvidia", "convert a StyleGAN2-ADA network-snapshot-*.pkl into a rosinality-layout .pt "
         "(the snapshot is read without running its code)", flags=[
             flag("snapshot", help="NVIDIA StyleGAN2-ADA network-snapshot-*.pkl"),
             flag("out", help="rosinality-layout checkpoint to write ({'g_ema', 'latent_avg'})")])
def _convert_nvidia(args, cfg):
    info = convert_nvidia_pickle(args.snapshot, args.out)
    print(info)
    print(f"wrote the rosinality-layout generator to {args.out}")
