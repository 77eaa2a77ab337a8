"""Distil the ToyFaces renderer into a small StyleGAN2: train G(z) to reproduce render_z(z).

    python -m stytr train-toy-generator --preset toy --ship

The renderer is a deterministic function of z, so this is plain regression: a
multi-scale L1 on pixels plus a perceptual term on the frozen attribute
predictor's features (the domain's judge), which sharpens eyes, mouths and glasses.
An optional non-saturating adversarial term (our Discriminator, R1 penalty) can be
switched on with ``--w_adv``. The run goes through :class:`stytr.train.loop.Loop`: the z
of a step is a function of (seed, step) and the learning rate of (step, config), so a
killed job resumes exactly from ``out/last.pt``; the held-out number is the EMA
generator's L1 on 16 fixed codes.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import artifacts
from ..checkpoints import load, save_json, save_weights
from ..config import ToyDistillConfig
from ..domains import get_domain
from ..models.stylegan2 import Discriminator
from ..toy.predictor import PredictorFeatureDistance
from ..toy.render import render_z
from ..viz import image_grid, interleave
from .loop import Loop, upgrade
from .sampling import seeded

LOG_EVERY = 25            # steps between TensorBoard points
GENERATOR_FORMAT = "stytr-generator"


def batch_z(cfg: ToyDistillConfig, step: int, n: int | None = None, stream: int = 1) -> torch.Tensor:
    """The z batch of a step, a function of (seed, step): resuming replays the same data."""
    return torch.randn(n or cfg.batch, cfg.generator.style_dim, generator=seeded(cfg.seed, stream, step))


def multiscale_l1(a: torch.Tensor, b: torch.Tensor, scales) -> torch.Tensor:
    total = a.new_zeros(())
    for s in scales:
        total = total + (F.avg_pool2d(a, s) - F.avg_pool2d(b, s)).abs().mean() if s > 1 else total + (a - b).abs().mean()
    return total / len(scales)


@torch.no_grad()
def ema_update(target: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    for pt, ps in zip(target.parameters(), source.parameters()):
        pt.lerp_(ps, 1 - decay)
    for bt, bs in zip(target.buffers(), source.buffers()):
        bt.copy_(bs)


class ToyGeneratorTrainer:
    def __init__(self, cfg: ToyDistillConfig, predictor=None):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.g = cfg.generator.build()
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        mapping = [p for n, p in self.g.named_parameters() if n.startswith("style.")]
        synthesis = [p for n, p in self.g.named_parameters() if not n.startswith("style.")]
        self.base_lrs = [cfg.lr, cfg.lr * cfg.lr_mapping_mult]
        self.opt = torch.optim.Adam([{"params": synthesis}, {"params": mapping, "lr": self.base_lrs[1]}],
                                    lr=cfg.lr, betas=tuple(cfg.betas))
        self.d = self.d_opt = None
        if cfg.w_adv > 0:
            self.d = Discriminator(cfg.generator.size, channel_multiplier=cfg.generator.channel_multiplier,
                                   channel_max=cfg.generator.channel_max)
            self.d_opt = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
        self._predictor, self._perceptual = predictor, None
        # Compiling changes no parameter: checkpoints and the EMA keep using ``g`` itself.
        self.g_forward = torch.compile(self.g) if cfg.compile else self.g
        self.fixed_z = batch_z(cfg, 0, n=16, stream=2)
        self.fixed_target = torch.from_numpy(render_z(self.fixed_z.numpy(), cfg.generator.size))
        self.loop = Loop(self, cfg.out, cfg.steps, ckpt_every=cfg.ckpt_every, eval_every=cfg.sample_every,
                         image_every=cfg.sample_every, log_every=LOG_EVERY, desc="distil")

    def perceptual(self) -> PredictorFeatureDistance:
        # Loaded on first use, so a run can start its pixel-only phase before the predictor exists.
        if self._perceptual is None:
            judge = self._predictor if self._predictor is not None else get_domain("toyfaces").load("predictor")
            self._perceptual = PredictorFeatureDistance(judge)
        return self._perceptual

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"format": GENERATOR_FORMAT, "config": self.cfg.generator.to_dict(), "model": self.g.state_dict(),
                 "ema": self.g_ema.state_dict(), "optimizer": self.opt.state_dict()}
        if self.d is not None:
            state.update(discriminator=self.d.state_dict(), d_optimizer=self.d_opt.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["model"])
        self.g_ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])      # the learning rate is set from the config every step
        if self.d is not None and "discriminator" in state:
            self.d.load_state_dict(state["discriminator"])
            self.d_opt.load_state_dict(state["d_optimizer"])

    # -- what the loop calls -------------------------------------------------------
    def batch_for_step(self, step: int) -> tuple[int, torch.Tensor]:
        return step, batch_z(self.cfg, step)

    def train_step(self, batch: tuple[int, torch.Tensor]) -> dict[str, float]:
        cfg, (step, z) = self.cfg, batch
        for group, base in zip(self.opt.param_groups, self.base_lrs):
            group["lr"] = base * cfg.lr_multiplier(step)
        target = torch.from_numpy(render_z(z.numpy(), cfg.generator.size))
        fake, _ = self.g_forward([z])
        loss_l1 = multiscale_l1(fake, target, cfg.l1_scales)
        loss = cfg.w_l1 * loss_l1
        logs = {"l1": loss_l1.item()}
        if cfg.w_perceptual > 0 and step >= cfg.perceptual_start:
            loss_p = self.perceptual()(fake, target).mean()
            loss = loss + cfg.w_perceptual * loss_p
            logs["perceptual"] = loss_p.item()
        adversarial = self.d is not None and step >= cfg.adv_start
        if adversarial:
            loss_g = F.softplus(-self.d(fake)).mean()
            loss = loss + cfg.w_adv * loss_g
            logs["adv_g"] = loss_g.item()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        ema_update(self.g_ema, self.g, cfg.ema_decay)
        if adversarial:
            real = target.requires_grad_(step % 16 == 0)
            real_pred, fake_pred = self.d(real), self.d(fake.detach())
            loss_d = F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()
            if real.requires_grad:  # lazy R1 every 16 steps
                (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
                loss_d = loss_d + cfg.r1_gamma / 2 * grad.pow(2).sum((1, 2, 3)).mean() * 16
            self.d_opt.zero_grad(set_to_none=True)
            loss_d.backward()
            self.d_opt.step()
            logs["adv_d"] = loss_d.item()
        return {"loss": loss.item(), **logs}

    @torch.no_grad()
    def _ema_samples(self) -> torch.Tensor:
        return self.g_ema([self.fixed_z], randomize_noise=False)[0]

    def evaluate(self) -> dict[str, float]:
        return {"loss": multiscale_l1(self._ema_samples(), self.fixed_target, self.cfg.l1_scales).item()}

    def sample(self) -> torch.Tensor:
        return image_grid(interleave(self.fixed_target, self._ema_samples()), nrow=8)


def train_toy_generator(cfg: ToyDistillConfig, ship: bool = False, predictor=None, resume: bool = True,
                        allow_changed_config: bool = False) -> dict:
    """Train (resuming ``cfg.out``/last.pt unless ``resume=False``); writes the EMA generator as
    ``out/toyfaces_generator.safetensors`` and, with ``ship``, as the shipped one in ``data/``."""
    trainer = ToyGeneratorTrainer(cfg, predictor)
    if resume:
        trainer.loop.resume(allow_changed_config=allow_changed_config)
    trainer.loop.run()
    report = {"steps": trainer.loop.step, "wall_s": trainer.loop.wall_s, "last": trainer.loop.logs,
              "held_out_l1": trainer.loop.metrics.get("loss")}
    out, shipped = Path(cfg.out), artifacts.find("generator", get_domain("toyfaces").generator)
    save_json(report, out / "report.json")
    save_weights(trainer.g_ema.state_dict(), out / shipped.file, metadata=_metadata(cfg, report, shipped.command))
    if ship:
        save_weights(trainer.g_ema.state_dict(), shipped.path, metadata=_metadata(cfg, report, shipped.command))
    return report


def _metadata(cfg: ToyDistillConfig, report: dict, command: str) -> dict[str, str]:
    return {"generator_config": json.dumps(cfg.generator.to_dict()), "distill_config": json.dumps(cfg.to_dict()),
            "steps": str(report["steps"]), "wall_s": f"{report['wall_s']:.0f}", "command": command}


def export_from_checkpoint(checkpoint, path) -> dict:
    """Write the EMA generator of a distillation checkpoint (``out/last.pt``, today's keys or the
    older g/g_ema/opt ones) as shipped weights.

    The data order depends only on the step and the learning rate on (step, ``steps``), so a
    checkpoint before the end of its run is the state after that many steps of the run's
    command (not of a run with a smaller ``--steps``, whose decay would start elsewhere); the
    metadata says which."""
    state = upgrade(load(checkpoint))
    cfg = ToyDistillConfig.from_dict(state["train_config"])
    report = {"steps": state["step"], "wall_s": state["loop"].get("wall_s", 0.0)}
    command = artifacts.find("generator", get_domain("toyfaces").generator).command
    if state["step"] < cfg.steps:
        command = f"the first {state['step']} of {cfg.steps} steps of: {command.removesuffix(' --ship')}"
    save_weights(state["ema"], path, metadata=_metadata(cfg, report, command))
    return report
