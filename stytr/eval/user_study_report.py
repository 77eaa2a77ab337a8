"""User study tables for people: the paper's layout as markdown or plain text, a tidy CSV, a bar chart.

Everything here takes a :class:`stytr.eval.user_study.UserStudyTable` (from ``aggregate``).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .user_study import ASPECT_TITLES, REPO_ROOT, UserStudyTable, attribute_code

FIGURES_DIR = REPO_ROOT / "figures"


def _fmt_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def format_table(table: UserStudyTable, style: str = "markdown", ci: bool = True, tests: bool = True,
                 digits: int = 2) -> str:
    """Table 2's layout: rows = methods, columns = aspect x attribute code, values in percent.

    ``style``: ``"markdown"`` (column winners in bold, like the paper) or ``"plain"``.
    ``ci``: add the Wilson interval to each cell. ``tests``: add rows with the winner-vs-runner-up
    exact binomial p-value and the chi-square (uniform preference) p-value of each column.
    Lines of the vote file left out as malformed are named under the table.
    """
    if style not in ("markdown", "plain"):
        raise ValueError("style must be 'markdown' or 'plain'")
    pct = table.percent
    low, high = table.ci
    winners = set()
    for j, t in enumerate(table.tests):
        if not t.tie:
            winners.add((table.methods.index(t.winner), j))
    body = []
    for i, m in enumerate(table.methods):
        cells = []
        for j in range(len(table.columns)):
            s = f"{pct[i, j]:.{digits}f}"
            if style == "markdown" and (i, j) in winners:
                s = f"**{s}**"
            if ci:
                s += f" [{low[i, j]:.1f}, {high[i, j]:.1f}]"
            cells.append(s)
        body.append([m] + cells)
    if tests:
        body.append(["p (winner vs 2nd)"] + [_fmt_p(t.p_binomial) + ("*" if t.significant else "")
                                              for t in table.tests])
        body.append(["p Holm"]
                    + [_fmt_p(t.p_binomial_holm) for t in table.tests])
        body.append(["p (chi2 uniform)"] + [_fmt_p(t.p_chi2) for t in table.tests])
    votes = ["votes"] + [str(int(s)) + ("" if s == n else f"/{n}") for s, n in zip(table.column_sums, table.n)]
    body.append(votes)
    head_top = ["Method"] + [f"{ASPECT_TITLES.get(a, a)}(%)" for a, _ in table.columns]
    head = ["Method"] + [attribute_code(t) for _, t in table.columns]
    note = (f"Values: percent of votes, [{round(100 * table.confidence)} % Wilson CI]. "
            if ci else "Values: percent of votes. ")
    if tests:
        note += ("p: exact two-sided binomial test, winner vs runner-up (* p < %g, unadjusted); Holm: adjusted "
                 "over the columns; chi2: goodness of fit vs equal preference for all methods." % table.alpha)
    if table.malformed:
        lines_out = ", ".join(str(line) for line, _ in table.malformed)
        note += f" Not counted: {len(table.malformed)} malformed line(s) of the vote file (line {lines_out})."
    if style == "markdown":
        header = [f"{a} {c}" for a, c in zip(head_top[1:], head[1:])]
        lines = ["| Method | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 1)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines) + "\n\n" + note + "\n"
    widths = [max(len(str(r[k])) for r in [head_top, head] + body) for k in range(len(head))]
    # two-level header: aspect title once per group
    top = [""] + [head_top[k] if k == 1 or table.columns[k - 1][0] != table.columns[k - 2][0] else ""
                  for k in range(1, len(head))]
    fmt = lambda r: "  ".join(str(x).ljust(w) if k == 0 else str(x).rjust(w) for k, (x, w) in enumerate(zip(r, widths)))
    lines = [fmt(top).rstrip(), fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(r) for r in body]
    return "\n".join(lines) + "\n" + note + "\n"


def write_table_csv(table: UserStudyTable, path: str | os.PathLike) -> Path:
    """Tidy CSV: one row per cell with votes, n, percent, Wilson CI and the column's tests."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["method", "aspect", "attribute", "code", "votes", "n", "percent", "ci_low", "ci_high",
              "column_winner", "p_winner_vs_runner_up", "p_winner_vs_runner_up_holm", "p_chi2_uniform"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for rec in table.records():
            t = table.test(rec["aspect"], rec["attribute"])
            w.writerow({**{k: rec[k] for k in fields[:6]}, "percent": f"{rec['percent']:.2f}",
                        "ci_low": f"{rec['ci_low']:.2f}", "ci_high": f"{rec['ci_high']:.2f}",
                        "column_winner": int(rec["method"] == t.winner and not t.tie),
                        "p_winner_vs_runner_up": f"{t.p_binomial:.6g}",
                        "p_winner_vs_runner_up_holm": f"{t.p_binomial_holm:.6g}",
                        "p_chi2_uniform": f"{t.p_chi2:.6g}"})
    return path


def plot_user_study(table: UserStudyTable, path: str | os.PathLike | None = None, *, csv_path: str | os.PathLike | None | bool = True,
                    title: str = "User study (supplementary Table 2)", dpi: int = 120):
    """Grouped bar chart (one panel per aspect, groups = attributes, bars = methods) with Wilson CI error bars.

    Each group is annotated with the winner-vs-runner-up p-value. Uses ``matplotlib.figure.Figure``
    directly, so it works with any backend (Agg included) and leaves pyplot's state alone.
    ``path`` defaults to ``figures/user_study_table2.png``; ``csv_path=True`` also writes the table next
    to it with a ``.csv`` suffix (pass a path to choose it, ``False``/``None`` to skip). Returns the figure.
    """
    from matplotlib.figure import Figure

    path = Path(path) if path is not None else FIGURES_DIR / "user_study_table2.png"
    aspects = list(dict.fromkeys(a for a, _ in table.columns))
    fig = Figure(figsize=(4.2 * len(aspects) + 1.5, 4.0), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(aspects), sharey=True, squeeze=False)[0]
    pct = table.percent
    low, high = table.ci
    nm = len(table.methods)
    width = 0.8 / max(nm, 1)
    colors = ["#9e9e9e", "#6baed6", "#fd8d3c", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    ymax = float(np.nanmax(high)) if high.size else 100.0
    for ax, aspect in zip(axes, aspects):
        cols = [j for j, (a, _) in enumerate(table.columns) if a == aspect]
        x = np.arange(len(cols))
        for i, m in enumerate(table.methods):
            y = pct[i, cols]
            err = np.vstack([y - low[i, cols], high[i, cols] - y])
            ax.bar(x + (i - (nm - 1) / 2) * width, y, width * 0.92, yerr=err, capsize=2.5, label=m,
                   color=colors[i % len(colors)], error_kw={"elinewidth": 0.9})
        for xi, j in zip(x, cols):
            t = table.tests[j]
            star = "*" if t.significant else " (n.s.)"
            ax.text(xi, min(ymax + 4, 100), f"p={_fmt_p(t.p_binomial)}{star}", ha="center", va="bottom", fontsize=7.5)
        ax.axhline(100.0 / max(nm, 1), color="k", lw=0.7, ls="--", alpha=0.6)
        ax.set_xticks(x, [attribute_code(table.columns[j][1]) for j in cols])
        ax.set_title(f"{ASPECT_TITLES.get(aspect, aspect)}")
        ax.set_ylim(0, min(ymax + 12, 105))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"votes (%) with {round(100 * table.confidence)} % Wilson CI")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    fig.suptitle(title + "  -- dashed: chance; p: winner vs runner-up (exact binomial)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    if csv_path:
        write_table_csv(table, path.with_suffix(".csv") if csv_path is True else csv_path)
    return fig


# ----------------------------------------------------------------------------------------------
# Study runner
