"""Train an inversion encoder (Style Transformer, w/o self, pSp, e4e) against a frozen StyleGAN2.

    python -m stytr train-inversion --preset toy                 # ToyFaces on a CPU
    torchrun --nproc_per_node 2 -m stytr train-inversion --preset ffhq --train_dir ... --val_dir ...

The run goes through :class:`stytr.train.loop.Loop`: ``out/last.pt`` resumes exactly
(model, optimiser incl. Ranger's Lookahead buffers, step, best held-out loss, every RNG;
the batch of a step, flips included, is a function of (seed, step)). ``out/best.pt`` holds
the model with the lowest held-out loss, ``out/final.pt`` the last one; both load with
``InversionModel.from_checkpoint``. ``--ship`` also writes the best model as the domain's
shipped encoder and the figures into the repository's ``figures/``.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .. import artifacts
from ..checkpoints import REPO_ROOT
from ..config import InversionTrainConfig
from ..data.folders import ImageFolderDataset
from ..domains import get_domain
from ..losses import InversionLoss
from ..models.inversion import InversionModel, build_inversion_model
from ..ops import announce_backends
from ..toy import ToyFacesDataset
from ..viz import image_grid, interleave, save_image
from .distributed import DistInfo, all_reduce_mean, cleanup, setup
from .loop import Loop, ModelOptimizerState
from .sampling import StepSampler, split_indices


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
    """(train, held-out) image sets, unaugmented: the trainer flips per step (a function of the step)."""
    size = cfg.model.input_size
    if cfg.data == "toyfaces":
        train = ToyFacesDataset(cfg.n_train, seed=cfg.seed + 10_000, size=size)
        val = ToyFacesDataset(cfg.n_val, seed=cfg.seed + 20_000, size=size)
        return _ImagesOnly(train), _ImagesOnly(val)
    if cfg.data == "folder":
        train = ImageFolderDataset(cfg.train_dir, size=size, train=True, flip=False)
        if cfg.val_dir:
            return train, ImageFolderDataset(cfg.val_dir, size=size, train=False)
        # No held-out folder: hold n_val images of the training folder out (a seeded split).
        if len(train) < 2:
            raise ValueError(f"{cfg.train_dir} holds {len(train)} image(s): too few to hold any out (give --val_dir)")
        keep, held = split_indices(len(train), min(cfg.n_val, len(train) // 2) / len(train), cfg.seed)
        val = ImageFolderDataset(cfg.train_dir, size=size, train=False)
        return Subset(train, keep.tolist()), Subset(val, held.tolist())
    raise ValueError(f"unknown data source {cfg.data!r}: use 'toyfaces' or 'folder'")


def build_model(cfg: InversionTrainConfig):
    """The model with its generator and, where configured, the pSp backbone weights loaded."""
    model = build_inversion_model(cfg.model)
    if cfg.model.generator.checkpoint:
        generator = artifacts.load("generator", cfg.model.generator.checkpoint)
        model.load_generator(generator, latent_avg=generator.latent_avg)
    if cfg.model.backbone_weights:
        model.load_backbone(cfg.model.backbone_weights)
    return model


def build_loss(cfg: InversionTrainConfig) -> InversionLoss:
    """The configured terms; the perceptual one is the feature distance of ``cfg.domain``'s judge."""
    judge = get_domain(cfg.domain).load("predictor") if cfg.perceptual > 0 else None
    return InversionLoss(l2=cfg.l2, lpips=cfg.lpips, id=cfg.id, perceptual=cfg.perceptual, w_norm=cfg.w_norm,
                         predictor=judge)


def build_optimizer(cfg: InversionTrainConfig, params):
    if cfg.optimizer == "ranger":
        from pytorch_ranger import Ranger

        return Ranger(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use 'ranger' or 'adam'")


class InversionTrainer(ModelOptimizerState):
    def __init__(self, cfg: InversionTrainConfig, dist_info: DistInfo | None = None, model=None, loss=None):
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.out)
        self.device = self.dist.device
        self.model = (model if model is not None else build_model(cfg)).to(self.device)
        self.loss = (loss if loss is not None else build_loss(cfg)).to(self.device)
        self.train_set, self.val_set = build_datasets(cfg)
        self.sampler = StepSampler(len(self.train_set), cfg.batch, cfg.seed, self.dist.rank, self.dist.world_size)
        self.per_rank = cfg.batch // self.dist.world_size
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
        if cfg.compile:
            announce_backends(self.device)  # the ops say their choice here, outside the trace
            self.net = torch.compile(self.net)
        self.optimizer = build_optimizer(cfg, self.model.trainable_parameters())
        self.val_images = torch.stack([self.val_set[i] for i in range(min(8, len(self.val_set)))])
        self.loop = Loop(self, self.out, cfg.steps, ckpt_every=cfg.ckpt_every, eval_every=cfg.val_every,
                         image_every=cfg.image_every, log_every=cfg.log_every, desc=f"invert[{self.model.kind}]",
                         is_main=self.dist.is_main)

    # -- what the loop calls -------------------------------------------------------
    def batch_for_step(self, step: int) -> torch.Tensor:
        """This rank's images of ``step``, flipped where the step's generator says so."""
        idx = self.sampler.global_indices(step)
        flip = torch.rand(len(idx), generator=self.sampler.generator(step)) < 0.5
        flip = self.sampler.share(flip & self.cfg.flip)
        x = torch.stack([self.train_set[i] for i in self.sampler.share(idx).tolist()])
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

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
        terms["loss"] = total.detach()
        return {k: all_reduce_mean(v.float(), self.dist).item() for k, v in terms.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
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
    def sample(self) -> torch.Tensor:
        self.model.eval()
        x = self.val_images.to(self.device)
        recon = self.model(x, randomize_noise=False)
        return image_grid(interleave(x, recon.clamp(-1, 1)).cpu(), nrow=8)

    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until ``steps`` (default: the config's); returns the history of held-out losses."""
        self.loop.steps = steps if steps is not None else self.cfg.steps
        history = self.loop.run()
        if self.dist.is_main and self.cfg.figures:
            self.write_figures(self.cfg.figures.replace("{out}", str(self.out)))
        return history

    def write_figures(self, folder) -> list[Path]:
        """Validation curves and an input | reconstruction grid, named after the model kind."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.cfg.data}_{self.model.kind}{'' if self.model.cfg.use_self_attn else '_wo_self'}"
        paths = [save_image(self.sample(), folder / f"{name}_reconstructions.png", scale=2)]
        if self.history:
            fig, ax = plt.subplots(figsize=(5, 3))
            steps = [h["step"] for h in self.history]
            for key in [k for k in self.history[-1] if k.startswith("val_")]:
                ax.plot(steps, [math.nan if h.get(key) is None else h[key] for h in self.history], label=key[4:])
            ax.set_xlabel("step")
            ax.set_yscale("log")
            ax.set_title(f"held-out losses ({self.model.kind})")
            ax.legend()
            fig.tight_layout()
            fig.savefig(folder / f"{name}_curves.png", dpi=120)
            plt.close(fig)
            paths.append(folder / f"{name}_curves.png")
        return paths


def train_inversion(cfg: InversionTrainConfig, resume: bool = True, ship: bool = False,
                    allow_changed_config: bool = False) -> InversionTrainer:
    """Train (resuming ``cfg.out``/last.pt unless ``resume=False``). ``ship``: also write the best
    held-out model as the domain's shipped encoder and the figures into the repository's figures/."""
    target = None
    if ship:
        domain = get_domain(cfg.domain)
        target = artifacts.find("encoder", domain.encoder)
        if target is None or not target.shipped:
            raise ValueError(f"--ship writes a shipped encoder into data/; the {domain.name} domain has none "
                             f"(its encoder is a published file)")
        if not cfg.figures or cfg.figures.startswith("{out}"):
            cfg = cfg.override({"figures": str(REPO_ROOT / "figures")})
    info = setup()
    try:
        trainer = InversionTrainer(cfg, info)
        if resume:
            trainer.resume(allow_changed_config=allow_changed_config)
        trainer.fit()
        if target is not None and info.is_main:
            best = InversionModel.from_checkpoint(Path(cfg.out) / "best.pt")
            artifacts.export("encoder", best, target.path, {"steps": trainer.step, "command": target.command})
        return trainer
    finally:
        cleanup()
