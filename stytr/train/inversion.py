"""Train an inversion encoder (Style Transformer, w/o self, pSp, e4e) against a frozen StyleGAN2.

    python -m stytr train-inversion --preset toy                 # ToyFaces on a CPU
    torchrun --nproc_per_node 2 -m stytr train-inversion --preset ffhq --train_dir ... --val_dir ...

What is resumed from ``out/last.pt``: model, optimiser (incl. Ranger's Lookahead
buffers), step, best validation loss and every RNG; the data order is a function of
(seed, epoch), so a resumed run sees exactly the batches the uninterrupted one would.
``out/best.pt`` holds the model with the lowest held-out loss, ``out/final.pt`` the
last one; both load with ``StyleTransformer.from_checkpoint``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from .. import artifacts
from ..checkpoints import save_atomic
from ..config import InversionTrainConfig
from ..domains import get_domain
from ..losses import InversionLoss
from ..viz import image_grid, interleave
from .common import resume_latest, rng_state, summary_writer
from .distributed import DistInfo, all_reduce_mean, cleanup, setup


class _ImagesOnly(Dataset):
    """Drops labels: the inversion trainer needs images only."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        return item[0] if isinstance(item, (tuple, list)) else item


def build_datasets(cfg: InversionTrainConfig):
    size = cfg.model.input_size
    if cfg.data == "toyfaces":
        from ..toy import ToyFacesDataset

        train = ToyFacesDataset(cfg.n_train, seed=cfg.seed + 10_000, size=size, flip=cfg.flip)
        val = ToyFacesDataset(cfg.n_val, seed=cfg.seed + 20_000, size=size)
        return _ImagesOnly(train), _ImagesOnly(val)
    if cfg.data == "folder":
        from ..data.folders import ImageFolderDataset

        return (ImageFolderDataset(cfg.train_dir, size=size, train=True, flip=cfg.flip),
                ImageFolderDataset(cfg.val_dir, size=size, train=False))
    raise ValueError(f"unknown data source {cfg.data!r}: use 'toyfaces' or 'folder'")


def build_model(cfg: InversionTrainConfig):
    """The model with its generator and, where configured, the pSp backbone weights loaded."""
    from ..models.inversion import build_inversion_model

    model = build_inversion_model(cfg.model)
    if cfg.model.generator.checkpoint:
        generator = artifacts.load("generator", cfg.model.generator.checkpoint)
        model.load_generator(generator, latent_avg=generator.latent_avg)
    if cfg.model.backbone_weights:
        model.load_backbone(cfg.model.backbone_weights)
    return model


def build_optimizer(cfg: InversionTrainConfig, params):
    if cfg.optimizer == "ranger":
        from pytorch_ranger import Ranger

        return Ranger(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use 'ranger' or 'adam'")


def epoch_batches(sampler: DistributedSampler, epoch: int, per_rank: int) -> list[list[int]]:
    """This rank's batches of one epoch, in order (the last partial batch is dropped)."""
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i:i + per_rank] for i in range(0, len(idx) - per_rank + 1, per_rank)]


class InversionTrainer:
    def __init__(self, cfg: InversionTrainConfig, dist_info: DistInfo | None = None, model=None, loss=None):
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.batch % self.dist.world_size:
            raise ValueError(f"batch {cfg.batch} does not split over {self.dist.world_size} processes")
        self.per_rank = cfg.batch // self.dist.world_size
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.out)
        self.device = self.dist.device
        self.model = (model if model is not None else build_model(cfg)).to(self.device)
        judge = get_domain(cfg.domain).load("predictor") if cfg.perceptual > 0 and loss is None else None
        self.loss = (loss if loss is not None else InversionLoss(
            l2=cfg.l2, lpips=cfg.lpips, id=cfg.id, perceptual=cfg.perceptual, w_norm=cfg.w_norm,
            predictor=judge)).to(self.device)
        self.train_set, self.val_set = build_datasets(cfg)
        if len(self.train_set) < cfg.batch:
            raise ValueError(f"the training set has {len(self.train_set)} images, fewer than one batch ({cfg.batch})")
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.per_rank
        self.net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            on_gpu = self.device.type == "cuda"
            if cfg.sync_bn and on_gpu:
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            elif not cfg.freeze_bn and self.dist.is_main:
                # SyncBatchNorm needs GPUs: with gloo on CPUs each process normalises its own shard.
                print("note: batch-norm statistics are per process under CPU DDP (set freeze_bn to avoid it)")
            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if on_gpu else None)
        self.optimizer = build_optimizer(cfg, self.model.trainable_parameters())
        self.step, self.best_val, self.history = 0, math.inf, []
        self.writer = summary_writer(self.out) if self.dist.is_main else None
        self.val_images = torch.stack([self.val_set[i] for i in range(min(8, len(self.val_set)))])

    # -- checkpoints ---------------------------------------------------------
    def state(self) -> dict:
        return {**self.model.checkpoint_dict(), "train_config": self.cfg.to_dict(), "step": self.step,
                "optimizer": self.optimizer.state_dict(), "best_val": self.best_val,
                "history": json.dumps(self.history), "rng": rng_state()}

    def save(self, name: str) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_atomic(self.state(), self.out / name)

    def resume(self, path=None) -> bool:
        resumed = resume_latest(self.out, self.model, self.optimizer, path, verbose=self.dist.is_main)
        if resumed is None:
            return False
        state, self.history = resumed
        self.step, self.best_val = state["step"], state["best_val"]
        return True

    # -- one step ----------------------------------------------------------------
    def batch_for_step(self, step: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.steps_per_epoch)
        indices = epoch_batches(self.sampler, epoch, self.per_rank)[offset]
        return torch.stack([self.train_set[i] for i in indices])

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        self.net.train()
        if self.cfg.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        x = x.to(self.device)
        use_bf16 = self.cfg.bf16 and self.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            recon, codes = self.net(x, return_latents=True)
            total, terms = self.loss(recon.float(), x, codes, self.model.latent_avg)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        terms["loss"] = total.detach()
        return {k: all_reduce_mean(v.float(), self.dist).item() for k, v in terms.items()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        loader = DataLoader(self.val_set, batch_size=max(self.per_rank, 8), shuffle=False)
        sums, n = {}, 0
        for i, x in enumerate(loader):
            if self.cfg.val_batches and i >= self.cfg.val_batches:
                break
            x = x.to(self.device)
            recon, codes = self.model(x, return_latents=True, randomize_noise=False)
            total, terms = self.loss(recon, x, codes, self.model.latent_avg)
            terms["loss"] = total
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item() * len(x)
            n += len(x)
        return {k: v / n for k, v in sums.items()}

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        self.model.eval()
        x = self.val_images.to(self.device)
        recon = self.model(x, randomize_noise=False)
        return image_grid(interleave(x, recon.clamp(-1, 1)).cpu(), nrow=8)

    # -- the loop ------------------------------------------------------------
    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until ``steps`` (default: the config's); returns the validation history."""
        end = steps if steps is not None else self.cfg.steps
        cfg = self.cfg
        bar = tqdm(range(self.step, end), initial=self.step, total=end, desc=f"invert[{self.model.kind}]",
                   disable=not self.dist.is_main)
        t0 = time.time()
        for _ in bar:
            logs = self.train_step(self.batch_for_step(self.step))
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            if self.writer is not None and self.step % cfg.log_every == 0:
                for k, v in logs.items():
                    self.writer.add_scalar(f"train/{k}", v, self.step)
            if self.step % cfg.val_every == 0 or self.step == end:
                val = self.validate()
                self.history.append({"step": self.step, "wall_s": time.time() - t0, **{f"val_{k}": v for k, v in val.items()},
                                     **{f"train_{k}": v for k, v in logs.items()}})
                if self.writer is not None:
                    for k, v in val.items():
                        self.writer.add_scalar(f"val/{k}", v, self.step)
                if val["loss"] < self.best_val:
                    self.best_val = val["loss"]
                    self.save("best.pt")
            if self.writer is not None and (self.step % cfg.image_every == 0 or self.step == end):
                self.writer.add_image("val/input_vs_reconstruction", (self.sample_grid() + 1) / 2, self.step)
            if self.step % cfg.ckpt_every == 0 or self.step == end:
                self.save("last.pt")
        if self.dist.is_main:
            self.save("final.pt")
            (self.out / "history.json").write_text(json.dumps(self.history, indent=2))
            if cfg.figures:
                self.write_figures(cfg.figures)
        if self.writer is not None:
            self.writer.flush()
        return self.history


    def write_figures(self, folder) -> list[Path]:
        """Validation curves and an input | reconstruction grid, named after the model kind."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        from ..viz import save_image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.cfg.data}_{self.model.kind}{'' if self.model.cfg.use_self_attn else '_wo_self'}"
        paths = [save_image(self.sample_grid(), folder / f"{name}_reconstructions.png", scale=2)]
        if self.history:
            fig, ax = plt.subplots(figsize=(5, 3))
            steps = [h["step"] for h in self.history]
            for key in [k for k in self.history[-1] if k.startswith("val_")]:
                ax.plot(steps, [h[key] for h in self.history], label=key[4:])
            ax.set_xlabel("step")
            ax.set_yscale("log")
            ax.set_title(f"held-out losses ({self.model.kind})")
            ax.legend()
            fig.tight_layout()
            fig.savefig(folder / f"{name}_curves.png", dpi=120)
            plt.close(fig)
            paths.append(folder / f"{name}_curves.png")
        return paths


def train_inversion(cfg: InversionTrainConfig, resume: bool = True) -> InversionTrainer:
    info = setup()
    try:
        trainer = InversionTrainer(cfg, info)
        if resume:
            trainer.resume()
        trainer.fit()
        return trainer
    finally:
        cleanup()
