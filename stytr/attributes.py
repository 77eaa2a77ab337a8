"""CelebA's 40 binary attributes, in the column order of ``list_attr_celeba.txt``.

Every attribute-aware part of stytr (latent classifier, label editing, the
InterFaceGAN and StyleSpace baselines, ToyFaces labels) indexes attributes in
this order. :func:`attribute_index` turns a name or an index into a checked
index, so public functions can take either.
"""
from __future__ import annotations

import difflib
import operator
from typing import Iterable, Sequence

import torch

__all__ = ["CELEBA_ATTRIBUTES", "UnknownAttributeError", "attribute_index", "attribute_indices", "attribute_name",
           "prepare_labels"]

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)


class UnknownAttributeError(KeyError, IndexError, ValueError):
    """An attribute name that is not in the list, or an index out of range.

    It derives from KeyError, IndexError and ValueError so that callers may catch
    whichever of them they expect.
    """

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


def _canonical(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def attribute_index(attribute: int | str, names: Sequence[str] = CELEBA_ATTRIBUTES) -> int:
    """The position of ``attribute`` in ``names`` (CelebA's 40 attributes by default).

    ``attribute`` is an index (any integer type, 0-based, no negative indices), a
    name (exact, or differing only in case and in ``_``/``-``/space), or a string of
    digits. Anything else raises :class:`UnknownAttributeError` that lists the
    closest names.
    """
    if isinstance(attribute, bool):
        raise UnknownAttributeError(f"an attribute is a name or an integer index, not a bool ({attribute!r})")
    if isinstance(attribute, str):
        text = attribute.strip()
        if text.isdigit():
            return attribute_index(int(text), names)
        if text in names:
            return list(names).index(text)
        lookup = {_canonical(n): i for i, n in enumerate(names)}
        if _canonical(text) in lookup:
            return lookup[_canonical(text)]
        close = difflib.get_close_matches(text, list(names), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known attributes: {', '.join(names)}"
        raise UnknownAttributeError(f"unknown attribute {attribute!r}" + hint)
    try:
        index = operator.index(attribute)
    except TypeError:
        raise UnknownAttributeError(
            f"an attribute is a name or an integer index, got {type(attribute).__name__} {attribute!r}") from None
    if not 0 <= index < len(names):
        raise UnknownAttributeError(f"attribute index {index} out of range 0..{len(names) - 1}")
    return index


def attribute_indices(attributes: Iterable[int | str] | int | str,
                      names: Sequence[str] = CELEBA_ATTRIBUTES) -> list[int]:
    """:func:`attribute_index` of each entry (a single name or index gives a one-element list)."""
    if isinstance(attributes, (str, int)) or hasattr(attributes, "__index__"):
        return [attribute_index(attributes, names)]
    return [attribute_index(a, names) for a in attributes]


def attribute_name(attribute: int | str, names: Sequence[str] = CELEBA_ATTRIBUTES) -> str:
    """The canonical name of an attribute given by index or by (loosely written) name."""
    return names[attribute_index(attribute, names)]


def prepare_labels(labels: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels as float {0, 1} and the mask as bool, both (N, A).

    CelebA's -1/1 labels become 0/1; NaN labels count as unknown. ``mask`` may be
    None (all known), (A,) (the modelled attributes) or (N, A).
    """
    labels = torch.as_tensor(labels).float()
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, n_attr), got {tuple(labels.shape)}")
    known = ~torch.isnan(labels)
    labels = torch.nan_to_num(labels, nan=0.0)
    if ((labels != 0) & (labels != 1) & (labels != -1)).any():
        raise ValueError("labels must be 0/1 (or CelebA's -1/1, or NaN for unknown)")
    labels = (labels > 0).float()
    if mask is not None:
        mask = torch.as_tensor(mask).bool()
        if mask.ndim == 1:
            mask = mask.unsqueeze(0)
        if mask.shape[-1] != labels.shape[1] or mask.shape[0] not in (1, labels.shape[0]):
            raise ValueError(f"mask must be ({labels.shape[1]},) or {tuple(labels.shape)}, got {tuple(mask.shape)}")
        known = known & mask
    return labels, known.expand_as(labels).clone()
