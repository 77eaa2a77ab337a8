"""Attention blocks of the Style Transformer and the reference-editing transformer.

Tensors are batch-first: queries ``(B, N, d_model)``, memory ``(B, M, d_model)``.

Parameter names follow ``torch.nn.MultiheadAttention`` and the DETR-style decoder
layer used by the published code (``self_attn``, ``multihead_attn``, ``linear1``,
``linear2``, ``norm1..3``), so the official ``encoder.module.*`` weights load into
:class:`TransformerBlock` without renaming. There are no positional encodings.

The width of the attention (``heads * head_dim``) may differ from ``d_model``; with
the default ``head_dim = d_model // heads`` the packed projection has exactly the
shape of ``nn.MultiheadAttention``'s.

On the fast path (``STYTR_PATH=fast``, :mod:`stytr.runtime`) the projections that read the
same tensor are one matrix product (query, key and value in self-attention; key and value of
the memory in cross-attention), and the heads are strided views that
``scaled_dot_product_attention`` reads directly.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..runtime import fast_path_enabled

__all__ = ["MultiHeadAttention", "TransformerBlock", "flatten_feature_map"]


def flatten_feature_map(feature: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C): every spatial position becomes one key/value token."""
    return feature.flatten(2).transpose(1, 2)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over ``heads`` heads of ``head_dim`` each.

    ``in_proj_weight`` stacks the query, key and value projections (``3 * heads * head_dim``
    rows); ``out_proj`` maps the concatenated heads back to ``d_model``. ``dropout`` acts
    on the attention probabilities, as in ``nn.MultiheadAttention``.
    """

    def __init__(self, d_model: int, heads: int = 4, head_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if head_dim is None:
            if d_model % heads:
                raise ValueError(f"d_model={d_model} is not divisible by heads={heads}; give head_dim explicitly")
            head_dim = d_model // heads
        self.d_model, self.heads, self.head_dim, self.dropout = d_model, heads, head_dim, dropout
        inner = heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * inner))
        self.out_proj = nn.Linear(inner, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as nn.MultiheadAttention: Xavier on the packed projection, zero biases.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def _project(self, query, key, value):
        """Queries, keys and values split into heads, (B, heads, length, head_dim) each."""
        inner = self.heads * self.head_dim
        if fast_path_enabled():
            if query is key and key is value:
                qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
                return [self._split_heads(t) for t in qkv.split(inner, -1)]
            if key is value:
                q = F.linear(query, self.in_proj_weight[:inner], self.in_proj_bias[:inner])
                kv = F.linear(key, self.in_proj_weight[inner:], self.in_proj_bias[inner:])
                return [self._split_heads(t) for t in (q, *kv.split(inner, -1))]
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        return (self._split_heads(F.linear(query, w_q, b_q)), self._split_heads(F.linear(key, w_k, b_k)),
                self._split_heads(F.linear(value, w_v, b_v)))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None = None,
                return_weights: bool = False):
        """Returns the attended values ``(B, N, d_model)``; with ``return_weights`` also the
        head-averaged attention map ``(B, N, M)``."""
        value = key if value is None else value
        q, k, v = self._project(query, key, value)
        p = self.dropout if self.training else 0.0
        if return_weights:
            probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
            out = F.dropout(probs, p) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        batch, _, length, _ = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim))
        return (out, probs.mean(1)) if return_weights else out


class TransformerBlock(nn.Module):
    """Self-attention over the queries, cross-attention to a memory, feed-forward.

    Post-norm by default (``x = norm(x + dropout(sublayer(x)))`` after each sub-layer,
    the published layout); ``norm_first=True`` gives the pre-norm variant
    (``x = x + dropout(sublayer(norm(x)))``). ``self_attention=False`` drops the first
    sub-layer together with its norm (the paper's "w/o self" ablation).
    """

    def __init__(self, d_model: int = 512, heads: int = 4, head_dim: int | None = None,
                 dim_feedforward: int = 1024, dropout: float = 0.1, self_attention: bool = True,
                 norm_first: bool = False):
        super().__init__()
        self.has_self_attention, self.norm_first = self_attention, norm_first
        if self_attention:
            self.self_attn = MultiHeadAttention(d_model, heads, head_dim, dropout)
            self.norm1 = nn.LayerNorm(d_model)
            self.dropout1 = nn.Dropout(dropout)
        self.multihead_attn = MultiHeadAttention(d_model, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout3 = nn.Dropout(dropout)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``queries`` (B, N, d), ``memory`` (B, M, d) -> updated queries (B, N, d)."""
        x = queries
        if self.norm_first:
            if self.has_self_attention:
                h = self.norm1(x)
                x = x + self.dropout1(self.self_attn(h, h, h))
            x = x + self.dropout2(self.multihead_attn(self.norm2(x), memory, memory))
            return x + self.dropout3(self._feed_forward(self.norm3(x)))
        if self.has_self_attention:
            x = self.norm1(x + self.dropout1(self.self_attn(x, x, x)))
        x = self.norm2(x + self.dropout2(self.multihead_attn(x, memory, memory)))
        return self.norm3(x + self.dropout3(self._feed_forward(x)))
