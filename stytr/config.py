"""One configuration system for the CLI, the trainers and the notebooks.

Every config is a dataclass deriving from :class:`Config`. A config class lists its
presets (``toy`` for the built-in ToyFaces domain on a CPU, ``ffhq`` for the
paper's full-scale setting) in ``PRESETS``; ``Cls.preset("toy", key=value)``
builds one, ``cfg.override(["optim.lr=3e-4", "steps=100"])`` applies
command-line style overrides to nested fields, and ``to_dict``/``from_dict``
round-trip through checkpoints (plain Python types only, so they load with
``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import ast
import dataclasses
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

__all__ = ["Config", "GeneratorConfig", "TOY_GENERATOR", "FFHQ_GENERATOR", "field", "dataclass"]


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

    @classmethod
    def preset(cls, name: str, **overrides):
        if name not in cls.PRESETS:
            raise ValueError(f"{cls.__name__} has no preset {name!r}; choose one of {sorted(cls.PRESETS)}")
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
                value = ftype.from_dict(value)
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
            node[parts[-1]] = _parse_value(raw, node[parts[-1]]) if isinstance(raw, str) else raw
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
    # A rosinality checkpoint (``{'g_ema': ...}``) or a safetensors file; "toy" = the shipped ToyFaces generator.
    checkpoint: str = ""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "toy": dict(size=64, style_dim=128, n_mlp=4, channel_multiplier=0.125, channel_max=64, checkpoint="toy"),
        "ffhq": dict(size=1024, checkpoint="pretrained_models/stylegan2-ffhq-config-f.pt"),
    }

    def build(self):
        from .models.stylegan2 import Generator

        return Generator(self.size, self.style_dim, self.n_mlp, channel_multiplier=self.channel_multiplier,
                         channel_max=self.channel_max, lr_mlp=self.lr_mlp)

    @property
    def n_latent(self) -> int:
        import math

        return int(math.log2(self.size)) * 2 - 2


TOY_GENERATOR = GeneratorConfig.preset("toy")
FFHQ_GENERATOR = GeneratorConfig.preset("ffhq")
