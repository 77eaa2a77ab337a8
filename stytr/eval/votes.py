"""The vote file of a user study: one CSV row per answer, appended under a lock, read back tolerantly.

The file is append-only and line-oriented: the header is the first line, every answer one line.
Appends take an exclusive ``fcntl.flock`` on the file, so two runners (two kernels, or two apps in
one process: flock locks belong to the open file, not the process) starting on one new file write
the header once and never interleave rows. Readers take a shared lock, so they never see half an
append.

A kill (or a full disk) can still leave a torn last line. The next append first ends that line,
so the new answer starts on a line of its own and no byte already in the file is changed; readers
report the torn line (and any other malformed line) by its line number and keep every good row.
Fields never contain a line break (:func:`append_vote` refuses them), so a torn or broken line
cannot swallow the rows after it.
"""
from __future__ import annotations

import csv
import fcntl
import io
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

VOTE_FIELDS = ("participant", "trial", "attribute", "aspect", "choice", "slot", "response_time_s", "timestamp")
_HEADER_TEXT = ",".join(VOTE_FIELDS)
HEADER_LINE = (_HEADER_TEXT + "\r\n").encode()  # csv's default line ending, as earlier vote files have it


@dataclass
class VoteFile:
    """What :func:`read_vote_file` found: the well-formed rows, their line numbers, the rest by line."""

    path: Path
    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)        # 1-based line number of each row (header = 1)
    malformed: list[tuple[int, str]] = field(default_factory=list)   # (line number, what is wrong)
    torn_tail: bool = False                                # the last line has no line ending (yet)


def _encode_row(row: Mapping[str, Any]) -> bytes:
    extra = set(row) - set(VOTE_FIELDS)
    if extra:
        raise ValueError(f"unknown vote field(s) {sorted(extra)}; expected {list(VOTE_FIELDS)}")
    values = ["" if row.get(k) is None else str(row.get(k)) for k in VOTE_FIELDS]
    for k, v in zip(VOTE_FIELDS, values):
        if "\n" in v or "\r" in v:
            raise ValueError(f"vote field {k!r} contains a line break: {v!r}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(values)
    return buf.getvalue().encode()


def _check_header(first_line: bytes, path: Path, complete: bool) -> None:
    """Raise unless ``first_line`` is this runner's header (or, while incomplete, a prefix of it)."""
    text = first_line.rstrip(b"\r").decode("utf-8", errors="replace")
    ok = text == _HEADER_TEXT or (not complete and _HEADER_TEXT.startswith(text))
    if not ok:
        raise ValueError(f"{path} is not a vote CSV of this runner (header {text!r}, expected {_HEADER_TEXT!r})")


def check_vote_header(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` when ``path`` exists, is not empty and is not a vote file of this runner."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        head = fh.read(4096)
    if head:
        first, nl, _ = head.partition(b"\n")
        _check_header(first, path, complete=bool(nl))


def append_vote(path: str | os.PathLike, row: Mapping[str, Any]) -> None:
    """Append one answer durably (write + fsync under an exclusive lock); writes the header on a new file.

    A torn last line is ended first (see the module docstring); a torn header is completed.
    """
    path = Path(path)
    line = _encode_row(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)   # released when fd is closed
        size = os.fstat(fd).st_size
        head = os.pread(fd, min(size, 4096), 0)
        first, nl, _ = head.partition(b"\n")
        if size:
            _check_header(first, path, complete=bool(nl))
        if not nl:                      # empty, or only (part of) the header: complete it
            prefix = HEADER_LINE[len(first):] if first else HEADER_LINE
        elif os.pread(fd, 1, size - 1) != b"\n":
            prefix = b"\n"              # end the torn last line; it stays, reported by readers
        else:
            prefix = b""
        os.write(fd, prefix + line)     # one write: O_APPEND puts it at the end, whole
        os.fsync(fd)
    finally:
        os.close(fd)


def _row_problem(fields: list[str]) -> str | None:
    if len(fields) != len(VOTE_FIELDS):
        return f"{len(fields)} of {len(VOTE_FIELDS)} fields"
    r = dict(zip(VOTE_FIELDS, fields))
    if not r["participant"].strip():
        return "no participant"
    if not re.fullmatch(r"[0-9]+", r["trial"].strip()):
        return f"trial {r['trial']!r} is not a trial number"
    if not r["choice"].strip():
        return "no choice"
    try:
        if not math.isfinite(float(r["response_time_s"])):
            raise ValueError
    except ValueError:
        return f"response_time_s {r['response_time_s']!r} is not a number"
    try:
        if datetime.fromisoformat(r["timestamp"]).tzinfo is None:
            raise ValueError
    except ValueError:
        return f"timestamp {r['timestamp']!r} is not an ISO time with a UTC offset"
    return None


def read_vote_file(path: str | os.PathLike) -> VoteFile:
    """Every line of a vote file, sorted into well-formed rows and malformed lines (by line number).

    An absent or empty file gives no rows; a file with another header raises ``ValueError``.
    """
    path = Path(path)
    out = VoteFile(path)
    if not path.exists():
        return out
    with open(path, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        data = fh.read()
    if not data:
        return out
    lines = data.split(b"\n")
    out.torn_tail = lines[-1] != b""
    if not out.torn_tail:
        lines.pop()
    _check_header(lines[0], path, complete=len(lines) > 1 or not out.torn_tail)
    last = len(lines)
    for number, raw in enumerate(lines[1:], start=2):
        try:
            text = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            out.malformed.append((number, "not UTF-8 text"))
            continue
        if not text.strip():
            continue
        fields = next(csv.reader([text]))
        problem = _row_problem(fields)
        if problem is None:
            out.rows.append(dict(zip(VOTE_FIELDS, fields)))
            out.lines.append(number)
        else:
            torn = out.torn_tail and number == last
            out.malformed.append((number, problem + (" (torn last line)" if torn else "")))
    return out


def read_votes(path: str | os.PathLike, participant_id: str | None = None) -> list[dict[str, str]]:
    """The well-formed rows of a vote file (all, or one participant's); an absent or empty file gives []."""
    rows = read_vote_file(path).rows
    return [r for r in rows if participant_id is None or r["participant"] == str(participant_id)]
