"""IR-SE backbones (ArcFace-style ResNets with squeeze-excitation units).

The module tree reproduces the layout of pSp's ``model_ir_se50.pth`` so that file
loads by name:

* ``input_layer``: ``0`` conv 3x3 (no bias), ``1`` BatchNorm2d, ``2`` PReLU
* ``body.N``: one residual unit each, with ``shortcut_layer`` (a stride-only
  ``MaxPool2d(1, s)`` when the width is unchanged, else ``0`` conv 1x1 + ``1`` BN)
  and ``res_layer`` (``0`` BN, ``1`` conv 3x3, ``2`` PReLU, ``3`` conv 3x3 with the
  stride, ``4`` BN, ``5`` squeeze-excitation with ``fc1``/``fc2``)
* ``output_layer`` (identity network only): ``0`` BN2d, ``1`` dropout, ``2`` flatten,
  ``3`` linear to the embedding, ``4`` BatchNorm1d

Two networks share this tree: :class:`IRSETrunk` (``input_layer`` + ``body``) is
the feature extractor of the inversion encoders and returns the taps ``c1, c2, c3``
at the ends of stages 2, 3 and 4 (after units 6, 20 and 23 for IR-SE50);
:class:`IRSEBackbone` adds ``output_layer`` and returns an L2-normalised identity
embedding (112x112 input for the published weights), which the ID loss uses.

On a CPU the fast path (``STYTR_PATH=fast``, :mod:`stytr.runtime`) runs the trunk on
channels_last activations (oneDNN's direct convolution layout; NCHW costs a reorder of every
input and output) and takes the weightless 1x1 max-pool shortcut as the strided slice it is.

``width`` scales every stage's channel count (64/128/256/512 at 1.0) while keeping
the module tree, e.g. ``width=0.25`` gives the 16/32/64/128-channel ToyFaces
trunk for 64x64 inputs. ``units`` replaces the per-stage unit counts for tiny
test networks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..runtime import fast_path_enabled

__all__ = ["STAGE_UNITS", "STAGE_CHANNELS", "SqueezeExcite", "IRUnit", "IRSETrunk", "IRSEBackbone",
           "IR_SE50_PATH", "IR_SE50_HINT", "BackboneLoadReport", "load_ir_se50_weights", "stage_units"]

# Residual units per stage for the published depths.
STAGE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
STAGE_CHANNELS = (64, 128, 256, 512)

IR_SE50_PATH = "pretrained_models/model_ir_se50.pth"
IR_SE50_HINT = ("It is the IR-SE50 ArcFace network released with pSp (eladrich/pixel2style2pixel, "
                "'Pretrained Models' section of its README); download model_ir_se50.pth and put it at "
                f"{IR_SE50_PATH}")


def stage_units(num_layers: int = 50, units: Sequence[int] | None = None) -> tuple[int, ...]:
    if units:
        units = tuple(int(u) for u in units)
        if len(units) != 4 or min(units) < 1:
            raise ValueError(f"units must give 4 positive unit counts (one per stage), got {units}")
        return units
    if num_layers not in STAGE_UNITS:
        raise ValueError(f"IR-SE depth must be one of {sorted(STAGE_UNITS)}, got {num_layers}")
    return STAGE_UNITS[num_layers]


def stage_channels(width: float = 1.0) -> tuple[int, ...]:
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return tuple(max(1, int(round(c * width))) for c in STAGE_CHANNELS)


class SqueezeExcite(nn.Module):
    """Channel gating: global average -> 1x1 conv down -> ReLU -> 1x1 conv up -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class IRUnit(nn.Module):
    """Pre-activation residual unit; ``se=False`` gives the plain IR unit."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, se: bool = True):
        super().__init__()
        if in_channels == out_channels:
            # A 1x1 max-pool is a pure subsampling; it has no weights.
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, (1, 1), stride, bias=False),
                nn.BatchNorm2d(out_channels))
        layers = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if se:
            layers.append(SqueezeExcite(out_channels, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x):
        if isinstance(self.shortcut_layer, nn.MaxPool2d) and fast_path_enabled() and x.device.type == "cpu":
            # A 1x1 max-pool picks every stride-th sample: slicing gives the same values without
            # the pooling kernel, its index tensor and its scatter in the backward pass.
            step = self.shortcut_layer.stride
            return self.res_layer(x) + (x[:, :, ::step, ::step] if step != 1 else x)
        return self.res_layer(x) + self.shortcut_layer(x)


def to_fast_layout(x: torch.Tensor) -> torch.Tensor:
    """channels_last on the CPU fast path, unchanged otherwise (values are the same either way)."""
    if fast_path_enabled() and x.device.type == "cpu" and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


class IRSETrunk(nn.Module):
    """``input_layer`` + ``body``; :meth:`features` gives the multi-scale taps.

    A 256x256 input gives c1 (128 ch, 64x64), c2 (256 ch, 32x32) and c3 (512 ch,
    16x16) at full width.
    """

    def __init__(self, num_layers: int = 50, width: float = 1.0, input_nc: int = 3,
                 units: Sequence[int] | None = None, se: bool = True):
        super().__init__()
        self.units = stage_units(num_layers, units)
        self.channels = stage_channels(width)
        self.input_layer = nn.Sequential(
            nn.Conv2d(input_nc, self.channels[0], (3, 3), 1, 1, bias=False),
            nn.BatchNorm2d(self.channels[0]),
            nn.PReLU(self.channels[0]))
        modules, in_ch = [], self.channels[0]
        for n_units, out_ch in zip(self.units, self.channels):
            for i in range(n_units):
                modules.append(IRUnit(in_ch, out_ch, stride=2 if i == 0 else 1, se=se))
                in_ch = out_ch
        self.body = nn.Sequential(*modules)
        ends = [sum(self.units[: i + 1]) - 1 for i in range(4)]
        # Indices of the body units after which c1, c2, c3 are taken (6, 20, 23 for IR-SE50).
        self.tap_indices = (ends[1], ends[2], ends[3])

    @property
    def tap_channels(self) -> tuple[int, int, int]:
        return self.channels[1], self.channels[2], self.channels[3]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input_layer(to_fast_layout(x))
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.tap_indices:
                taps.append(x)
        return taps[0], taps[1], taps[2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.features(x)


class IRSEBackbone(IRSETrunk):
    """The whole identity network: trunk + ``output_layer`` -> unit-length embedding.

    ``IRSEBackbone()`` is the architecture of ``model_ir_se50.pth`` (input 112x112,
    512-d embedding, affine final BatchNorm1d as in pSp's ID loss).
    """

    def __init__(self, num_layers: int = 50, input_size: int = 112, width: float = 1.0, embed_dim: int = 512,
                 drop_ratio: float = 0.4, affine: bool = True, input_nc: int = 3,
                 units: Sequence[int] | None = None, se: bool = True):
        super().__init__(num_layers, width, input_nc, units, se)
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16 (four stride-2 stages), got {input_size}")
        self.input_size = input_size
        top, side = self.channels[3], input_size // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(top),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(top * side * side, embed_dim),
            nn.BatchNorm1d(embed_dim, affine=affine))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"IRSEBackbone expects {self.input_size}x{self.input_size} inputs, got "
                             f"{tuple(x.shape[-2:])}; crop and pool first")
        x = self.body(self.input_layer(to_fast_layout(x)))
        return F.normalize(self.output_layer(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.embed(x)


# -- loading model_ir_se50.pth ---------------------------------------------------

_BACKBONE_PREFIXES = ("input_layer.", "body.", "output_layer.")


@dataclass
class BackboneLoadReport:
    """What :func:`load_ir_se50_weights` did. ``unused``: entries of the file the module has no
    place for (the identity head when loading an encoder); ``left_out``: backbone entries of
    the module the file did not provide (BatchNorm step counters are filled in silently)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.path}: loaded {len(self.loaded)} tensors"
        if self.unused:
            text += f"; {len(self.unused)} unused ({_summarise(self.unused)})"
        if self.left_out:
            text += f"; {len(self.left_out)} not in the file ({_summarise(self.left_out)})"
        return text


def _summarise(keys: list[str], n: int = 3) -> str:
    heads = sorted({k.split(".")[0] for k in keys})
    return f"under {heads}, e.g. {keys[:n]}"


def load_ir_se50_weights(module: nn.Module, path: str | os.PathLike = IR_SE50_PATH,
                         strict: bool = True) -> BackboneLoadReport:
    """Copy pSp's ``model_ir_se50.pth`` into ``module`` by name.

    ``module`` is anything whose backbone sits at ``input_layer``/``body``/``output_layer``
    (an :class:`IRSETrunk`, :class:`IRSEBackbone`, or an inversion encoder built on the
    trunk). The file's entries the module does not have (e.g. ``output_layer.*`` for an
    encoder) are reported as unused; the module's other parts (lateral convs, attention,
    queries) are untouched. With ``strict`` a backbone entry of the module that the file
    lacks, or any shape mismatch, raises :class:`~stytr.checkpoints.CheckpointError`.
    """
    from ..checkpoints import CheckpointError, load, require_file

    path = require_file(path, "IR-SE50 weights (model_ir_se50.pth)", IR_SE50_HINT)
    state = load(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a state dict (found {type(state).__name__})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}

    own = module.state_dict()
    report = BackboneLoadReport(str(path))
    wanted = {k for k in own if k.startswith(_BACKBONE_PREFIXES)}
    if not wanted:
        raise CheckpointError(f"{type(module).__name__} has no input_layer/body/output_layer to load {path} into")
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise CheckpointError(f"{path} does not fit {type(module).__name__} ({len(mismatched)} shape mismatches, "
                              f"e.g. {mismatched[:3]}); it holds the full-width IR-SE50 (width=1.0, 50 layers)")
    to_load = {k: v for k, v in state.items() if k in wanted}
    report.loaded = sorted(to_load)
    report.unused = sorted(k for k in state if k not in wanted)
    missing = sorted(k for k in wanted if k not in to_load)
    counters = [k for k in missing if k.endswith("num_batches_tracked")]
    report.left_out = [k for k in missing if k not in counters]
    if strict and report.left_out:
        raise CheckpointError(f"{path} lacks {len(report.left_out)} backbone entries of {type(module).__name__} "
                              f"({_summarise(report.left_out)}); is it model_ir_se50.pth?")
    for k in counters:
        to_load[k] = own[k]
    module.load_state_dict(to_load, strict=False)
    return report
