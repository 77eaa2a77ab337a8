"""What every inversion model shares: the FPN trunk, frozen synthesis, ``latent_avg``, checkpoints.

:class:`InversionModel` holds what the inversion models have in common (frozen
synthesis, ``latent_avg``, pooling, ``encode``/``decode``/``forward``, checkpoints);
:class:`~stytr.models.style_transformer.StyleTransformer` and
:class:`~stytr.models.psp.PSP` / :class:`~stytr.models.psp.E4E` only differ in their
encoder. Each subclass registers itself under its ``kind``, so :func:`build_inversion_model`
and :meth:`InversionModel.from_checkpoint` pick the class from ``InversionConfig.kind``
without importing the subclasses' modules (``stytr.models`` imports them all).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ..checkpoints import CheckpointError, build_checked, load_mapping, load_state_strict
from ..config import InversionConfig
from .irse import IRSETrunk, load_ir_se50_weights
from .release import release_config

__all__ = ["CHECKPOINT_FORMAT", "FeaturePyramidTrunk", "InversionModel", "InversionWrapper", "build_encoder",
           "build_inversion_model", "count_encoder_parameters", "model_class", "upsample_add"]

CHECKPOINT_FORMAT = "stytr"


def upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Bilinear (``align_corners=True``) upsampling of ``top`` to ``lateral``'s size, plus ``lateral``."""
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class FeaturePyramidTrunk(IRSETrunk):
    """IR-SE trunk plus the two lateral 1x1 convolutions of the FPN.

    ``pyramid(x)`` returns ``(c3, p2, p1)``, each with ``out_channels`` maps. When the
    trunk's top width differs from ``out_channels`` (never in the published models) a
    1x1 ``input_proj`` maps c3 first.
    """

    def __init__(self, cfg: InversionConfig, out_channels: int):
        super().__init__(cfg.backbone_layers, cfg.backbone_width, cfg.input_nc, cfg.backbone_units or None)
        ch1, ch2, ch3 = self.tap_channels
        if ch3 != out_channels:
            self.input_proj = nn.Conv2d(ch3, out_channels, kernel_size=1)
        self.latlayer1 = nn.Conv2d(ch2, out_channels, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(ch1, out_channels, kernel_size=1, stride=1, padding=0)

    def top(self, c3: torch.Tensor) -> torch.Tensor:
        return self.input_proj(c3) if hasattr(self, "input_proj") else c3

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1, c2, c3 = self.features(x)
        c3 = self.top(c3)
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        return c3, p2, p1


# -- the shared model ------------------------------------------------------------

class InversionModel(nn.Module):
    """Encoder + frozen StyleGAN2 synthesis. Subclasses give ``make_encoder`` and ``predict_offsets``.

    Attributes: ``encoder``, ``decoder`` (the generator; ``None`` with
    ``build_generator=False``), ``latent_avg`` (buffer, (n_latent, style_dim)),
    ``face_pool``. Only the encoder (and, for the Style Transformer, the generator's
    mapping MLP) has ``requires_grad``.
    """

    kind = ""
    trains_mapping = False
    KINDS: dict[str, type["InversionModel"]] = {}   # kind -> class, filled by subclasses as they are defined

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            InversionModel.KINDS[cls.kind] = cls

    def __init__(self, cfg: InversionConfig | None = None, build_generator: bool = True):
        super().__init__()
        cfg = cfg if cfg is not None else InversionConfig()
        if cfg.kind != self.kind:
            cfg = dataclasses.replace(cfg, kind=self.kind)
        self.cfg = cfg
        self.encoder = self.make_encoder(cfg)
        self.decoder = cfg.generator.build() if build_generator else None
        self.register_buffer("latent_avg", torch.zeros(cfg.n_latent, cfg.style_dim))
        pooled = cfg.output_size and cfg.output_size != cfg.generator.size
        self.face_pool = nn.AdaptiveAvgPool2d((cfg.output_size, cfg.output_size)) if pooled else nn.Identity()
        if self.decoder is not None:
            self.freeze_synthesis()

    @staticmethod
    def make_encoder(cfg: InversionConfig) -> nn.Module:
        raise NotImplementedError

    def predict_offsets(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output (B, n_latent, style_dim) before ``latent_avg`` is added."""
        raise NotImplementedError

    # -- parameters ----------------------------------------------------------
    def freeze_synthesis(self) -> None:
        """Synthesis weights never train; the mapping MLP trains only where the encoder uses it."""
        for name, p in self.decoder.named_parameters():
            p.requires_grad_(self.trains_mapping and name.startswith("style."))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def encoder_parameter_count(self) -> int:
        """Parameters of the encoder including ``z`` (not the mapping MLP): the paper's Table 1 count."""
        return sum(p.numel() for p in self.encoder.parameters())

    # -- weights for training --------------------------------------------------
    def load_backbone(self, path: str | os.PathLike | None = None):
        """Initialise the trunk from pSp's ``model_ir_se50.pth`` (``cfg.backbone_weights`` by default)."""
        return load_ir_se50_weights(self.encoder, path or self.cfg.backbone_weights)

    def load_generator(self, source, latent_avg: torch.Tensor | None = None) -> None:
        """Copy generator weights into ``decoder`` (a Generator module or its state dict; files are
        resolved by :func:`stytr.artifacts.load`) and set ``latent_avg`` from ``latent_avg``, else
        the mean of 10,000 mapped samples."""
        if isinstance(source, nn.Module):
            state, name = source.state_dict(), f"generator {type(source).__name__}"
        elif isinstance(source, Mapping):
            state, name = dict(source), "generator state dict"
        else:
            raise TypeError(f"load_generator takes a Generator or a state dict, not {type(source).__name__}; "
                            f"load files with stytr.artifacts.load('generator', path)")
        load_state_strict(self.decoder, state, name)
        self.freeze_synthesis()
        if latent_avg is None:
            latent_avg = self.decoder.mean_latent(10000)
        self.set_latent_avg(latent_avg)

    @torch.no_grad()
    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        """Accepts (style_dim,), (1, style_dim) or (n_latent, style_dim)."""
        self.latent_avg.copy_(_expand_latent_avg(latent_avg, *self.latent_avg.shape, "latent_avg"))

    # -- forward -------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, input_size, input_size) in [-1, 1] -> W+ (B, n_latent, style_dim)."""
        codes = self.predict_offsets(x)
        if self.cfg.start_from_latent_avg:
            codes = codes + self.latent_avg
        return codes

    def decode(self, wplus: torch.Tensor, resize: bool = True, randomize_noise: bool = True,
               noise=None) -> torch.Tensor:
        """Render W+ with the frozen synthesis (entries beyond the generator's count are unused)."""
        if self.decoder is None:
            raise RuntimeError("this model was built without its generator (build_generator=False)")
        images, _ = self.decoder([wplus[:, : self.decoder.n_latent]], input_is_latent=True,
                                 randomize_noise=randomize_noise, noise=noise)
        return self.face_pool(images) if resize else images

    def forward(self, x: torch.Tensor, resize: bool = True, input_code: bool = False, randomize_noise: bool = True,
                return_latents: bool = False):
        """Images -> reconstructions (or ``(images, W+)`` with ``return_latents``). With
        ``input_code`` ``x`` is already a W+ code and the encoder is skipped."""
        codes = x if input_code else self.encode(x)
        images = self.decode(codes, resize=resize, randomize_noise=randomize_noise)
        return (images, codes) if return_latents else images

    # -- checkpoints ------------------------------------------------------------
    def checkpoint_dict(self) -> dict[str, Any]:
        """``{'format': 'stytr', 'model_class', 'config', 'model', 'latent_avg'}``; trainers add
        their own entries (optimizer, step, RNG state) next to these."""
        return {"format": CHECKPOINT_FORMAT, "model_class": type(self).__name__, "config": self.cfg.to_dict(),
                "model": self.state_dict(), "latent_avg": self.latent_avg.detach().clone()}

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under the published code's names (``encoder.module.*``, ``decoder.module.*``)."""
        out = {}
        for key, value in self.state_dict().items():
            head, _, rest = key.partition(".")
            if head in ("encoder", "decoder"):
                out[f"{head}.module.{rest}"] = value
        return out

    @classmethod
    def from_checkpoint(cls, path, device: str | torch.device = "cpu") -> "InversionModel":
        """Load our checkpoint (:meth:`checkpoint_dict`) or an authors' release: the Style
        Transformer's (``encoder.module.*``/``decoder.module.*``), pSp's or e4e's (``encoder.*``/
        ``decoder.*``), each ``{'state_dict', 'opts', 'latent_avg'}``. ``path`` may also be the
        loaded dict. The model comes back in eval mode."""
        ckpt, source = load_mapping(path)
        if ckpt.get("format") == CHECKPOINT_FORMAT:
            cfg = InversionConfig.from_dict(dict(ckpt["config"]))
            model = build_checked(lambda: build_inversion_model(cfg), ckpt["model"], source)
            model.load_state_dict(ckpt["model"])
        elif isinstance(ckpt.get("state_dict"), Mapping):
            model = _from_release(ckpt, source)
        else:
            raise CheckpointError(f"{source} is neither a stytr checkpoint (format='stytr') nor an authors' "
                                  f"release ({{'state_dict', 'opts', 'latent_avg'}}); top-level keys: {list(ckpt)[:8]}")
        if cls is not InversionModel and not isinstance(model, cls):
            raise CheckpointError(f"{source} holds a {type(model).__name__} (kind {model.kind!r}), not a {cls.__name__}")
        return model.to(device).eval()


# -- factories -----------------------------------------------------------------------

class InversionWrapper(nn.Module):
    """Base of models that reconstruct beyond an inversion model (the high-fidelity stage, PTI) while
    looking like one: ``cfg``, ``decoder``, ``latent_avg`` and :meth:`encode` are the wrapped model's,
    so code written for inversion models takes them as they are."""

    def __init__(self, inversion):
        super().__init__()
        self.inversion = inversion

    @property
    def cfg(self):
        return self.inversion.cfg

    @property
    def decoder(self):
        return self.inversion.decoder

    @property
    def latent_avg(self):
        return self.inversion.latent_avg

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.inversion.encode(x)


def model_class(kind: str) -> type[InversionModel]:
    """The inversion model class of ``InversionConfig.kind`` (``transformer``, ``psp``, ``e4e``)."""
    if kind not in InversionModel.KINDS:
        raise ValueError(f"unknown encoder kind {kind!r}; choose one of {sorted(InversionModel.KINDS)}")
    return InversionModel.KINDS[kind]


def build_encoder(cfg: InversionConfig) -> nn.Module:
    """The encoder alone (no generator): for parameter and FLOP counts."""
    return model_class(cfg.kind).make_encoder(cfg)


def build_inversion_model(cfg: InversionConfig, build_generator: bool = True) -> InversionModel:
    """A :class:`StyleTransformer`, :class:`~stytr.models.psp.PSP` or :class:`~stytr.models.psp.E4E`."""
    return model_class(cfg.kind)(cfg, build_generator=build_generator)


def count_encoder_parameters(cfg: InversionConfig) -> int:
    """Encoder parameters (including ``z``, excluding the mapping MLP), built on the meta device."""
    with torch.device("meta"):
        encoder = build_encoder(cfg)
    return sum(p.numel() for p in encoder.parameters())


# -- the authors' releases ----------------------------------------------------------------

def _expand_latent_avg(avg: torch.Tensor, n_latent: int, style_dim: int, source: str) -> torch.Tensor:
    avg = torch.as_tensor(avg).detach().float().cpu()
    if avg.ndim == 1:
        avg = avg[None]
    if avg.ndim == 3 and avg.shape[0] == 1:
        avg = avg[0]
    if avg.ndim != 2 or avg.shape[-1] != style_dim or avg.shape[0] not in (1, n_latent):
        raise CheckpointError(f"{source}: latent_avg of shape {tuple(avg.shape)} does not fit "
                              f"({n_latent}, {style_dim})")
    return avg.expand(n_latent, style_dim)


def _from_release(ckpt: Mapping[str, Any], source: str) -> InversionModel:
    cfg, enc, dec = release_config(ckpt, source)
    model = build_inversion_model(cfg)
    load_state_strict(model.encoder, enc, f"{source} [encoder]")
    load_state_strict(model.decoder, dec, f"{source} [decoder]")
    avg = ckpt.get("latent_avg")
    if avg is None:
        if cfg.start_from_latent_avg:
            raise CheckpointError(f"{source} has no latent_avg although its opts say start_from_latent_avg")
    else:
        model.set_latent_avg(_expand_latent_avg(avg, cfg.n_latent, cfg.style_dim, source))
    model.freeze_synthesis()
    return model
