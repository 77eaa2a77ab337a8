"""The authors' Style Transformer / pSp / e4e releases: key names and architecture read off the weights.

A release is ``{'state_dict', 'opts', 'latent_avg'}`` with ``encoder.module.*`` and
``decoder.module.*`` keys (DataParallel) for the Style Transformer, or ``encoder.*`` /
``decoder.*`` for pSp and e4e. :func:`release_config` turns one into our
:class:`~stytr.config.InversionConfig` plus the encoder and decoder state dicts;
:meth:`stytr.models.inversion.InversionModel.from_checkpoint` builds the model from them.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..checkpoints import CheckpointError, strip_prefix
from ..config import GeneratorConfig, InversionConfig
from .irse import STAGE_UNITS
from .stylegan2 import generator_kwargs_from_state

__all__ = ["convert_official_state_dict", "release_config"]


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Style Transformer keys -> ours: ``encoder.module.X`` -> ``encoder.X``,
    ``decoder.module.X`` -> ``decoder.X`` (everything else is dropped)."""
    out = {}
    for prefix in ("encoder", "decoder"):
        for key, value in strip_prefix(state, f"{prefix}.module.").items():
            out[f"{prefix}.{key}"] = value
    return out


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


def release_config(ckpt: Mapping[str, Any], source: str
                   ) -> tuple[InversionConfig, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(config, encoder state, decoder state) of an authors' release."""
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
    return InversionConfig.from_dict(fields), enc, dec
