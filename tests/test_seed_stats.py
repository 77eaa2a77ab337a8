"""Means with t-intervals over seeds, and paired comparisons, against scipy's own routines."""
import math

import numpy as np
import pytest
from scipy import stats

from stytr.eval.seeds import paired_comparison, paired_rows, seed_summary, t_interval


def test_t_interval_matches_scipy():
    x = [0.0182, 0.0175, 0.0191, 0.0179]
    ci = t_interval(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert math.isclose(ci["lo"], lo, rel_tol=1e-12) and math.isclose(ci["hi"], hi, rel_tol=1e-12)
    assert t_interval(x, 0.5)["half"] < ci["half"]
    with pytest.raises(ValueError, match="at least two"):
        t_interval([1.0])


def test_paired_comparison_is_the_paired_t_test():
    a, b = [1.0, 2.0, 3.5], [1.2, 2.1, 3.6]
    c = paired_comparison(a, b)
    assert math.isclose(c["p"], stats.ttest_rel(a, b).pvalue) and c["mean"] < 0 and c["lo"] < c["mean"] < c["hi"]
    # A constant shift has no spread: the interval is a point and no p-value exists.
    same = paired_comparison([1.0, 2.0], [0.5, 1.5])
    assert same["lo"] == same["hi"] == 0.5 and math.isnan(same["p"])


def test_rows_pair_by_seed_and_count_wins_by_direction():
    rows = [{"method": m, "seed": s, "mse": v, "ssim": 1 - v}
            for m, vals in {"full": [0.10, 0.30, 0.20], "pSp": [0.20, 0.25, 0.40]}.items()
            for s, v in zip((2, 0, 1), vals)]
    summary = {r["method"]: r for r in seed_summary(rows, ["mse"])}
    assert math.isclose(summary["full"]["mse_mean"], 0.2) and summary["pSp"]["n_seeds"] == 3
    mse, ssim = paired_rows(rows, "full", "pSp", ["mse", "ssim"], lower_better={"mse"})
    assert math.isclose(mse["mean_diff"], (-0.1 + 0.05 - 0.2) / 3)
    assert mse["a_better"] == 2 and ssim["a_better"] == 2      # lower MSE on seeds 2 and 1, higher SSIM too
    with pytest.raises(ValueError, match="two rows for seed"):
        seed_summary(rows + rows[:1], ["mse"])
