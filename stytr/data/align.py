"""FFHQ-style face alignment of arbitrary photos.

The encoder expects faces cropped and rotated the way the FFHQ training set was
made: 68 dlib landmarks give the two eye centres and the two mouth corners; from
them an oriented square ("quad") is built around the face, and that quad is
resampled into an axis-aligned square picture. The geometry (in image coordinates,
y pointing down; ``rot90(v) = (-v_y, v_x)``)::

    eye_to_eye   = eye_right - eye_left                     (eye centres: means of landmarks 36-41, 42-47)
    eye_to_mouth = mouth_avg - eye_avg                      (mouth corners: landmarks 48 and 54)
    x = eye_to_eye - rot90(eye_to_mouth);  x *= max(2.0 |eye_to_eye|, 1.8 |eye_to_mouth|) / |x|
    y = rot90(x)                                            (x and y are the quad's half-sides)
    c = eye_avg + 0.1 eye_to_mouth
    quad = [c - x - y, c - x + y, c + x + y, c + x - y]     (top-left, bottom-left, bottom-right, top-right)

For an upright face with ``|eye_to_mouth| = |eye_to_eye|`` the eyes land at
(0.375, 0.475) and (0.625, 0.475) of the output side, the mouth centre at (0.5, 0.725).

:func:`align_face` then follows FFHQ's resampling: shrink very large photos first,
crop to the quad plus a border, pad where the quad leaves the photo (reflect, then
blur and fade the padding towards the median colour so that mirrored content does
not look like a face), transform the quad to ``transform_size`` with PIL's QUAD
transform and downsample to ``output_size``.

Landmarks come from dlib (optional dependency ``pip install dlib``, or the prebuilt
wheel ``pip install dlib-bin``) plus its 68-point model
``shape_predictor_68_face_landmarks.dat``; see :class:`LandmarkDetector`.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from .folders import CorruptImageError

__all__ = [
    "DEFAULT_PREDICTOR_PATH", "DLIB_INSTALL_HINT", "PREDICTOR_HINT", "NoFaceError", "DlibNotInstalledError",
    "DetectedFace", "face_keypoints", "quad_from_keypoints", "landmarks_to_quad", "aligned_coordinates",
    "align_face", "import_dlib", "detect_face_boxes", "LandmarkDetector", "detect_and_align", "align_photo",
]

DEFAULT_PREDICTOR_PATH = "pretrained_models/shape_predictor_68_face_landmarks.dat"

DLIB_INSTALL_HINT = ("Face alignment needs dlib: `pip install dlib` (builds from source, needs CMake and a C++ "
                     "compiler) or `pip install dlib-bin` (a prebuilt wheel of the same module); "
                     "with stytr: `pip install stytr[align]`.")

PREDICTOR_HINT = ("It is dlib's 68-point landmark model: download shape_predictor_68_face_landmarks.dat.bz2 from "
                  "dlib.net's model files (http://dlib.net/files/), unpack it with `bunzip2`, and put it at "
                  f"{DEFAULT_PREDICTOR_PATH} or pass its path as predictor_path.")


class NoFaceError(ValueError):
    """No face was found in a photo; the message names the file."""


class DlibNotInstalledError(ImportError):
    """dlib is not installed; the message says how to install it."""


@dataclass
class DetectedFace:
    """One face in a photo: ``bbox`` = (left, top, right, bottom) in pixels, ``landmarks``
    (68, 2) float (x, y) in dlib's 68-point order, ``score`` the detector's confidence
    (None when unknown)."""

    bbox: tuple[float, float, float, float]
    landmarks: np.ndarray = field(repr=False)
    score: float | None = None

    def __post_init__(self):
        self.bbox = tuple(float(v) for v in self.bbox)
        if len(self.bbox) != 4:
            raise ValueError(f"bbox must be (left, top, right, bottom), got {self.bbox}")
        self.landmarks = _check_landmarks(self.landmarks)

    @property
    def area(self) -> float:
        left, top, right, bottom = self.bbox
        return max(right - left, 0.0) * max(bottom - top, 0.0)

    @property
    def quad(self) -> np.ndarray:
        return landmarks_to_quad(self.landmarks)


# ----------------------------------------------------------------------------------------------------------------
# geometry


def _check_landmarks(lm) -> np.ndarray:
    lm = np.asarray(lm, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be 68 (x, y) points in dlib's order, shape (68, 2); got {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError("landmarks contain NaN or infinite values")
    return lm


def face_keypoints(lm) -> dict[str, np.ndarray]:
    """Eye centres and mouth corners from 68 dlib landmarks (image left/right: ``eye_left``
    is the eye on the left of the picture, the subject's right eye)."""
    lm = _check_landmarks(lm)
    return {
        "eye_left": lm[36:42].mean(axis=0),
        "eye_right": lm[42:48].mean(axis=0),
        "mouth_left": lm[48].copy(),
        "mouth_right": lm[54].copy(),
    }


def _rot90(v: np.ndarray) -> np.ndarray:
    """(x, y) -> (-y, x): a quarter turn that takes the image x axis to its y axis (y down)."""
    return np.array([-v[1], v[0]], dtype=np.float64)


def quad_from_keypoints(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """The FFHQ crop quad (4, 2) = (top-left, bottom-left, bottom-right, top-right) of the
    output square, from the two eye centres and the two mouth corners (see module docstring)."""
    eye_left, eye_right, mouth_left, mouth_right = (np.asarray(p, dtype=np.float64)
                                                    for p in (eye_left, eye_right, mouth_left, mouth_right))
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = np.hypot(*x)
    scale = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    if norm < 1e-9 or scale < 1e-9:
        raise ValueError("degenerate face keypoints: eyes and mouth coincide")
    x = x / norm * scale
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def landmarks_to_quad(lm) -> np.ndarray:
    """FFHQ crop quad (4, 2) for 68 dlib landmarks (x, y): top-left, bottom-left,
    bottom-right, top-right corners of the aligned picture, in source pixels."""
    k = face_keypoints(lm)
    return quad_from_keypoints(k["eye_left"], k["eye_right"], k["mouth_left"], k["mouth_right"])


def aligned_coordinates(points, quad, output_size: int) -> np.ndarray:
    """Where source points (..., 2) land in the aligned ``output_size`` picture made from
    ``quad`` by :func:`align_face`.

    ``points`` and ``quad`` are in the same source coordinates (e.g. landmark pixel
    indices); the result is in continuous output coordinates, where pixel (i, j) covers
    [i, i+1) x [j, j+1), so the pixel index holding a point is ``floor`` of it and a blob
    centred on a source pixel has its centroid at the result minus 0.5.
    """
    q = np.asarray(quad, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64) - q[0]
    u_axis, v_axis = q[3] - q[0], q[1] - q[0]
    u = p @ u_axis / (u_axis @ u_axis)
    v = p @ v_axis / (v_axis @ v_axis)
    return np.stack([u, v], axis=-1) * output_size


def _pad_and_soften(img: np.ndarray, pad: Sequence[int], qsize: float) -> np.ndarray:
    """Reflect-pad a float (H, W, 3) image by ``pad`` = (left, top, right, bottom) and hide the
    mirrored content: blur it more the further it lies from the photo, and fade it towards
    the photo's median colour."""
    import scipy.ndimage

    left, top, right, bottom = (int(v) for v in pad)
    img = np.pad(img, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w, _ = img.shape
    ys = np.arange(h, dtype=np.float32)[:, None, None]
    xs = np.arange(w, dtype=np.float32)[None, :, None]
    # 0 inside the photo, growing linearly to 1 at the outer edge of each pad
    fx = 1.0 - np.minimum(xs / max(left, 1), (w - 1 - xs) / max(right, 1))
    fy = 1.0 - np.minimum(ys / max(top, 1), (h - 1 - ys) / max(bottom, 1))
    mask = np.maximum(fx, fy)
    sigma = qsize * 0.02
    blurred = scipy.ndimage.gaussian_filter(img, [sigma, sigma, 0])
    img = img + (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img = img + (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return img


def align_face(image: Image.Image, landmarks, output_size: int = 256, transform_size: int = 1024,
               enable_padding: bool = True) -> Image.Image:
    """Crop and rotate one face of ``image`` the FFHQ way; returns an RGB ``output_size`` square.

    ``landmarks``: (68, 2) dlib landmarks in ``image``'s pixel coordinates.
    ``transform_size``: side of the intermediate supersampled square (FFHQ: 4096 for a
    1024 output); raised to ``output_size`` if smaller.
    ``enable_padding``: reflect-pad (blurred, faded) where the quad leaves the photo;
    without it those parts are black.
    """
    output_size, transform_size = int(output_size), int(transform_size)
    if output_size < 1:
        raise ValueError(f"output_size must be positive, got {output_size}")
    transform_size = max(transform_size, output_size)
    img = image.convert("RGB") if image.mode != "RGB" else image
    quad = landmarks_to_quad(landmarks)
    qsize = float(np.hypot(*(quad[3] - quad[0])))  # side of the quad

    # Shrink a large photo first, so that the crop is about twice the output side.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        new_size = (max(int(np.rint(img.size[0] / shrink)), 1), max(int(np.rint(img.size[1] / shrink)), 1))
        img = img.resize(new_size, Image.LANCZOS)
        quad = quad / shrink
        qsize = qsize / shrink

    # Crop to the quad's bounding box plus a border (clipped to the photo).
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0),
            min(hi[0] + border, img.size[0]), min(hi[1] + border, img.size[1]))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise ValueError(f"the face quad {quad.round(1).tolist()} lies outside the {img.size} image")
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - np.array(crop[:2], dtype=np.float64)

    # Pad where the quad (plus border) still leaves the photo.
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0),
           max(hi[0] - img.size[0] + border, 0), max(hi[1] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = tuple(max(p, int(np.rint(qsize * 0.3))) for p in pad)
        arr = np.asarray(img, dtype=np.float32)
        arr = _pad_and_soften(arr, pad, qsize)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
        quad = quad + np.array(pad[:2], dtype=np.float64)

    # Resample the quad into an axis-aligned square. Landmarks are pixel indices (pixel i's centre is at i);
    # PIL's QUAD corners are continuous coordinates (pixel i covers [i, i+1)), hence the + 0.5.
    img = img.transform((transform_size, transform_size), Image.QUAD, tuple((quad + 0.5).flatten()),
                        Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return img


# ----------------------------------------------------------------------------------------------------------------
# dlib


def import_dlib():
    """Import dlib or raise :class:`DlibNotInstalledError` with install instructions."""
    try:
        import dlib  # noqa: F401  (optional dependency)
    except ImportError as err:
        raise DlibNotInstalledError(f"{DLIB_INSTALL_HINT} The landmark model is separate: {PREDICTOR_HINT}") from err
    return dlib


@functools.lru_cache(maxsize=1)
def _hog_detector():
    return import_dlib().get_frontal_face_detector()


def _as_uint8_rgb(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = image.convert("RGB") if image.mode != "RGB" else image
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected a PIL image or a uint8 (H, W[, 3]) array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def detect_face_boxes(image, upsample: int = 1) -> list[tuple[tuple[int, int, int, int], float]]:
    """dlib's HOG frontal face detector (needs no model file): ``[(bbox, score), ...]``,
    bbox = (left, top, right, bottom), largest first. ``upsample`` > 0 finds smaller faces
    (each step doubles the image, and the time)."""
    arr = _as_uint8_rgb(image)
    rects, scores, _ = _hog_detector().run(arr, int(upsample))
    found = [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
    return sorted(found, key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))


class LandmarkDetector:
    """dlib's HOG face detector plus its 68-point shape predictor.

    ``LandmarkDetector(predictor_path)(image)`` -> list of :class:`DetectedFace`, largest
    first. dlib is imported here (not at module import): without it,
    :class:`DlibNotInstalledError` says how to install it; a missing model file raises
    FileNotFoundError naming the expected path and where to get the file.
    """

    def __init__(self, predictor_path: str | os.PathLike = DEFAULT_PREDICTOR_PATH, upsample: int = 1):
        dlib = import_dlib()
        self.predictor_path = Path(predictor_path).expanduser()
        if not self.predictor_path.is_file():
            raise FileNotFoundError(f"dlib landmark model not found: expected {self.predictor_path}. {PREDICTOR_HINT}")
        self.upsample = int(upsample)
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(self.predictor_path))

    def __call__(self, image) -> list[DetectedFace]:
        arr = _as_uint8_rgb(image)
        faces = []
        for bbox, score in detect_face_boxes(arr, self.upsample):
            shape = self.predictor(arr, self._dlib.rectangle(*bbox))
            lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(DetectedFace(bbox=bbox, landmarks=lm, score=score))
        return faces

    detect = __call__


@functools.lru_cache(maxsize=2)
def _cached_detector(path: str) -> LandmarkDetector:
    return LandmarkDetector(path)


Detector = Callable[[np.ndarray], Sequence[DetectedFace]]


def _open_photo(path: str | os.PathLike) -> Image.Image:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"photo not found: {path}" if not path.exists() else f"not a file: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # phone photos are often stored sideways with an EXIF flag
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def detect_and_align(image: Image.Image, detector: Detector, output_size: int = 256, all_faces: bool = False,
                     transform_size: int | None = None, enable_padding: bool = True, name: str = "the image"
                     ) -> list[tuple[Image.Image, DetectedFace]]:
    """Find faces in ``image`` with ``detector`` (RGB uint8 array -> DetectedFace list) and align
    the largest one (by bounding-box area), or all of them, largest first, with
    ``all_faces``. Raises :class:`NoFaceError` mentioning ``name`` when none is found."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    faces = list(detector(np.ascontiguousarray(np.asarray(image, dtype=np.uint8))))
    if not faces:
        raise NoFaceError(f"no face found in {name}; use a photo with a clearly visible, roughly frontal face "
                          "(dlib's detector misses faces smaller than about 80 pixels and strong profiles)")
    faces.sort(key=lambda f: -f.area)
    if not all_faces:
        faces = faces[:1]
    tsize = 4 * int(output_size) if transform_size is None else int(transform_size)
    return [(align_face(image, f.landmarks, output_size, tsize, enable_padding), f) for f in faces]


def align_photo(path: str | os.PathLike, predictor_path: str | os.PathLike = DEFAULT_PREDICTOR_PATH,
                output_size: int = 256, all_faces: bool = False, detector: Detector | None = None,
                transform_size: int | None = None, enable_padding: bool = True) -> list[Image.Image]:
    """Align the face(s) of the photo at ``path`` for the encoder; returns a list of RGB images.

    The largest detected face is returned (a one-element list), or every face, largest
    first, with ``all_faces=True``. ``detector`` replaces the dlib :class:`LandmarkDetector`
    built from ``predictor_path`` (any callable: RGB uint8 array -> list of
    :class:`DetectedFace`). ``transform_size`` defaults to 4 x ``output_size`` (FFHQ used
    4096 for 1024). EXIF orientation is applied before detection.

    Errors: FileNotFoundError (photo or model missing), CorruptImageError (unreadable
    photo), DlibNotInstalledError, NoFaceError (no face; names the file).
    """
    path = Path(path).expanduser()
    image = _open_photo(path)
    if detector is None:
        detector = _cached_detector(str(Path(predictor_path).expanduser()))
    pairs = detect_and_align(image, detector, output_size=output_size, all_faces=all_faces,
                             transform_size=transform_size, enable_padding=enable_padding, name=str(path))
    return [img for img, _ in pairs]
