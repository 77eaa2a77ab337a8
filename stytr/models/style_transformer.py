"""The Style Transformer inversion model.

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

The machinery every inversion model shares lives in :mod:`stytr.models.inversion`; the
authors' release layout in :mod:`stytr.models.release`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import InversionConfig
from .attention import TransformerBlock, flatten_feature_map
from .inversion import FeaturePyramidTrunk, InversionModel

__all__ = ["StyleTransformerEncoder", "BlockStack", "StyleTransformer"]


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
