"""Domains: everything that differs between ToyFaces, FFHQ and a user's own data set.

A :class:`Domain` names its generator, its default encoder / classifier / reference editors /
high-fidelity stage (artefact specs for :func:`stytr.artifacts.load`), the attributes it knows and which of them
it models, which attributes an edit of another may legitimately change, the image-space judge
that re-scoring and flip/keep rates use, the perceptual distance for training, its sizes and
the config preset its trainers start from. Code below this module never asks which domain it
serves; it is handed the domain's pieces.

    dom = get_domain("toyfaces")                     # or "ffhq", or one you registered
    G = dom.load("generator")
    session = EditSession.for_domain(dom)            # shipped encoder and classifier

A user's own domain::

    register_domain(Domain.from_files("cars", generator="network-snapshot.pkl",
                                      attributes=("Red", "Convertible"), image_size=256))

Domains registered in Python live in that process only. The command line reads a user's domain
from a small **domain file** instead (JSON, or TOML on Python >= 3.11), given wherever a command
takes ``--domain``; :func:`get_domain` accepts such a path as well as a registered name::

    {"name": "cars", "generator": "stylegan2-car-config-f.pt", "image_dir": "cars/train",
     "attr_file": "cars/list_attr_cars.txt", "image_size": 256,
     "encoder": "runs/cars_inversion/best.pt", "classifier": "runs/cars_classifier/latent_classifier.pt"}

Its keys are :class:`Domain`'s fields (:data:`DOMAIN_FILE_KEYS`); ``name`` and ``generator`` are
required. Relative paths are taken from the file's folder; a value that is a registered artefact
name (``"ffhq"``) stays a name. Without ``attributes``, an ``attr_file`` gives them (its header
line), else CelebA's 40. ``encoder`` and ``classifier`` may name files that training will write.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from . import artifacts
from .attributes import CELEBA_ATTRIBUTES, attribute_name
from .config import EditingConfig, GeneratorConfig
from .data.folders import CelebAAttributes, LabelledImageFolder
from .models.stylegan2 import generator_kwargs_from_state
from .toy.faces import ToyFacesDataset
from .toy.render import ATTRIBUTES as TOY_ATTRIBUTES
from .toy.render import ENTAILED as TOY_ENTAILED

__all__ = ["Domain", "DOMAINS", "DOMAIN_FILE_KEYS", "register_domain", "get_domain", "domain_for_preset",
           "load_domain_file"]


@dataclass(frozen=True)
class Domain:
    name: str
    preset: str                                  # config preset of its trainers and editing strengths
    generator: Any                               # artefact spec of its StyleGAN2
    encoder: Any = ""                            # default inversion model ("" = none registered)
    classifier: Any = ""                         # default latent classifier
    judge: Any = ""                              # image-space attribute predictor ("" = none)
    attributes: tuple[str, ...] = CELEBA_ATTRIBUTES      # the label columns, in order
    modelled: tuple[str, ...] = CELEBA_ATTRIBUTES        # those its labels, classifier and judge know
    entailed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reference_editors: Mapping[str, Any] = field(default_factory=dict)   # attribute -> editor spec
    high_fidelity: Any = ""                      # residual stage on top of the encoder ("" = none)
    perceptual: str = "lpips"                    # training distance: "lpips" or "predictor" (the judge's features)
    image_size: int = 256                        # encoder input
    generator_size: int = 1024
    image_dir: str = ""                          # own domains: the training images
    attr_file: str = ""                          # own domains: CelebA-format labels of image_dir
    val_dir: str = ""                            # own domains: held-out images ("" = hold some of image_dir out)
    # Synthetic domains render their own labelled images: (n, seed, size) -> dataset of (image, labels, mask).
    render: Callable[[int, int, int], Any] | None = None

    # -- pieces -----------------------------------------------------------------------
    def load(self, kind: str, device: str | torch.device = "cpu", spec=None, **options):
        """The domain's artefact of ``kind`` (or ``spec`` in its place)."""
        if spec is None:
            spec = {"generator": self.generator, "encoder": self.encoder, "classifier": self.classifier,
                    "predictor": self.judge, "high_fidelity": self.high_fidelity}.get(kind)
        if kind == "reference_editor" and spec is None:
            attribute = options.get("attribute")
            if attribute not in self.reference_editors:
                raise KeyError(f"domain {self.name!r} has no reference editor for {attribute!r}; "
                               f"it has {sorted(self.reference_editors)}")
            spec = self.reference_editors[attribute]
            options.setdefault("classifier", self.classifier or None)
        if spec in (None, ""):
            raise ValueError(f"domain {self.name!r} registers no {kind}; pass one")
        loaded = artifacts.load(kind, spec, device, **options)
        if kind == "predictor":   # the judge carries what it may score, for stytr.eval
            loaded.modelled, loaded.entailed = tuple(self.modelled), dict(self.entailed)
        return loaded

    def generator_config(self, device: str | torch.device = "cpu") -> GeneratorConfig:
        """The architecture of the domain's generator, read off its weights, with ``checkpoint`` set
        to its spec: what a trainer's config needs to build a model around it."""
        g = self.load("generator", device)
        arch = generator_kwargs_from_state(g.state_dict())
        if getattr(g, "conv_clamp", None) is not None:       # StyleGAN2-ADA imports clamp; rosinality's never do
            arch["conv_clamp"] = g.conv_clamp
        return GeneratorConfig(**arch, checkpoint=str(self.generator))

    def editing_config(self) -> EditingConfig:
        return EditingConfig.preset(self.preset)

    def modelled_mask(self) -> torch.Tensor:
        """(len(attributes),) bool: which label columns the domain models."""
        return torch.tensor([a in self.modelled for a in self.attributes])

    def check_attribute(self, attribute: str) -> str:
        """``attribute``'s canonical name, or a ValueError when the domain does not model it."""
        name = attribute_name(attribute, self.attributes)
        if name not in self.modelled:
            raise ValueError(f"domain {self.name!r} does not model {name!r}; it models {', '.join(self.modelled)}")
        return name

    def labelled_dataset(self, n: int, seed: int, size: int):
        """Labelled images of the domain, items ``(image, labels, mask)``: rendered ones for a synthetic
        domain, else ``image_dir`` with its CelebA-format ``attr_file``."""
        if self.render is not None:
            return self.render(n, seed, size)
        if not self.image_dir or not self.attr_file:
            raise ValueError(f"domain {self.name!r} has no labelled images: give it image_dir and attr_file")
        return LabelledImageFolder(self.image_dir, self.attr_file, size=size)

    def replace(self, **changes) -> "Domain":
        return dataclasses.replace(self, **changes)

    # -- own domains --------------------------------------------------------------------
    @classmethod
    def from_files(cls, name: str, generator, attributes: Sequence[str] = CELEBA_ATTRIBUTES,
                   image_dir: str = "", attr_file: str = "", preset: str = "ffhq", **fields) -> "Domain":
        """A domain from a generator file (ours, rosinality's or NVIDIA's) and optionally an image
        folder with a CelebA-format attribute file. Encoder, classifier and editors are added with
        :meth:`replace` once trained."""
        attributes = tuple(attributes)
        return cls(name=name, preset=preset, generator=generator, attributes=attributes,
                   modelled=tuple(fields.pop("modelled", attributes)), image_dir=image_dir, attr_file=attr_file,
                   **fields)


DOMAINS: dict[str, Domain] = {}


def register_domain(domain: Domain, replace: bool = False) -> Domain:
    if domain.name in DOMAINS and not replace:
        raise ValueError(f"a domain named {domain.name!r} is registered already (pass replace=True)")
    DOMAINS[domain.name] = domain
    return domain


def get_domain(domain: str | Path | Domain) -> Domain:
    """A registered domain by name, or the domain of a domain file (``.json`` / ``.toml``)."""
    if isinstance(domain, Domain):
        return domain
    if isinstance(domain, Path) or str(domain).endswith(DOMAIN_FILE_SUFFIXES):
        return load_domain_file(domain)
    if domain not in DOMAINS:
        raise KeyError(f"unknown domain {domain!r}; registered: {', '.join(sorted(DOMAINS))} "
                       f"(or give a domain file, {' / '.join(DOMAIN_FILE_SUFFIXES)})")
    return DOMAINS[domain]


# -- domain files -------------------------------------------------------------------------

DOMAIN_FILE_SUFFIXES = (".json", ".toml")
DOMAIN_FILE_KEYS = tuple(f.name for f in dataclasses.fields(Domain) if f.name != "render")
_SPEC_KEYS = {"generator": "generator", "encoder": "encoder", "classifier": "classifier", "judge": "predictor"}
_PATH_KEYS = ("image_dir", "attr_file", "val_dir")


def _read_domain_file(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"domain file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            if sys.version_info < (3, 11):
                raise ValueError(f"{path}: TOML domain files need Python >= 3.11; write it as JSON")
            import tomllib   # standard library from 3.11 on

            return tomllib.loads(text)
        return json.loads(text)
    except (json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not a valid domain file: {err}") from None


def load_domain_file(path: str | Path) -> Domain:
    """The :class:`Domain` described by a JSON/TOML domain file (see the module docstring)."""
    path = Path(path).expanduser()
    data = _read_domain_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a domain file holds one object of Domain fields, not a {type(data).__name__}")
    unknown = sorted(set(data) - set(DOMAIN_FILE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; a domain file may set {', '.join(DOMAIN_FILE_KEYS)}")
    for key in ("name", "generator"):
        if not data.get(key):
            raise ValueError(f"{path}: the domain file needs {key!r}")
    base = path.parent

    def local(value):
        p = Path(str(value)).expanduser()
        return str(p if p.is_absolute() else base / p)

    fields = dict(data)
    for key, kind in _SPEC_KEYS.items():
        if fields.get(key) and artifacts.find(kind, str(fields[key])) is None:
            fields[key] = local(fields[key])
    fields["reference_editors"] = {a: spec if artifacts.find("reference_editor", str(spec), a) else local(spec)
                                   for a, spec in dict(fields.get("reference_editors", {})).items()}
    for key in _PATH_KEYS:
        if fields.get(key):
            fields[key] = local(fields[key])
    if "attributes" in fields:
        fields["attributes"] = tuple(fields["attributes"])
    if fields.get("attr_file"):
        names = CelebAAttributes(fields["attr_file"]).names
        if fields.setdefault("attributes", names) != names:
            raise ValueError(f"{path}: 'attributes' {list(fields['attributes'])} differ from the columns of "
                             f"{fields['attr_file']} {list(names)}; leave 'attributes' out to use the file's")
    fields["entailed"] = {k: tuple(v) for k, v in dict(fields.get("entailed", {})).items()}
    fields.setdefault("preset", "ffhq")
    name = fields.pop("name")
    return Domain.from_files(name, fields.pop("generator"), **fields)


def domain_for_preset(preset: str) -> Domain:
    """The registered domain whose trainers start from config preset ``preset`` (smoke -> toyfaces)."""
    for dom in DOMAINS.values():
        if dom.preset == preset:
            return dom
    return DOMAINS["toyfaces"]


register_domain(Domain(
    name="toyfaces", preset="toy", generator="toy", encoder="toy", classifier="toy", judge="toy",
    modelled=tuple(TOY_ATTRIBUTES), entailed=dict(TOY_ENTAILED),
    reference_editors={a: "toy" for a in ("Bangs", "Smiling", "Male")}, high_fidelity="toy",
    perceptual="predictor", image_size=64, generator_size=64,
    render=lambda n, seed, size: ToyFacesDataset(n, seed=seed, size=size)))

# The published weights are the user's to download (artifacts.ARTIFACTS says from where).
register_domain(Domain(name="ffhq", preset="ffhq", generator="ffhq", encoder="ffhq", classifier="ffhq",
                       reference_editors={a: "ffhq" for a in ("Bangs", "Smiling", "Male")}))
