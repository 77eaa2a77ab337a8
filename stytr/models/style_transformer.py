"""Style Transformer inversion model, and the machinery every inversion model shares.

Data flow (full size): a 256x256 image goes through the IR-SE50 trunk, which taps
c1 (128 ch, 64x64), c2 (256 ch, 32x32) and c3 (512 ch, 16x16); an FPN adds the
bilinearly upsampled coarser level to a 1x1 lateral projection of the finer one,
``p2 = up(c3) + latlayer1(c2)`` and ``p1 = up(p2) + latlayer2(c1)``. Learned query
tokens ``z`` (1, 18, 512) pass through the generator's mapping MLP and are refined
by one transformer block per level (coarse on c3, medium on p2, fine on p1). The
result is an offset from the average latent: ``W+ = delta + latent_avg``, rendered
by the frozen StyleGAN2 synthesis network and average-pooled to the output size.

Module names follow the published code inside ``encoder`` (``input_layer``,
``body``, ``latlayer1``, ``latlayer2``, ``transformerlayer_{coarse,medium,fine}``,
``z``) and ``decoder`` (the rosinality generator), so an official checkpoint maps
onto this model by dropping DataParallel's ``.module`` (:func:`convert_official_state_dict`).

:class:`InversionModel` holds what the inversion models have in common (frozen
synthesis, ``latent_avg``, pooling, ``encode``/``decode``/``forward``, checkpoints);
:class:`StyleTransformer` here and :class:`~stytr.models.psp.PSP` /
:class:`~stytr.models.psp.E4E` only differ in their encoder. :func:`build_inversion_model`
and :func:`build_encoder` pick the class from ``InversionConfig.kind``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ..checkpoints import CheckpointError, load_mapping, load_state_strict, strip_prefix
from ..config import GeneratorConfig, InversionConfig
from .attention import TransformerBlock, flatten_feature_map
from .irse import STAGE_UNITS, IRSETrunk, load_ir_se50_weights

__all__ = ["CHECKPOINT_FORMAT", "FeaturePyramidTrunk", "StyleTransformerEncoder", "BlockStack", "InversionModel",
           "StyleTransformer", "build_encoder", "build_inversion_model", "count_encoder_parameters",
           "convert_official_state_dict", "upsample_add"]

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


class BlockStack(nn.ModuleList):
    """Several transformer blocks applied in turn to the same memory (``n_blocks > 1``)."""

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for block in self:
            queries = block(queries, memory)
        return queries


def _level(cfg: InversionConfig) -> nn.Module:
    blocks = [TransformerBlock(cfg.style_dim, cfg.heads, cfg.attention_head_dim, cfg.dim_feedforward, cfg.dropout,
                               self_attention=cfg.use_self_attn, norm_first=cfg.norm_first)
              for _ in range(cfg.n_blocks)]
    if not blocks:
        raise ValueError("n_blocks must be at least 1")
    # One block sits directly under the level's name, as in the published checkpoints.
    return blocks[0] if len(blocks) == 1 else BlockStack(blocks)


class StyleTransformerEncoder(FeaturePyramidTrunk):
    """Trunk + FPN + three levels of transformer blocks + the learned queries ``z``.

    ``forward(x, query)`` takes the mapped queries (B, N, style_dim) and returns the
    W+ offsets (B, N, style_dim).
    """

    def __init__(self, cfg: InversionConfig):
        super().__init__(cfg, cfg.style_dim)
        self.transformerlayer_coarse = _level(cfg)
        self.transformerlayer_medium = _level(cfg)
        self.transformerlayer_fine = _level(cfg)
        z = torch.empty(1, cfg.n_latent, cfg.style_dim)
        if z.device.type != "meta":  # (sampling on 'meta' only costs time when counting parameters)
            z.normal_()
        self.z = nn.Parameter(z)

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        c3, p2, p1 = self.pyramid(x)
        q = self.transformerlayer_coarse(query, flatten_feature_map(c3))
        q = self.transformerlayer_medium(q, flatten_feature_map(p2))
        return self.transformerlayer_fine(q, flatten_feature_map(p1))


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
        """Copy generator weights into ``decoder`` (a rosinality checkpoint path, a safetensors
        file or a state dict) and set ``latent_avg`` from ``latent_avg``, the checkpoint's
        ``latent_avg``, or else the mean of 10,000 mapped samples."""
        from ..checkpoints import load_weights
        from .stylegan2 import load_rosinality_generator

        if isinstance(source, str) and source == "toy":
            raise ValueError("'toy' names the shipped ToyFaces generator; pass its file path or state dict")
        if isinstance(source, Mapping):
            state, name = dict(source), "generator state dict"
        elif str(source).endswith(".safetensors"):
            state, name = load_weights(source)[0], str(source)
        else:
            generator, ckpt_avg = load_rosinality_generator(source)
            state, name = generator.state_dict(), str(source)
            latent_avg = latent_avg if latent_avg is not None else ckpt_avg
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
            model = build_inversion_model(cfg)
            load_state_strict(model, ckpt["model"], source)
        elif isinstance(ckpt.get("state_dict"), Mapping):
            model = _from_release(ckpt, source)
        else:
            raise CheckpointError(f"{source} is neither a stytr checkpoint (format='stytr') nor an authors' "
                                  f"release ({{'state_dict', 'opts', 'latent_avg'}}); top-level keys: {list(ckpt)[:8]}")
        if cls is not InversionModel and not isinstance(model, cls):
            raise CheckpointError(f"{source} holds a {type(model).__name__} (kind {model.kind!r}), not a {cls.__name__}")
        return model.to(device).eval()


class StyleTransformer(InversionModel):
    """The Style Transformer (``kind='transformer'``); ``use_self_attn=False`` gives "w/o self"."""

    kind = "transformer"
    trains_mapping = True

    @staticmethod
    def make_encoder(cfg: InversionConfig) -> nn.Module:
        return StyleTransformerEncoder(cfg)

    def queries(self, batch: int) -> torch.Tensor:
        """The learned tokens ``z`` mapped token by token through the generator's MLP, (batch, N, d)."""
        z = self.encoder.z
        query = self.decoder.style(z.flatten(0, 1)).view(z.shape)
        return query.expand(batch, -1, -1)

    def predict_offsets(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, self.queries(x.shape[0]))


# -- factories -----------------------------------------------------------------------

def _model_class(kind: str) -> type[InversionModel]:
    from .psp import E4E, PSP

    classes = {"transformer": StyleTransformer, "psp": PSP, "e4e": E4E}
    if kind not in classes:
        raise ValueError(f"unknown encoder kind {kind!r}; choose one of {sorted(classes)}")
    return classes[kind]


def build_encoder(cfg: InversionConfig) -> nn.Module:
    """The encoder alone (no generator): for parameter and FLOP counts."""
    return _model_class(cfg.kind).make_encoder(cfg)


def build_inversion_model(cfg: InversionConfig, build_generator: bool = True) -> InversionModel:
    """A :class:`StyleTransformer`, :class:`~stytr.models.psp.PSP` or :class:`~stytr.models.psp.E4E`."""
    return _model_class(cfg.kind)(cfg, build_generator=build_generator)


def count_encoder_parameters(cfg: InversionConfig) -> int:
    """Encoder parameters (including ``z``, excluding the mapping MLP), built on the meta device."""
    with torch.device("meta"):
        encoder = build_encoder(cfg)
    return sum(p.numel() for p in encoder.parameters())


# -- the authors' releases ----------------------------------------------------------------

def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Style Transformer keys -> ours: ``encoder.module.X`` -> ``encoder.X``,
    ``decoder.module.X`` -> ``decoder.X`` (everything else is dropped)."""
    out = {}
    for prefix in ("encoder", "decoder"):
        for key, value in strip_prefix(state, f"{prefix}.module.").items():
            out[f"{prefix}.{key}"] = value
    return out


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


def _backbone_from_state(enc: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Depth, width and input channels of an IR-SE trunk, read off its weights."""
    ids = sorted({int(m.group(1)) for k in enc if (m := re.match(r"body\.(\d+)\.", k))})
    if not ids or "input_layer.0.weight" not in enc:
        raise CheckpointError(f"{source}: the encoder has no IR-SE trunk (input_layer.*, body.N.*)")
    widths = [enc[f"body.{i}.res_layer.1.weight"].shape[0] for i in ids]
    units = []
    for i, width in enumerate(widths):
        if i == 0 or width != widths[i - 1]:
            units.append(0)
        units[-1] += 1
    units = tuple(units)
    if len(units) != 4:
        raise CheckpointError(f"{source}: expected 4 stages of residual units, found widths {sorted(set(widths))}")
    depth = next((d for d, u in STAGE_UNITS.items() if u == units), None)
    width = enc["input_layer.0.weight"].shape[0] / 64
    return dict(backbone_layers=depth or 50, backbone_units=() if depth else units,
                backbone_width=1.0 if width == 1 else width, input_nc=enc["input_layer.0.weight"].shape[1])


def _transformer_from_state(enc: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
    level = "transformerlayer_coarse."
    stacked = any(k.startswith(level + "0.") for k in enc)
    first = level + ("0." if stacked else "")
    n_blocks = len({k.split(".")[1] for k in enc if k.startswith(level)}) if stacked else 1
    try:
        in_proj = enc[first + "multihead_attn.in_proj_weight"]
        ff = enc[first + "linear1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"{source}: no transformer block weights ({err.args[0]!r} missing)") from None
    heads = 4  # not recorded in the weights; the published models use 4
    return dict(n_queries=enc["z"].shape[1], heads=heads, head_dim=in_proj.shape[0] // 3 // heads,
                dim_feedforward=ff, n_blocks=n_blocks,
                use_self_attn=any(k.startswith(first + "self_attn.") for k in enc))


def _styles_from_state(enc: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Number of style blocks and the coarse/medium/fine split, from their conv counts."""
    convs: dict[int, int] = {}
    for key in enc:
        m = re.fullmatch(r"styles\.(\d+)\.convs\.(\d+)\.weight", key)
        if m:
            convs[int(m.group(1))] = convs.get(int(m.group(1)), 0) + 1
    counts = [convs[i] for i in sorted(convs)]
    if not counts or sorted(set(counts)) != list(range(counts[0], counts[0] + 3)) or counts != sorted(counts):
        raise CheckpointError(f"{source}: unexpected style-block layout (convs per block: {counts})")
    coarse = counts.count(counts[0])
    middle = coarse + counts.count(counts[0] + 1)
    return dict(n_queries=len(counts), coarse_ind=coarse, middle_ind=middle, input_size=16 * 2 ** counts[0])


def _from_release(ckpt: Mapping[str, Any], source: str) -> InversionModel:
    from .stylegan2 import generator_kwargs_from_state

    state, opts = ckpt["state_dict"], dict(ckpt.get("opts") or {})
    if any(k.startswith("classifier.") for k in state):
        raise CheckpointError(f"{source} is a reference-editing release (it has classifier.* weights); "
                              f"load it with EditTransformer.from_checkpoint")
    parallel = any(k.startswith("encoder.module.") for k in state)
    enc = strip_prefix(state, "encoder.module." if parallel else "encoder.")
    dec = strip_prefix(state, "decoder.module." if parallel else "decoder.")
    if not enc or not dec:
        raise CheckpointError(f"{source}: expected encoder.* and decoder.* weights, found e.g. {list(state)[:5]}")
    if opts.get("learn_in_w"):
        raise CheckpointError(f"{source} was trained with learn_in_w=True (a single W code), which stytr does not "
                              f"implement")
    try:
        generator = GeneratorConfig(**generator_kwargs_from_state(dec), checkpoint="")
    except ValueError as err:
        raise CheckpointError(f"{source}: decoder: {err}") from err
    fields: dict[str, Any] = dict(generator=generator.to_dict(), output_size=256, backbone_weights="",
                                  start_from_latent_avg=bool(opts.get("start_from_latent_avg", True)),
                                  **_backbone_from_state(enc, source))
    if "z" in enc:
        fields.update(kind="transformer", **_transformer_from_state(enc, source))
    elif any(k.startswith("styles.") for k in enc):
        kind = "e4e" if opts.get("encoder_type") == "Encoder4Editing" else "psp"
        fields.update(kind=kind, **_styles_from_state(enc, source))
    else:
        raise CheckpointError(f"{source}: encoder is neither a Style Transformer (z, transformerlayer_*) nor a "
                              f"pSp/e4e GradualStyleEncoder (styles.*)")
    if fields["n_queries"] == generator.n_latent:
        fields["n_queries"] = 0
    cfg = InversionConfig.from_dict(fields)
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
