"""Model complexity (supplementary Table 1): parameters, FLOPs and inference time.

Conventions, chosen to match the paper's Table 1 (see ``DESIGN.md`` section 3):

* **Parameters** (``params_m``, millions): the encoder's, *including* the learned
  query tokens ``z`` and *excluding* the generator (its mapping MLP too, although
  the Style Transformer trains it) -- :meth:`InversionModel.encoder_parameter_count`.
  Full size: pSp 267.3 M, w/o self 37.3 M, full 40.6 M.
* **FLOPs** of the encoder module alone (trunk + FPN + style blocks / transformer
  blocks) on one ``input_size`` x ``input_size`` image, counted with
  :class:`torch.utils.flop_counter.FlopCounterMode`. **torch's counter counts one
  multiply-add as 2 FLOPs.** ``gflops`` is that raw count / 1e9; ``gmacs`` = ``gflops / 2``
  is the number of multiply-accumulates, which is what the paper's "FLOPs(G)" column
  reports (72.55 / 36.31 / 36.37 are GMACs, as thop/ptflops-style counters give).
  Only matrix products, convolutions and attention are counted (no norms,
  activations, interpolation, additions). The Style Transformer's queries are
  ``mapping(z)``, which does not depend on the image; they are computed outside the
  count (18 tokens x 8 layers x 512^2 = 0.038 GMACs at full size; ``include_mapping=True``
  counts them). On CPU, PyTorch's fused attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``) has no formula in torch's
  registry; we register the standard SDPA formula for it so attention is counted
  on every device.
* **Time**: median wall-clock milliseconds of repeated batch-1 forwards after
  warm-up, in ``torch.inference_mode`` and eval mode. ``encoder_ms`` times
  ``model.encode(x)`` (what inference runs: encoder, the query mapping for the Style
  Transformer, ``+ latent_avg``); ``total_ms`` times ``model(x, randomize_noise=False)``
  (encode + StyleGAN2 synthesis + average pooling to ``output_size``). All methods are
  measured **side by side in one interleaved run**: every repetition times each
  method once, in an order rotated from one repetition to the next, so slow phases
  of a shared, noisy machine hit all methods alike and the *ratios* between methods
  hold even when absolute times drift. Absolute numbers are only comparable on the
  same machine (the paper's are on one RTX 2080Ti, in seconds).

``python -m stytr.benchmarks.complexity`` prints the full-size table. Measured with this
module at full size (input 256, generator 1024): pSp 267.14 M / 72.48 GMACs, w/o self
37.47 M / 36.23 GMACs, full 40.62 M / 36.29 GMACs (paper: 267.3 / 72.55, 37.3 / 36.31,
40.6 / 36.37). Our GMACs sit a uniform 0.07-0.08 G below the paper's, the size of the
element-wise work (batch norm, PReLU, additions, interpolation) that some counters include;
the self-attention adds 0.058 GMACs and 3 x 1,051,648 parameters (the paper's 37.3 M for
w/o self implies 3.3 M, which no layout of these blocks gives exactly).
"""
from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils import flop_counter

from ..config import InversionConfig
from ..models.inversion import InversionModel, build_inversion_model
from ..models.style_transformer import StyleTransformer

__all__ = ["PAPER_TABLE1", "TABLE1_METHODS", "COMPLEXITY_COLUMNS", "paper_table1_configs", "count_flops",
           "encoder_flops", "time_models", "complexity_table", "write_csv", "format_complexity_table"]

#: Method names of Table 1's rows, in the paper's order.
TABLE1_METHODS = ("pSp", "w/o self", "full")

#: Supplementary Table 1 as printed: params in millions, "FLOPs(G)" (= GMACs, see the module
#: docstring), time in seconds per iteration on one RTX 2080Ti, MSE and LPIPS on CelebA-HQ test.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "pSp": dict(params_m=267.3, gflops=72.55, time_s=0.0668, mse=0.0373, lpips=0.1693),
    "w/o self": dict(params_m=37.3, gflops=36.31, time_s=0.0429, mse=0.0369, lpips=0.1716),
    "full": dict(params_m=40.6, gflops=36.37, time_s=0.0436, mse=0.0363, lpips=0.1665),
}

#: Columns of :func:`complexity_table`'s rows (``paper_*`` columns follow when a reference is given).
COMPLEXITY_COLUMNS = ("method", "params_m", "gflops", "gmacs", "encoder_ms", "total_ms")
PAPER_COLUMNS = ("paper_params_m", "paper_gmacs", "paper_time_ms", "paper_mse", "paper_lpips")


def paper_table1_configs(preset: str = "ffhq", **overrides) -> dict[str, InversionConfig]:
    """The three models of Table 1: ``{"pSp": kind psp, "w/o self": transformer without
    self-attention, "full": transformer}``, from ``InversionConfig.preset(preset, **overrides)``."""
    base = InversionConfig.preset(preset, **overrides)
    return {
        "pSp": base.override({"kind": "psp"}),
        "w/o self": base.override({"kind": "transformer", "use_self_attn": False}),
        "full": base.override({"kind": "transformer", "use_self_attn": True}),
    }


# -- FLOPs ---------------------------------------------------------------------------------

def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch's SDPA formula: 2*B*H*L*S*E (q k^T) + 2*B*H*L*S*Ev (attention @ v)."""
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_formulas() -> dict[Any, Callable]:
    """Formulas torch's registry lacks: the fused CPU attention kernel gets the SDPA count."""
    out = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None and op not in flop_counter.flop_registry:
        out[op] = _sdpa_flops  # FlopCounterMode wraps it to receive shapes
    return out


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn()`` by :class:`~torch.utils.flop_counter.FlopCounterMode` (a multiply-add
    counts as **2** FLOPs; halve for MACs). Runs ``fn`` once, in inference mode."""
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_custom_formulas())
    with torch.inference_mode(), counter:
        fn()
    return int(counter.get_total_flops())


def _queries(model: InversionModel, batch: int, device) -> torch.Tensor | None:
    """The Style Transformer's mapped queries, or stand-ins of the right shape without a generator."""
    if not isinstance(model, StyleTransformer):
        return None
    if model.decoder is not None:
        with torch.no_grad():
            return model.queries(batch)
    return torch.zeros(batch, model.cfg.n_latent, model.cfg.style_dim, device=device)


def encoder_flops(model: InversionModel | InversionConfig, input_size: int | None = None, batch: int = 1,
                  include_mapping: bool = False) -> int:
    """Raw FLOPs (torch's count: multiply-add = 2) of the encoder alone on ``batch`` images of
    ``input_size`` (default ``cfg.input_size``). ``model`` may be a config (then the encoder is
    built here, without a generator). ``include_mapping`` adds the query mapping ``mapping(z)`` of
    the Style Transformer (needs the generator)."""
    if isinstance(model, InversionConfig):
        model = build_inversion_model(model, build_generator=include_mapping)
    model = model.eval()
    size = input_size or model.cfg.input_size
    device = next(model.encoder.parameters()).device
    x = torch.zeros(batch, model.cfg.input_nc, size, size, device=device)
    if include_mapping:
        return count_flops(lambda: model.predict_offsets(x))
    query = _queries(model, batch, device)
    if query is None:
        return count_flops(lambda: model.encoder(x))
    return count_flops(lambda: model.encoder(x, query))


# -- time -------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_models(models: Mapping[str, InversionModel], input_size: int | None = None, repeats: int = 10,
                warmup: int = 2, device: str | torch.device = "cpu", total: bool = True,
                seed: int = 0) -> dict[str, dict[str, Any]]:
    """Interleaved timing of several models on one batch-1 image each.

    Every one of the ``warmup + repeats`` rounds runs each model's full forward once: the
    encoder time is read when the W+ code is ready and the total when the generator has
    rendered it (what ``model(x)`` does, in one pass, so the encoder does not run twice). The
    model order rotates by one position per round; warm-up rounds are discarded. Returns ``{name: {"encoder_ms": median, "total_ms": median or None,
    "encoder_samples": [...], "total_samples": [...]}}`` in milliseconds.
    """
    device = torch.device(device)
    names = list(models)
    gen = torch.Generator().manual_seed(seed)
    inputs = {}
    for name in names:
        cfg = models[name].cfg
        size = input_size or cfg.input_size
        inputs[name] = torch.rand(1, cfg.input_nc, size, size, generator=gen).mul(2).sub(1).to(device)
    samples: dict[str, dict[str, list[float]]] = {n: {"encoder": [], "total": []} for n in names}
    with torch.inference_mode():
        for rnd in range(warmup + repeats):
            shift = rnd % len(names)
            for name in names[shift:] + names[:shift]:
                model, x = models[name], inputs[name]
                _sync(device)
                start = time.perf_counter()
                codes = model.encode(x)
                _sync(device)
                enc = time.perf_counter() - start
                tot = None
                if total:
                    model.decode(codes, randomize_noise=False)
                    _sync(device)
                    tot = time.perf_counter() - start
                if rnd >= warmup:
                    samples[name]["encoder"].append(enc * 1e3)
                    if tot is not None:
                        samples[name]["total"].append(tot * 1e3)
    out = {}
    for name in names:
        enc, tot = samples[name]["encoder"], samples[name]["total"]
        out[name] = {"encoder_ms": statistics.median(enc) if enc else float("nan"),
                     "total_ms": statistics.median(tot) if tot else None,
                     "encoder_samples": enc, "total_samples": tot}
    return out


# -- the table ----------------------------------------------------------------------------------

def complexity_table(configs: Mapping[str, InversionConfig], input_size: int | None = None, repeats: int = 10,
                     warmup: int = 2, device: str | torch.device = "cpu", reference: Mapping | None = None,
                     time_total: bool = True, models: Mapping[str, InversionModel] | None = None,
                     progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per method: ``method, params_m, gflops, gmacs, encoder_ms, total_ms``.

    ``configs`` maps row names to configs (e.g. :func:`paper_table1_configs`); the models are
    built with random weights (complexity does not depend on them) unless ``models`` gives
    built ones. ``input_size`` defaults to each config's. ``reference`` (e.g.
    :data:`PAPER_TABLE1`) adds ``paper_params_m, paper_gmacs, paper_time_ms, paper_mse,
    paper_lpips`` for the rows it names. ``time_total=False`` skips the generator timing
    (``total_ms`` is then ``None``). See the module docstring for the conventions.
    """
    say = progress or (lambda _msg: None)
    device = torch.device(device)
    built: dict[str, InversionModel] = {}
    for name, cfg in configs.items():
        if models is not None and name in models:
            built[name] = models[name].to(device).eval()
        else:
            say(f"building {name}")
            built[name] = build_inversion_model(cfg).to(device).eval()
    rows: list[dict[str, Any]] = []
    for name, model in built.items():
        say(f"counting FLOPs of {name}")
        flops = encoder_flops(model, input_size)
        rows.append({"method": name, "params_m": model.encoder_parameter_count() / 1e6, "gflops": flops / 1e9,
                     "gmacs": flops / 2e9})
    say(f"timing {len(built)} models, {warmup} warm-up + {repeats} rounds")
    times = time_models(built, input_size, repeats=repeats, warmup=warmup, device=device, total=time_total)
    for row in rows:
        row["encoder_ms"] = times[row["method"]]["encoder_ms"]
        row["total_ms"] = times[row["method"]]["total_ms"]
        ref = (reference or {}).get(row["method"])
        if ref is not None:
            row.update(paper_params_m=ref.get("params_m"), paper_gmacs=ref.get("gflops"),
                       paper_time_ms=None if ref.get("time_s") is None else ref["time_s"] * 1e3,
                       paper_mse=ref.get("mse"), paper_lpips=ref.get("lpips"))
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path) -> Path:
    """Write rows (any dicts; columns in first-seen order, ``COMPLEXITY_COLUMNS`` first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [c for c in COMPLEXITY_COLUMNS if any(c in r for r in rows)]
    for row in rows:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return path


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_complexity_table(rows: Sequence[Mapping[str, Any]], baseline: str | None = "pSp") -> str:
    """Plain-text table of ``rows``, with ratios to the ``baseline`` row when it is present."""
    base = next((r for r in rows if r["method"] == baseline), None)
    has_paper = any("paper_params_m" in r for r in rows)
    head = f"{'method':<10} {'params M':>9} {'GMACs':>8} {'GFLOPs':>8} {'enc ms':>9} {'total ms':>9}"
    if base is not None:
        head += f"  {'params/':>7} {'GMACs/':>7} {'enc/':>6} {'total/':>7}"
    if has_paper:
        head += f"  | {'paper M':>7} {'paper G':>7} {'paper ms':>8}"
    lines = [head]
    for r in rows:
        line = (f"{r['method']:<10} {r['params_m']:>9.2f} {r['gmacs']:>8.2f} {r['gflops']:>8.2f} "
                f"{_fmt(r.get('encoder_ms'), '9.1f')} {_fmt(r.get('total_ms'), '9.1f')}")
        if base is not None:
            def ratio(key):
                a, b = r.get(key), base.get(key)
                return f"{a / b:.3f}" if a is not None and b else "-"
            line += (f"  {ratio('params_m'):>7} {ratio('gmacs'):>7} {ratio('encoder_ms'):>6} "
                     f"{ratio('total_ms'):>7}")
        if has_paper:
            line += (f"  | {_fmt(r.get('paper_params_m'), '7.1f')} {_fmt(r.get('paper_gmacs'), '7.2f')} "
                     f"{_fmt(r.get('paper_time_ms'), '8.1f')}")
        lines.append(line)
    if base is not None and baseline == "pSp":
        lines.append(f"(ratios are to {baseline}; paper ratios: params "
                     + ", ".join(f"{m} {PAPER_TABLE1[m]['params_m'] / PAPER_TABLE1['pSp']['params_m']:.3f}"
                                 for m in TABLE1_METHODS)
                     + "; GMACs " + ", ".join(f"{m} {PAPER_TABLE1[m]['gflops'] / PAPER_TABLE1['pSp']['gflops']:.3f}"
                                              for m in TABLE1_METHODS)
                     + "; time " + ", ".join(f"{m} {PAPER_TABLE1[m]['time_s'] / PAPER_TABLE1['pSp']['time_s']:.3f}"
                                             for m in TABLE1_METHODS) + ")")
    return "\n".join(lines)
