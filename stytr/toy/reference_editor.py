"""The shipped ToyFaces reference editors: one EditTransformer per edited attribute.

Only the editing block is stored (fp16 safetensors, a few hundred kB each); the
generator and the latent classifier it was trained against are the shipped ToyFaces
ones, so :func:`load_reference_editor` reassembles the full model from three files.
"""
from __future__ import annotations

import json

EDITOR_ATTRIBUTES = ("Bangs", "Smiling", "Male")
#: The editors trained with the optional mode-seeking term (issue 18) ship beside the published-loss ones.
MODE_SEEKING = "mode_seeking"


def editor_file(attribute: str, variant: str = "") -> str:
    """``toyfaces_reference_editor_<attribute>[_<variant>].safetensors``; ``variant`` is "" or :data:`MODE_SEEKING`."""
    if variant not in ("", MODE_SEEKING):
        raise ValueError(f"unknown reference-editor variant {variant!r}; choose '' or {MODE_SEEKING!r}")
    return f"toyfaces_reference_editor_{attribute.lower()}{'_' + variant if variant else ''}.safetensors"


def export_reference_editor(model, path, attribute: str, metadata: dict | None = None):
    """Write the editing block of an EditTransformer with its config and attribute."""
    from ..checkpoints import save_weights

    meta = {"edit_config": json.dumps(model.cfg.to_dict()), "attribute": attribute,
            **{k: str(v) for k, v in (metadata or {}).items()}}
    return save_weights(model.encoder.state_dict(), path, metadata=meta)


def load_reference_editor(attribute: str, path=None, device="cpu", variant: str = ""):
    """The shipped toy editor for ``attribute`` (``data/toyfaces_reference_editor_<attribute>.safetensors``;
    ``variant=MODE_SEEKING``: the one trained with the mode-seeking term), with the shipped toy generator and
    latent classifier, in eval mode."""
    from ..checkpoints import CheckpointError, data_path, load_state_strict, load_weights
    from ..config import EditTransformerConfig
    from ..editing.session import load_toy_classifier
    from ..models.edit_transformer import EditTransformer
    from .generator import load_generator

    path = path or data_path(editor_file(attribute, variant))
    state, meta = load_weights(path)
    if "edit_config" not in meta:
        raise CheckpointError(f"{path} has no 'edit_config' metadata: not written by export_reference_editor")
    if meta.get("attribute", attribute).lower() != attribute.lower():
        raise CheckpointError(f"{path} edits {meta['attribute']!r}, not {attribute!r}")
    cfg = EditTransformerConfig.from_dict(json.loads(meta["edit_config"]))
    model = EditTransformer(cfg, build_generator=False, build_classifier=False)
    load_state_strict(model.encoder, state, str(path))
    model.decoder = load_generator().requires_grad_(False).eval()
    model._set_classifier(load_toy_classifier())
    return model.to(device).eval()
