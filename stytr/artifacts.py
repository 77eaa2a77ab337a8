"""Every weight file stytr knows, and the one way to load it: :func:`load(kind, spec, device) <load>`.

``spec`` is one of

* a registered name (``"toy"``, ``"ffhq"``, ``"toy-psp"`` ...; see :data:`ARTIFACTS`): a file we
  ship in ``data/`` or a published file the user puts in ``pretrained_models/``;
* a path: our checkpoint (``.pt``) or export (``.safetensors``), an authors' release, a
  rosinality StyleGAN2 ``.pt``, an NVIDIA StyleGAN2-ADA ``.pkl`` (tensors only, no code runs);
* an already built ``torch.nn.Module``, returned as it is (on ``device``).

This module is the only place that maps names to files. The kinds are ``generator``,
``encoder`` (an inversion model with its generator), ``classifier`` (the latent classifier),
``reference_editor``, ``predictor`` (an image-space attribute judge), ``interfacegan`` and
``stylespace``. :func:`export` writes our ``.safetensors`` formats (fp16 weights, the config as
JSON metadata, plus the command that made the file).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .attributes import attribute_name
from .checkpoints import CheckpointError, data_dir, load_state_strict, load_weights, save_weights
from .config import EditTransformerConfig, GeneratorConfig, InversionConfig
from .editing.interfacegan import InterFaceGAN
from .editing.stylespace import StyleSpace
from .models.edit_transformer import EditTransformer
from .models.inversion import InversionModel, build_inversion_model
from .models.latent_classifier import LatentClassifier
from .models.stylegan2 import Generator, generator_kwargs_from_state, load_nvidia_pickle, load_rosinality_generator
from .toy.predictor import AttributePredictor

__all__ = ["Artifact", "ARTIFACTS", "KINDS", "load", "resolve", "export", "find", "pretrained_dir"]

KINDS = ("generator", "encoder", "classifier", "reference_editor", "predictor", "interfacegan", "stylespace")


@dataclass(frozen=True)
class Artifact:
    """One known weight file. ``shipped`` files live in ``data/``; the others are published files
    that the user downloads into :func:`pretrained_dir` (``source`` says where from)."""

    name: str
    kind: str
    file: str
    command: str = ""                 # the command that reproduces a shipped file
    variant: str = ""                 # reference editors: the attribute they edit
    shipped: bool = True
    source: str = ""                  # published files: where to get them
    requires: tuple = ()              # (kind, name) pairs that a block-only file is reassembled with

    @property
    def path(self) -> Path:
        return (data_dir() if self.shipped else pretrained_dir()) / self.file

    def missing_message(self) -> str:
        if self.shipped:
            return (f"the shipped {self.kind} {self.name!r} is missing: expected {self.path} (part of the repository; "
                    f"{self.command} writes it, or set STYTR_DATA to the folder that holds it)")
        return (f"{self.kind} {self.name!r} needs {self.file}: put it in {self.path.parent}/ (get it from "
                f"{self.source}; or set STYTR_PRETRAINED to the folder that holds it)")


_TOY_DEPS = (("generator", "toy"), ("classifier", "toy"))

ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("toy", "predictor", "toyfaces_attribute_predictor.safetensors",
             "python -m stytr train-toy-predictor --preset toy --ship"),
    Artifact("toy", "generator", "toyfaces_generator.safetensors",
             "python -m stytr train-toy-generator --preset toy --ship"),
    Artifact("toy", "encoder", "toyfaces_style_transformer.safetensors",
             "python -m stytr train-inversion --preset toy --ship"),
    Artifact("toy-psp", "encoder", "toyfaces_ablation_psp.safetensors", "python -m stytr ablation --preset toy --ship"),
    Artifact("toy-wo-self", "encoder", "toyfaces_ablation_wo_self.safetensors",
             "python -m stytr ablation --preset toy --ship"),
    Artifact("toy-full", "encoder", "toyfaces_ablation_full.safetensors", "python -m stytr ablation --preset toy --ship"),
    Artifact("toy", "classifier", "toyfaces_latent_classifier.safetensors",
             "python -m stytr train-latent-classifier --preset toy --ship"),
    *(Artifact("toy", "reference_editor", f"toyfaces_reference_editor_{a.lower()}.safetensors",
               f"python -m stytr train-reference-editor --preset toy --attribute {a} --ship", variant=a,
               requires=_TOY_DEPS) for a in ("Bangs", "Smiling", "Male")),
    # Trained with the optional mode-seeking term (issue 18); the published-loss editors above stay the default.
    *(Artifact("toy-mode-seeking", "reference_editor", f"toyfaces_reference_editor_{a.lower()}_mode_seeking.safetensors",
               f"python -m stytr train-reference-editor --preset toy --attribute {a} --mode_seeking 1 --ship "
               f"(codes: `python -m stytr train-latent-classifier --preset toy --n 8000`)",
               variant=a, requires=_TOY_DEPS) for a in ("Bangs", "Smiling", "Male")),
    Artifact("ffhq", "generator", "stylegan2-ffhq-config-f.pt", shipped=False,
             source="rosinality/stylegan2-pytorch (converted from NVIDIA's FFHQ config-f)"),
    Artifact("ffhq", "encoder", "style_transformer_ffhq.pt", shipped=False,
             source="sapphire497/style-transformer (the authors' inversion release)"),
    Artifact("ffhq", "classifier", "latent_classifier_ffhq.pt", shipped=False,
             source="python -m stytr train-latent-classifier --preset ffhq --domain ffhq --images CELEBA_HQ "
                    "--attr-file list_attr_celeba.txt (copy out/latent_classifier.pt here)"),
    *(Artifact("ffhq", "reference_editor", f"reference_editor_ffhq_{a.lower()}.pt", variant=a, shipped=False,
               source=f"python -m stytr train-reference-editor --preset ffhq --attribute {a} (copy out/final.pt "
                      f"here)") for a in ("Bangs", "Smiling", "Male")),
)


def pretrained_dir() -> Path:
    """Where published weights go: ``$STYTR_PRETRAINED`` or ``./pretrained_models``."""
    return Path(os.environ.get("STYTR_PRETRAINED", "pretrained_models"))


def find(kind: str, name: str, variant: str = "") -> Artifact | None:
    """The registered artefact of this kind and name (and variant, for reference editors)."""
    for art in ARTIFACTS:
        if art.kind == kind and art.name == name and (not art.variant or _same(art.variant, variant)):
            return art
    return None


def _same(a: str, b: str) -> bool:
    return bool(b) and a.lower() == str(b).lower()


def resolve(kind: str, spec, variant: str = "") -> Path:
    """The file behind ``spec``: a registered name's file (which must exist) or a path."""
    if kind not in KINDS:
        raise ValueError(f"unknown artefact kind {kind!r}; choose one of {KINDS}")
    if spec is None or str(spec) == "":
        raise ValueError(f"no {kind} given: pass a registered name ({_names(kind)}) or a file path")
    art = find(kind, str(spec), variant)
    if art is not None:
        if not art.path.is_file():
            raise CheckpointError(art.missing_message())
        return art.path
    if any(a.kind == kind and a.name == str(spec) for a in ARTIFACTS):
        raise KeyError(f"no {kind} {spec!r} for {variant!r}; registered: "
                       f"{sorted(a.variant for a in ARTIFACTS if a.kind == kind and a.name == str(spec))}")
    path = Path(spec).expanduser()
    if not path.is_file():
        hint = f" (registered {kind} names: {_names(kind)})" if _names(kind) else ""
        raise FileNotFoundError(f"{kind} file not found: {path}{hint}")
    return path


def _names(kind: str) -> str:
    return ", ".join(sorted({a.name for a in ARTIFACTS if a.kind == kind}))


def load(kind: str, spec, device: str | torch.device = "cpu", **options) -> Any:
    """Load an artefact of ``kind`` from ``spec`` (a registered name, a path or a module).

    Options: ``attribute`` (reference_editor: which registered editor), ``classifier``
    (reference_editor: the classifier spec for files without one), ``generator`` (stylespace: the
    generator the statistics belong to), ``style_dim`` (classifier: for layouts that do not
    record it)."""
    if isinstance(spec, torch.nn.Module):
        return spec.to(device)
    variant = str(options.get("attribute") or "")
    path = resolve(kind, spec, variant)
    art = find(kind, str(spec), variant)
    return _LOADERS[kind](path, device, art, options)


# -- loaders, one per kind ------------------------------------------------------------------

def _generator(path: Path, device, art, options) -> Generator:
    """Frozen, in eval mode. ``generator.latent_avg`` holds the file's truncation centre (or None)."""
    if path.suffix == ".safetensors":
        state, meta = load_weights(path)
        if "generator_config" in meta:
            g = GeneratorConfig.from_dict(json.loads(meta["generator_config"])).build()
        else:   # a bare state dict in the rosinality layout: its shapes give the architecture
            try:
                g = Generator(**generator_kwargs_from_state(state))
            except ValueError as err:
                raise CheckpointError(f"{path}: {err}") from err
        load_state_strict(g, state, str(path))
        g.latent_avg = None
    elif path.suffix == ".pkl":  # NVIDIA StyleGAN2-ADA snapshot, read without running its code
        g = load_nvidia_pickle(path)
    else:
        g, latent_avg = load_rosinality_generator(path)
        g.latent_avg = latent_avg
    return g.to(device).eval().requires_grad_(False)


def _encoder(path: Path, device, art, options) -> InversionModel:
    if path.suffix == ".safetensors":
        state, meta = load_weights(path)
        if "inversion_config" not in meta:
            raise CheckpointError(f"{path} has no 'inversion_config' metadata: not a stytr encoder export")
        model = build_inversion_model(InversionConfig.from_dict(json.loads(meta["inversion_config"])))
        load_state_strict(model, state, str(path))
        return model.to(device).eval()
    return InversionModel.from_checkpoint(path, device=device)


def _classifier(path: Path, device, art, options) -> LatentClassifier:
    model = LatentClassifier.from_checkpoint(path, style_dim=options.get("style_dim"), map_location=device)
    return model.to(device).eval().requires_grad_(False)


def _reference_editor(path: Path, device, art, options) -> EditTransformer:
    if path.suffix != ".safetensors":
        classifier = options.get("classifier")
        classifier_path = resolve("classifier", classifier) if isinstance(classifier, (str, os.PathLike)) else None
        try:
            return EditTransformer.from_checkpoint(path, device=device)
        except CheckpointError as err:
            if "classifier" in str(err) and classifier_path is not None:
                return EditTransformer.from_checkpoint(path, classifier_path=classifier_path, device=device)
            raise
    state, meta = load_weights(path)
    if "edit_config" not in meta:
        raise CheckpointError(f"{path} has no 'edit_config' metadata: not a stytr reference-editor export")
    wanted = options.get("attribute")
    if wanted and attribute_name(meta.get("attribute", wanted)) != attribute_name(wanted):
        raise CheckpointError(f"{path} edits {meta['attribute']!r}, not {wanted!r}")
    model = EditTransformer(EditTransformerConfig.from_dict(json.loads(meta["edit_config"])),
                            build_generator=False, build_classifier=False)
    load_state_strict(model.encoder, state, str(path))
    deps = dict(art.requires) if art is not None else {}
    generator = meta.get("generator") or deps.get("generator")
    classifier = options.get("classifier") or meta.get("classifier") or deps.get("classifier")
    if not generator or not classifier:
        raise CheckpointError(f"{path} holds the editing block only and names no generator/classifier to "
                              f"reassemble it with; pass classifier=... and export it with generator=...")
    model.decoder = load("generator", generator)
    model._set_classifier(load("classifier", classifier))
    model.attribute = meta.get("attribute", "")
    return model.to(device).eval()


def _predictor(path: Path, device, art, options) -> AttributePredictor:
    state, _ = load_weights(path)
    model = AttributePredictor()
    load_state_strict(model, state, str(path))
    return model.to(device).eval().requires_grad_(False)


def _interfacegan(path: Path, device, art, options) -> InterFaceGAN:
    return InterFaceGAN.load(path)


def _stylespace(path: Path, device, art, options) -> StyleSpace:
    return StyleSpace.load(path, options.get("generator"))


_LOADERS: dict[str, Callable[[Path, Any, Artifact | None, Mapping], Any]] = {
    "generator": _generator, "encoder": _encoder, "classifier": _classifier, "reference_editor": _reference_editor,
    "predictor": _predictor, "interfacegan": _interfacegan, "stylespace": _stylespace}


# -- our export formats ------------------------------------------------------------------------

def export(kind: str, model: torch.nn.Module, path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` in our ``.safetensors`` format for ``kind`` (fp16, config in the metadata).

    ``reference_editor`` writes the editing block alone; its metadata should name the
    ``attribute`` and the ``generator`` / ``classifier`` specs it is reassembled with."""
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    if kind == "encoder":
        meta.update(inversion_config=json.dumps(model.cfg.to_dict()), model_class=type(model).__name__)
        return save_weights(model.state_dict(), path, metadata=meta)
    if kind == "reference_editor":
        meta.update(edit_config=json.dumps(model.cfg.to_dict()))
        return save_weights(model.encoder.state_dict(), path, metadata=meta)
    if kind == "classifier":
        meta.update(format="stytr-latent-classifier", config=json.dumps(model.config()))
        return save_weights(model.state_dict(), path, metadata=meta)
    if kind in ("generator", "predictor"):
        return save_weights(model.state_dict(), path, metadata=meta)
    raise ValueError(f"no export format for {kind!r}")
