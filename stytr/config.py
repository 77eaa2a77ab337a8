"""One configuration system for the CLI, the trainers and the notebooks.

Every config is a dataclass deriving from :class:`Config`. A config class lists its
presets (``toy`` for the built-in ToyFaces domain on a CPU, ``ffhq`` for the
paper's full-scale setting) in ``PRESETS``; ``Cls.preset("toy", key=value)``
builds one, ``cfg.override(["optim.lr=3e-4", "steps=100"])`` applies
command-line style overrides to nested fields, and ``to_dict``/``from_dict``
round-trip through checkpoints (plain Python types only, so they load with
``torch.load(weights_only=True)``). Every config checks its own fields when it is made
(types and ranges, see "Validation" below) and raises
:class:`ConfigError`, a one-line message naming the key, the bad value and what is allowed.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

__all__ = ["Config", "ConfigError", "GeneratorConfig", "TOY_GENERATOR", "FFHQ_GENERATOR", "field", "dataclass"]


# -- Validation --------------------------------------------------------------------------
# One place for the range of every field, by field name (a name means the same thing in every
# config), with the few exceptions per class below. Types come from the annotations.

class ConfigError(ValueError):
    """A config key or value that is not allowed; the message (one line) names the key, the value and
    what is allowed. Errors of the range checks below also carry ``key``, ``value`` and ``allowed``."""

    def __init__(self, message: str, key: str = "", value: Any = None, allowed: str = ""):
        super().__init__(message)
        self.key, self.value, self.allowed = key, value, allowed


def _refuse(key: str, value: Any, allowed: str, owner: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed ({owner}): expected {allowed}", key, value, allowed)


def _nested(err: ConfigError, section: str, owner: str) -> ConfigError:
    """The same error, keyed from an enclosing config (``model.generator.size``)."""
    return _refuse(f"{section}.{err.key}", err.value, err.allowed, owner) if err.key else err


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v) -> bool:
    return _is_number(v) and math.isfinite(v)


_POSITIVE_INT = (lambda v: _is_int(v) and v > 0, "a positive integer")
_NON_NEGATIVE_INT = (lambda v: _is_int(v) and v >= 0, "an integer >= 0")
_POSITIVE = (lambda v: _finite(v) and v > 0, "a finite number > 0")
_NON_NEGATIVE = (lambda v: _finite(v) and v >= 0, "a finite number >= 0")
_FINITE = (_finite, "a finite number")
_FRACTION = (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)")
_PROBABILITY = (lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1]")
_POSITIVE_INTS = (lambda v: all(_is_int(x) and x > 0 for x in v), "a tuple of positive integers")
_NON_EMPTY = (lambda v: bool(v.strip()), "a non-empty path")


def _choice(noun: str, *names):
    return (lambda v: v in names, f"a known {noun}: one of {', '.join(map(repr, names))}")


_RULES: dict[str, tuple] = {
    **dict.fromkeys(("steps", "batch", "epochs", "n_train", "n_val", "ckpt_every", "log_every", "size", "style_dim",
                     "n_mlp", "channel_max", "input_size", "input_nc", "heads", "dim_feedforward", "n_blocks",
                     "embed_dim", "n_attr", "classifier_embed_dim", "n_latent"), _POSITIVE_INT),
    # Intervals with 0 = "only at the end" (evaluation) or "never" (images); counts with 0 = "none" or "all".
    **dict.fromkeys(("val_every", "eval_every", "image_every", "sample_every", "max_steps", "patience",
                     "val_batches", "eval_pairs", "threads", "workers", "seed", "lr_decay_start",
                     "perceptual_start", "adv_start", "n_queries", "head_dim", "output_size", "coarse_ind",
                     "middle_ind"), _NON_NEGATIVE_INT),
    **dict.fromkeys(("lr", "lr_mlp", "channel_multiplier", "backbone_width", "lr_mapping_mult"), _POSITIVE),
    **dict.fromkeys(("weight_decay", "l2", "lpips", "id", "perceptual", "w_norm", "ref", "src", "w_l1",
                     "w_perceptual", "w_adv", "r1_gamma", "min_delta", "negative_slope", "lr_final_mult"),
                    _NON_NEGATIVE),
    **dict.fromkeys(("label_1", "label_2", "label_hvp", "interfacegan", "stylespace"), _FINITE),
    **dict.fromkeys(("val_fraction", "dropout", "ema_decay"), _FRACTION),
    **dict.fromkeys(("hidden", "classifier_hidden", "l1_scales", "backbone_units"), _POSITIVE_INTS),
    **dict.fromkeys(("width", "blocks", "aligner_width", "edit_factors"), _POSITIVE_INT),
    **dict.fromkeys(("locality_every",), _NON_NEGATIVE_INT),
    **dict.fromkeys(("locality_l2", "locality_perceptual", "stop_below"), _NON_NEGATIVE),
    **dict.fromkeys(("locality_alpha",), _POSITIVE),
    "blur_prob": _PROBABILITY,
    "edit_prob": _PROBABILITY,
    "warp": _FRACTION,
    "locality_truncation": (lambda v: _finite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "pairs": _choice("pair source", "truth", "warp"),
    "betas": (lambda v: len(v) == 2 and all(_finite(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "out": _NON_EMPTY,
    "optimizer": _choice("optimizer", "ranger", "adam"),
    "data": _choice("data source", "folder", "toyfaces"),
    "pair_mode": _choice("pair mode", "random", "opposite"),
    "kind": _choice("encoder kind", "transformer", "psp", "e4e"),
    "backbone_layers": _choice("IR-SE depth", 50, 100, 152),
}
_CLASS_RULES: dict[tuple[str, str], tuple] = {
    ("EditTransformerConfig", "n_latent"): (_NON_NEGATIVE_INT[0], "an integer >= 0 (0 = the generator's)"),
    ("ReferenceEditTrainConfig", "batch"): (lambda v: _is_int(v) and v >= 2 and v % 2 == 0,
                                            "an even integer >= 2 (it splits into sources and references)"),
    ("LatentClassifierTrainConfig", "hidden"): (lambda v: len(v) > 0 and _POSITIVE_INTS[0](v),
                                                "a non-empty tuple of positive integers"),
    ("PTIConfig", "steps"): (_NON_NEGATIVE_INT[0], "an integer >= 0 (0 = the encoder's W+ as it is)"),
}
_TYPES = {int: (_is_int, "an integer"), float: (_is_number, "a number"), bool: (lambda v: isinstance(v, bool), "a boolean"),
          str: (lambda v: isinstance(v, str), "a string"), tuple: (lambda v: isinstance(v, tuple), "a tuple"),
          dict: (lambda v: isinstance(v, dict), "a dict")}


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name) for f in fields(cls)}


def _validate(cfg: Config) -> None:
    owner = type(cfg).__name__
    for name, ftype in _field_types(type(cfg)).items():
        value = getattr(cfg, name)
        if isinstance(ftype, type) and is_dataclass(ftype):
            if not isinstance(value, ftype):
                raise _refuse(name, value, f"a {ftype.__name__} (or a dict of its fields)", owner)
            try:
                value.validate()
            except ConfigError as err:
                raise _nested(err, name, owner) from None
            continue
        type_ok, type_name = _TYPES.get(ftype, (lambda v: True, ""))
        if not type_ok(value):
            raise _refuse(name, value, type_name, owner)
        ok, allowed = _CLASS_RULES.get((owner, name)) or _RULES.get(name, (lambda v: True, ""))
        if not ok(value):
            raise _refuse(name, value, allowed, owner)


# -- The config base class --------------------------------------------------------------

def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        low = text.lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, str) or current is None:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        return value if current is None else text
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        value = ast.literal_eval(text)
        return type(current)(value) if isinstance(current, float) or float(value).is_integer() else value
    return ast.literal_eval(text)


@dataclass
class Config:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on the first field of a wrong type or out of range."""
        _validate(self)

    @classmethod
    def preset(cls, name: str, **overrides):
        if name not in cls.PRESETS:
            raise _refuse("preset", name, f"one of {sorted(cls.PRESETS)}", cls.__name__)
        return cls.from_dict({**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        kwargs = {}
        for name, value in data.items():
            ftype = hints.get(name)
            if isinstance(ftype, type) and is_dataclass(ftype) and isinstance(value, dict):
                try:
                    value = ftype.from_dict(value)
                except ConfigError as err:
                    raise _nested(err, name, cls.__name__) from None
            elif isinstance(value, list) and isinstance(getattr(cls, name, None), tuple):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def override(self, assignments: list[str] | dict[str, Any]):
        """A copy with ``dotted.key=value`` assignments applied (values parsed as Python literals)."""
        items = assignments.items() if isinstance(assignments, dict) else (_split(a) for a in assignments)
        data = self.to_dict()
        for key, raw in items:
            node, parts = data, key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise KeyError(f"{type(self).__name__} has no section {part!r} (in {key!r})")
                node = node[part]
            if parts[-1] not in node:
                raise KeyError(f"{type(self).__name__} has no field {key!r}")
            try:
                node[parts[-1]] = _parse_value(raw, node[parts[-1]]) if isinstance(raw, str) else raw
            except (ValueError, SyntaxError, TypeError) as err:
                kind = type(node[parts[-1]]).__name__
                why = str(err) if str(err).startswith("expected") else f"{raw!r} is not a valid {kind}"
                raise ConfigError(f"{key}: {why}") from None
        return type(self).from_dict(data)


def _split(assignment: str) -> tuple[str, str]:
    if "=" not in assignment:
        raise ValueError(f"expected key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    return key.strip().lstrip("-").replace("-", "_"), value.strip()


@dataclass
class GeneratorConfig(Config):
    """Arguments of :class:`stytr.models.stylegan2.Generator` plus where its weights live."""

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: float = 2
    channel_max: int = 512
    lr_mlp: float = 0.01
    conv_clamp: float | None = None  # StyleGAN2-ADA's activation clamp (None: off, as in rosinality's networks)
    # A rosinality checkpoint (``{'g_ema': ...}``) or a safetensors file; "toy" = the shipped ToyFaces generator.
    checkpoint: str = ""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "toy": dict(size=64, style_dim=128, n_mlp=4, channel_multiplier=0.125, channel_max=64, checkpoint="toy"),
        "ffhq": dict(size=1024, checkpoint="pretrained_models/stylegan2-ffhq-config-f.pt"),
    }

    def build(self):
        from .models.stylegan2 import Generator

        return Generator(self.size, self.style_dim, self.n_mlp, channel_multiplier=self.channel_multiplier,
                         channel_max=self.channel_max, lr_mlp=self.lr_mlp, conv_clamp=self.conv_clamp)

    def __post_init__(self):
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ConfigError(f"generator.conv_clamp: {self.conv_clamp!r} is not a positive number or None")

    @property
    def n_latent(self) -> int:
        import math

        return int(math.log2(self.size)) * 2 - 2


TOY_GENERATOR = GeneratorConfig.preset("toy")
FFHQ_GENERATOR = GeneratorConfig.preset("ffhq")


# -- ToyFaces ---------------------------------------------------------------------

@dataclass
class ToyPredictorConfig(Config):
    """Training of the ToyFaces attribute predictor (``python -m stytr train-toy-predictor``)."""

    size: int = 64
    n_train: int = 20000
    n_val: int = 2000
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    blur_prob: float = 0.5  # blur half the batch so the judge also reads slightly soft generator output
    ckpt_every: int = 500
    seed: int = 0
    out: str = "runs/toy_predictor"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"toy": {}, "smoke": dict(n_train=256, n_val=128, steps=5)}


@dataclass
class ToyDistillConfig(Config):
    """Distillation of the ToyFaces renderer into a small StyleGAN2 (``python -m stytr train-toy-generator``)."""

    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig.preset("toy", checkpoint=""))
    steps: int = 14000
    batch: int = 16
    lr: float = 5e-3
    # Constant lr, then a linear decay to lr_final_mult * lr over the last steps: the regression
    # plateaus at the constant rate (small attributes such as lipstick stay blurred) and sharpens as it decays.
    lr_decay_start: int = 11000
    lr_final_mult: float = 0.05
    # The mapping MLP's equalised lr multiplier (0.01) suits GAN training; regressing a renderer whose
    # attributes are thresholds on z needs the mapping to move as fast as the synthesis.
    lr_mapping_mult: float = 100.0
    betas: tuple = (0.9, 0.99)
    ema_decay: float = 0.995
    l1_scales: tuple = (1, 2, 4)      # multi-scale L1 at these downsampling factors
    w_l1: float = 1.0
    w_perceptual: float = 0.5         # on the attribute predictor's features
    perceptual_start: int = 500       # pixel regression first; the feature term sharpens details afterwards
    w_adv: float = 0.0                # non-saturating GAN loss (0 = pure regression)
    r1_gamma: float = 1.0
    adv_start: int = 4000
    ckpt_every: int = 250
    sample_every: int = 500
    seed: int = 0
    threads: int = 1
    compile: bool = True              # torch.compile the generator: ~2.5x faster steps on a CPU after a ~2 min compile
    out: str = "runs/toy_generator"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "toy": {},
        "smoke": dict(steps=3, batch=4, ckpt_every=2, sample_every=2, perceptual_start=0, compile=False,
                      lr_decay_start=2),
    }

    def lr_multiplier(self, step: int) -> float:
        if step < self.lr_decay_start or self.steps <= self.lr_decay_start:
            return 1.0
        progress = min(1.0, (step - self.lr_decay_start) / (self.steps - self.lr_decay_start))
        return 1.0 - (1.0 - self.lr_final_mult) * progress


# -- StyleGAN2 training ----------------------------------------------------------------

@dataclass
class GeneratorTrainConfig(Config):
    """StyleGAN2 training on an image folder (``python -m stytr train-generator --data DIR --size N``).

    The ``ffhq`` preset is StyleGAN2 config F as the rosinality and NVIDIA trainers run it:
    non-saturating logistic loss, R1 (gamma ``r1``) every ``d_reg_every`` steps, path-length
    regularisation (weight ``path_regularize``, on batch / ``path_batch_shrink``) every
    ``g_reg_every`` steps, style mixing with probability ``mixing``, Adam with lr 0.002 and
    betas (0, 0.99) (both scaled for the lazy regularisation), and an EMA generator with a
    half-life of ``ema_kimg`` thousand images (ramped up over the first ``ema_rampup`` of the
    images seen, when set). ``batch`` is the global batch: under torchrun each of N processes
    takes batch / N. ``augment="diffaugment"`` shows the discriminator every image through
    DiffAugment's ``augment_policy`` (for small data sets). ``toy`` trains a 64 px generator with
    the ToyFaces generator's architecture on fresh ToyFaces renders, on one CPU thread; R1 is
    scaled with the resolution as NVIDIA's auto config does (gamma ~ 0.0002 * size^2 / batch).
    """

    data: str = ""                    # an image folder, or "toyfaces" (fresh renders every step)
    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: float = 2
    channel_max: int = 512
    flip: bool = False                # random horizontal flips of the real images
    batch: int = 32
    steps: int = 800000
    lr: float = 0.002
    betas: tuple = (0.0, 0.99)
    r1: float = 10.0
    d_reg_every: int = 16
    path_regularize: float = 2.0
    path_batch_shrink: int = 2
    path_decay: float = 0.01
    g_reg_every: int = 4
    mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float = 0.0           # 0 = none
    augment: str = ""                 # "" or "diffaugment"
    augment_policy: str = "color,translation,cutout"
    judge: str = ""                   # predictor spec for the Fréchet distance in its feature space ("" = none)
    n_eval: int = 2000                # samples (and real images) per evaluation
    eval_every: int = 5000
    image_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 50
    seed: int = 0
    threads: int = 0                  # torch CPU threads; 0 = leave as is
    out: str = "runs/stylegan2"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(data="toyfaces", size=64, style_dim=128, n_mlp=4, channel_multiplier=0.125, channel_max=64,
                    batch=16, steps=1200, r1=0.05, ema_kimg=5.0, ema_rampup=0.05, judge="toy", n_eval=1000,
                    eval_every=400, image_every=200, ckpt_every=50, log_every=10, threads=1, out="runs/toy_stylegan2"),
        # Seconds on a CPU, for tests.
        "smoke": dict(data="toyfaces", size=32, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16,
                      batch=4, steps=4, r1=0.05, d_reg_every=2, g_reg_every=2, n_eval=16, eval_every=2,
                      image_every=2, ckpt_every=2, log_every=1, out="runs/smoke_stylegan2"),
    }

    def __post_init__(self):
        if self.augment not in ("", "diffaugment"):
            raise ConfigError(f"augment: {self.augment!r} is not one of '', 'diffaugment'")
        if self.batch < 2 or self.batch % self.path_batch_shrink:
            raise ConfigError(f"batch: {self.batch} must be >= 2 and divisible by path_batch_shrink "
                              f"({self.path_batch_shrink})")
        for key in ("d_reg_every", "g_reg_every", "path_batch_shrink", "steps", "ckpt_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.mixing <= 1:
            raise ConfigError(f"mixing: a probability in [0, 1], got {self.mixing}")

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp,
                               channel_multiplier=self.channel_multiplier, channel_max=self.channel_max)


# -- Latent classifier -------------------------------------------------------------

@dataclass
class LatentClassifierTrainConfig(Config):
    """Training of the LCNet-style W+ attribute classifier (:mod:`stytr.train.latent_classifier`).

    The published code ships no trainer, so the optimiser settings are our choice:
    Adam(W) with masked BCE, a held-out split and early stopping on its loss.
    """

    n_latent: int = 18
    style_dim: int = 512
    hidden: tuple = (2048, 512)
    embed_dim: int = 32
    negative_slope: float = 0.2
    lr: float = 1e-4
    weight_decay: float = 1e-5     # AdamW's decoupled decay
    batch: int = 256
    epochs: int = 100
    max_steps: int = 0             # cap on optimiser steps; 0 = the epochs alone decide
    patience: int = 10             # epochs without a held-out improvement before stopping; 0 = never stop early
    min_delta: float = 1e-4        # smallest held-out loss decrease that counts as an improvement
    val_fraction: float = 0.1
    seed: int = 0
    log_every: int = 50            # optimiser steps between TensorBoard training-loss points
    out: str = "runs/latent_classifier"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "toy": dict(n_latent=10, style_dim=128, hidden=(512, 256), lr=1e-3, weight_decay=1e-4, batch=128, epochs=60,
                    patience=8, out="runs/toy_latent_classifier"),
        "ffhq": {},
        "smoke": dict(n_latent=10, style_dim=128, hidden=(64, 32), embed_dim=8, lr=3e-3, batch=64, epochs=3,
                      patience=2),
    }


# -- Attribute editing ---------------------------------------------------------------

@dataclass
class EditingConfig(Config):
    """Default strengths of the editors of :mod:`stytr.editing`, for notebooks, re-scoring and the CLI.

    A strength is the step size of one edit (``Editor.edit_images(..., strength, target)``): per W+
    row for the label editors, along the unit boundary normal for InterFaceGAN, in units of the
    channel's standard deviation for StyleSpace. ``attribute_scale`` multiplies it per attribute,
    because attributes sit at different distances from the decision boundary in W+.

    ``ffhq`` keeps the authors' alpha of 3 for label editing. The ``toy`` values were chosen on
    100 held-out ToyFaces codes (seed 50000) as the smallest strengths at which orders 1 and 2 flip
    >= 80 % of faces while keeping the other attributes; notebook 04 then measures them on other faces.
    """

    label_1: float = 3.0
    label_2: float = 3.0
    label_hvp: float = 3.0
    interfacegan: float = 3.0
    stylespace: float = 10.0
    attribute_scale: dict = field(default_factory=dict)
    attributes: tuple = ("Smiling", "Bangs", "Male", "Eyeglasses", "Young")   # the paper's five
    # Edits refuse |strength| beyond this: ten times the largest default, far past any useful edit.
    max_strength: float = 30.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(label_1=8.0, label_2=8.0, label_hvp=8.0, interfacegan=8.0, stylespace=10.0,
                    attribute_scale={"Male": 1.5, "Young": 0.75}, max_strength=120.0),
    }

    def strength(self, method, attribute: str | None = None) -> float:
        """The default strength of an editing method (a :class:`stytr.editing.Method` or its value:
        ``label-1``, ``label-2``, ``label-hvp``, ``interfacegan``, ``stylespace``), optionally for an
        attribute."""
        # Algorithm 2 as released (LabelEditor order AS_RELEASED, "label-2-released") steps by Algorithm 2's alpha.
        key = str(method).replace("-", "_").removesuffix("_conditional").removesuffix("_released")
        if key not in ("label_1", "label_2", "label_hvp", "interfacegan", "stylespace"):
            raise ValueError(f"no default strength for method {method!r}")
        return float(getattr(self, key)) * float(self.attribute_scale.get(attribute, 1.0))


# -- Inversion encoders and the reference-editing transformer ------------------------

def _toy_generator_dict() -> dict[str, Any]:
    return dict(GeneratorConfig.PRESETS["toy"])


@dataclass
class InversionConfig(Config):
    """Architecture of an inversion model (:mod:`stytr.models.style_transformer`, :mod:`stytr.models.psp`).

    ``kind``: ``transformer`` (Style Transformer; ``use_self_attn=False`` is the paper's
    "w/o self" ablation), ``psp`` (GradualStyleEncoder) or ``e4e`` (Encoder4Editing).
    All share the IR-SE trunk and the FPN; the generator's synthesis stays frozen.
    """

    kind: str = "transformer"
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig.preset("ffhq"))
    input_size: int = 256             # encoder input resolution
    input_nc: int = 3
    output_size: int = 256            # generated images are average-pooled to this size; 0 = generator size
    backbone_layers: int = 50         # IR-SE depth: 50, 100 or 152
    backbone_width: float = 1.0       # channel scale of the trunk (0.25 -> 16/32/64/128)
    backbone_units: tuple = ()        # residual units per stage, overriding backbone_layers (tiny test nets)
    backbone_weights: str = "pretrained_models/model_ir_se50.pth"  # trunk initialisation for training; "" = random
    n_queries: int = 0                # W+ entries the encoder predicts; 0 = the generator's n_latent
    heads: int = 4
    head_dim: int = 0                 # 0 = style_dim // heads (128 at full size)
    dim_feedforward: int = 1024
    n_blocks: int = 1                 # transformer blocks per pyramid level
    use_self_attn: bool = True
    dropout: float = 0.1
    norm_first: bool = False          # False = post-norm, the published layout
    coarse_ind: int = 0               # psp/e4e: first style fed by p2; 0 = 3 for >= 14 styles, else proportional
    middle_ind: int = 0               # psp/e4e: first style fed by p1; 0 = 7 for >= 14 styles, else proportional
    start_from_latent_avg: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(generator=_toy_generator_dict(), input_size=64, output_size=64, backbone_width=0.25,
                    dim_feedforward=256, backbone_weights=""),
    }

    @property
    def style_dim(self) -> int:
        return self.generator.style_dim

    @property
    def n_latent(self) -> int:
        return self.n_queries or self.generator.n_latent

    @property
    def attention_head_dim(self) -> int:
        return self.head_dim or self.style_dim // self.heads

    def style_split(self) -> tuple[int, int]:
        """(coarse_ind, middle_ind) of the pSp/e4e style blocks."""
        n = self.n_latent
        if self.coarse_ind or self.middle_ind:
            coarse, middle = self.coarse_ind, self.middle_ind
        elif n >= 14:
            coarse, middle = 3, 7
        else:
            coarse = max(1, round(n * 3 / 18))
            middle = max(coarse + 1, round(n * 7 / 18))
        if not 0 < coarse < middle < n:
            raise ValueError(f"need 0 < coarse_ind < middle_ind < n_latent, got {coarse}, {middle}, {n}")
        return coarse, middle


@dataclass
class EditTransformerConfig(Config):
    """Architecture of the reference-editing transformer (:mod:`stytr.models.edit_transformer`)."""

    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig.preset("ffhq"))
    n_latent: int = 0                 # 0 = the generator's n_latent
    heads: int = 4
    head_dim: int = 0                 # 0 = style_dim // heads
    dim_feedforward: int = 1024
    dropout: float = 0.1
    use_self_attn: bool = True        # the published block attends over the source tokens first
    norm_first: bool = False
    output_size: int = 256            # images (when asked for) are average-pooled to this size; 0 = generator size
    n_attr: int = 40
    classifier_hidden: tuple = (2048, 512)
    classifier_embed_dim: int = 32
    classifier_checkpoint: str = ""   # latent classifier weights ("toy" = the shipped ToyFaces one, "" = untrained)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(generator=_toy_generator_dict(), dim_feedforward=256, output_size=64,
                    classifier_hidden=(512, 256)),
    }

    @property
    def style_dim(self) -> int:
        return self.generator.style_dim

    @property
    def latent_count(self) -> int:
        return self.n_latent or self.generator.n_latent


# -- Inversion training ----------------------------------------------------------------

@dataclass
class InversionTrainConfig(Config):
    """Training of an inversion encoder (``python -m stytr train-inversion``), also under torchrun.

    ``ffhq`` is the paper's setting (Ranger, lr 1e-4, batch 8 per step, 6e5 steps,
    L2 1.0 + LPIPS 0.8 + ID 0.1, generator 1024, input 256). ``toy`` trains the same
    model family on ToyFaces with the attribute predictor's perceptual term in place of
    LPIPS and no ID term. ``batch`` is the global batch: under DDP each of the N
    processes takes batch / N samples of it.
    """

    model: InversionConfig = field(default_factory=InversionConfig)
    domain: str = "ffhq"              # stytr.domains name: its judge gives the perceptual term
    data: str = "folder"              # "folder" (aligned FFHQ / CelebA-HQ) or "toyfaces"
    train_dir: str = "data/ffhq"
    val_dir: str = "data/celeba_hq_test"
    n_train: int = 10000              # toyfaces: rendered training faces
    n_val: int = 500                  # toyfaces: held-out faces (a different seed); folders without val_dir:
                                      # images of train_dir held out (at most half)
    flip: bool = True                 # horizontal flips in training
    optimizer: str = "ranger"         # "ranger" (paper) or "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch: int = 8
    steps: int = 600000
    l2: float = 1.0
    lpips: float = 0.8
    id: float = 0.1
    perceptual: float = 0.0           # ToyFaces: the attribute predictor's feature distance
    w_norm: float = 0.0
    val_every: int = 5000
    val_batches: int = 0              # 0 = the whole held-out set
    ckpt_every: int = 5000
    image_every: int = 1000
    log_every: int = 50
    bf16: bool = False                # bf16 autocast on CUDA
    # torch.compile the model's training forward. Off by default: on a CPU the cold compile takes minutes
    # and the gain over the fast path is small (python -m stytr.benchmarks.speed --compile measures both).
    compile: bool = False
    sync_bn: bool = True              # under DDP on GPUs: batch-norm statistics over the global batch
    freeze_bn: bool = False           # keep batch-norm layers on their running statistics
    workers: int = 0
    seed: int = 0
    threads: int = 0                  # torch CPU threads; 0 = leave as is
    out: str = "runs/inversion"
    # Loss curves and a reconstruction grid at the end: "" = none; "{out}" stands for ``out`` (nothing is
    # written outside it unless asked, e.g. by --ship, which puts them into the repository's figures/).
    figures: str = ""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(model=dict(InversionConfig.PRESETS["toy"]), domain="toyfaces", data="toyfaces", optimizer="ranger", lr=5e-4,
                    batch=16, steps=3000, lpips=0.0, id=0.0, perceptual=0.1, val_every=250, ckpt_every=250,
                    image_every=250, log_every=25, out="runs/toy_inversion", figures="{out}/figures"),
        # A random generator and a one-unit-per-stage trunk: seconds on a CPU, for tests.
        "smoke": dict(model=dict(InversionConfig.PRESETS["toy"], backbone_units=(1, 1, 1, 1),
                                 generator=dict(GeneratorConfig.PRESETS["toy"], checkpoint="")), domain="toyfaces",
                      data="toyfaces",
                      n_train=32, n_val=8, batch=4, steps=4, lpips=0.0, id=0.0, perceptual=0.0, val_every=2,
                      ckpt_every=2, image_every=2, log_every=1, out="runs/smoke_inversion"),
    }


# -- Reference-editing training ----------------------------------------------------------

@dataclass
class ReferenceEditTrainConfig(Config):
    """Training of the reference-editing transformer (:mod:`stytr.train.reference_editing`).

    Loss: ``l2``·MSE(source W+, edited W+) + ``ref``·MSE(classifier embedding of ``attribute``,
    edited vs reference) + ``src``·MSE(embeddings of all other attributes, edited vs source), with
    the frozen latent classifier of ``model.classifier_checkpoint``. Adam on the encoder only.
    ``batch`` codes a step: the first half are sources, the second half references
    (``pair_mode="random"``, as published); ``"opposite"`` instead draws each source's reference
    among the codes whose classifier decision on ``attribute`` differs, so every edit must change
    it. ``codes``: a ``.pt`` with ``latents`` (N, n_latent, style_dim) (and optionally ``labels``),
    as ``python -m stytr invert`` writes, or a ``.npy`` array; ``val_fraction`` of them (a seeded
    random split) is held out for the transfer/keep rates.
    """

    model: EditTransformerConfig = field(default_factory=lambda: EditTransformerConfig.preset(
        "ffhq", classifier_checkpoint="runs/latent_classifier/latent_classifier.pt"))
    attribute: str = "Bangs"          # CelebA name (or index); the published coach hard-codes Bangs
    codes: str = "runs/latent_classifier/codes.pt"   # written by train-latent-classifier
    val_fraction: float = 0.1         # the published coach holds out the last 10% of its codes
    pair_mode: str = "random"         # "random" (published) or "opposite"
    l2: float = 1.0                   # source vs edited W+
    ref: float = 1.0                  # edited attribute's embedding, edited vs reference
    src: float = 1.0                  # other attributes' embeddings, edited vs source
    mode_seeking: float = 0.0         # weight of the mode-seeking term (stytr.losses.mode_seeking_loss); 0 = off, as published
    lr: float = 1e-3
    weight_decay: float = 5e-4        # Adam's (coupled) L2 decay, as published
    batch: int = 8                    # split into batch/2 sources and batch/2 references
    steps: int = 10000
    eval_every: int = 1000            # held-out transfer/keep rates; 0 = only at the end
    eval_pairs: int = 1000
    image_every: int = 1000           # (source, reference, edited) grid when a generator is loaded; 0 = never
    log_every: int = 50
    ckpt_every: int = 1000
    seed: int = 0
    threads: int = 0                  # torch CPU threads; 0 = leave as is
    out: str = "runs/reference_editor"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(model=dict(EditTransformerConfig.PRESETS["toy"], classifier_checkpoint="toy"),
                    codes="runs/toy_latent_classifier/codes.pt", steps=2000, eval_every=250, eval_pairs=500, image_every=250,
                    log_every=25, ckpt_every=250, out="runs/toy_reference_editor/{attribute}"),
        # No generator and a tiny classifier: seconds on a CPU, for tests (codes must be given).
        "smoke": dict(model=dict(generator=dict(GeneratorConfig.PRESETS["toy"], size=16, style_dim=32, n_mlp=2,
                                                channel_multiplier=1, channel_max=16, checkpoint=""),
                                 dim_feedforward=32, output_size=0, classifier_hidden=(32, 16),
                                 classifier_embed_dim=8, classifier_checkpoint=""),
                      codes="", batch=4, steps=4, eval_every=2, eval_pairs=16, image_every=0, log_every=1,
                      ckpt_every=2, out="runs/smoke_reference_editor"),
    }


# -- High-fidelity inversion (beyond W+) ------------------------------------------------------

@dataclass
class HighFidelityConfig(Config):
    """Architecture of the high-fidelity stage (:mod:`stytr.models.high_fidelity`).

    The distortion map (input minus W+ reconstruction, at ``input_size``) is aligned to the
    image being rendered, then encoded into (scale, shift) features for the generator blocks at
    ``layers`` (HFGI fuses at 64x64 in the 1024 px generator, 1/16 of the image side).
    """

    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig.preset("ffhq"))
    input_size: int = 256             # distortion maps at the encoder's input size
    layers: tuple = (64,)             # generator block resolutions that receive residual features
    width: int = 64                   # residual-encoder channels
    blocks: int = 2                   # residual-encoder conv blocks per resolution
    aligner_width: int = 32           # alignment U-Net channels at full resolution
    align: bool = True                # False: the distortion enters as it is, also for edited codes

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(generator=_toy_generator_dict(), input_size=64, layers=(32,), width=32, aligner_width=16),
        "smoke": dict(generator=dict(GeneratorConfig.PRESETS["toy"], checkpoint=""), input_size=64, layers=(16,),
                      width=8, blocks=1, aligner_width=8),
    }

    def validate(self) -> None:
        super().validate()
        size = self.generator.size
        if not self.layers or any(not _is_int(r) or r < 8 or r > size or r & (r - 1) for r in self.layers):
            raise _refuse("layers", self.layers, f"generator block resolutions, powers of two in 8 ... {size}",
                          type(self).__name__)


@dataclass
class HighFidelityTrainConfig(Config):
    """Training of the high-fidelity stage on a frozen W+ encoder (``python -m stytr train-high-fidelity``).

    Loss on the fused rendering: ``l2``·MSE + ``perceptual``·(the domain's perceptual distance: the
    judge's features on ToyFaces, LPIPS on FFHQ) + ``align``·L1(aligned distortion, true distortion
    of the target). ``edit_prob`` of the training pairs are edited: ``pairs="truth"`` (synthetic
    domains) re-renders the face with ``edit_factors`` of its generating factors resampled and
    inverts it, so the target and its true distortion are known; ``pairs="warp"`` (HFGI's
    self-supervision, any image folder) warps the distortion map at random and asks the aligner to
    undo it against the unedited reconstruction.
    """

    model: HighFidelityConfig = field(default_factory=HighFidelityConfig)
    encoder: str = "ffhq"             # the frozen W+ encoder (artefact spec)
    domain: str = "ffhq"              # stytr.domains name: its perceptual distance
    data: str = "folder"              # "folder" or "toyfaces"
    train_dir: str = "data/ffhq"
    val_dir: str = "data/celeba_hq_test"
    pairs: str = "warp"               # "truth" (re-rendered edits, toyfaces) or "warp" (HFGI's random warps)
    n_train: int = 4000               # toyfaces: rendered training faces
    n_val: int = 200                  # toyfaces: held-out faces
    edit_prob: float = 0.5            # fraction of training pairs whose target is edited / warped
    edit_factors: int = 2             # truth pairs: at most this many generating factors resampled
    warp: float = 0.08                # warp pairs: largest shift / rotation / scale change (fraction of the side)
    l2: float = 1.0
    perceptual: float = 0.8
    align: float = 1.0
    lr: float = 1e-4
    # Constant lr, then a linear decay to lr_final_mult * lr from lr_decay_start on (0 = constant throughout).
    lr_decay_start: int = 0
    lr_final_mult: float = 0.1
    batch: int = 8
    steps: int = 100000
    val_every: int = 5000
    ckpt_every: int = 5000
    image_every: int = 1000
    log_every: int = 50
    seed: int = 0
    threads: int = 0                  # torch CPU threads; 0 = leave as is
    out: str = "runs/high_fidelity"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(model=dict(HighFidelityConfig.PRESETS["toy"]), encoder="toy", domain="toyfaces", data="toyfaces",
                    pairs="truth", perceptual=0.1, lr=1e-3, lr_decay_start=2000, batch=16, steps=3000,
                    val_every=500, ckpt_every=250, image_every=500, log_every=25, out="runs/toy_high_fidelity"),
        # A random generator and encoder: seconds on a CPU, for tests.
        "smoke": dict(model=dict(HighFidelityConfig.PRESETS["smoke"]), encoder="", domain="toyfaces",
                      data="toyfaces", pairs="truth", n_train=12, n_val=4, perceptual=0.0, lr=1e-3, lr_decay_start=2,
                      batch=4, steps=4,
                      val_every=2, ckpt_every=2, image_every=2, log_every=1, out="runs/smoke_high_fidelity"),
    }

    def validate(self) -> None:
        super().validate()
        if self.pairs == "truth" and self.data != "toyfaces":
            raise _refuse("pairs", self.pairs, "'warp' with image folders ('truth' needs a synthetic domain: "
                          "data='toyfaces')", type(self).__name__)

    def lr_multiplier(self, step: int) -> float:
        if not self.lr_decay_start or step < self.lr_decay_start or self.steps <= self.lr_decay_start:
            return 1.0
        progress = min(1.0, (step - self.lr_decay_start) / (self.steps - self.lr_decay_start))
        return 1.0 - (1.0 - self.lr_final_mult) * progress


@dataclass
class PTIConfig(Config):
    """Pivotal tuning (Roich et al.; :mod:`stytr.pti`): a copy of the synthesis network is tuned for
    ``steps`` Adam steps so that it renders the encoder's W+ pivot as the input image.

    Loss: ``l2``·MSE + ``perceptual``·(the domain's perceptual distance) + the locality regulariser:
    every ``locality_every`` steps, codes ``locality_alpha`` away from the pivot toward a random
    mapped code (truncation ``locality_truncation``) must render as the untuned generator renders
    them (``locality_l2``·MSE + ``locality_perceptual``·perceptual). The published values are the
    ``ffhq`` preset (lr 3e-4, 350 steps, alpha 30 in the 512-d W of FFHQ). ``toy`` tunes the small
    generator faster (lr 3e-3: after 100 steps the MSE of a held-out face is 0.0029, 0.0068 at 3e-4),
    weighs the judge's feature distance as the toy trainers do, and puts the regulariser's codes at
    alpha 15, a third of the typical distance (44) from a toy pivot to a truncated random code.
    """

    steps: int = 350
    lr: float = 3e-4
    l2: float = 1.0
    perceptual: float = 1.0
    locality_l2: float = 0.1
    locality_perceptual: float = 0.1
    locality_alpha: float = 30.0
    locality_truncation: float = 0.5
    locality_every: int = 1           # 0 = no locality regulariser
    stop_below: float = 0.0           # stop once the perceptual distance is below this (PTI: LPIPS 0.07); 0 = never
    seed: int = 0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "ffhq": {},
        "toy": dict(steps=100, lr=3e-3, perceptual=0.1, locality_perceptual=0.01, locality_alpha=15.0),
    }

    @classmethod
    def for_domain(cls, domain) -> "PTIConfig":
        """The preset of ``domain`` (a :class:`stytr.domains.Domain`): its own where there is one,
        otherwise the published (``ffhq``) settings, e.g. for a user's own domain."""
        return cls.preset(domain.preset if domain.preset in cls.PRESETS else "ffhq")

