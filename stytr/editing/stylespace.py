"""StyleSpace baseline (Wu, Lischinski and Shechtman, CVPR 2021): edit single style channels.

The style space S holds the per-layer modulation vectors that the affine layers
compute from W+ (``G.w_to_s``). For each attribute we look for the channels whose
values differ most for images that have it. Every channel ``c`` is standardised
with the mean ``μ_c`` and standard deviation ``σ_c`` over all fitted samples,
``δ_c = (s_c - μ_c) / σ_c``, and over the positive samples we record the mean
``m_c = E_pos[δ_c]`` and spread ``v_c = std_pos[δ_c]``. Channels are ranked by

* ``"shift"`` (default): ``|m_c|``, the positives' mean difference from the
  overall distribution in units of the channel's standard deviation;
* ``"consistency"``: ``|m_c| / v_c``, which also rewards channels on which the
  positives agree with one another (closer to the ranking in Wu et al.).

An edit adds ``alpha * σ_c * sign(m_c)`` to the chosen channel(s), so positive
``alpha`` adds the attribute. to_rgb layers can be left out of the search (they
mostly change colour globally).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from ..attributes import CELEBA_ATTRIBUTES, attribute_index, prepare_labels
from ..checkpoints import CheckpointError, load, save_atomic

__all__ = ["StyleSpace", "style_layout"]

FORMAT = "stytr-stylespace"


def style_layout(G) -> tuple[list[int], list[bool]]:
    """``(channels per style layer, is-to_rgb flag per style layer)`` of a generator, in synthesis order."""
    from ..models.stylegan2 import ToRGB

    layers = G.style_layers()
    sizes = [layer.conv.modulation.weight.shape[0] for layer in layers]
    return sizes, [isinstance(layer, ToRGB) for layer in layers]


def _flatten(s_codes) -> torch.Tensor:
    if isinstance(s_codes, torch.Tensor):
        return s_codes
    return torch.cat([s.flatten(1) for s in s_codes], dim=1)


class StyleSpace:
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, pos_shift: torch.Tensor, pos_spread: torch.Tensor,
                 layer_sizes: Sequence[int], to_rgb: Sequence[bool], fitted: torch.Tensor,
                 attribute_names: Sequence[str] = CELEBA_ATTRIBUTES, generator=None):
        self.mean, self.std = mean.float(), std.float()                  # (C,)
        self.pos_shift, self.pos_spread = pos_shift.float(), pos_spread.float()   # (A, C): m and v above
        self.layer_sizes, self.to_rgb = [int(n) for n in layer_sizes], [bool(t) for t in to_rgb]
        self.fitted = fitted.bool()
        self.attribute_names = list(attribute_names)
        self.generator = generator
        if sum(self.layer_sizes) != self.mean.numel() or len(self.to_rgb) != len(self.layer_sizes):
            raise ValueError("layer_sizes / to_rgb do not match the number of channels")
        offsets = torch.tensor([0, *self.layer_sizes]).cumsum(0)
        self._offsets = offsets.tolist()
        self._layer_of = torch.repeat_interleave(torch.arange(len(self.layer_sizes)), torch.tensor(self.layer_sizes))

    # -- fitting ---------------------------------------------------------------------
    @classmethod
    def fit(cls, G, wplus: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, batch: int = 256,
            attribute_names: Sequence[str] = CELEBA_ATTRIBUTES) -> "StyleSpace":
        """Statistics of ``G.w_to_s(wplus)`` for W+ codes (N, n_latent, D) with labels (N, A)."""
        sizes, to_rgb = style_layout(G)
        device = next(G.parameters()).device

        def chunks() -> Iterator[torch.Tensor]:
            with torch.no_grad():
                for start in range(0, wplus.shape[0], batch):
                    yield _flatten(G.w_to_s(wplus[start:start + batch].to(device))).cpu()

        out = cls._fit_chunks(chunks(), labels, mask, sizes, to_rgb, attribute_names)
        out.generator = G
        return out

    @classmethod
    def fit_s(cls, s_codes, labels: torch.Tensor, mask: torch.Tensor | None = None,
              layer_sizes: Sequence[int] | None = None, to_rgb: Sequence[bool] | None = None,
              attribute_names: Sequence[str] = CELEBA_ATTRIBUTES) -> "StyleSpace":
        """Fit from S codes: a list of (N, C_l) tensors, or one (N, C) tensor with ``layer_sizes``."""
        if layer_sizes is None:
            if isinstance(s_codes, torch.Tensor):
                layer_sizes = [s_codes.shape[1]]
            else:
                layer_sizes = [s.shape[1] for s in s_codes]
        to_rgb = [False] * len(layer_sizes) if to_rgb is None else to_rgb
        return cls._fit_chunks(iter([_flatten(s_codes).detach().cpu()]), labels, mask, layer_sizes, to_rgb,
                               attribute_names)

    @classmethod
    def _fit_chunks(cls, chunks: Iterable[torch.Tensor], labels, mask, layer_sizes, to_rgb, attribute_names):

        y, known = prepare_labels(torch.as_tensor(labels).cpu(), None if mask is None else torch.as_tensor(mask).cpu())
        pos = (y.bool() & known).double()                                 # (N, A)
        n, s1, s2, p1, p2 = 0, 0.0, 0.0, 0.0, 0.0
        start = 0
        for s in chunks:
            s = s.double()
            pb = pos[start:start + s.shape[0]]
            start += s.shape[0]
            n += s.shape[0]
            s1, s2 = s1 + s.sum(0), s2 + (s * s).sum(0)
            p1, p2 = p1 + pb.T @ s, p2 + pb.T @ (s * s)
        if start != y.shape[0]:
            raise ValueError(f"{start} codes but {y.shape[0]} label rows")
        mean = s1 / n
        std = (s2 / n - mean**2).clamp_min(0).sqrt().clamp_min(1e-8)
        n_pos = pos.sum(0).unsqueeze(1)                                   # (A, 1)
        mean_pos = p1 / n_pos.clamp_min(1)
        var_pos = (p2 / n_pos.clamp_min(1) - mean_pos**2).clamp_min(0)
        shift = (mean_pos - mean) / std
        spread = var_pos.sqrt() / std
        fitted = (n_pos.squeeze(1) > 0) & (n_pos.squeeze(1) < n)
        shift[~fitted] = 0
        A = y.shape[1]
        names = list(attribute_names) if len(attribute_names) == A else [f"attribute_{i}" for i in range(A)]
        return cls(mean, std, shift, spread, layer_sizes, to_rgb, fitted, names)

    # -- channels --------------------------------------------------------------------
    def _index(self, attribute) -> int:
        i = attribute_index(attribute, self.attribute_names)
        if not self.fitted[i]:
            raise ValueError(f"no positive (or no negative) examples of {self.attribute_names[i]!r} were fitted")
        return i

    def scores(self, attribute: int | str, criterion: str = "shift") -> torch.Tensor:
        """Relevance of every channel (C,) for the attribute (see the module docstring)."""
        i = self._index(attribute)
        if criterion == "shift":
            return self.pos_shift[i].abs()
        if criterion == "consistency":
            return self.pos_shift[i].abs() / self.pos_spread[i].clamp_min(1e-6)
        raise ValueError(f"criterion must be 'shift' or 'consistency', got {criterion!r}")

    def top_channels(self, attribute: int | str, k: int = 1, exclude_to_rgb: bool = True,
                     criterion: str = "shift") -> list[tuple[int, int, float]]:
        """The ``k`` most relevant channels as ``(style layer, channel, score)``."""
        score = self.scores(attribute, criterion).clone()
        if exclude_to_rgb:
            rgb = torch.tensor(self.to_rgb)[self._layer_of]
            score[rgb] = -1.0
        flat = torch.topk(score, k).indices.tolist()
        return [(int(self._layer_of[f]), f - self._offsets[int(self._layer_of[f])], float(score[f])) for f in flat]

    # -- editing ---------------------------------------------------------------------
    def edit_s(self, s_codes: Sequence[torch.Tensor], attribute: int | str, alpha: float | torch.Tensor, k: int = 1,
               exclude_to_rgb: bool = True, criterion: str = "shift",
               channels: Sequence[tuple[int, int]] | None = None) -> list[torch.Tensor]:
        """S codes with the attribute's top channel(s) moved by ``alpha * σ_c * sign(m_c)`` (alpha may be (B,))."""
        i = self._index(attribute)
        if channels is None:
            channels = [(layer, ch) for layer, ch, _ in self.top_channels(attribute, k, exclude_to_rgb, criterion)]
        out = [s.clone() for s in s_codes]
        for layer, ch in channels:
            flat = self._offsets[layer] + ch
            s = out[layer]
            a = torch.as_tensor(alpha, dtype=s.dtype, device=s.device)
            sign = 1.0 if self.pos_shift[i, flat] >= 0 else -1.0
            s[:, ch] = s[:, ch] + a * float(self.std[flat]) * sign
        return out

    def edit(self, wplus: torch.Tensor, attribute: int | str, alpha: float | torch.Tensor, G=None,
             **kwargs) -> list[torch.Tensor]:
        """Edited S codes of W+ codes (B, n_latent, D); ``G`` defaults to the generator used in :meth:`fit`."""
        G = G if G is not None else self.generator
        if G is None:
            raise ValueError("StyleSpace.edit needs the generator (pass G=..., or fit with StyleSpace.fit(G, ...))")
        with torch.no_grad():
            return self.edit_s(G.w_to_s(wplus), attribute, alpha, **kwargs)

    @staticmethod
    def render(G, s_codes: Sequence[torch.Tensor], noise=None, randomize_noise: bool = False) -> torch.Tensor:
        with torch.no_grad():
            return G.synthesize_s(s_codes, noise=noise, randomize_noise=randomize_noise)

    # -- persistence -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": FORMAT, "mean": self.mean, "std": self.std, "pos_shift": self.pos_shift,
                "pos_spread": self.pos_spread, "layer_sizes": list(self.layer_sizes), "to_rgb": list(self.to_rgb),
                "fitted": self.fitted, "attribute_names": list(self.attribute_names)}

    def save(self, path: str | os.PathLike) -> Path:
        return save_atomic(self.state_dict(), path)

    @classmethod
    def from_state_dict(cls, state: dict, generator=None) -> "StyleSpace":
        if state.get("format") != FORMAT:
            raise CheckpointError(f"not a StyleSpace file (format {state.get('format')!r})")
        return cls(state["mean"], state["std"], state["pos_shift"], state["pos_spread"], state["layer_sizes"],
                   state["to_rgb"], state["fitted"], state["attribute_names"], generator=generator)

    @classmethod
    def load(cls, path: str | os.PathLike, generator=None) -> "StyleSpace":
        return cls.from_state_dict(load(path), generator)
