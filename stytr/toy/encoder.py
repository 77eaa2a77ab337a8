"""The shipped ToyFaces inversion encoder (a Style Transformer of the toy configuration)."""
from __future__ import annotations

import json

ENCODER_FILE = "toyfaces_style_transformer.safetensors"


def export_encoder(model, path, metadata: dict | None = None):
    """Write an inversion model's weights (fp16) with its config, for :func:`load_encoder`."""
    from ..checkpoints import save_weights

    meta = {"inversion_config": json.dumps(model.cfg.to_dict()), "model_class": type(model).__name__,
            **{k: str(v) for k, v in (metadata or {}).items()}}
    return save_weights(model.state_dict(), path, metadata=meta)


def load_encoder(path=None, device="cpu"):
    """The shipped toy Style Transformer (``data/toyfaces_style_transformer.safetensors``) in eval mode,
    with its generator and ``latent_avg``."""
    from ..checkpoints import CheckpointError, data_path, load_state_strict, load_weights
    from ..config import InversionConfig
    from ..models.style_transformer import build_inversion_model

    path = path or data_path(ENCODER_FILE)
    state, meta = load_weights(path)
    if "inversion_config" not in meta:
        raise CheckpointError(f"{path} has no 'inversion_config' metadata: not written by export_encoder")
    model = build_inversion_model(InversionConfig.from_dict(json.loads(meta["inversion_config"])))
    load_state_strict(model, state, str(path))
    return model.to(device).eval()
