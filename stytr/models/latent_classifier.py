"""Multi-attribute classifier on W+ codes (LCNet-style), used by label and reference editing.

Layout (names chosen so that the published classifier weights load unchanged):

* ``fcs.0 .. fcs.{k-1}``: ``nn.Linear`` layers on the flattened W+ code
  (18*512 = 9216 -> 2048 -> 512 for FFHQ), each followed by LeakyReLU(0.2);
* ``indep_fcs.i``: per attribute ``i`` an independent ``Linear(512, 32)`` whose output
  is the attribute's embedding (no activation after it);
* ``output_fcs.i``: ``Linear(32, 1)`` on that embedding gives the attribute's logit.

``forward`` returns ``(logits (B, n_attr), embeddings (B, n_attr, embed_dim))``. The
per-attribute heads are evaluated together as one batched product of their stacked
weights, which gives the same numbers as looping over the 40 heads but much faster.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from ..attributes import CELEBA_ATTRIBUTES
from ..checkpoints import CheckpointError, load, load_state_strict, load_weights, strip_prefix

__all__ = ["LatentClassifier", "CLASSIFIER_FORMAT", "classifier_state_from_checkpoint"]

CLASSIFIER_FORMAT = "stytr-latent-classifier"


class LatentClassifier(nn.Module):
    def __init__(self, n_latent: int = 18, style_dim: int = 512, n_attr: int = 40, hidden: Sequence[int] = (2048, 512),
                 embed_dim: int = 32, negative_slope: float = 0.2, attribute_names: Sequence[str] | None = None):
        super().__init__()
        if not hidden:
            raise ValueError("hidden needs at least one width (the published classifier uses (2048, 512))")
        self.n_latent, self.style_dim, self.n_attr = int(n_latent), int(style_dim), int(n_attr)
        self.hidden, self.embed_dim, self.negative_slope = tuple(int(h) for h in hidden), int(embed_dim), negative_slope
        widths = (self.n_latent * self.style_dim, *self.hidden)
        self.fcs = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.indep_fcs = nn.ModuleList(nn.Linear(self.hidden[-1], self.embed_dim) for _ in range(self.n_attr))
        self.output_fcs = nn.ModuleList(nn.Linear(self.embed_dim, 1) for _ in range(self.n_attr))
        self.activation = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()
        if attribute_names is None:
            attribute_names = CELEBA_ATTRIBUTES if self.n_attr == len(CELEBA_ATTRIBUTES) else \
                [f"attribute_{i}" for i in range(self.n_attr)]
        if len(attribute_names) != self.n_attr:
            raise ValueError(f"{len(attribute_names)} attribute names for {self.n_attr} attributes")
        self.attribute_names = list(attribute_names)

    @property
    def in_features(self) -> int:
        return self.n_latent * self.style_dim

    def config(self) -> dict:
        """Constructor arguments (plain Python types) that rebuild this architecture."""
        return dict(n_latent=self.n_latent, style_dim=self.style_dim, n_attr=self.n_attr, hidden=list(self.hidden),
                    embed_dim=self.embed_dim, negative_slope=self.negative_slope,
                    attribute_names=list(self.attribute_names))

    def features(self, w: torch.Tensor) -> torch.Tensor:
        """The shared trunk's output (B, hidden[-1])."""
        if w.ndim == 3:
            if w.shape[1:] != (self.n_latent, self.style_dim):
                raise ValueError(f"expected W+ of shape (B, {self.n_latent}, {self.style_dim}), got {tuple(w.shape)}")
            w = w.flatten(1)
        if w.ndim != 2 or w.shape[1] != self.in_features:
            raise ValueError(f"expected (B, {self.in_features}) or (B, {self.n_latent}, {self.style_dim}), "
                             f"got {tuple(w.shape)}")
        x = w
        for fc in self.fcs:
            x = self.activation(fc(x))
        return x

    def forward(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(w)
        embed_w = torch.stack([m.weight for m in self.indep_fcs])          # (A, E, H)
        embed_b = torch.stack([m.bias for m in self.indep_fcs])            # (A, E)
        out_w = torch.stack([m.weight[0] for m in self.output_fcs])        # (A, E)
        out_b = torch.cat([m.bias for m in self.output_fcs])               # (A,)
        embeddings = torch.einsum("bh,aeh->bae", x, embed_w) + embed_b     # (B, A, E)
        logits = (embeddings * out_w).sum(-1) + out_b                     # (B, A)
        return logits, embeddings

    def logits(self, w: torch.Tensor) -> torch.Tensor:
        return self(w)[0]

    def probabilities(self, w: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(w)[0])

    # -- loading ---------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], n_latent: int | None = None,
                        style_dim: int | None = None, source: str = "state dict", **kwargs) -> "LatentClassifier":
        """Build a classifier whose sizes are read off ``state`` (LCNet key names) and load it strictly.

        The flattened input width does not say how it splits into rows; give
        ``n_latent`` or ``style_dim`` when it is not 512 wide per row.
        """
        fc_ids = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"fcs\.(\d+)\.weight", k)))
        n_attr = sum(1 for k in state if re.fullmatch(r"indep_fcs\.\d+\.weight", k))
        if not fc_ids or n_attr == 0 or fc_ids != list(range(len(fc_ids))):
            raise CheckpointError(f"{source} has no latent-classifier weights (expected keys fcs.N.*, indep_fcs.N.*, "
                                  f"output_fcs.N.*); found e.g. {list(state)[:5]}")
        in_features = state["fcs.0.weight"].shape[1]
        hidden = tuple(state[f"fcs.{i}.weight"].shape[0] for i in fc_ids)
        embed_dim = state["indep_fcs.0.weight"].shape[0]
        if n_latent is None and style_dim is None:
            style_dim = 512 if in_features % 512 == 0 else None
        if n_latent is None and style_dim is not None:
            n_latent = in_features // style_dim
        if style_dim is None and n_latent is not None:
            style_dim = in_features // n_latent
        if n_latent is None or n_latent * style_dim != in_features:
            raise CheckpointError(f"{source}: input width {in_features} does not split into n_latent={n_latent} rows "
                                  f"of style_dim={style_dim}; pass n_latent/style_dim")
        model = cls(n_latent=n_latent, style_dim=style_dim, n_attr=n_attr, hidden=hidden, embed_dim=embed_dim, **kwargs)
        load_state_strict(model, state, source)
        return model

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, n_latent: int | None = None, style_dim: int | None = None,
                        map_location: str | torch.device = "cpu") -> "LatentClassifier":
        """Load our checkpoint (``.pt`` written by the trainer, or the exported ``.safetensors``) or the
        authors' (a dict with ``'state_dict'`` holding LCNet keys, plain or under ``classifier.module.``
        as in the reference-editing release), or a plain LCNet state dict."""
        path = Path(path)
        kwargs = {}
        if path.suffix == ".safetensors":
            state, meta = load_weights(path)
            if meta.get("config"):
                kwargs = _arch_kwargs(json.loads(meta["config"]))
        else:
            ckpt = load(path, map_location=map_location)
            state, config = classifier_state_from_checkpoint(ckpt, source=str(path))
            kwargs = _arch_kwargs(config or {})
        if n_latent is not None or style_dim is not None:
            kwargs.update(n_latent=n_latent, style_dim=style_dim)
        return cls.from_state_dict(state, source=str(path), **kwargs)


def _arch_kwargs(config: Mapping) -> dict:
    """The keywords of :meth:`LatentClassifier.from_state_dict` found in a stored config."""
    out = {k: config[k] for k in ("n_latent", "style_dim", "negative_slope") if config.get(k) is not None}
    if config.get("attribute_names"):
        out["attribute_names"] = list(config["attribute_names"])
    return out


def classifier_state_from_checkpoint(ckpt, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict | None]:
    """Pick the classifier's state dict (LCNet key names) out of any supported checkpoint layout.

    Returns ``(state_dict, model_config_or_None)``.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source} is a {type(ckpt).__name__}, not a checkpoint dict")
    if ckpt.get("format") == CLASSIFIER_FORMAT:
        return dict(ckpt["model"]), ckpt.get("model_config") or ckpt.get("config")
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
    for prefix in ("classifier.module.", "classifier.", "module."):
        picked = strip_prefix(state, prefix)
        if picked and any(k.startswith("fcs.") for k in picked):
            return picked, None
    if any(k.startswith("fcs.") for k in state):
        return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, None
    raise CheckpointError(f"{source} holds no latent classifier (no fcs.* keys, neither plain nor under "
                          f"classifier.module.); top-level keys: {list(ckpt)[:8]}")
