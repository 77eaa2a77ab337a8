"""User study (supplementary Table 2): the paper's numbers and the statistics of a study.

The supplementary material compares four label-based editing methods (InterFaceGAN,
StyleSpace, Ours-1 = first-order, Ours-2 = second-order editing) on three attributes
(Bangs, Gender, Goatee) in two aspects (image quality, disentanglement). 60 volunteers
took part; every column of Table 2 is a forced choice among the four methods with
120 votes, so a printed percentage p corresponds to ``round(p * 120 / 100)`` votes.

What this module provides:

* :func:`paper_table2` -- the table as tidy records (read from ``data/paper/table2_user_study.csv``).
* :func:`aggregate` -- counts, percentages, 95 % Wilson confidence intervals and per-column
  significance tests, from a vote file (:mod:`stytr.eval.votes`, written by the study runner
  :class:`stytr.apps.study.UserStudyApp`), from count records (like :func:`paper_table2`) or from
  individual vote records. Malformed lines of a file are reported by line number and skipped.

The table's layouts (markdown, plain text, CSV, bar chart) are in :mod:`stytr.eval.user_study_report`.

Note on the paper's numbers: the Goatee columns do not sum to 120 votes (quality: 122,
disentanglement: 118; the printed percentages add up to 101.67 % and 98.33 %). Every printed
percentage is exactly k/120 for an integer k, so the votes derived here are exact for each
cell; the inconsistency is in the paper. (Swapping Ours-1's two Goatee cells, 31.67 <-> 30.00,
would make both columns sum to 120 -- a plausible transcription slip, but only a guess; the
data here is kept as printed.) Use ``aggregate(..., n_per_column=120)`` to reproduce the
printed percentages, which were computed with the nominal 120 votes per column.

This module imports neither torch nor pandas.
"""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from .votes import VOTE_FIELDS, read_vote_file

# Same definition as stytr.checkpoints.REPO_ROOT (not imported here to avoid importing torch).
REPO_ROOT = Path(__file__).resolve().parents[2]
PAPER_TABLE2_CSV = REPO_ROOT / "data" / "paper" / "table2_user_study.csv"

METHODS = ("InterFaceGAN", "StyleSpace", "Ours-1", "Ours-2")
ASPECTS = ("quality", "disentanglement")
ATTRIBUTES = ("Bangs", "Gender", "Goatee")
ATTRIBUTE_CODES = {"Bangs": "BA", "Gender": "GE", "Goatee": "GO"}
VOTES_PER_COLUMN = 120  # 60 volunteers; each column of Table 2 is 120 forced-choice votes
ASPECT_TITLES = {"quality": "Quality", "disentanglement": "Disentanglement"}

_CODE_TO_ATTRIBUTE = {code: name for name, code in ATTRIBUTE_CODES.items()}


def attribute_code(attribute: str) -> str:
    """Two-letter code used in the paper (BA/GE/GO); other attributes: first two letters, upper case."""
    return ATTRIBUTE_CODES.get(attribute, attribute[:2].upper())


def normalise_attribute(attribute: str) -> str:
    """An attribute name from its name or paper code (``"GO"`` -> ``"Goatee"``)."""
    attribute = str(attribute).strip()
    return _CODE_TO_ATTRIBUTE.get(attribute.upper(), attribute)


def normalise_aspect(aspect: str) -> str:
    """``"Quality"`` -> ``"quality"``; anything but a known aspect raises ``ValueError``."""
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
    ``malformed`` lists the lines of the vote file that were not counted, with what is wrong.
    """

    methods: list[str]
    columns: list[tuple[str, str]]
    counts: np.ndarray  # int, (n_methods, n_columns)
    n: np.ndarray  # int, (n_columns,)
    confidence: float = 0.95
    alpha: float = 0.05
    tests: list[ColumnTest] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, problem): rows left out

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
        return self.methods.index(method), self.columns.index((normalise_aspect(aspect), normalise_attribute(attribute)))

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
        return self.tests[self.columns.index((normalise_aspect(aspect), normalise_attribute(attribute)))]

    def winner(self, aspect: str, attribute: str) -> str:
        return self.test(aspect, attribute).winner


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


class MalformedVotesWarning(UserWarning):
    """Some lines of a vote or counts file were left out of :func:`aggregate` (listed by line number)."""


def _file_records(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[tuple[int, str]]]:
    """(line, record) pairs of a vote file or a counts CSV, and the lines that are not records."""
    with open(path, newline="") as fh:
        header = next(csv.reader(fh), [])
    if header == list(VOTE_FIELDS):
        found = read_vote_file(path)
        return list(zip(found.lines, found.rows)), list(found.malformed)
    records, malformed = [], []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                malformed.append((reader.line_num, f"{len(fields)} of {len(header)} fields"))
            else:
                records.append((reader.line_num, dict(zip(header, fields))))
    return records, malformed


def _tally(r: Mapping[str, Any]) -> tuple[str, str, str, int, tuple[str, str, str] | None]:
    """(method, aspect, attribute, votes, answer key or None) of one record; ``ValueError`` if it is not one."""
    for key in ("aspect", "attribute"):
        if r.get(key) in (None, ""):
            raise ValueError(f"no {key}")
    aspect, attribute = normalise_aspect(r["aspect"]), normalise_attribute(r["attribute"])
    if r.get("choice") not in (None, ""):
        answer = (str(r["participant"]), str(r["trial"]), aspect) if "participant" in r and "trial" in r else None
        return str(r["choice"]), aspect, attribute, 1, answer
    if r.get("method") not in (None, "") and "votes" in r:
        try:
            votes = int(r["votes"])
        except (TypeError, ValueError):
            raise ValueError(f"votes {r['votes']!r} is not a whole number") from None
        if votes < 0:
            raise ValueError(f"votes {votes} is negative")
        return str(r["method"]), aspect, attribute, votes, None
    raise ValueError(f"record {dict(r)!r} has neither a 'choice' nor 'method' + 'votes'")


def _describe(malformed: Sequence[tuple[int, str]], limit: int = 10) -> str:
    listed = "; ".join(f"line {line}: {problem}" for line, problem in malformed[:limit])
    return listed + (f"; and {len(malformed) - limit} more" if len(malformed) > limit else "")


def aggregate(votes: str | os.PathLike | Iterable[Mapping[str, Any]], *, methods: Sequence[str] | None = None,
              n_per_column: int | None = None, confidence: float = 0.95, alpha: float = 0.05) -> UserStudyTable:
    """Counts, percentages, Wilson CIs and significance tests per (aspect, attribute, method).

    ``votes`` is one of

    * a path to a vote file written by the study runner (:mod:`stytr.eval.votes`; one row per answer,
      column ``choice``); repeated answers of a participant to the same (trial, aspect) are counted
      once (the first);
    * a path to a counts CSV such as ``data/paper/table2_user_study.csv`` (columns ``method`` and ``votes``);
    * an iterable of records of either kind (dicts; e.g. :func:`paper_table2`).

    Lines of a file that are not well-formed records (a torn last line, a hand-edited row) are left
    out and named by line number, in ``table.malformed`` and in one :class:`MalformedVotesWarning`;
    the rest are counted. A malformed record in an iterable raises ``ValueError``.

    Attributes may be given by name or paper code (BA/GE/GO). ``methods`` fixes the row order and adds
    methods that got no vote; by default known methods come in the paper's order, others after them.
    ``n_per_column`` sets a nominal denominator (the paper used 120 per column); by default each
    column's denominator is the number of votes in it.
    """
    from_file = isinstance(votes, (str, os.PathLike))
    if from_file:
        records, malformed = _file_records(Path(votes))
    else:
        records, malformed = [(None, dict(r)) for r in votes], []
    tallies: dict[tuple[str, str, str], int] = {}
    seen_answers: set[tuple[str, str, str]] = set()
    counted = 0
    for line, r in records:
        try:
            method, aspect, attribute, k, answer = _tally(r)
        except ValueError as err:
            if line is None:
                raise
            malformed.append((line, str(err)))
            continue
        if answer is not None:
            if answer in seen_answers:
                continue
            seen_answers.add(answer)
        counted += 1
        tallies[(method, aspect, attribute)] = tallies.get((method, aspect, attribute), 0) + k
    malformed.sort()
    if malformed:
        warnings.warn(MalformedVotesWarning(f"{votes}: left out {len(malformed)} malformed line(s), counted "
                                            f"{counted} record(s); {_describe(malformed)}"), stacklevel=2)
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
    return UserStudyTable(method_list, columns, counts, n, confidence=confidence, alpha=alpha,
                          malformed=malformed)
