"""Distil the ToyFaces renderer into a small StyleGAN2: train G(z) to reproduce render_z(z).

    python -m stytr train-toy-generator --preset toy --ship

The renderer is a deterministic function of z, so this is plain regression: a
multi-scale L1 on pixels plus a perceptual term on the frozen attribute
predictor's features, which sharpens eyes, mouths and glasses. An optional
non-saturating adversarial term (our Discriminator, R1 penalty) can be switched
on with ``--w_adv``. The run resumes from ``out/last.pt`` when it exists, so a
killed job continues where it stopped.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import artifacts
from ..checkpoints import load, save_weights
from ..config import ToyDistillConfig
from ..toy.predictor import PredictorFeatureDistance
from ..toy.render import render_z
from ..viz import image_grid, interleave, save_image
from .common import ema_update, frozen_copy, latest_checkpoint, load_training_state, save_training_state, summary_writer



def batch_z(cfg: ToyDistillConfig, step: int) -> torch.Tensor:
    """The z batch of a step is a function of (seed, step): resuming replays the same data."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    return torch.randn(cfg.batch, cfg.generator.style_dim, generator=gen)


def multiscale_l1(a: torch.Tensor, b: torch.Tensor, scales) -> torch.Tensor:
    total = a.new_zeros(())
    for s in scales:
        total = total + (F.avg_pool2d(a, s) - F.avg_pool2d(b, s)).abs().mean() if s > 1 else total + (a - b).abs().mean()
    return total / len(scales)


def train_toy_generator(cfg: ToyDistillConfig, ship: bool = False, predictor=None) -> dict:
    torch.set_num_threads(cfg.threads) if cfg.threads else None
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    g = cfg.generator.build()
    g_ema = frozen_copy(g)
    mapping = [p for n, p in g.named_parameters() if n.startswith("style.")]
    synthesis = [p for n, p in g.named_parameters() if not n.startswith("style.")]
    opt = torch.optim.Adam([{"params": synthesis}, {"params": mapping, "lr": cfg.lr * cfg.lr_mapping_mult}],
                           lr=cfg.lr, betas=tuple(cfg.betas))
    d = d_opt = None
    if cfg.w_adv > 0:
        from ..models.stylegan2 import Discriminator

        d = Discriminator(cfg.generator.size, channel_multiplier=cfg.generator.channel_multiplier,
                          channel_max=cfg.generator.channel_max)
        d_opt = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
    perceptual = None

    def perceptual_term():
        # Loaded on first use, so a run can start its pixel-only phase before the predictor exists.
        nonlocal perceptual
        if perceptual is None:
            perceptual = PredictorFeatureDistance(predictor if predictor is not None else artifacts.load("predictor", "toy"))
        return perceptual

    start, elapsed = 0, 0.0
    if (ckpt := latest_checkpoint(out)) is not None:
        state = load_training_state(ckpt)
        if state["config"] != cfg.to_dict():
            changed = sorted(k for k in cfg.to_dict() if state["config"].get(k) != cfg.to_dict()[k])
            print(f"resuming {ckpt} with changed settings: {changed}")
        g.load_state_dict(state["g"])
        g_ema.load_state_dict(state["g_ema"])
        opt.load_state_dict(state["opt"])
        if d is not None and "d" in state:
            d.load_state_dict(state["d"])
            d_opt.load_state_dict(state["d_opt"])
        start, elapsed = state["step"], state.get("elapsed", 0.0)
        print(f"resumed from {ckpt} at step {start}")

    # Compiling changes no parameter: checkpoints and the EMA keep using ``g`` itself.
    g_forward = torch.compile(g) if cfg.compile else g
    writer = summary_writer(out)
    fixed_z = batch_z(cfg, -1)[:16]
    fixed_target = torch.from_numpy(render_z(fixed_z.numpy(), cfg.generator.size))

    def checkpoint(step):
        extra = {"d": d.state_dict(), "d_opt": d_opt.state_dict()} if d is not None else {}
        save_training_state(out, config=cfg.to_dict(), step=step, g=g.state_dict(), g_ema=g_ema.state_dict(),
                            opt=opt.state_dict(), elapsed=elapsed + time.time() - t0, **extra)

    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="distil")
    logs = {}
    base_lrs = [cfg.lr, cfg.lr * cfg.lr_mapping_mult]
    for step in bar:
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * cfg.lr_multiplier(step)
        z = batch_z(cfg, step)
        target = torch.from_numpy(render_z(z.numpy(), cfg.generator.size))
        fake, _ = g_forward([z])
        loss_l1 = multiscale_l1(fake, target, cfg.l1_scales)
        loss = cfg.w_l1 * loss_l1
        logs = {"l1": loss_l1.item()}
        if cfg.w_perceptual > 0 and step >= cfg.perceptual_start:
            loss_p = perceptual_term()(fake, target).mean()
            loss = loss + cfg.w_perceptual * loss_p
            logs["perceptual"] = loss_p.item()
        if d is not None and step >= cfg.adv_start:
            loss_g = F.softplus(-d(fake)).mean()
            loss = loss + cfg.w_adv * loss_g
            logs["adv_g"] = loss_g.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(g_ema, g, cfg.ema_decay)

        if d is not None and step >= cfg.adv_start:
            real = target.requires_grad_(step % 16 == 0)
            real_pred, fake_pred = d(real), d(fake.detach())
            loss_d = F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()
            if real.requires_grad:  # lazy R1 every 16 steps
                (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
                loss_d = loss_d + cfg.r1_gamma / 2 * grad.pow(2).sum((1, 2, 3)).mean() * 16
            d_opt.zero_grad(set_to_none=True)
            loss_d.backward()
            d_opt.step()
            logs["adv_d"] = loss_d.item()

        if writer is not None and step % 25 == 0:
            for k, v in logs.items():
                writer.add_scalar(f"distil/{k}", v, step)
        bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
        done = step + 1
        if done % cfg.sample_every == 0 or done == cfg.steps:
            with torch.no_grad():
                sample, _ = g_ema([fixed_z], randomize_noise=False)
            grid = image_grid(interleave(fixed_target, sample), nrow=8)
            save_image(grid, out / f"samples_{done:06d}.png", scale=2)
            if writer is not None:
                writer.add_image("distil/render_vs_g_ema", (grid + 1) / 2, done)
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            checkpoint(done)

    if writer is not None:
        writer.close()
    report = {"steps": cfg.steps, "wall_s": elapsed + time.time() - t0, "last": logs}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    shipped = artifacts.find("generator", "toy")
    save_weights(g_ema.state_dict(), out / shipped.file, metadata=_metadata(cfg, report))
    if ship:
        save_weights(g_ema.state_dict(), shipped.path, metadata=_metadata(cfg, report))
    return report


def _metadata(cfg: ToyDistillConfig, report: dict) -> dict[str, str]:
    return {"generator_config": json.dumps(cfg.generator.to_dict()), "distill_config": json.dumps(cfg.to_dict()),
            "steps": str(report["steps"]), "wall_s": f"{report['wall_s']:.0f}",
            "command": "python -m stytr train-toy-generator --preset toy --ship"}


def export_from_checkpoint(checkpoint, path) -> dict:
    """Write the EMA generator of a distillation checkpoint (``out/last.pt``) as shipped weights.

    The data order depends only on the step and the learning rate on (step, ``steps``), so a
    checkpoint before the end of its run is the state after that many steps of the run's
    command (not of a run with a smaller ``--steps``, whose decay would start elsewhere); the
    metadata says which."""
    state = load(checkpoint)
    cfg = ToyDistillConfig.from_dict(state["config"])
    report = {"steps": state["step"], "wall_s": state.get("elapsed", 0.0)}
    meta = _metadata(cfg, report)
    if state["step"] < cfg.steps:
        meta["command"] = (f"the first {state['step']} of {cfg.steps} steps of: "
                           f"python -m stytr train-toy-generator --preset toy")
    save_weights(state["g_ema"], path, metadata=meta)
    return report
