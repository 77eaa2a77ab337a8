"""Train StyleGAN2 on an image folder, or on ToyFaces renders (``python -m stytr train-generator``).

    python -m stytr train-generator --preset ffhq --data cars/ --size 512 --augment diffaugment
    torchrun --nproc_per_node 8 -m stytr train-generator --preset ffhq --data ffhq/ --size 1024
    python -m stytr train-generator --preset toy          # 64 px on fresh ToyFaces renders, one CPU thread

The recipe of StyleGAN2 config F (Karras et al. 2020), with the constants of the published
trainers (rosinality/stylegan2-pytorch ``train.py``, NVIDIA stylegan2-ada-pytorch
``training/loss.py``):

* D: ``softplus(D(G(z))) + softplus(-D(x))``; every ``d_reg_every`` steps the lazy R1 penalty
  ``r1 / 2 * |grad_x D(x)|^2 * d_reg_every``.
* G: ``softplus(-D(G(z)))``; every ``g_reg_every`` steps the path-length penalty on
  ``batch / path_batch_shrink`` samples: ``path_regularize * g_reg_every * (|J^T y| - a)^2``
  with ``y ~ N(0, I) / sqrt(H W)`` and ``a`` the running mean of the lengths (decay ``path_decay``).
* Style mixing: with probability ``mixing`` a batch uses two z, crossing over at a random layer.
* Adam, lr 0.002, betas (0, 0.99); for lazily regularised nets lr and betas are raised to
  ``c = every / (every + 1)`` (lr * c, beta ** c), as both trainers do.
* The EMA generator ``g_ema`` has a half-life of ``ema_kimg`` thousand images.
* ``augment="diffaugment"``: D sees real and fake images through :mod:`stytr.train.augment`.

Checkpoints (``out/last.pt``, ``best.pt`` with the lowest Fréchet distance when a judge is set,
``final.pt``) are rosinality's layout, ``{'g', 'd', 'g_ema', 'g_optim', 'd_optim', 'latent_avg'}``,
plus the resume state of :class:`stytr.train.loop.Loop`; ``artifacts.load("generator", path)``
reads their ``g_ema``.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch.nn import functional as F

from .. import artifacts
from ..config import GeneratorTrainConfig
from ..data.folders import ImageFolderDataset
from ..eval.frechet import FeatureStatistics, frechet_distance, generator_statistics, image_statistics
from ..models.stylegan2 import Discriminator, check_size
from ..toy.faces import Z_DIM
from ..toy.render import render_z
from ..viz import image_grid
from .augment import check_policy, diff_augment
from .distributed import DistInfo, all_reduce_mean, cleanup, setup
from .loop import Loop
from .sampling import StepSampler, seeded

__all__ = ["StyleGAN2Trainer", "train_generator", "d_logistic_loss", "g_nonsaturating_loss", "r1_penalty",
           "path_length_penalty", "lazy_adam"]

CHECKPOINT_FORMAT = "stytr-stylegan2"


# -- losses ---------------------------------------------------------------------------------

def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``|grad_x D(x)|^2`` (with a graph, so that it can be minimised)."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def path_length_penalty(fake: torch.Tensor, latents: torch.Tensor, mean_length: torch.Tensor, decay: float,
                        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(penalty, updated running mean, mean path length)`` of a batch rendered from W+ ``latents``."""
    noise = torch.randn(fake.shape, generator=gen).to(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
    (grad,) = torch.autograd.grad((fake * noise).sum(), latents, create_graph=True)
    lengths = grad.pow(2).sum(2).mean(1).sqrt()
    new_mean = mean_length + decay * (lengths.detach().mean() - mean_length)
    return (lengths - new_mean).pow(2).mean(), new_mean, lengths.detach().mean()


def lazy_adam(params, lr: float, betas, every: int) -> torch.optim.Adam:
    """Adam for a net regularised every ``every`` steps: lr and betas raised to c = every / (every + 1)."""
    c = every / (every + 1)
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c))


# -- the trainer ---------------------------------------------------------------------------

class _Renders:
    """ToyFaces as an endless stream: the real images of a step are renders of z drawn for it."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed

    def images(self, n: int, *key: int) -> torch.Tensor:
        z = torch.randn(n, Z_DIM, generator=seeded(self.seed, *key))
        return torch.from_numpy(render_z(z.numpy(), self.size))


class StyleGAN2Trainer:
    """One StyleGAN2 training run, in the shape :class:`~stytr.train.loop.Loop` drives:
    ``batch_for_step``, ``train_step``, ``evaluate``, ``sample``, ``state_dict``/``load_state_dict``."""

    def __init__(self, cfg: GeneratorTrainConfig, dist_info: DistInfo | None = None):
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        self.device = self.dist.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        check_size(cfg.size)
        if cfg.augment:
            check_policy(cfg.augment_policy)
        if cfg.batch % self.dist.world_size or (cfg.batch // self.dist.world_size) % cfg.path_batch_shrink:
            raise ValueError(f"batch {cfg.batch} does not split over {self.dist.world_size} processes in shares "
                             f"divisible by path_batch_shrink {cfg.path_batch_shrink}")
        torch.manual_seed(cfg.seed)
        self.g = cfg.generator_config().build().to(self.device)
        self.d = Discriminator(cfg.size, channel_multiplier=cfg.channel_multiplier,
                               channel_max=cfg.channel_max).to(self.device)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.g_optim = lazy_adam(self.g.parameters(), cfg.lr, cfg.betas, cfg.g_reg_every)
        self.d_optim = lazy_adam(self.d.parameters(), cfg.lr, cfg.betas, cfg.d_reg_every)
        self.mean_path_length = torch.zeros((), device=self.device)
        self.g_net, self.d_net = self.g, self.d
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # The noise buffers never change, so there is nothing to broadcast each step.
            self.g_net = DDP(self.g, device_ids=ids, broadcast_buffers=False)
            self.d_net = DDP(self.d, device_ids=ids, broadcast_buffers=False)
        self._build_data()
        self._real_stats: FeatureStatistics | None = None
        self._judge = None

    # -- data ----------------------------------------------------------------------------
    def _build_data(self) -> None:
        cfg = self.cfg
        if not cfg.data:
            raise ValueError("train-generator needs --data: an image folder, or 'toyfaces' for rendered faces")
        if cfg.data == "toyfaces":
            self.renders, self.folder = _Renders(cfg.size, cfg.seed), None
            return
        self.renders = None
        self.folder = ImageFolderDataset(cfg.data, size=cfg.size)
        self.sampler = StepSampler(len(self.folder), cfg.batch, cfg.seed, self.dist.rank, self.dist.world_size)

    def batch_for_step(self, step: int) -> dict:
        """This process's real images of ``step`` (a pure function of seed, step and rank)."""
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world_size
        if self.renders is not None:
            real = self.renders.images(cfg.batch, 2, step)[rank::world]
        else:
            real = torch.stack([self.folder[int(i)] for i in self.sampler.indices(step)])
        if cfg.flip:
            flips = (torch.rand(cfg.batch, generator=seeded(cfg.seed, 3, step)) < 0.5)[rank::world]
            real = torch.where(flips.view(-1, 1, 1, 1), real.flip(-1), real)
        return {"step": step, "real": real}

    def _styles(self, n: int, gen: torch.Generator) -> tuple[list[torch.Tensor], int | None]:
        """z for ``n`` samples: two of them and a crossover layer with probability ``mixing``."""
        mix = self.cfg.mixing > 0 and torch.rand((), generator=gen).item() < self.cfg.mixing
        zs = [torch.randn(n, self.cfg.style_dim, generator=gen).to(self.device) for _ in range(2 if mix else 1)]
        index = int(torch.randint(1, self.g.n_latent, (), generator=gen)) if mix else None
        return zs, index

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return diff_augment(x, self.cfg.augment_policy, gen) if self.cfg.augment else x

    # -- one step ------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict[str, float]:
        cfg, step = self.cfg, batch["step"]
        gen = seeded(cfg.seed, 1, step, self.dist.rank)
        real = batch["real"].to(self.device)
        n = real.shape[0]
        logs = {}

        # Discriminator.
        self.g.requires_grad_(False)
        self.d.requires_grad_(True)
        zs, index = self._styles(n, gen)
        fake, _ = self.g_net(zs, inject_index=index)
        fake_pred, real_pred = self.d_net(self._augment(fake, gen)), self.d_net(self._augment(real, gen))
        d_loss = d_logistic_loss(real_pred, fake_pred)
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        logs.update(d=d_loss.detach(), real_score=real_pred.detach().mean(), fake_score=fake_pred.detach().mean())
        if step % cfg.d_reg_every == 0:
            real.requires_grad_(True)
            real_pred = self.d_net(self._augment(real, gen))
            r1 = r1_penalty(real_pred, real)
            self.d_optim.zero_grad(set_to_none=True)
            # The zero term keeps D's output in the graph (DDP wants every output used).
            (cfg.r1 / 2 * r1 * cfg.d_reg_every + 0 * real_pred[0]).sum().backward()
            self.d_optim.step()
            logs["r1"] = r1.detach()

        # Generator.
        self.g.requires_grad_(True)
        self.d.requires_grad_(False)
        zs, index = self._styles(n, gen)
        fake, _ = self.g_net(zs, inject_index=index)
        g_loss = g_nonsaturating_loss(self.d_net(self._augment(fake, gen)))
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        logs["g"] = g_loss.detach()
        if step % cfg.g_reg_every == 0:
            zs, index = self._styles(n // cfg.path_batch_shrink, gen)
            fake, latents = self.g_net(zs, inject_index=index, return_latents=True)
            penalty, mean_length, lengths = path_length_penalty(fake, latents, self.mean_path_length,
                                                                cfg.path_decay, gen)
            self.g_optim.zero_grad(set_to_none=True)
            (cfg.path_regularize * cfg.g_reg_every * penalty + 0 * fake[0, 0, 0, 0]).backward()
            self.g_optim.step()
            self.mean_path_length = all_reduce_mean(mean_length.detach(), self.dist)
            logs.update(path=penalty.detach(), path_length=all_reduce_mean(lengths, self.dist))
        self.d.requires_grad_(True)

        self._update_ema(self.ema_decay(step))
        return {k: all_reduce_mean(v.float(), self.dist).item() for k, v in logs.items()}

    @torch.no_grad()
    def _update_ema(self, decay: float) -> None:
        for pe, p in zip(self.g_ema.parameters(), self.g.parameters()):
            pe.lerp_(p, 1 - decay)
        for be, b in zip(self.g_ema.buffers(), self.g.buffers()):
            be.copy_(b)

    def ema_decay(self, step: int) -> float:
        """Per-step EMA decay for a half-life of ``ema_kimg`` thousand images (NVIDIA's ramp-up
        shortens it early on, to ``ema_rampup`` times the images seen so far)."""
        half_life = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup:
            half_life = min(half_life, step * self.cfg.batch * self.cfg.ema_rampup)
        return 0.5 ** (self.cfg.batch / max(half_life, 1e-8))

    # -- evaluation --------------------------------------------------------------------------
    def _reference_images(self) -> torch.Tensor:
        n = self.cfg.n_eval
        if self.renders is not None:
            return self.renders.images(n, 4)
        pick = np.linspace(0, len(self.folder) - 1, min(n, len(self.folder))).round().astype(int)
        return torch.stack([self.folder[int(i)] for i in pick])

    def evaluate(self) -> dict[str, float]:
        """The Fréchet distance of ``g_ema`` to the real images in the judge's feature space
        (``loss``, so that ``best.pt`` keeps the best generator); without a judge, the path length."""
        out = {"path_length_mean": float(self.mean_path_length)}
        if not self.cfg.judge:
            return out
        if self._judge is None:
            self._judge = artifacts.load("predictor", self.cfg.judge, self.device)
            self._real_stats = image_statistics(self._judge, self._reference_images())
        stats = generator_statistics(self.g_ema, self._judge, n=self.cfg.n_eval, seed=self.cfg.seed + 5)
        fd = frechet_distance(stats, self._real_stats)
        return {**out, "loss": fd, "frechet": fd}

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        z = torch.randn(16, self.cfg.style_dim, generator=seeded(self.cfg.seed, 6)).to(self.device)
        images, _ = self.g_ema([z], randomize_noise=False)
        return image_grid(images.clamp(-1, 1).cpu(), nrow=8)

    # -- checkpoints ----------------------------------------------------------------------
    @torch.no_grad()
    def latent_avg(self) -> torch.Tensor:
        """The truncation centre of ``g_ema``: the mean W of 4096 z (a fixed draw)."""
        z = torch.randn(4096, self.cfg.style_dim, generator=seeded(self.cfg.seed, 7)).to(self.device)
        return self.g_ema.style(z).mean(0)

    def state_dict(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "g": self.g.state_dict(), "d": self.d.state_dict(),
                "g_ema": self.g_ema.state_dict(), "g_optim": self.g_optim.state_dict(),
                "d_optim": self.d_optim.state_dict(), "latent_avg": self.latent_avg(),
                "mean_path_length": self.mean_path_length.detach().cpu(),
                "generator_config": self.cfg.generator_config().to_dict()}

    def load_state_dict(self, state: dict) -> None:
        # The loop may hand over the keys renamed in its own vocabulary (model, ema, discriminator ...).
        def pick(*names):
            return next(state[n] for n in names if n in state)

        self.g.load_state_dict(pick("g", "model"))
        self.d.load_state_dict(pick("d", "discriminator"))
        self.g_ema.load_state_dict(pick("g_ema", "ema"))
        self.g_optim.load_state_dict(pick("g_optim", "optimizer"))
        self.d_optim.load_state_dict(pick("d_optim", "d_optimizer"))
        self.mean_path_length = state["mean_path_length"].to(self.device)


def train_generator(cfg: GeneratorTrainConfig, resume: bool = True, allow_changed_config: bool = False,
                    progress: bool = True) -> tuple[StyleGAN2Trainer, Loop]:
    """Run (or continue, from ``out/last.pt``) a training; returns the trainer and its loop."""
    info = setup()
    try:
        trainer = StyleGAN2Trainer(cfg, info)
        loop = Loop(trainer, cfg.out, cfg.steps, ckpt_every=cfg.ckpt_every, eval_every=cfg.eval_every,
                    image_every=cfg.image_every, log_every=cfg.log_every, desc="stylegan2", is_main=info.is_main,
                    progress=progress)
        if resume:
            loop.resume(allow_changed_config=allow_changed_config)
        loop.run()
        return trainer, loop
    finally:
        cleanup()
