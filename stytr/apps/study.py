"""Forced-choice user-study page (ipywidgets): anonymised, shuffled results; every answer saved at once.

The answers go to a vote file (:mod:`stytr.eval.votes`: appended under a file lock, header once,
torn lines set on their own line); :func:`stytr.eval.user_study.aggregate` turns it into Table 2.
"""
from __future__ import annotations

import hashlib
import html
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import ipywidgets as w
import numpy as np
from ipywidgets.widgets.widget_string import HTMLStyle

from ..eval.user_study import ASPECTS, normalise_aspect, normalise_attribute
from ..eval.votes import append_vote, check_vote_header, read_votes
from .common import close_widgets, to_png, widget_tree


def slot_order(participant_id: str, trial: int, methods: Iterable[str]) -> list[str]:
    """Deterministic shuffle of the methods for one participant and trial: ``result[slot] = method``.

    Seeded by SHA-256 of ``participant_id`` and ``trial`` (not Python's randomised ``hash``), and
    independent of the order in which the methods are given.
    """
    names = sorted(methods)
    digest = hashlib.sha256(f"{participant_id}\x1f{int(trial)}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return [names[i] for i in rng.permutation(len(names))]


def _slot_label(i: int) -> str:
    return chr(ord("A") + i)


class UserStudyApp:
    """Forced-choice user-study page (ipywidgets).

    Each trial shows the source image and every method's result in anonymised, shuffled slots
    labelled A, B, C, ... (the shuffle is :func:`slot_order`: fixed per participant and trial).
    For each aspect (quality, disentanglement) the participant clicks one slot button; the answer
    is appended to ``csv_path`` at once (one row: participant, trial, attribute, aspect, choice =
    the real method behind the slot, slot, response time, UTC timestamp; written under a file lock
    and fsynced, see :func:`stytr.eval.votes.append_vote`). When both aspects are answered the next trial is shown. Starting again with the same
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
        self.attributes = [normalise_attribute(a) for a in attributes]
        if len(self.attributes) != self.n_trials:
            raise ValueError(f"{len(self.attributes)} attributes for {self.n_trials} trials")
        for name in self.methods + self.attributes:
            if _has_line_break(name):
                raise ValueError(f"method and attribute names cannot contain line breaks: {name!r}")
        self.aspects = [normalise_aspect(a) for a in aspects]
        self.csv_path = Path(csv_path)
        self.clock = clock
        self.participant_id: str | None = None
        self.trial: int | None = None  # current trial index; None before start / after the end
        self.answered: set[tuple[int, str]] = set()
        self._shown_at = 0.0
        self._slots: list[str] = []
        check_vote_header(self.csv_path)

        # Layout and style models are shared between widgets: every widget model is one comm, and a
        # notebook executed by nbconvert stores the state of all of them.
        px = f"{image_width}px"
        lay, img_lay, lab_lay = w.Layout(), w.Layout(width=px, height=px), w.Layout(width=px)
        btn_lay, gap_lay = w.Layout(width="48px"), w.Layout(margin="0 0 0 24px")
        html_style, btn_style = HTMLStyle(), w.ButtonStyle()
        text = lambda value="", layout=lay: w.HTML(value, layout=layout, style=html_style)
        self.participant_text = w.Text(description="Participant", placeholder="your participant id", layout=lay)
        self.start_button = w.Button(description="Start / resume", button_style="primary", layout=lay, style=btn_style)
        self.start_button.on_click(lambda _b: self.start())
        self.status = text("Enter your participant id and press <b>Start / resume</b>.")
        self.progress = text()
        self.source_image = w.Image(format="png", layout=img_lay)
        self.slot_images = [w.Image(format="png", layout=img_lay) for _ in self.methods]
        self.slot_labels = [text(f"<center><b>{_slot_label(i)}</b></center>", lab_lay) for i in range(len(self.methods))]
        self.questions: dict[str, Any] = {}
        self.choice_buttons: dict[str, list[Any]] = {}
        self.answer_labels: dict[str, Any] = {}
        rows = []
        for aspect in self.aspects:
            self.questions[aspect] = text()
            buttons = []
            for i in range(len(self.methods)):
                b = w.Button(description=_slot_label(i), layout=btn_lay, style=btn_style, disabled=True)
                b.on_click(lambda _b, a=aspect, s=i: self._on_choice(a, s))
                buttons.append(b)
            self.choice_buttons[aspect] = buttons
            self.answer_labels[aspect] = text()
            rows.append(w.VBox([self.questions[aspect], w.HBox(buttons + [self.answer_labels[aspect]], layout=lay)],
                               layout=lay))
        src_box = w.VBox([text("<center><b>Source</b></center>", lab_lay), self.source_image], layout=lay)
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
        out = []
        for wid in widget_tree(self.widget):
            for attr in ("description", "tooltip", "placeholder"):
                v = getattr(wid, attr, None)
                if isinstance(v, str) and v:
                    out.append(v)
            if type(wid).__name__ in ("HTML", "Label", "HTMLMath", "Text"):
                out.append(str(wid.value))
        return out

    def close(self):
        """Close every widget of the page (frees them in the kernel and in a saved notebook's widget state)."""
        close_widgets(self.widget)

    # -- state -------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.participant_id is not None and self.trial is None

    def _next_unanswered(self, start: int = 0) -> int | None:
        for t in range(start, self.n_trials):
            if any((t, a) not in self.answered for a in self.aspects):
                return t
        return None

    def start(self, participant_id: str | None = None):
        """Begin or resume the study for a participant (reads the vote file to find where they stopped;
        malformed lines there, such as a torn last answer, count as unanswered)."""
        pid = (participant_id if participant_id is not None else self.participant_text.value).strip()
        if not pid or _has_line_break(pid):
            self.status.value = "<span style='color:#c00'>Please enter a participant id (one line).</span>"
            return
        self.participant_text.value = pid
        self.participant_id = pid
        self.answered = set()
        for r in read_votes(self.csv_path, pid):
            try:
                self.answered.add((int(r["trial"]), normalise_aspect(r["aspect"])))
            except (ValueError, KeyError):
                continue
        self.participant_text.disabled = True
        self.start_button.disabled = True
        done = sum(1 for t in range(self.n_trials) if all((t, a) in self.answered for a in self.aspects))
        self.status.value = (f"Participant <b>{html.escape(pid)}</b>" + (f": resuming, {done} of {self.n_trials} trials done."
                                                              if self.answered else "."))
        self.page.layout.display = None
        self._show(self._next_unanswered())

    def _show(self, trial: int | None):
        self.trial = trial
        if trial is None:
            self.page.layout.display = "none"
            self.status.value = (f"All {self.n_trials} trials done -- thank you, <b>{html.escape(self.participant_id)}</b>! "
                                 f"(Next participant: enter an id and press Start.)")
            self.participant_text.disabled = False
            self.start_button.disabled = False
            return
        self._slots = slot_order(self.participant_id, trial, self.methods)
        self.source_image.value = to_png(self.sources[trial])
        for img, method in zip(self.slot_images, self._slots):
            img.value = to_png(self.results[method][trial])
        attribute = self.attributes[trial]
        self.progress.value = (f"<b>Trial {trial + 1} / {self.n_trials}</b> -- edited attribute: "
                               f"<b>{html.escape(attribute)}</b>")
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
        return (f"<b>Disentanglement:</b> which result changes <b>{html.escape(attribute)}</b> while keeping everything else "
                f"(identity, background, other attributes) unchanged?")

    def choose(self, aspect: str, slot: int):
        """Answer ``aspect`` with slot index ``slot`` (0 = A) -- the same as clicking its button."""
        self.choice_buttons[normalise_aspect(aspect)][slot].click()

    def _on_choice(self, aspect: str, slot: int):
        if self.trial is None or (self.trial, aspect) in self.answered:
            return
        trial = self.trial
        row = {"participant": self.participant_id, "trial": trial, "attribute": self.attributes[trial],
               "aspect": aspect, "choice": self._slots[slot], "slot": _slot_label(slot),
               "response_time_s": f"{self.clock() - self._shown_at:.3f}",
               "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        try:
            append_vote(self.csv_path, row)
        except (OSError, ValueError) as err:   # the answer is not recorded: say so, keep the question open
            self.status.value = f"<span style='color:#c00'>Answer not saved: {html.escape(str(err))}</span>"
            return
        self.answered.add((trial, aspect))
        for i, b in enumerate(self.choice_buttons[aspect]):
            b.disabled = True
            b.button_style = "success" if i == slot else ""
        self.answer_labels[aspect].value = "&nbsp;answered"
        if all((trial, a) in self.answered for a in self.aspects):
            self._show(self._next_unanswered(trial + 1) if self._next_unanswered(trial + 1) is not None
                       else self._next_unanswered())


def _has_line_break(text: str) -> bool:
    return "\n" in text or "\r" in text
