"""dlib and the model files that ship inside the ``face-recognition-models`` wheel.

``pip install -e ".[align]"`` installs both: ``dlib-bin`` (a prebuilt dlib with the HOG
face detector) and ``face-recognition-models``, whose wheel carries
``shape_predictor_68_face_landmarks.dat`` (alignment), ``shape_predictor_5_face_landmarks.dat``
and ``dlib_face_recognition_resnet_model_v1.dat`` (the identity metric). Nothing is
downloaded at run time.

The files are located with :func:`importlib.util.find_spec`, which finds the package
folder without running its ``__init__``: that ``__init__`` imports ``pkg_resources``,
which recent setuptools no longer provide.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

__all__ = ["ALIGN_EXTRA_HINT", "LANDMARKS_68", "LANDMARKS_5", "FACE_RESNET", "DlibNotInstalledError",
           "FaceModelsNotInstalledError", "import_dlib", "bundled_model_path", "model_path", "shape_predictor",
           "face_recognition_model"]

ALIGN_EXTRA_HINT = 'install the alignment extra: pip install -e ".[align]" (dlib-bin and face-recognition-models)'

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
FACE_RESNET = "dlib_face_recognition_resnet_model_v1.dat"

_PACKAGE = "face_recognition_models"


class DlibNotInstalledError(ImportError):
    """dlib is not installed; the message names the extra that installs it."""


class FaceModelsNotInstalledError(FileNotFoundError):
    """The ``face-recognition-models`` package (dlib's model files) is not installed."""


def import_dlib():
    """Import dlib or raise :class:`DlibNotInstalledError` naming the ``align`` extra."""
    try:
        import dlib  # noqa: F401  (optional dependency: only alignment and the identity metric need it)
    except ImportError as err:
        raise DlibNotInstalledError(f"face alignment needs dlib: {ALIGN_EXTRA_HINT}") from err
    return dlib


def bundled_model_path(name: str) -> Path:
    """Path of dlib model file ``name`` inside the installed ``face-recognition-models``."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsNotInstalledError(f"dlib's model file {name} comes with face-recognition-models, which is "
                                          f"not installed: {ALIGN_EXTRA_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise FaceModelsNotInstalledError(f"{name} is not in the installed face-recognition-models "
                                      f"({list(spec.submodule_search_locations)}); reinstall it: {ALIGN_EXTRA_HINT}")


def model_path(name: str, path: str | os.PathLike | None = None) -> Path:
    """``path`` when given (it must exist), else the bundled copy of ``name``."""
    if path is None:
        return bundled_model_path(name)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file not found: {path} (leave the path out to use the {name} "
                                f"that face-recognition-models ships; {ALIGN_EXTRA_HINT})")
    return path


@functools.lru_cache(maxsize=4)
def _shape_predictor(path: str):
    return import_dlib().shape_predictor(path)


@functools.lru_cache(maxsize=2)
def _face_recognition_model(path: str):
    return import_dlib().face_recognition_model_v1(path)


def shape_predictor(path: str | os.PathLike | None = None, points: int = 68):
    """dlib's landmark model (68 or 5 points), loaded once per file (the 68-point file is 100 MB)."""
    if points not in (5, 68):
        raise ValueError(f"dlib ships 68- and 5-point landmark models, not {points}")
    import_dlib()
    return _shape_predictor(str(model_path(LANDMARKS_68 if points == 68 else LANDMARKS_5, path)))


def face_recognition_model(path: str | os.PathLike | None = None):
    """dlib's face-recognition ResNet (128-d descriptors), loaded once per file."""
    import_dlib()
    return _face_recognition_model(str(model_path(FACE_RESNET, path)))
