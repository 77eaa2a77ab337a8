"""User study (supplementary Table 2): the paper's numbers, their statistics, and a runner for new studies.

The supplementary material compares four label-based editing methods (InterFaceGAN,
StyleSpace, Ours-1 = first-order, Ours-2 = second-order editing) on three attributes
(Bangs, Gender, Goatee) in two aspects (image quality, disentanglement). 60 volunteers
took part; every column of Table 2 is a forced choice among the four methods with
120 votes, so a printed percentage p corresponds to ``round(p * 120 / 100)`` votes.

What this module provides:

* :func:`paper_table2` -- the table as tidy records (read from ``data/paper/table2_user_study.csv``).
* :func:`aggregate` -- counts, percentages, 95 % Wilson confidence intervals and per-column
  significance tests, from a vote CSV written by :class:`UserStudyApp`, from count records
  (like :func:`paper_table2`) or from individual vote records.
* :func:`format_table`, :func:`plot_user_study`, :func:`write_table_csv` -- the paper's layout
  as markdown / plain text, a grouped bar chart with CI error bars, a CSV.
* :class:`UserStudyApp` -- an ipywidgets forced-choice page for running a new study; every
  answer is appended to a CSV at once (flush + fsync) and a participant can resume.

Note on the paper's numbers: the Goatee columns do not sum to 120 votes (quality: 122,
disentanglement: 118; the printed percentages add up to 101.67 % and 98.33 %). Every printed
percentage is exactly k/120 for an integer k, so the votes derived here are exact for each
cell; the inconsistency is in the paper. (Swapping Ours-1's two Goatee cells, 31.67 <-> 30.00,
would make both columns sum to 120 -- a plausible transcription slip, but only a guess; the
data here is kept as printed.) Use ``aggregate(..., n_per_column=120)`` to reproduce the
printed percentages, which were computed with the nominal 120 votes per column.

This module imports neither torch nor pandas; tensors are accepted by duck typing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

# Same definition as stytr.checkpoints.REPO_ROOT (not imported here to avoid importing torch).
REPO_ROOT = Path(__file__).resolve().parents[2]
PAPER_TABLE2_CSV = REPO_ROOT / "data" / "paper" / "table2_user_study.csv"
FIGURES_DIR = REPO_ROOT / "figures"

METHODS = ("InterFaceGAN", "StyleSpace", "Ours-1", "Ours-2")
ASPECTS = ("quality", "disentanglement")
ATTRIBUTES = ("Bangs", "Gender", "Goatee")
ATTRIBUTE_CODES = {"Bangs": "BA", "Gender": "GE", "Goatee": "GO"}
VOTES_PER_COLUMN = 120  # 60 volunteers; each column of Table 2 is 120 forced-choice votes
ASPECT_TITLES = {"quality": "Quality", "disentanglement": "Disentanglement"}

VOTE_FIELDS = ("participant", "trial", "attribute", "aspect", "choice", "slot", "response_time_s", "timestamp")

_CODE_TO_ATTRIBUTE = {code: name for name, code in ATTRIBUTE_CODES.items()}


def attribute_code(attribute: str) -> str:
    """Two-letter code used in the paper (BA/GE/GO); other attributes: first two letters, upper case."""
    return ATTRIBUTE_CODES.get(attribute, attribute[:2].upper())


def _normalise_attribute(attribute: str) -> str:
    attribute = str(attribute).strip()
    return _CODE_TO_ATTRIBUTE.get(attribute.upper(), attribute)


def _normalise_aspect(aspect: str) -> str:
    aspect = str(aspect).strip().lower()
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; expected one of {ASPECTS}")
    return aspect


# ----------------------------------------------------------------------------------------------
# The paper's table
# ----------------------------------------------------------------------------------------------

def paper_table2(path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Table 2 of the supplementary material as tidy records.

    One dict per cell with keys ``method``, ``aspect`` (quality|disentanglement),
    ``attribute`` (Bangs|Gender|Goatee), ``code`` (BA|GE|GO), ``percent`` (float, as printed)
    and ``votes`` (int, ``round(percent * 120 / 100)``). Order: methods as in the paper,
    then aspects, then attributes.
    """
    path = Path(path) if path is not None else PAPER_TABLE2_CSV
    if not path.exists():
        raise FileNotFoundError(f"paper table not found at {path}; it ships with the repository (data/paper/)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{"method": r["method"], "aspect": r["aspect"], "attribute": r["attribute"], "code": r["code"],
             "percent": float(r["percent"]), "votes": int(r["votes"])} for r in rows]


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------

def wilson_interval(k: int | np.ndarray, n: int | np.ndarray, confidence: float = 0.95) -> tuple[Any, Any]:
    """Wilson score interval for a binomial proportion k/n (no continuity correction).

    Returns ``(low, high)`` as proportions in [0, 1] (arrays if k/n are arrays). With n = 0 the
    interval is (0, 1). Matches ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    z = stats.norm.ppf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / np.where(n > 0, n, 1), 0.0)
        denom = 1 + z * z / np.where(n > 0, n, 1)
        centre = (p + z * z / (2 * np.where(n > 0, n, 1))) / denom
        half = z * np.sqrt(p * (1 - p) / np.where(n > 0, n, 1) + z * z / (4 * np.where(n > 0, n, 1) ** 2)) / denom
    low = np.where(n > 0, np.clip(centre - half, 0, 1), 0.0)
    high = np.where(n > 0, np.clip(centre + half, 0, 1), 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control across columns)."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class ColumnTest:
    """Significance of one column (aspect x attribute).

    ``p_binomial``: exact two-sided binomial test of the winner's votes against p = 0.5, conditional
    on the winner's + runner-up's votes (is the lead over the runner-up more than chance?).
    ``p_binomial_holm``: the same, Holm-adjusted over all columns of the table.
    ``chi2`` / ``p_chi2``: chi-square goodness-of-fit of the whole column against equal preference
    for all methods (is there any preference at all?).
    """

    aspect: str
    attribute: str
    winner: str
    runner_up: str
    winner_votes: int
    runner_up_votes: int
    tie: bool
    p_binomial: float
    p_binomial_holm: float
    chi2: float
    p_chi2: float
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        """Winner's lead over the runner-up significant at ``alpha`` (unadjusted exact binomial test)."""
        return (not self.tie) and self.p_binomial < self.alpha


# ----------------------------------------------------------------------------------------------
# Aggregated table
# ----------------------------------------------------------------------------------------------

@dataclass
class UserStudyTable:
    """Vote counts in the paper's layout: rows = methods, columns = (aspect, attribute).

    ``n`` is the denominator of each column (the number of votes in it, or the nominal
    ``n_per_column`` passed to :func:`aggregate`). Percentages and the Wilson intervals use it.
    """

    methods: list[str]
    columns: list[tuple[str, str]]
    counts: np.ndarray  # int, (n_methods, n_columns)
    n: np.ndarray  # int, (n_columns,)
    confidence: float = 0.95
    alpha: float = 0.05
    tests: list[ColumnTest] = field(default_factory=list)

    def __post_init__(self):
        self.counts = np.asarray(self.counts, dtype=int)
        self.n = np.asarray(self.n, dtype=int)
        if not self.tests:
            self.tests = significance_tests(self.methods, self.columns, self.counts, self.alpha)

    @property
    def column_sums(self) -> np.ndarray:
        """Votes actually counted in each column (may differ from ``n`` for the paper's GO columns)."""
        return self.counts.sum(axis=0)

    @property
    def percent(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, 100.0 * self.counts / np.where(self.n > 0, self.n, 1), np.nan)

    @property
    def ci(self) -> tuple[np.ndarray, np.ndarray]:
        """Wilson score interval of each cell, in percent: ``(low, high)`` arrays like ``counts``."""
        low, high = wilson_interval(self.counts, self.n[None, :], self.confidence)
        return 100.0 * np.asarray(low), 100.0 * np.asarray(high)

    def _index(self, method: str, aspect: str, attribute: str) -> tuple[int, int]:
        return self.methods.index(method), self.columns.index((_normalise_aspect(aspect), _normalise_attribute(attribute)))

    def cell(self, method: str, aspect: str, attribute: str) -> dict[str, Any]:
        i, j = self._index(method, aspect, attribute)
        low, high = self.ci
        return {"method": method, "aspect": self.columns[j][0], "attribute": self.columns[j][1],
                "code": attribute_code(self.columns[j][1]), "votes": int(self.counts[i, j]), "n": int(self.n[j]),
                "percent": float(self.percent[i, j]), "ci_low": float(low[i, j]), "ci_high": float(high[i, j])}

    def records(self) -> list[dict[str, Any]]:
        """Tidy records (one per cell), in the same order as :func:`paper_table2`."""
        return [self.cell(m, a, t) for m in self.methods for (a, t) in self.columns]

    def test(self, aspect: str, attribute: str) -> ColumnTest:
        return self.tests[self.columns.index((_normalise_aspect(aspect), _normalise_attribute(attribute)))]

    def winner(self, aspect: str, attribute: str) -> str:
        return self.test(aspect, attribute).winner

    def __str__(self) -> str:
        return format_table(self, style="plain")

    def _repr_markdown_(self) -> str:
        return format_table(self, style="markdown")


def significance_tests(methods: Sequence[str], columns: Sequence[tuple[str, str]], counts: np.ndarray,
                       alpha: float = 0.05) -> list[ColumnTest]:
    """Per-column tests; see :class:`ColumnTest`. Votes are treated as independent draws (each paper
    volunteer gave two votes per column, so this is slightly optimistic)."""
    counts = np.asarray(counts, dtype=int)
    raw = []
    for j, (aspect, attribute) in enumerate(columns):
        col = counts[:, j]
        order = np.argsort(-col, kind="stable")
        w = int(order[0])
        r = int(order[1]) if len(col) > 1 else w
        kw, kr = int(col[w]), int(col[r])
        p_bin = float(stats.binomtest(kw, kw + kr, 0.5).pvalue) if kw + kr > 0 else 1.0
        if col.sum() > 0 and len(col) > 1:
            chi = stats.chisquare(col)
            chi2, p_chi = float(chi.statistic), float(chi.pvalue)
        else:
            chi2, p_chi = 0.0, 1.0
        raw.append((aspect, attribute, methods[w], methods[r], kw, kr, kw == kr, p_bin, chi2, p_chi))
    adjusted = holm([x[7] for x in raw]) if raw else []
    return [ColumnTest(a, t, w, r, kw, kr, tie, pb, padj, c2, pc, alpha)
            for (a, t, w, r, kw, kr, tie, pb, c2, pc), padj in zip(raw, adjusted)]


def _ordered(seen: Iterable[str], canonical: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(seen))
    return [x for x in canonical if x in seen] + [x for x in seen if x not in canonical]


def _read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def aggregate(votes: str | os.PathLike | Iterable[Mapping[str, Any]], *, methods: Sequence[str] | None = None,
              n_per_column: int | None = None, confidence: float = 0.95, alpha: float = 0.05) -> UserStudyTable:
    """Counts, percentages, Wilson CIs and significance tests per (aspect, attribute, method).

    ``votes`` is one of

    * a path to a vote CSV written by :class:`UserStudyApp` (one row per answer, column ``choice``);
      repeated answers of a participant to the same (trial, aspect) are counted once (the first);
    * a path to a counts CSV such as ``data/paper/table2_user_study.csv`` (columns ``method`` and ``votes``);
    * an iterable of records of either kind (dicts; e.g. :func:`paper_table2`).

    Attributes may be given by name or paper code (BA/GE/GO). ``methods`` fixes the row order and adds
    methods that got no vote; by default known methods come in the paper's order, others after them.
    ``n_per_column`` sets a nominal denominator (the paper used 120 per column); by default each
    column's denominator is the number of votes in it.
    """
    rows = _read_csv(votes) if isinstance(votes, (str, os.PathLike)) else [dict(r) for r in votes]
    tallies: dict[tuple[str, str, str], int] = {}
    seen_answers: set[tuple[str, str, str]] = set()
    for r in rows:
        aspect, attribute = _normalise_aspect(r["aspect"]), _normalise_attribute(r["attribute"])
        if "choice" in r and r.get("choice") not in (None, ""):
            method, k = str(r["choice"]), 1
            if "participant" in r and "trial" in r:
                key = (str(r["participant"]), str(r["trial"]), aspect)
                if key in seen_answers:
                    continue
                seen_answers.add(key)
        elif "method" in r and "votes" in r:
            method, k = str(r["method"]), int(r["votes"])
        else:
            raise ValueError(f"record {r!r} has neither a 'choice' nor 'method' + 'votes'")
        tallies[(method, aspect, attribute)] = tallies.get((method, aspect, attribute), 0) + k
    method_list = list(methods) if methods is not None else _ordered((m for m, _, _ in tallies), METHODS)
    extra = [m for m, _, _ in tallies if m not in method_list]
    if extra:
        raise ValueError(f"votes for methods not in methods=: {sorted(set(extra))}")
    aspects = _ordered((a for _, a, _ in tallies), ASPECTS)
    attributes = _ordered((t for _, _, t in tallies), ATTRIBUTES)
    present = {(a, t) for _, a, t in tallies}
    columns = [(a, t) for a in aspects for t in attributes if (a, t) in present]
    counts = np.array([[tallies.get((m, a, t), 0) for (a, t) in columns] for m in method_list], dtype=int)
    counts = counts.reshape(len(method_list), len(columns))
    n = np.full(len(columns), n_per_column, dtype=int) if n_per_column is not None else counts.sum(axis=0)
    return UserStudyTable(method_list, columns, counts, n, confidence=confidence, alpha=alpha)


# ----------------------------------------------------------------------------------------------
# Output: table, CSV, figure
# ----------------------------------------------------------------------------------------------

def _fmt_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def format_table(table: UserStudyTable, style: str = "markdown", ci: bool = True, tests: bool = True,
                 digits: int = 2) -> str:
    """Table 2's layout: rows = methods, columns = aspect x attribute code, values in percent.

    ``style``: ``"markdown"`` (column winners in bold, like the paper) or ``"plain"``.
    ``ci``: add the Wilson interval to each cell. ``tests``: add rows with the winner-vs-runner-up
    exact binomial p-value and the chi-square (uniform preference) p-value of each column.
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
# ----------------------------------------------------------------------------------------------

def to_uint8_image(img: Any) -> np.ndarray:
    """HxWx3 (or HxW) uint8 from a numpy array or torch tensor, HWC or CHW, uint8 or float in [-1, 1]."""
    if hasattr(img, "detach"):  # torch tensor, without importing torch
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"expected one image (HxW, HxWxC or CxHxW), got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip((a.astype(np.float64) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return a


def to_png_bytes(img: Any) -> bytes:
    """PNG-encode one image (see :func:`to_uint8_image` for accepted inputs)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8_image(img)).save(buf, format="PNG")
    return buf.getvalue()


def slot_order(participant_id: str, trial: int, methods: Iterable[str]) -> list[str]:
    """Deterministic shuffle of the methods for one participant and trial: ``result[slot] = method``.

    Seeded by SHA-256 of ``participant_id`` and ``trial`` (not Python's randomised ``hash``), and
    independent of the order in which the methods are given.
    """
    names = sorted(methods)
    digest = hashlib.sha256(f"{participant_id}\x1f{int(trial)}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return [names[i] for i in rng.permutation(len(names))]


def read_votes(csv_path: str | os.PathLike, participant_id: str | None = None) -> list[dict[str, str]]:
    """Rows of a vote CSV (all, or one participant's); an absent or empty file gives []."""
    path = Path(csv_path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    rows = _read_csv(path)
    return [r for r in rows if participant_id is None or r.get("participant") == str(participant_id)]


def _slot_label(i: int) -> str:
    return chr(ord("A") + i)


class UserStudyApp:
    """Forced-choice user-study page (ipywidgets).

    Each trial shows the source image and every method's result in anonymised, shuffled slots
    labelled A, B, C, ... (the shuffle is :func:`slot_order`: fixed per participant and trial).
    For each aspect (quality, disentanglement) the participant clicks one slot button; the answer
    is appended to ``csv_path`` at once (one row: participant, trial, attribute, aspect, choice =
    the real method behind the slot, slot, response time, UTC timestamp; the file is flushed and
    fsynced). When both aspects are answered the next trial is shown. Starting again with the same
    participant id (e.g. after the kernel died) reads the CSV and continues at the first unanswered
    (trial, aspect); earlier rows are never rewritten. Method names never appear in visible labels.
    After the last trial the id field is enabled again for the next participant (or call ``start(pid)``).

    ``sources``: sequence of source images, one per trial. ``results``: dict method -> sequence of
    edited images (same length as ``sources``; a batch array or tensor works). ``attributes``: the
    edited attribute of each trial (one string for all, or a sequence). Images: numpy arrays or
    tensors, HWC or CHW, uint8 or float in [-1, 1]. ``response_time_s`` is measured from the moment
    the trial page was shown (for both aspects). ``clock`` is injectable for tests.

    Programmatic use (what a test or a simulated participant does)::

        app = UserStudyApp(sources, {"A": imgs_a, "B": imgs_b}, "Bangs", "votes.csv")
        app.participant_text.value = "p01"; app.start_button.click()
        app.choice_buttons["quality"][0].click()   # slot A
        app.choose("disentanglement", 1)           # slot B; same as clicking its button
    """

    def __init__(self, sources: Sequence[Any], results: Mapping[str, Sequence[Any]],
                 attributes: str | Sequence[str], csv_path: str | os.PathLike, *,
                 participant_id: str | None = None, aspects: Sequence[str] = ASPECTS,
                 image_width: int = 160, clock: Callable[[], float] = time.monotonic):
        import ipywidgets as w

        if len(results) < 2:
            raise ValueError("a forced-choice study needs at least two methods")
        if len(results) > 26:
            raise ValueError("at most 26 methods (slots A-Z)")
        self.n_trials = len(sources)
        self.sources = sources
        self.results = dict(results)
        for m, imgs in self.results.items():
            if len(imgs) != self.n_trials:
                raise ValueError(f"method {m!r} has {len(imgs)} images, expected {self.n_trials} (one per source)")
        self.methods = list(self.results)
        if isinstance(attributes, str):
            attributes = [attributes] * self.n_trials
        self.attributes = [_normalise_attribute(a) for a in attributes]
        if len(self.attributes) != self.n_trials:
            raise ValueError(f"{len(self.attributes)} attributes for {self.n_trials} trials")
        self.aspects = [_normalise_aspect(a) for a in aspects]
        self.csv_path = Path(csv_path)
        self.clock = clock
        self.participant_id: str | None = None
        self.trial: int | None = None  # current trial index; None before start / after the end
        self.answered: set[tuple[int, str]] = set()
        self._shown_at = 0.0
        self._slots: list[str] = []
        self._check_csv_header()

        # Layout and style models are shared between widgets: every widget model is one comm, and a
        # notebook executed by nbconvert stores the state of all of them.
        px = f"{image_width}px"
        lay, img_lay, lab_lay = w.Layout(), w.Layout(width=px, height=px), w.Layout(width=px)
        btn_lay, gap_lay = w.Layout(width="48px"), w.Layout(margin="0 0 0 24px")
        from ipywidgets.widgets.widget_string import HTMLStyle

        html_style, btn_style = HTMLStyle(), w.ButtonStyle()
        html = lambda value="", layout=lay: w.HTML(value, layout=layout, style=html_style)
        self.participant_text = w.Text(description="Participant", placeholder="your participant id", layout=lay)
        self.start_button = w.Button(description="Start / resume", button_style="primary", layout=lay, style=btn_style)
        self.start_button.on_click(lambda _b: self.start())
        self.status = html("Enter your participant id and press <b>Start / resume</b>.")
        self.progress = html()
        self.source_image = w.Image(format="png", layout=img_lay)
        self.slot_images = [w.Image(format="png", layout=img_lay) for _ in self.methods]
        self.slot_labels = [html(f"<center><b>{_slot_label(i)}</b></center>", lab_lay) for i in range(len(self.methods))]
        self.questions: dict[str, Any] = {}
        self.choice_buttons: dict[str, list[Any]] = {}
        self.answer_labels: dict[str, Any] = {}
        rows = []
        for aspect in self.aspects:
            self.questions[aspect] = html()
            buttons = []
            for i in range(len(self.methods)):
                b = w.Button(description=_slot_label(i), layout=btn_lay, style=btn_style, disabled=True)
                b.on_click(lambda _b, a=aspect, s=i: self._on_choice(a, s))
                buttons.append(b)
            self.choice_buttons[aspect] = buttons
            self.answer_labels[aspect] = html()
            rows.append(w.VBox([self.questions[aspect], w.HBox(buttons + [self.answer_labels[aspect]], layout=lay)],
                               layout=lay))
        src_box = w.VBox([html("<center><b>Source</b></center>", lab_lay), self.source_image], layout=lay)
        res_box = w.HBox([w.VBox([lab, img], layout=lay) for lab, img in zip(self.slot_labels, self.slot_images)],
                         layout=gap_lay)
        self.page = w.VBox([self.progress, w.HBox([src_box, res_box], layout=lay)] + rows,
                           layout=w.Layout(display="none"))
        self.widget = w.VBox([w.HBox([self.participant_text, self.start_button], layout=lay), self.status, self.page],
                             layout=lay)
        if participant_id is not None:
            self.participant_text.value = str(participant_id)
            self.start()

    # -- display -------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def visible_texts(self) -> list[str]:
        """Every text a participant can see on the page (labels, descriptions, HTML, tooltips)."""
        out, stack = [], [self.widget]
        while stack:
            wid = stack.pop()
            for attr in ("description", "tooltip", "placeholder"):
                v = getattr(wid, attr, None)
                if isinstance(v, str) and v:
                    out.append(v)
            if type(wid).__name__ in ("HTML", "Label", "HTMLMath", "Text"):
                out.append(str(wid.value))
            stack.extend(getattr(wid, "children", ()))
        return out

    def close(self):
        """Close every widget of the page (frees them in the kernel and in a saved notebook's widget state)."""
        stack, seen = [self.widget], []
        while stack:
            wid = stack.pop()
            seen.append(wid)
            stack.extend(getattr(wid, "children", ()))
        for wid in seen:
            for attr in ("layout", "style"):
                sub = getattr(wid, attr, None)
                if sub is not None and hasattr(sub, "close"):
                    sub.close()
            wid.close()

    # -- state -------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.participant_id is not None and self.trial is None

    def _check_csv_header(self):
        if self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            with open(self.csv_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            if header != list(VOTE_FIELDS):
                raise ValueError(f"{self.csv_path} is not a vote CSV of this runner (header {header}, "
                                 f"expected {list(VOTE_FIELDS)})")

    def _next_unanswered(self, start: int = 0) -> int | None:
        for t in range(start, self.n_trials):
            if any((t, a) not in self.answered for a in self.aspects):
                return t
        return None

    def start(self, participant_id: str | None = None):
        """Begin or resume the study for a participant (reads the CSV to find where they stopped)."""
        pid = (participant_id if participant_id is not None else self.participant_text.value).strip()
        if not pid:
            self.status.value = "<span style='color:#c00'>Please enter a participant id.</span>"
            return
        self.participant_text.value = pid
        self.participant_id = pid
        self.answered = set()
        for r in read_votes(self.csv_path, pid):
            try:
                self.answered.add((int(r["trial"]), _normalise_aspect(r["aspect"])))
            except (ValueError, KeyError):
                continue
        self.participant_text.disabled = True
        self.start_button.disabled = True
        done = sum(1 for t in range(self.n_trials) if all((t, a) in self.answered for a in self.aspects))
        self.status.value = (f"Participant <b>{pid}</b>" + (f": resuming, {done} of {self.n_trials} trials done."
                                                              if self.answered else "."))
        self.page.layout.display = None
        self._show(self._next_unanswered())

    def _show(self, trial: int | None):
        self.trial = trial
        if trial is None:
            self.page.layout.display = "none"
            self.status.value = (f"All {self.n_trials} trials done -- thank you, <b>{self.participant_id}</b>! "
                                 f"(Next participant: enter an id and press Start.)")
            self.participant_text.disabled = False
            self.start_button.disabled = False
            return
        self._slots = slot_order(self.participant_id, trial, self.methods)
        self.source_image.value = to_png_bytes(self.sources[trial])
        for img, method in zip(self.slot_images, self._slots):
            img.value = to_png_bytes(self.results[method][trial])
        attribute = self.attributes[trial]
        self.progress.value = f"<b>Trial {trial + 1} / {self.n_trials}</b> -- edited attribute: <b>{attribute}</b>"
        for aspect in self.aspects:
            self.questions[aspect].value = self._question(aspect, attribute)
            done = (trial, aspect) in self.answered
            for b in self.choice_buttons[aspect]:
                b.disabled = done
                b.button_style = ""
            self.answer_labels[aspect].value = "&nbsp;answered" if done else ""
        self._shown_at = self.clock()

    @staticmethod
    def _question(aspect: str, attribute: str) -> str:
        if aspect == "quality":
            return "<b>Quality:</b> which result has the best image quality (realistic, free of artefacts)?"
        return (f"<b>Disentanglement:</b> which result changes <b>{attribute}</b> while keeping everything else "
                f"(identity, background, other attributes) unchanged?")

    def choose(self, aspect: str, slot: int):
        """Answer ``aspect`` with slot index ``slot`` (0 = A) -- the same as clicking its button."""
        self.choice_buttons[_normalise_aspect(aspect)][slot].click()

    def _on_choice(self, aspect: str, slot: int):
        if self.trial is None or (self.trial, aspect) in self.answered:
            return
        trial = self.trial
        row = {"participant": self.participant_id, "trial": trial, "attribute": self.attributes[trial],
               "aspect": aspect, "choice": self._slots[slot], "slot": _slot_label(slot),
               "response_time_s": f"{self.clock() - self._shown_at:.3f}",
               "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        self._append(row)
        self.answered.add((trial, aspect))
        for i, b in enumerate(self.choice_buttons[aspect]):
            b.disabled = True
            b.button_style = "success" if i == slot else ""
        self.answer_labels[aspect].value = "&nbsp;answered"
        if all((trial, a) in self.answered for a in self.aspects):
            self._show(self._next_unanswered(trial + 1) if self._next_unanswered(trial + 1) is not None
                       else self._next_unanswered())

    def _append(self, row: Mapping[str, Any]):
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with open(self.csv_path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=VOTE_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())


# -- trying the runner without people ----------------------------------------------------------

def from_png_bytes(data: bytes) -> np.ndarray:
    """Decode what an image widget shows: HxWx3 floats in [-1, 1]."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64) / 127.5 - 1


def synthetic_study_material(n_trials_per_attribute: int = 2, seed: int = 0, size: int = 48,
                             noise: Mapping[str, float] | None = None, drift: Mapping[str, float] | None = None):
    """Stand-ins for editing results, to try the runner and the aggregation end to end.

    Each source is a colour patch (the middle half of the image) on a plain background; each
    method recolours the patch with its own pixel ``noise`` (image quality) and shifts the
    background by its own ``drift`` (entanglement). Returns ``(sources, results, attributes)``
    in the form :class:`UserStudyApp` takes (CHW float arrays in [-1, 1])."""
    noise = dict(noise or {"InterFaceGAN": 0.35, "StyleSpace": 0.25, "Ours-1": 0.12, "Ours-2": 0.08})
    drift = dict(drift or {"InterFaceGAN": 0.45, "StyleSpace": 0.30, "Ours-1": 0.12, "Ours-2": 0.10})
    rng = np.random.default_rng(seed)
    lo, hi = size // 4, 3 * size // 4
    attributes = [a for a in ATTRIBUTES for _ in range(n_trials_per_attribute)]
    sources, results = [], {m: [] for m in noise}
    background = np.ones((size, size), bool)
    background[lo:hi, lo:hi] = False
    for _ in attributes:
        bg, fg, target = rng.uniform(-0.8, 0.8, (3, 3))
        src = np.empty((size, size, 3))
        src[:] = bg
        src[lo:hi, lo:hi] = fg
        sources.append(src)
        for m in noise:
            out = src.copy()
            out[lo:hi, lo:hi] = target + noise[m] * rng.standard_normal((hi - lo, hi - lo, 3))
            out[background] += drift[m] * rng.uniform(-1, 1, 3)
            results[m].append(np.clip(out, -1, 1).transpose(2, 0, 1))
    return sources, results, attributes


def synthetic_judge(aspect: str, source: np.ndarray, slots: Sequence[np.ndarray]) -> np.ndarray:
    """Badness of each slot (lower is better) for :func:`synthetic_study_material`: pixel noise
    inside the patch for quality, background change for disentanglement."""
    size = source.shape[0]
    lo, hi = size // 4, 3 * size // 4
    if _normalise_aspect(aspect) == "quality":
        return np.array([np.abs(np.diff(s[lo:hi, lo:hi], axis=0)).mean() for s in slots])
    return np.array([np.abs(s - source)[:lo].mean() for s in slots])


def scripted_answer(app: "UserStudyApp", judge, rng: np.random.Generator, temperature: float = 0.05) -> None:
    """Answer every open question of the app's current trial from what the page shows.

    ``judge(aspect, source, slots)`` gets the decoded source and slot images (HxWx3 in [-1, 1])
    and returns a badness per slot; the slot is drawn with probability proportional to
    ``exp(-(badness - min) / temperature)`` and clicked, as a test or a simulation would."""
    source = from_png_bytes(app.source_image.value)
    slots = [from_png_bytes(img.value) for img in app.slot_images]
    for aspect in app.aspects:
        if app.choice_buttons[aspect][0].disabled:
            continue
        badness = np.asarray(judge(aspect, source, slots), dtype=np.float64)
        p = np.exp(-(badness - badness.min()) / temperature)
        app.choose(aspect, int(rng.choice(len(p), p=p / p.sum())))
