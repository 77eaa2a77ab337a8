"""Reference-based editing in W+: one transformer block, source tokens attend to the reference.

The source code's ``n_latent`` tokens are the queries; the reference code's tokens
are the keys and values of the cross-attention (the published block also runs
self-attention over the source tokens first). The block's output *is* the edited
W+ code (no residual to the source outside the block), as in the published model.

``model.encoder.transformerlayer`` carries the published parameter names, ``decoder``
is the frozen generator, ``classifier`` the frozen latent classifier that the
training losses read (:class:`~stytr.models.latent_classifier.LatentClassifier`).
Only ``encoder`` trains.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import nn

from ..checkpoints import CheckpointError, build_checked, load_mapping, load_state_strict, strip_prefix
from ..config import EditTransformerConfig, GeneratorConfig
from .attention import TransformerBlock

__all__ = ["EDIT_CHECKPOINT_FORMAT", "EditTransformerEncoder", "EditTransformer"]

EDIT_CHECKPOINT_FORMAT = "stytr-edit"


class EditTransformerEncoder(nn.Module):
    def __init__(self, cfg: EditTransformerConfig):
        super().__init__()
        self.transformerlayer = TransformerBlock(cfg.style_dim, cfg.heads, cfg.head_dim or None, cfg.dim_feedforward,
                                                 cfg.dropout, self_attention=cfg.use_self_attn,
                                                 norm_first=cfg.norm_first)

    def forward(self, src_w: torch.Tensor, ref_w: torch.Tensor) -> torch.Tensor:
        return self.transformerlayer(src_w, ref_w)


def _latent_classifier_class():
    try:
        from .latent_classifier import LatentClassifier
    except ImportError as err:  # written by another part of the package
        raise ImportError(f"EditTransformer needs stytr.models.latent_classifier.LatentClassifier ({err})") from err
    return LatentClassifier


class EditTransformer(nn.Module):
    def __init__(self, cfg: EditTransformerConfig | None = None, build_generator: bool = True,
                 build_classifier: bool = True):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else EditTransformerConfig()
        self.encoder = EditTransformerEncoder(cfg)
        self.decoder = cfg.generator.build().requires_grad_(False).eval() if build_generator else None
        self.classifier = None
        if build_classifier:
            classifier = _latent_classifier_class()(
                n_latent=cfg.latent_count, style_dim=cfg.style_dim, n_attr=cfg.n_attr,
                hidden=tuple(cfg.classifier_hidden), embed_dim=cfg.classifier_embed_dim)
            self._set_classifier(classifier)
        pooled = cfg.output_size and cfg.output_size != cfg.generator.size
        self.face_pool = nn.AdaptiveAvgPool2d((cfg.output_size, cfg.output_size)) if pooled else nn.Identity()

    def _set_classifier(self, classifier: nn.Module) -> None:
        self.classifier = classifier.requires_grad_(False).eval()
        if all(hasattr(classifier, a) for a in ("n_attr", "hidden", "embed_dim")):
            # The config describes the classifier actually held, so that a checkpoint rebuilds it.
            self.cfg = dataclasses.replace(self.cfg, n_attr=classifier.n_attr, classifier_hidden=tuple(classifier.hidden),
                                           classifier_embed_dim=classifier.embed_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        for frozen in (self.decoder, self.classifier):
            if frozen is not None:
                frozen.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def load_classifier(self, path) -> None:
        """Replace the classifier with trained weights (any layout LatentClassifier reads)."""
        classifier = _latent_classifier_class().from_checkpoint(path, n_latent=self.cfg.latent_count,
                                                                style_dim=self.cfg.style_dim)
        self._set_classifier(classifier.to(next(self.encoder.parameters()).device))

    # -- forward -------------------------------------------------------------
    def edit(self, src_w: torch.Tensor, ref_w: torch.Tensor) -> torch.Tensor:
        """Source W+ (B, N, d) and reference W+ (B, M, d) -> edited W+ (B, N, d)."""
        return self.encoder(src_w, ref_w)

    def decode(self, wplus: torch.Tensor, resize: bool = True, randomize_noise: bool = True, noise=None):
        if self.decoder is None:
            raise RuntimeError("this model was built without its generator (build_generator=False)")
        images, _ = self.decoder([wplus], input_is_latent=True, randomize_noise=randomize_noise, noise=noise)
        return self.face_pool(images) if resize else images

    def forward(self, src_w: torch.Tensor, ref_w: torch.Tensor, return_images: bool = False,
                randomize_noise: bool = True, resize: bool = True):
        """Edited W+; with ``return_images`` the pair ``(images, edited W+)`` (the published order)."""
        edited = self.edit(src_w, ref_w)
        if not return_images:
            return edited
        return self.decode(edited, resize=resize, randomize_noise=randomize_noise), edited

    # -- checkpoints ------------------------------------------------------------
    def checkpoint_dict(self) -> dict[str, Any]:
        """``{'format': 'stytr-edit', 'config', 'model'}`` (encoder, generator and classifier weights)."""
        return {"format": EDIT_CHECKPOINT_FORMAT, "config": self.cfg.to_dict(), "model": self.state_dict()}

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under the published names (``encoder.module.*``, ``decoder.module.*``, ``classifier.module.*``)."""
        out = {}
        for key, value in self.state_dict().items():
            head, _, rest = key.partition(".")
            if head in ("encoder", "decoder", "classifier"):
                out[f"{head}.module.{rest}"] = value
        return out

    @classmethod
    def from_checkpoint(cls, path, classifier_path=None, device: str | torch.device = "cpu") -> "EditTransformer":
        """Load our checkpoint (:meth:`checkpoint_dict`) or the authors' reference-editing release
        (``{'state_dict': {encoder.module.*, decoder.module.*, classifier.module.*}, 'opts'}``).
        ``classifier_path`` replaces the classifier weights (needed when the file has none).
        Returns the model in eval mode."""
        ckpt, source = load_mapping(path)
        if ckpt.get("format") == EDIT_CHECKPOINT_FORMAT:
            cfg = EditTransformerConfig.from_dict(dict(ckpt["config"]))
            state = dict(ckpt["model"])
            has_generator = any(k.startswith("decoder.") for k in state)
            has_classifier = any(k.startswith("classifier.") for k in state)
            if not has_classifier and classifier_path is None:
                raise CheckpointError(f"{source} holds no classifier weights; pass classifier_path")
            model = build_checked(lambda: cls(cfg, build_generator=has_generator, build_classifier=has_classifier),
                                  state, source)
            model.load_state_dict(state)
        elif isinstance(ckpt.get("state_dict"), Mapping):
            model = _from_release(cls, ckpt, source, need_classifier=classifier_path is None)
        else:
            raise CheckpointError(f"{source} is neither a stytr edit checkpoint (format={EDIT_CHECKPOINT_FORMAT!r}) "
                                  f"nor the authors' release ({{'state_dict', 'opts'}}); keys: {list(ckpt)[:8]}")
        if classifier_path is not None:
            model.load_classifier(classifier_path)
        return model.to(device).eval()


def _from_release(cls, ckpt: Mapping[str, Any], source: str, need_classifier: bool) -> EditTransformer:
    from .stylegan2 import generator_kwargs_from_state

    state = ckpt["state_dict"]
    enc = strip_prefix(state, "encoder.module.")
    dec = strip_prefix(state, "decoder.module.")
    clf = strip_prefix(state, "classifier.module.")
    if not any(k.startswith("transformerlayer.") for k in enc) or not dec:
        raise CheckpointError(f"{source} is not a reference-editing release (expected encoder.module.transformerlayer.* "
                              f"and decoder.module.*; found e.g. {list(state)[:5]})")
    if not clf and need_classifier:
        raise CheckpointError(f"{source} holds no classifier.module.* weights; pass classifier_path")
    try:
        generator = GeneratorConfig(**generator_kwargs_from_state(dec), checkpoint="")
    except ValueError as err:
        raise CheckpointError(f"{source}: decoder: {err}") from err
    block = "transformerlayer."
    in_proj = enc[block + "multihead_attn.in_proj_weight"]
    heads = 4  # not recorded in the weights; the published model uses 4
    cfg = EditTransformerConfig(generator=generator, heads=heads, head_dim=in_proj.shape[0] // 3 // heads,
                                dim_feedforward=enc[block + "linear1.weight"].shape[0],
                                use_self_attn=any(k.startswith(block + "self_attn.") for k in enc), output_size=256)
    model = cls(cfg, build_classifier=False)
    load_state_strict(model.encoder, enc, f"{source} [encoder]")
    load_state_strict(model.decoder, dec, f"{source} [decoder]")
    if clf:
        classifier = _latent_classifier_class().from_state_dict(clf, n_latent=cfg.latent_count,
                                                                style_dim=cfg.style_dim,
                                                                source=f"{source} [classifier]")
        model._set_classifier(classifier)
        model.cfg = dataclasses.replace(cfg, n_attr=classifier.n_attr, classifier_hidden=tuple(classifier.hidden),
                                        classifier_embed_dim=classifier.embed_dim)
    return model
