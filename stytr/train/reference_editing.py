"""Train the reference-editing transformer on W+ codes against a frozen latent classifier.

    python -m stytr train-reference-editor --preset ffhq --codes runs/celeba_codes/latents.pt \\
        --attribute Bangs --model.classifier_checkpoint runs/latent_classifier/latent_classifier.pt

Each step takes ``batch`` codes: the first half are the sources, the second half the
references (``pair_mode="random"``, the published scheme: a shuffled batch split in
two), or references are drawn from the codes whose classifier decision on the edited
attribute differs from the source's (``pair_mode="opposite"``). The loss, with the
frozen classifier's per-attribute embeddings ``e_a``::

    l2  * MSE(src W+, edited W+)
  + ref * MSE(e_attr(edited), e_attr(ref))                 # the edited attribute follows the reference
  + src * MSE(e_others(edited), e_others(src))             # all other attributes stay as in the source

Adam (lr 1e-3, weight decay 5e-4) on the encoder only; the classifier and the
generator are frozen. The encoder trains in train mode (dropout on), as published.

Codes come from a ``.pt`` file ``{'latents': (N, n_latent, style_dim), 'labels': optional}``
(what ``python -m stytr invert`` writes) or a ``.npy`` array of W+ codes; a seeded random
``val_fraction`` of them is held out for :func:`evaluate_reference_editor`.

What is resumed from ``out/last.pt``: model, optimiser, step, history and every RNG; the
pairs of a step are a function of (seed, step), so a resumed run sees exactly the pairs
the uninterrupted one would. ``out/final.pt`` (our ``format='stytr-edit'`` layout, with
the generator's weights, plus ``train_config`` and ``metrics``) loads with
:meth:`stytr.models.edit_transformer.EditTransformer.from_checkpoint`.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import artifacts
from ..attributes import attribute_index
from ..checkpoints import CheckpointError, load, load_state_strict, require_file, save_atomic
from ..config import ReferenceEditTrainConfig
from .common import resume_latest, rng_state, summary_writer

__all__ = ["PAIR_MODES", "ReferenceEditResult", "ReferenceEditTrainer", "load_codes", "reference_editing_loss",
           "evaluate_reference_editor", "train_reference_editor", "cmd_train_reference_editor"]

PAIR_MODES = ("random", "opposite")


# -- data ------------------------------------------------------------------------

def load_codes(source, n_latent: int | None = None, style_dim: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W+ codes and optional labels from a path (``.pt`` dict with ``latents``, or ``.npy``), a
    dict ``{'latents', 'labels'?}`` or a tensor. Returns ``(latents (N, n_latent, style_dim) float32,
    labels (N, A) or None)``; the shape is checked against ``n_latent``/``style_dim`` when given."""
    labels = None
    name = "codes"
    if isinstance(source, (str, Path)):
        name = str(source)
        if not str(source):
            raise FileNotFoundError("no W+ codes file given: set `codes` to a .pt file with 'latents' "
                                    "(written by `python -m stytr invert`) or a .npy array")
        path = require_file(source, "W+ codes file",
                            "Invert images first (`python -m stytr invert ...` writes latents.pt) "
                            "or point `codes` at an existing file")
        if path.suffix == ".npy":
            source = torch.from_numpy(np.load(path))
        else:
            source = load(path)
    if isinstance(source, Mapping):
        if "latents" not in source:
            raise CheckpointError(f"{name} has no 'latents' entry (keys: {list(source)[:8]})")
        labels = source.get("labels")
        source = source["latents"]
    latents = torch.as_tensor(source).float()
    if latents.ndim != 3:
        raise ValueError(f"{name}: W+ codes must be (N, n_latent, style_dim), got {tuple(latents.shape)}")
    expected = (n_latent or latents.shape[1], style_dim or latents.shape[2])
    if tuple(latents.shape[1:]) != expected:
        raise ValueError(f"{name}: W+ codes of shape (N, {latents.shape[1]}, {latents.shape[2]}) do not fit the "
                         f"model's (N, {expected[0]}, {expected[1]})")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape[0] != latents.shape[0]:
            raise ValueError(f"{name}: {labels.shape[0]} label rows for {latents.shape[0]} codes")
    return latents, labels


def _seeded(*key: int) -> torch.Generator:
    """A torch generator whose seed is a function of ``key`` only."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=_seeded(seed, 1))
    n_val = 0 if val_fraction == 0 or n < 2 else max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


@torch.no_grad()
def _decisions(classifier, latents: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The classifier's binary decisions (N, n_attr) as bool (logit > 0)."""
    device = next(classifier.parameters()).device
    out = [classifier(latents[i:i + batch].to(device))[0].cpu() > 0 for i in range(0, len(latents), batch)]
    return torch.cat(out) if out else torch.zeros(0, classifier.n_attr, dtype=torch.bool)


def _opposite_refs(decision: torch.Tensor, src: torch.Tensor, gen: torch.Tensor | torch.Generator,
                   pool: torch.Tensor | None = None) -> torch.Tensor:
    """For each index in ``src``, an index from ``pool`` whose decision differs (``decision`` is (N,) bool)."""
    pool = torch.arange(len(decision)) if pool is None else pool
    pos, neg = pool[decision[pool]], pool[~decision[pool]]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"pair_mode='opposite' needs codes on both sides of the classifier's decision; "
                         f"found {len(pos)} positive and {len(neg)} negative")
    want_neg = decision[src]
    pick_neg = neg[torch.randint(len(neg), (len(src),), generator=gen)]
    pick_pos = pos[torch.randint(len(pos), (len(src),), generator=gen)]
    return torch.where(want_neg, pick_neg, pick_pos)


# -- loss --------------------------------------------------------------------------

def reference_editing_loss(classifier, src: torch.Tensor, ref: torch.Tensor, edited: torch.Tensor, attr: int,
                           l2: float = 1.0, ref_weight: float = 1.0, src_weight: float = 1.0
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The published loss: ``l2*MSE(src, edited) + ref_weight*MSE(e_attr(edited), e_attr(ref))
    + src_weight*MSE(e_others(edited), e_others(src))``, each MSE a mean over all its elements.
    Returns ``(total, {'l2', 'ref', 'src'})`` (unweighted terms, detached)."""
    _, emb_edit = classifier(edited)
    with torch.no_grad():
        _, emb_ref = classifier(ref)
        _, emb_src = classifier(src)
    others = [i for i in range(emb_edit.shape[1]) if i != attr]
    loss_l2 = F.mse_loss(edited, src)
    loss_ref = F.mse_loss(emb_edit[:, attr], emb_ref[:, attr])
    loss_src = F.mse_loss(emb_edit[:, others], emb_src[:, others]) if others else edited.new_zeros(())
    total = l2 * loss_l2 + ref_weight * loss_ref + src_weight * loss_src
    return total, {"l2": loss_l2.detach(), "ref": loss_ref.detach(), "src": loss_src.detach()}


# -- evaluation ----------------------------------------------------------------------

@torch.no_grad()
def evaluate_reference_editor(model, codes, n: int = 1000, attribute: int | str = "Bangs", pair_mode: str = "random",
                              seed: int = 0, batch: int = 256) -> dict[str, Any]:
    """Classifier-decision metrics of ``model`` on ``n`` (source, reference) pairs drawn from ``codes``.

    ``codes``: held-out W+ codes (anything :func:`load_codes` reads). ``pair_mode``: ``random``
    (two different codes) or ``opposite`` (the reference's decision on ``attribute`` differs from
    the source's). Decisions are the model's classifier's (logit > 0). Returns

    * ``transfer_rate``: fraction of pairs where the edited code's decision on ``attribute``
      equals the reference's;
    * ``transfer_rate_changing`` (NaN if none): the same over the ``n_changing`` pairs whose source
      and reference disagree on it, i.e. where the edit has to change the decision;
    * ``src_ref_agreement``: the transfer rate of doing nothing (source and reference agree);
    * ``keep_rate``: fraction of (pair, other attribute) where the edited decision equals the
      source's, and ``keep_rate_per_attribute`` ({name: rate});
    * ``loss``/``l2``/``ref``/``src``: the training loss and its terms (unit weights) on these pairs;
    * ``n_pairs``, ``n_changing``, ``attribute`` (its name).
    """
    classifier = model.classifier
    if classifier is None:
        raise ValueError("the model has no latent classifier to evaluate with")
    names = list(getattr(classifier, "attribute_names", [str(i) for i in range(classifier.n_attr)]))
    attr = attribute_index(attribute, names)
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"unknown pair_mode {pair_mode!r}; choose one of {PAIR_MODES}")
    device = next(classifier.parameters()).device
    latents, _ = load_codes(codes, getattr(classifier, "n_latent", None), getattr(classifier, "style_dim", None))
    if len(latents) < 2:
        raise ValueError(f"need at least 2 codes to form pairs, got {len(latents)}")
    gen = _seeded(seed, 2)
    src_idx = torch.randint(len(latents), (n,), generator=gen)
    if pair_mode == "random":
        ref_idx = (src_idx + torch.randint(1, len(latents), (n,), generator=gen)) % len(latents)
    else:
        ref_idx = _opposite_refs(_decisions(classifier, latents)[:, attr], src_idx, gen)

    was_training = model.training
    model.eval()
    agree_attr, same_before, kept = [], [], []
    sums = {"loss": 0.0, "l2": 0.0, "ref": 0.0, "src": 0.0}
    try:
        for i in range(0, n, batch):
            src = latents[src_idx[i:i + batch]].to(device)
            ref = latents[ref_idx[i:i + batch]].to(device)
            edited = model(src, ref)
            total, terms = reference_editing_loss(classifier, src, ref, edited, attr)
            for k, v in {"loss": total, **terms}.items():
                sums[k] += v.item() * len(src)
            d_src, d_ref, d_edit = (classifier(x)[0] > 0 for x in (src, ref, edited))
            agree_attr.append((d_edit[:, attr] == d_ref[:, attr]).cpu())
            same_before.append((d_src[:, attr] == d_ref[:, attr]).cpu())
            kept.append((d_edit == d_src).cpu())
    finally:
        model.train(was_training)
    agree_attr, same_before, kept = torch.cat(agree_attr), torch.cat(same_before), torch.cat(kept)
    changing = ~same_before
    others = [i for i in range(len(names)) if i != attr]
    kept_others = kept[:, others].float()
    return {
        "attribute": names[attr],
        "transfer_rate": agree_attr.float().mean().item(),
        "transfer_rate_changing": agree_attr[changing].float().mean().item() if changing.any() else math.nan,
        "src_ref_agreement": same_before.float().mean().item(),
        "keep_rate": kept_others.mean().item() if others else math.nan,
        "keep_rate_per_attribute": {names[i]: kept_others[:, j].mean().item() for j, i in enumerate(others)},
        **{k: v / n for k, v in sums.items()},
        "n_pairs": n,
        "n_changing": int(changing.sum()),
    }


# -- model ---------------------------------------------------------------------------

def _generator_state(gcfg) -> dict[str, torch.Tensor] | None:
    """The configured generator's weights (``checkpoint``: 'toy', a safetensors file or a rosinality
    checkpoint), or None when no checkpoint is configured."""
    if not gcfg.checkpoint:
        return None
    return artifacts.load("generator", gcfg.checkpoint).state_dict()


def build_model(cfg: ReferenceEditTrainConfig):
    """The editor with its classifier (``model.classifier_checkpoint``) and, when
    ``model.generator.checkpoint`` is set, its generator loaded. Without a generator checkpoint the
    model has no generator (no image grids; the export adds a randomly initialised one)."""
    from ..models.edit_transformer import EditTransformer

    gen_state = _generator_state(cfg.model.generator)
    model = EditTransformer(cfg.model, build_generator=gen_state is not None, build_classifier=True)
    if gen_state is not None:
        load_state_strict(model.decoder, gen_state, f"generator {cfg.model.generator.checkpoint}")
    if cfg.model.classifier_checkpoint:
        model._set_classifier(artifacts.load("classifier", cfg.model.classifier_checkpoint))
    else:
        warnings.warn("model.classifier_checkpoint is empty: training against an untrained (random) latent "
                      "classifier", stacklevel=2)
    return model


# -- trainer ---------------------------------------------------------------------------

@dataclass
class ReferenceEditResult:
    model: Any                                   # the trained EditTransformer (eval mode)
    metrics: dict[str, Any]                      # evaluate_reference_editor on the held-out codes ({} if none)
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    checkpoint: Path | None = None               # out/final.pt
    attribute: str = ""


class ReferenceEditTrainer:
    def __init__(self, cfg: ReferenceEditTrainConfig, codes=None, model=None, device: str | torch.device = "cpu"):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.pair_mode not in PAIR_MODES:
            raise ValueError(f"unknown pair_mode {cfg.pair_mode!r}; choose one of {PAIR_MODES}")
        if cfg.batch < 2 or cfg.batch % 2:
            raise ValueError(f"batch must be even and >= 2 (it splits into sources and references), got {cfg.batch}")
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
        self.train_idx, self.val_idx = _split(len(self.latents), cfg.val_fraction, cfg.seed)
        if len(self.train_idx) < cfg.batch:
            raise ValueError(f"{len(self.train_idx)} training codes, fewer than one batch ({cfg.batch})")
        self.steps_per_epoch = len(self.train_idx) // cfg.batch
        self.decision = None
        if cfg.pair_mode == "opposite":
            self.decision = _decisions(self.model.classifier, self.latents)[:, self.attr]
        self.optimizer = torch.optim.Adam(self.model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step, self.history = 0, []
        self.writer = summary_writer(self.out)
        self._epoch_cache: tuple[int, torch.Tensor] | None = None
        vis = self.val_idx if len(self.val_idx) >= 2 else self.train_idx
        k = min(4, len(vis) // 2)
        self.vis_src, self.vis_ref = self.latents[vis[:k]], self.latents[vis[k:2 * k]]

    # -- checkpoints ---------------------------------------------------------
    def state(self) -> dict:
        return {**self.model.checkpoint_dict(), "train_config": self.cfg.to_dict(), "step": self.step,
                "optimizer": self.optimizer.state_dict(), "history": json.dumps(self.history), "rng": rng_state()}

    def save(self, name: str = "last.pt") -> Path:
        return save_atomic(self.state(), self.out / name)

    def resume(self, path=None) -> bool:
        resumed = resume_latest(self.out, self.model, self.optimizer, path)
        if resumed is None:
            return False
        self.step, self.history = resumed[0]["step"], resumed[1]
        return True

    def export(self, name: str = "final.pt", metrics: dict | None = None) -> Path:
        """Our checkpoint format with the generator's weights (a freshly initialised generator when the
        config names none, marked in ``generator_weights``), plus ``train_config`` and ``metrics``."""
        ckpt = self.model.checkpoint_dict()
        ckpt["model"] = {k: v.detach().cpu() for k, v in ckpt["model"].items()}
        gcfg = self.model.cfg.generator
        ckpt["generator_weights"] = gcfg.checkpoint if self.model.decoder is not None else "random"
        if self.model.decoder is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed)
                generator = gcfg.build()
            ckpt["model"].update({f"decoder.{k}": v for k, v in generator.state_dict().items()})
        ckpt.update(train_config=self.cfg.to_dict(), step=self.step, attribute=self.attribute,
                    metrics=json.dumps(metrics or {}))
        return save_atomic(ckpt, self.out / name)

    # -- data -------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            perm = torch.randperm(len(self.train_idx), generator=_seeded(self.cfg.seed, 3, epoch))
            self._epoch_cache = (epoch, self.train_idx[perm])
        return self._epoch_cache[1]

    def pairs_for_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(source indices, reference indices) into the codes, ``batch // 2`` each; a function of (seed, step)."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        idx = self._epoch_order(epoch)[offset * self.cfg.batch:(offset + 1) * self.cfg.batch]
        half = self.cfg.batch // 2
        src, ref = idx[:half], idx[half:]
        if self.cfg.pair_mode == "opposite":
            ref = _opposite_refs(self.decision, src, _seeded(self.cfg.seed, 4, step), pool=self.train_idx)
        return src, ref

    # -- one step ----------------------------------------------------------------
    def train_step(self, src_idx: torch.Tensor, ref_idx: torch.Tensor) -> dict[str, float]:
        self.model.train()
        src = self.latents[src_idx].to(self.device)
        ref = self.latents[ref_idx].to(self.device)
        edited = self.model(src, ref)
        total, terms = reference_editing_loss(self.model.classifier, src, ref, edited, self.attr,
                                              self.cfg.l2, self.cfg.ref, self.cfg.src)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": total.item(), **{k: v.item() for k, v in terms.items()}}

    def evaluate(self) -> dict[str, Any]:
        if len(self.val_idx) < 2 or self.cfg.eval_pairs <= 0:
            return {}
        return evaluate_reference_editor(self.model, self.latents[self.val_idx], n=self.cfg.eval_pairs,
                                         attribute=self.attr, pair_mode=self.cfg.pair_mode, seed=self.cfg.seed)

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor | None:
        """Rows of (source, reference, edited) images of fixed held-out pairs; None without a generator."""
        if self.model.decoder is None or len(self.vis_src) == 0:
            return None
        from ..viz import image_grid, interleave

        was_training = self.model.training
        self.model.eval()
        src, ref = self.vis_src.to(self.device), self.vis_ref.to(self.device)
        edited = self.model(src, ref)
        images = [self.model.decode(w, randomize_noise=False).clamp(-1, 1).cpu() for w in (src, ref, edited)]
        self.model.train(was_training)
        return image_grid(interleave(*images), nrow=3)

    # -- the loop ------------------------------------------------------------
    def fit(self, steps: int | None = None) -> ReferenceEditResult:
        cfg = self.cfg
        end = steps if steps is not None else cfg.steps
        bar = tqdm(range(self.step, end), initial=self.step, total=end, desc=f"ref-edit[{self.attribute}]")
        t0 = time.time()
        logs: dict[str, float] = {}
        for _ in bar:
            logs = self.train_step(*self.pairs_for_step(self.step))
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            if self.writer is not None and self.step % cfg.log_every == 0:
                for k, v in logs.items():
                    self.writer.add_scalar(f"train/{k}", v, self.step)
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == end):
                metrics = self.evaluate()
                if metrics:
                    scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
                    self.history.append({"step": self.step, "wall_s": time.time() - t0, **scalars,
                                         **{f"train_{k}": v for k, v in logs.items()}})
                    if self.writer is not None:
                        for k, v in scalars.items():
                            if not math.isnan(v):
                                self.writer.add_scalar(f"val/{k}", v, self.step)
            if self.writer is not None and cfg.image_every and (self.step % cfg.image_every == 0 or self.step == end):
                grid = self.sample_grid()
                if grid is not None:
                    self.writer.add_image("val/source_reference_edited", (grid + 1) / 2, self.step)
            if self.step % cfg.ckpt_every == 0 or self.step == end:
                self.save("last.pt")
        metrics = self.evaluate()
        path = self.export("final.pt", metrics)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "history.json").write_text(json.dumps(self.history, indent=2))
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if self.writer is not None:
            self.writer.flush()
        self.model.eval()
        return ReferenceEditResult(model=self.model, metrics=metrics, history=self.history, steps=self.step,
                                   checkpoint=path, attribute=self.attribute)


def train_reference_editor(cfg: ReferenceEditTrainConfig, codes=None, resume: bool = True, model=None,
                           device: str | torch.device = "cpu") -> ReferenceEditResult:
    """Train (resuming from ``cfg.out``/last.pt unless ``resume=False``) and export ``final.pt``.

    ``codes`` overrides ``cfg.codes`` (a tensor, a dict with ``latents`` or a path); ``model``
    replaces the one built from ``cfg.model``."""
    trainer = ReferenceEditTrainer(cfg, codes=codes, model=model, device=device)
    if resume:
        trainer.resume()
    return trainer.fit()
