"""Train the high-fidelity stage (:mod:`stytr.models.high_fidelity`) on a frozen W+ encoder.

    python -m stytr train-high-fidelity --preset toy            # ToyFaces, on a CPU
    python -m stytr train-high-fidelity --preset ffhq --train_dir ... --val_dir ...

Each training pair is an input ``x`` with its code ``w = E(x)`` and a target ``x'`` with its code
``w'``; the stage sees the distortion of ``x`` and must render ``w'`` as ``x'``:

* ``pairs="truth"`` (ToyFaces): ``x'`` is the same face re-rendered with some generating factors
  resampled (:func:`stytr.toy.resample_factors`) and ``w' = E(x')``, so the edited picture and its
  true distortion are known: the aligner learns to keep the detail that still fits and to drop what
  the edit changed. Unedited pairs (``x' = x``) teach the reconstruction. Codes and W+ renderings
  are computed once, up front; the renderer redraws the faces of each batch.
* ``pairs="warp"`` (image folders, HFGI's self-supervision): ``x' = x``, and the distortion handed
  to the aligner is randomly warped; the aligner must undo the warp against the reconstruction.

The trainer gives the training loop (:class:`stytr.train.loop.Loop`) what it asks for:
``batch_for_step``, ``train_step``, ``evaluate``, ``sample``, ``state_dict`` / ``load_state_dict``.
Every batch is a function of (seed, step), so a resumed run continues exactly.
"""
from __future__ import annotations

import json
import math

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .. import artifacts
from ..config import HighFidelityTrainConfig, InversionConfig
from ..domains import get_domain
from ..losses import domain_perceptual
from ..models.high_fidelity import HighFidelityModel, HighFidelityStage
from ..models.inversion import build_inversion_model
from ..viz import image_grid
from .loop import Loop, json_safe
from .sampling import StepSampler

__all__ = ["HighFidelityTrainer", "ToyPairs", "FolderPairs", "random_warp", "load_encoder", "train_high_fidelity"]

FORMAT = "stytr-high-fidelity"


def load_encoder(spec: str, device="cpu"):
    """The frozen W+ encoder: a registered name or file; ``""`` builds a random toy-sized one (tests)."""
    if spec:
        model = artifacts.load("encoder", spec, device)
    else:
        cfg = InversionConfig.preset("toy", backbone_units=(1, 1, 1, 1))
        cfg = cfg.override({"generator.checkpoint": ""})
        model = build_inversion_model(cfg).to(device)
        with torch.no_grad():
            model.set_latent_avg(model.decoder.mean_latent(256))
    return model.eval().requires_grad_(False)


def random_warp(images: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """A random similarity warp per image (shift and scale change up to ``amount`` of the side,
    rotation up to ``amount`` radians): HFGI's simulated misalignment of the distortion map."""
    n = images.shape[0]
    u = (torch.rand(n, 4, generator=generator) * 2 - 1) * amount
    angle, scale = u[:, 0], 1 + u[:, 1]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, 2 * u[:, 2]], 1), torch.stack([sin, cos, 2 * u[:, 3]], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def _codes_and_renders(model: HighFidelityModel, images: torch.Tensor, batch: int = 64, desc: str = ""):
    """W+ codes and clamped W+ renderings (fp16, to halve the memory of a cached training set)."""
    codes, renders = [], []
    for s in tqdm(range(0, len(images), batch), desc=desc, disable=not desc, leave=False):
        w = model.encode(images[s:s + batch])
        codes.append(w)
        renders.append(model.distortion(images[s:s + batch], w)[1].half())
    return torch.cat(codes), torch.cat(renders)


class ToyPairs:
    """ToyFaces truth pairs, computed once: ``z``/``z_edit`` (what the renderer draws), the codes
    ``w``/``w_edit`` and the W+ renderings ``g``/``g_edit`` of both."""

    def __init__(self, model: HighFidelityModel, n: int, seed: int, edit_prob: float, max_factors: int,
                 progress: bool = True):
        from ..toy import render_z, resample_factors, sample_z

        self.size = model.cfg.input_size
        self.z = sample_z(n, seed)
        self.z_edit, edited = resample_factors(self.z, seed + 1, edit_prob, max_factors)
        self.edited = torch.from_numpy(edited)
        x = torch.from_numpy(render_z(self.z, self.size))
        self.w, self.g = _codes_and_renders(model, x, desc="W+ codes" if progress else "")
        self.w_edit, self.g_edit = self.w.clone(), self.g.clone()
        idx = torch.nonzero(self.edited).flatten()
        if len(idx):
            x_edit = torch.from_numpy(render_z(self.z_edit[idx.numpy()], self.size))
            self.w_edit[idx], self.g_edit[idx] = _codes_and_renders(model, x_edit, desc="edited" if progress else "")

    def __len__(self) -> int:
        return len(self.z)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        from ..toy import render_z

        i = indices.numpy()
        x = torch.from_numpy(render_z(self.z[i], self.size))
        x_t = torch.from_numpy(render_z(self.z_edit[i], self.size))
        g, g_t = self.g[indices].float(), self.g_edit[indices].float()
        return {"x": x, "g": g, "distortion": x - g, "w_target": self.w_edit[indices], "target": x_t,
                "g_target": g_t, "true_distortion": x_t - g_t, "edited": self.edited[indices]}


class FolderPairs:
    """Image-folder warp pairs, computed per batch (a data set too large to cache)."""

    def __init__(self, model: HighFidelityModel, folder: str, train: bool, warp_prob: float, amount: float):
        from ..data.folders import ImageFolderDataset

        self.model, self.warp_prob, self.amount = model, warp_prob, amount
        self.images = ImageFolderDataset(folder, size=model.cfg.input_size, train=train, flip=False)

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        x = torch.stack([self.images[int(i)] for i in indices]).to(device)
        w = self.model.encode(x)
        d, g = self.model.distortion(x, w)
        generator = generator or torch.Generator().manual_seed(0)
        warp = torch.rand(len(x), generator=generator) < self.warp_prob
        warped = random_warp(d.cpu(), self.amount, generator).to(device)
        d_in = torch.where(warp.to(device).view(-1, 1, 1, 1), warped, d)
        return {"x": x, "g": g, "distortion": d_in, "w_target": w, "target": x, "g_target": g,
                "true_distortion": d, "edited": warp}


class HighFidelityTrainer:
    """The high-fidelity stage, its optimiser and data; the loop drives it (see the module doc)."""

    def __init__(self, cfg: HighFidelityTrainConfig, encoder=None, device="cpu", progress: bool = True):
        self.cfg, self.device = cfg, torch.device(device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        inversion = encoder if encoder is not None else load_encoder(cfg.encoder, self.device)
        inversion = inversion.to(self.device).eval().requires_grad_(False)
        self.stage = HighFidelityStage(cfg.model).to(self.device)
        self.model = HighFidelityModel(inversion, self.stage)
        self.stage.encoder_spec = cfg.encoder
        self.optimizer = torch.optim.Adam(self.stage.parameters(), lr=cfg.lr)
        self.perceptual = domain_perceptual(get_domain(cfg.domain)).to(self.device) if cfg.perceptual > 0 else None
        if cfg.data == "toyfaces":
            self.train_set = ToyPairs(self.model, cfg.n_train, cfg.seed + 70_000, cfg.edit_prob, cfg.edit_factors,
                                      progress)
            self.val_set = ToyPairs(self.model, cfg.n_val, cfg.seed + 71_000, cfg.edit_prob, cfg.edit_factors,
                                    progress)
        else:
            self.train_set = FolderPairs(self.model, cfg.train_dir, True, cfg.edit_prob, cfg.warp)
            self.val_set = FolderPairs(self.model, cfg.val_dir, False, cfg.edit_prob, cfg.warp)
        self.sampler = StepSampler(len(self.train_set), cfg.batch, cfg.seed)

    # -- what the loop asks for -------------------------------------------------------------
    def batch_for_step(self, step: int) -> tuple[int, dict[str, torch.Tensor]]:
        return step, self.train_set.batch(self.sampler.indices(step), self.sampler.generator(step))

    def losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(total, {term: value}, the fused rendering) of one batch."""
        b = {k: v.to(self.device) for k, v in batch.items()}
        aligned = self.stage.align(b["distortion"], b["g_target"], b["g"])
        image = self.model._image(b["w_target"], residual=self.stage.residual(aligned))
        terms = {"l2": F.mse_loss(image, b["target"])}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(image, b["target"])
        if self.stage.aligner is not None and self.cfg.align > 0:
            terms["align"] = F.l1_loss(aligned, b["true_distortion"])
        total = sum(getattr(self.cfg, k) * v for k, v in terms.items())
        return total, terms, image

    def train_step(self, batch: tuple[int, dict[str, torch.Tensor]]) -> dict[str, float]:
        step, pairs = batch
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * self.cfg.lr_multiplier(step)
        self.stage.train()
        total, terms, _ = self.losses(pairs)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return {**{k: v.item() for k, v in terms.items()}, "loss": total.item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out loss, and MSE of the fused rendering against its target, split into unedited and
        edited pairs, beside the W+ rendering's (``mse_wplus``): the numbers the stage must improve."""
        self.stage.eval()
        sums, n = {}, 0
        se = {"plain": [0.0, 0], "edited": [0.0, 0], "wplus": [0.0, 0]}
        for s in range(0, len(self.val_set), 32):
            idx = torch.arange(s, min(s + 32, len(self.val_set)))
            batch = self.val_set.batch(idx, torch.Generator().manual_seed(s))
            total, terms, image = self.losses(batch)
            for k, v in {**terms, "loss": total}.items():
                sums[k] = sums.get(k, 0.0) + v.item() * len(idx)
            err = (image.cpu() - batch["target"]).pow(2).flatten(1).mean(1)
            plain = ~batch["edited"]
            se["plain"][0] += err[plain].sum().item(); se["plain"][1] += int(plain.sum())
            se["edited"][0] += err[~plain].sum().item(); se["edited"][1] += int((~plain).sum())
            err_w = (batch["g"] - batch["x"]).pow(2).flatten(1).mean(1)[plain]
            se["wplus"][0] += err_w.sum().item(); se["wplus"][1] += len(err_w)
            n += len(idx)
        out = {k: v / n for k, v in sums.items()}
        out.update({f"mse{'' if k == 'plain' else '_' + k}": (a / c if c else math.nan) for k, (a, c) in se.items()})
        return out

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        """Rows of held-out pairs: input | W+ | high-fidelity, then target | W+ of target | fused edit."""
        self.stage.eval()
        idx = torch.arange(min(8, len(self.val_set)))
        b = self.val_set.batch(idx, torch.Generator().manual_seed(0))
        recon = self.model.render(self.model.encode(b["x"].to(self.device)), b["distortion"].to(self.device),
                                  b["g"].to(self.device)).cpu()
        _, _, edit = self.losses(b)
        cols = [b["x"], b["g"], recon, b["target"], b["g_target"], edit.cpu()]
        return image_grid(torch.stack(cols, 1).flatten(0, 1).clamp(-1, 1), nrow=len(cols))

    def state_dict(self) -> dict:
        return {"format": FORMAT, "config": self.cfg.model.to_dict(), "encoder": self.cfg.encoder,
                "model": self.stage.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stage.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def train_high_fidelity(cfg: HighFidelityTrainConfig, resume: bool = True, ship: bool = False,
                        allow_changed_config: bool = False, device=None, progress: bool = True, encoder=None) -> dict:
    """Train (resuming ``cfg.out/last.pt`` unless ``resume=False``); ``ship``: also write the best held-out
    stage as the domain's shipped one. Returns ``{"step", "metrics", "trainer", "loop", "best", "shipped"}``,
    ``best`` being the stage with the lowest held-out loss and ``shipped`` the file written (or None)."""
    target = None
    if ship:
        domain = get_domain(cfg.domain)
        target = artifacts.find("high_fidelity", domain.high_fidelity) if domain.high_fidelity else None
        if target is None or not target.shipped:
            raise ValueError(f"--ship writes a shipped high-fidelity stage into data/; the {domain.name} domain has "
                             f"none registered")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    trainer = HighFidelityTrainer(cfg, encoder=encoder, device=device, progress=progress)
    loop = Loop(trainer, cfg.out, cfg.steps, ckpt_every=cfg.ckpt_every, eval_every=cfg.val_every,
                image_every=cfg.image_every, log_every=cfg.log_every, desc="high-fidelity", progress=progress)
    if resume:
        loop.resume(allow_changed_config=allow_changed_config)
    loop.run()
    best = HighFidelityStage(cfg.model)
    state = loop.load("best.pt") or loop.load("final.pt")
    best.load_state_dict(state["model"] if state is not None else trainer.stage.state_dict())
    best.encoder_spec = cfg.encoder
    shipped = None
    if target is not None:
        shipped = artifacts.export("high_fidelity", best, target.path, {
            "encoder": cfg.encoder, "steps": loop.step, "metrics": json.dumps(json_safe(loop.metrics)),
            "command": target.command})
    return {"step": loop.step, "metrics": loop.metrics, "trainer": trainer, "loop": loop, "best": best.eval(),
            "shipped": shipped}
