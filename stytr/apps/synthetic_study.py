"""Trying the study runner without people: synthetic study material and a scripted participant.

The material stands in for editing results with known quality and entanglement per method; the
participant reads the page (the PNG bytes of the anonymised slots) and clicks, as a person would.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ..eval.user_study import ATTRIBUTES, normalise_aspect
from .common import from_png

if TYPE_CHECKING:
    from .study import UserStudyApp


def synthetic_study_material(n_trials_per_attribute: int = 2, seed: int = 0, size: int = 48,
                             noise: Mapping[str, float] | None = None, drift: Mapping[str, float] | None = None):
    """Stand-ins for editing results, to try the runner and the aggregation end to end.

    Each source is a colour patch (the middle half of the image) on a plain background; each
    method recolours the patch with its own pixel ``noise`` (image quality) and shifts the
    background by its own ``drift`` (entanglement). Returns ``(sources, results, attributes)``
    in the form :class:`~stytr.apps.study.UserStudyApp` takes (CHW float arrays in [-1, 1])."""
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
    if normalise_aspect(aspect) == "quality":
        return np.array([np.abs(np.diff(s[lo:hi, lo:hi], axis=0)).mean() for s in slots])
    return np.array([np.abs(s - source)[:lo].mean() for s in slots])


def scripted_answer(app: UserStudyApp, judge, rng: np.random.Generator, temperature: float = 0.05) -> None:
    """Answer every open question of the app's current trial from what the page shows.

    ``judge(aspect, source, slots)`` gets the decoded source and slot images (HxWx3 in [-1, 1])
    and returns a badness per slot; the slot is drawn with probability proportional to
    ``exp(-(badness - min) / temperature)`` and clicked, as a test or a simulation would."""
    source = from_png(app.source_image.value)
    slots = [from_png(img.value) for img in app.slot_images]
    for aspect in app.aspects:
        if app.choice_buttons[aspect][0].disabled:
            continue
        badness = np.asarray(judge(aspect, source, slots), dtype=np.float64)
        p = np.exp(-(badness - badness.min()) / temperature)
        app.choose(aspect, int(rng.choice(len(p), p=p / p.sum())))
