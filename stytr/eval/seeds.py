"""Statistics over training seeds: a mean with its t-interval, and paired comparisons of two methods.

A table such as the ToyFaces Table 1 is one number per (method, seed). With a handful of
seeds the honest summary is the mean and a Student-t interval over seeds (the seeds are the
samples; the held-out images are shared, so their noise is the same in every cell), and the
honest comparison of two methods is paired by seed: each seed trains both methods on the same
data, so ``a_s - b_s`` removes what the seed does to both.

* :func:`t_interval` -- mean, standard deviation and the two-sided t-interval of ``values``.
* :func:`paired_comparison` -- the per-seed differences ``a - b``: their mean, t-interval and
  the two-sided paired t-test's p-value.
* :func:`seed_summary` / :func:`paired_rows` -- the same over rows ``{method, seed, metric...}``.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["t_interval", "paired_comparison", "seed_summary", "paired_rows"]


def t_interval(values: Iterable[float], confidence: float = 0.95) -> dict:
    """``{"n", "mean", "sd", "lo", "hi", "half"}``: the two-sided ``confidence`` t-interval of the mean
    (``mean ± t_{n-1} * sd / sqrt(n)``, sd with ``n - 1``). Needs at least two values."""
    x = np.asarray(list(values), dtype=float)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"a t-interval needs at least two values, got {len(x)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return {"n": len(x), "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "half": half}


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """Per-seed differences ``a - b`` (same seed order in both): ``{"n", "mean", "sd", "lo", "hi",
    "half", "p", "diffs"}`` -- the t-interval of the mean difference and the two-sided paired
    t-test's p-value (NaN when all differences are equal)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D sequences of one length, got {a.shape} and {b.shape}")
    diff = a - b
    out = t_interval(diff, confidence)
    out["p"] = float(stats.ttest_rel(a, b).pvalue) if diff.std() > 0 else math.nan
    out["diffs"] = diff.tolist()
    return out


def _by_method(rows: Sequence[Mapping], metric: str) -> dict[str, dict[int, float]]:
    table: dict[str, dict[int, float]] = {}
    for r in rows:
        seeds = table.setdefault(str(r["method"]), {})
        seed = int(r["seed"])
        if seed in seeds:
            raise ValueError(f"method {r['method']!r} has two rows for seed {seed}")
        seeds[seed] = float(r[metric])
    return table


def seed_summary(rows: Sequence[Mapping], metrics: Sequence[str], confidence: float = 0.95) -> list[dict]:
    """One row per method (in first-seen order): ``method``, ``n_seeds`` and, per metric,
    ``<metric>_mean``, ``<metric>_lo``, ``<metric>_hi`` (the t-interval over seeds)."""
    out = []
    for m in dict.fromkeys(str(r["method"]) for r in rows):
        row: dict = {"method": m}
        for metric in metrics:
            values = _by_method(rows, metric)[m]
            ci = t_interval(values.values(), confidence)
            row["n_seeds"] = ci["n"]
            row.update({f"{metric}_mean": ci["mean"], f"{metric}_lo": ci["lo"], f"{metric}_hi": ci["hi"]})
        out.append(row)
    return out


def paired_rows(rows: Sequence[Mapping], a: str, b: str, metrics: Sequence[str], lower_better: Iterable[str],
                confidence: float = 0.95) -> list[dict]:
    """Method ``a`` against ``b`` on the seeds both have, one row per metric: ``metric``, ``n``,
    ``mean_diff`` (a - b), ``lo``, ``hi``, ``p`` and ``a_better`` (seeds on which ``a`` is better,
    by the metric's direction)."""
    lower = set(lower_better)
    out = []
    for metric in metrics:
        table = _by_method(rows, metric)
        if a not in table or b not in table:
            raise ValueError(f"no rows for method {a if a not in table else b!r}")
        seeds = sorted(set(table[a]) & set(table[b]))
        va, vb = [table[a][s] for s in seeds], [table[b][s] for s in seeds]
        cmp = paired_comparison(va, vb, confidence)
        better = sum((x < y) if metric in lower else (x > y) for x, y in zip(va, vb))
        out.append({"comparison": f"{a} - {b}", "metric": metric, "n": cmp["n"], "mean_diff": cmp["mean"],
                    "lo": cmp["lo"], "hi": cmp["hi"], "p": cmp["p"], "a_better": better})
    return out
