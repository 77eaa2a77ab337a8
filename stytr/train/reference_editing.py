"""Train the reference-editing transformer on W+ codes against a frozen latent classifier.

    python -m stytr train-reference-editor --preset ffhq --codes runs/celeba_codes/latents.pt \\
        --attribute Bangs --model.classifier_checkpoint runs/latent_classifier/latent_classifier.pt

Each step takes ``batch`` codes: the first half are the sources, the second half the
references (``pair_mode="random"``, the published scheme: a shuffled batch split in
two), or references are drawn from the codes whose classifier decision on the edited
attribute differs from the source's (``pair_mode="opposite"``). The loss is
:func:`stytr.losses.reference_editing_loss`; Adam (lr 1e-3, weight decay 5e-4) on the
encoder only, the classifier and the generator frozen, the encoder in train mode (dropout
on), as published. A seeded random ``val_fraction`` of the codes is held out for
:func:`stytr.eval.edit_rates.evaluate_reference_editor` (transfer and keep rates).

    l2  * MSE(src W+, edited W+)
  + ref * MSE(e_attr(edited), e_attr(ref))                 # the edited attribute follows the reference
  + src * MSE(e_others(edited), e_others(src))             # all other attributes stay as in the source
  + mode_seeking * 1 / (|E(s, r) - E(s, r')|_1 / |r - r'|_1)  # optional (off by default): see below

The mode-seeking term (``mode_seeking > 0``; after Mao et al.'s MSGAN, the "[4]" of the
supplementary's limitations) edits each source a second time with another reference of
the batch (the references rolled by one) and penalises edits that differ less than their
references do (:func:`stytr.losses.mode_seeking_loss`), against the mode collapse that
makes every reference give the same edit.

The run goes through :class:`stytr.train.loop.Loop`: ``out/last.pt`` resumes exactly (the
pairs of a step are a function of (seed, step)); ``out/final.pt`` (our ``format='stytr-edit'``
layout plus the training state) loads with
:meth:`stytr.models.edit_transformer.EditTransformer.from_checkpoint`.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import artifacts
from ..attributes import attribute_index
from ..checkpoints import load_state_strict
from ..config import ReferenceEditTrainConfig
from ..data.codes import load_codes
from ..domains import DOMAINS
from ..eval.edit_rates import evaluate_reference_editor, latent_decisions, opposite_references
from ..losses import mode_seeking_loss, reference_editing_loss
from ..models.edit_transformer import EditTransformer
from ..viz import image_grid, interleave
from .loop import Loop, ModelOptimizerState, json_safe
from .sampling import StepSampler, split_indices

__all__ = ["ReferenceEditResult", "ReferenceEditTrainer", "build_model", "train_reference_editor"]


def build_model(cfg: ReferenceEditTrainConfig) -> EditTransformer:
    """The editor with its classifier (``model.classifier_checkpoint``, any :func:`stytr.artifacts.load`
    spec) and, when ``model.generator.checkpoint`` is set, its generator. Without a generator the
    model has none (no image grids)."""
    gen_spec, clf_spec = cfg.model.generator.checkpoint, cfg.model.classifier_checkpoint
    model = EditTransformer(cfg.model, build_generator=bool(gen_spec), build_classifier=not clf_spec)
    if gen_spec:
        load_state_strict(model.decoder, artifacts.load("generator", gen_spec).state_dict(), f"generator {gen_spec}")
    if clf_spec:
        model._set_classifier(artifacts.load("classifier", clf_spec, style_dim=cfg.model.style_dim))
    else:
        warnings.warn("model.classifier_checkpoint is empty: training against an untrained (random) latent "
                      "classifier", stacklevel=2)
    return model


@dataclass
class ReferenceEditResult:
    model: Any                                   # the trained EditTransformer (eval mode)
    metrics: dict[str, Any]                      # evaluate_reference_editor on the held-out codes ({} if none)
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    checkpoint: Path | None = None               # out/final.pt
    attribute: str = ""
    shipped: Path | None = None                  # the data/ file written with ship=True


class ReferenceEditTrainer(ModelOptimizerState):
    def __init__(self, cfg: ReferenceEditTrainConfig, codes=None, model=None, device: str | torch.device = "cpu"):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.mode_seeking < 0 or (cfg.mode_seeking > 0 and cfg.batch < 4):
            raise ValueError(f"mode_seeking must be >= 0 and needs batch >= 4 (two references per source), "
                             f"got mode_seeking={cfg.mode_seeking}, batch={cfg.batch}")
        torch.manual_seed(cfg.seed)
        self.device = torch.device(device)
        self.model = (model if model is not None else build_model(cfg)).to(self.device)
        names = list(self.model.classifier.attribute_names)
        self.attr = attribute_index(cfg.attribute, names)
        self.attribute = names[self.attr]
        # One run folder per edited attribute when ``out`` says so ("runs/x/{attribute}"), so that
        # training a second attribute never resumes from the first one's checkpoint.
        self.out = Path(cfg.out.replace("{attribute}", self.attribute.lower()))
        self.latents, self.labels = load_codes(cfg.codes if codes is None else codes, self.model.cfg.latent_count,
                                               self.model.cfg.style_dim)
        self.train_idx, self.val_idx = split_indices(len(self.latents), cfg.val_fraction, cfg.seed)
        self.sampler = StepSampler(len(self.train_idx), cfg.batch, cfg.seed)
        self.decision = None
        if cfg.pair_mode == "opposite":
            self.decision = latent_decisions(self.model.classifier, self.latents)[:, self.attr]
        self.optimizer = torch.optim.Adam(self.model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        vis = self.val_idx if len(self.val_idx) >= 2 else self.train_idx
        k = min(4, len(vis) // 2)
        self.vis_src, self.vis_ref = self.latents[vis[:k]], self.latents[vis[k:2 * k]]
        self.loop = Loop(self, self.out, cfg.steps, ckpt_every=cfg.ckpt_every, eval_every=cfg.eval_every,
                         image_every=cfg.image_every, log_every=cfg.log_every, desc=f"ref-edit[{self.attribute}]")

    def state_dict(self) -> dict:
        return {**super().state_dict(), "attribute": self.attribute}

    # -- what the loop calls -------------------------------------------------------
    def batch_for_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(source indices, reference indices) into the codes, ``batch // 2`` each."""
        idx = self.train_idx[self.sampler.indices(step)]
        half = self.cfg.batch // 2
        src, ref = idx[:half], idx[half:]
        if self.cfg.pair_mode == "opposite":
            ref = opposite_references(self.decision, src, self.sampler.generator(step), pool=self.train_idx)
        return src, ref

    def train_step(self, pairs: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        self.model.train()
        src, ref = (self.latents[i].to(self.device) for i in pairs)
        edited = self.model(src, ref)
        total, terms = reference_editing_loss(self.model.classifier, src, ref, edited, self.attr,
                                              self.cfg.l2, self.cfg.ref, self.cfg.src)
        if self.cfg.mode_seeking > 0:
            other = ref.roll(1, dims=0)                 # a second reference per source, from the same batch
            terms["ms"] = mode_seeking_loss(edited, self.model(src, other), ref, other)
            total = total + self.cfg.mode_seeking * terms["ms"]
            terms["ms"] = terms["ms"].detach()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return {"loss": total.item(), **{k: v.item() for k, v in terms.items()}}

    def evaluate(self) -> dict[str, Any]:
        if len(self.val_idx) < 2 or self.cfg.eval_pairs <= 0:
            return {}
        return evaluate_reference_editor(self.model, self.latents[self.val_idx], n=self.cfg.eval_pairs,
                                         attribute=self.attr, pair_mode=self.cfg.pair_mode, seed=self.cfg.seed)

    @torch.no_grad()
    def sample(self) -> torch.Tensor | None:
        """Rows of (source, reference, edited) images of fixed held-out pairs; None without a generator."""
        if self.model.decoder is None or len(self.vis_src) == 0:
            return None
        was_training = self.model.training
        self.model.eval()
        src, ref = self.vis_src.to(self.device), self.vis_ref.to(self.device)
        edited = self.model(src, ref)
        images = [self.model.decode(w, randomize_noise=False).clamp(-1, 1).cpu() for w in (src, ref, edited)]
        self.model.train(was_training)
        return image_grid(interleave(*images), nrow=3)

    def fit(self, steps: int | None = None) -> ReferenceEditResult:
        self.loop.steps = steps if steps is not None else self.cfg.steps
        history = self.loop.run()
        self.model.eval()
        return ReferenceEditResult(model=self.model, metrics=self.loop.metrics, history=history, steps=self.step,
                                   checkpoint=self.out / "final.pt", attribute=self.attribute)


def shipped_editor(cfg: ReferenceEditTrainConfig, attribute: str):
    """The registered shipped editor file that ``--ship`` replaces: that of the domain whose
    classifier this run trains against, for ``attribute``."""
    for dom in DOMAINS.values():
        spec = dom.reference_editors.get(attribute)
        if spec and dom.classifier and dom.classifier == cfg.model.classifier_checkpoint:
            # An editor trained with the mode-seeking term ships as its own artefact, beside the published-loss one.
            art = artifacts.find("reference_editor", f"{spec}-mode-seeking" if cfg.mode_seeking > 0 else spec,
                                 attribute)
            if art is not None and art.shipped:
                return art, dom
    raise ValueError(f"--ship replaces a registered shipped reference editor; none is registered for {attribute!r} "
                     f"with classifier {cfg.model.classifier_checkpoint!r}")


def train_reference_editor(cfg: ReferenceEditTrainConfig, ship: bool = False, *, codes=None, resume: bool = True,
                           model=None, device: str | torch.device | None = None,
                           allow_changed_config: bool = False) -> ReferenceEditResult:
    """Train (resuming ``cfg.out``/last.pt unless ``resume=False``); ``ship`` also writes the editing
    block as the domain's shipped editor for the attribute (``data/``).

    ``codes`` overrides ``cfg.codes`` (a tensor, a dict with ``latents`` or a path); ``model``
    replaces the one built from ``cfg.model``; ``device`` defaults to CUDA when there is one."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    trainer = ReferenceEditTrainer(cfg, codes=codes, model=model, device=device)
    target = shipped_editor(cfg, trainer.attribute) if ship else None
    if resume:
        trainer.resume(allow_changed_config=allow_changed_config)
    result = trainer.fit()
    if target is not None:
        art, dom = target
        result.shipped = artifacts.export("reference_editor", result.model, art.path, {
            "attribute": result.attribute, "generator": dom.generator, "classifier": dom.classifier,
            "steps": result.steps, "metrics": json.dumps(json_safe(result.metrics)), "command": art.command})
    return result
