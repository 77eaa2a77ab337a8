"""Safe checkpoint I/O shared by every model and trainer.

* :func:`load` reads ``.pt`` files with ``weights_only=True`` and turns the usual
  failures (missing file, truncated file, pickled code) into errors that name the file.
* :func:`save_atomic` writes to a temporary file in the same folder, flushes it to disk and
  renames it, so a run killed mid-write (or a power cut) never leaves a half-written
  checkpoint behind; :func:`remove_stale_temporaries` clears what a killed write left.
* Shipped weights are safetensors (:func:`save_weights` / :func:`load_weights`);
  they live in the repository's ``data/`` folder (:func:`data_path`).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")     # mkstemp's names below


def _tempfile_beside(path: Path) -> str:
    """A temporary file in ``path``'s folder (the caller gives it ordinary permissions before renaming)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: str, path: Path) -> None:
    """Give ``tmp`` the permissions a newly created file would have (mkstemp and safetensors
    create 0600 files), flush it to disk, rename it over ``path`` in one step and flush the
    folder, so that after a crash ``path`` holds either the old or the new bytes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    _fsync(tmp)
    os.replace(tmp, path)
    if os.name == "posix":      # a folder cannot be opened for fsync on Windows
        _fsync(path.parent, directory=True)


def _write_atomic(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tempfile_beside(path)
    try:
        write(tmp)
        _publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what killed atomic writes left in ``folder``: files named like :func:`_tempfile_beside`'s
    (``.<name>.<8 random characters>.tmp``)."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if _TEMPORARY.fullmatch(p.name)] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or of an unexpected layout."""


def data_dir() -> Path:
    """Folder with the shipped weights: ``$STYTR_DATA`` or ``<repo>/data``."""
    return Path(os.environ.get("STYTR_DATA", REPO_ROOT / "data"))


def data_path(name: str) -> Path:
    path = data_dir() / name
    if not path.exists():
        raise CheckpointError(f"shipped file {name!r} not found at {path}; it is part of the repository "
                              f"(re-clone, or set STYTR_DATA to the folder that holds it)")
    return path


def require_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """Raise a helpful error when a weight file that the user must provide is absent."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: expected {path}" + (f". {hint}" if hint else ""))
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    path = require_file(path, "checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"could not read checkpoint {path}: {type(err).__name__}: {err}") from err


def load_mapping(path_or_dict, map_location="cpu") -> tuple[Mapping, str]:
    """A checkpoint dict and a name for messages, from a path or an already loaded dict."""
    if isinstance(path_or_dict, Mapping):
        return path_or_dict, "checkpoint dict"
    ckpt = load(path_or_dict, map_location=map_location)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path_or_dict} is a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt, str(path_or_dict)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    return _write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically write strict JSON (``allow_nan=False``: a NaN is an error, not an invalid file)."""
    text = json.dumps(obj, indent=2, allow_nan=False)
    return _write_atomic(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, half: bool = True,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict as safetensors (fp16 by default, which is how weights ship)."""
    from safetensors.torch import save_file

    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in state_dict.items()}
    return _write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=dict(metadata or {})))


def load_weights(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file; floating tensors are cast to ``dtype``. Returns (tensors, metadata)."""
    from safetensors import safe_open

    path = require_file(path, "weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise CheckpointError(f"could not read safetensors file {path}: {err}") from err
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}, meta


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under ``prefix`` with the prefix removed (e.g. ``encoder.module.``)."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def state_mismatch(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps ``state_dict`` from loading strictly into ``module`` (empty when it fits). Works on
    a module built on the meta device, so a file's stored config is checked before anything is allocated."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        parts.append(f"{len(wrong)} of another shape (e.g. {wrong[:3]})")
    return parts


def check_state(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    parts = state_mismatch(module, state_dict)
    if parts:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))


def build_checked(build, state_dict: Mapping[str, torch.Tensor], source: str) -> torch.nn.Module:
    """``build()`` on the meta device first and check ``state_dict`` against it; only a fitting
    model is built for real (a tiny file whose config describes a huge model allocates nothing)."""
    with torch.device("meta"):
        check_state(build(), state_dict, source)
    return build()


def load_state_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the mismatch."""
    check_state(module, state_dict, source)
    module.load_state_dict(state_dict, strict=True)
