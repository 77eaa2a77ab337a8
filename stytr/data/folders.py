"""Image folders (aligned FFHQ / CelebA-HQ) and CelebA attribute files.

* :class:`ImageFolderDataset` walks a folder recursively and yields float tensors
  (3, size, size) in [-1, 1]. Files that cannot be decoded are never dropped
  silently: they are logged by path and collected in ``dataset.skipped``.
* :class:`CelebAAttributes` reads ``list_attr_celeba.txt`` (and files of the same
  layout such as CelebAMask-HQ's ``CelebAMask-HQ-attribute-anno.txt``);
  :func:`write_celeba_attr_file` writes one.
* :class:`LabelledImageFolder` pairs the two: items are (image, labels, mask).
* :func:`load_image` reads one picture with errors that name the file.

The CelebA attribute format::

    202599
    5_o_Clock_Shadow Arched_Eyebrows ... Young
    000001.jpg -1  1  1 -1 ...
    ...

First line: number of rows; second line: the attribute names; then one row per
image, a file name followed by one value per attribute, ``1`` (present) or ``-1``
(absent). stytr also accepts ``0`` as "unknown" (mask 0); CelebA itself never uses it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset

__all__ = [
    "IMG_EXTENSIONS", "VERIFY_AUTO_LIMIT", "CorruptImageError", "EmptyFolderError", "AttributeFileError",
    "list_images", "open_rgb", "pil_to_tensor", "load_image",
    "ImageFolderDataset", "CelebAAttributes", "LabelledImageFolder", "write_celeba_attr_file",
]

log = logging.getLogger(__name__)

IMG_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# With verify=None, folders with at most this many images are checked up front.
VERIFY_AUTO_LIMIT = 5000


class CorruptImageError(OSError):
    """A file could not be decoded as an image; the message names the file."""


class EmptyFolderError(FileNotFoundError):
    """A folder that was expected to hold images holds none."""


class AttributeFileError(ValueError):
    """A CelebA-format attribute file is malformed; the message names the file and line."""


# ----------------------------------------------------------------------------------------------------------------
# single images


def list_images(root: str | os.PathLike, extensions: Iterable[str] = IMG_EXTENSIONS) -> list[Path]:
    """All files under ``root`` (recursively, following no hidden folders) whose suffix is one of
    ``extensions`` (case-insensitive), sorted by their path relative to ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}" if not root.exists()
                                else f"not a folder: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparent pixels are composited over white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully into an RGB PIL image.

    Raises FileNotFoundError for a missing file and :class:`CorruptImageError` (naming
    the file and the decoder's complaint) for anything that is not a readable image,
    including truncated files.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}" if not path.exists() else f"not a file: {path}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so that truncation shows up here and not later
            return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def pil_to_tensor(img: Image.Image, size: int | None = None) -> torch.Tensor:
    """RGB PIL image -> float32 tensor (3, H, W) in [-1, 1].

    With ``size``, a non-square picture is centre-cropped to a square first, then
    resized to ``size`` x ``size`` with PIL's Lanczos filter (which antialiases when
    shrinking).
    """
    img = _to_rgb(img)
    if size is not None:
        size = int(size)
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        w, h = img.size
        if w != h:
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            img = img.crop((left, top, left + s, top + s))
        if img.size != (size, size):
            img = img.resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float()
    return t.div_(127.5).sub_(1.0)


def load_image(path: str | os.PathLike, size: int | None = 256) -> torch.Tensor:
    """Read one image as a float tensor (3, size, size) in [-1, 1] (``size=None`` keeps its size).

    Missing file -> FileNotFoundError; unreadable or truncated file ->
    :class:`CorruptImageError`; both name the path.
    """
    return pil_to_tensor(open_rgb(path), size)


def _verify(path: Path) -> str | None:
    """Cheap header/structure check; returns the problem or None when the file looks fine.

    ``Image.verify`` does not decode pixel data (and checks little for JPEG), so a file
    that passes may still fail later: ``__getitem__`` catches that too.
    """
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        return f"{type(err).__name__}: {err}"
    return None


# ----------------------------------------------------------------------------------------------------------------
# datasets


class ImageFolderDataset(Dataset):
    """Every image under ``root`` (recursively), as float tensors (3, size, size) in [-1, 1].

    Args:
        root: folder of aligned faces (FFHQ, CelebA-HQ); sub-folders are searched too.
        size: output side; pictures are centre-cropped to a square if needed and
            resized with Lanczos.
        train: training mode; random horizontal flips happen only then.
        flip: flip with probability 1/2 in training (``None``: flip whenever ``train``).
            ``flip=True`` with ``train=False`` is ignored with a warning.
        extensions: file suffixes that count as images; other files are not read.
        verify: check every file with ``PIL.Image.verify`` now (``None``: only when the
            folder holds at most :data:`VERIFY_AUTO_LIMIT` images). Bad files found
            here are logged and left out of the dataset.
        return_path: items are ``(image, path)`` instead of ``image``.

    A file that fails to decode in ``__getitem__`` is logged (once) by path, added to
    ``skipped``, and the next readable file is returned in its place, so an epoch
    keeps its length. ``skipped`` lives in the process that hit the file: with
    DataLoader workers, each worker has its own copy (the log lines name every file).
    """

    def __init__(self, root: str | os.PathLike, size: int = 256, train: bool = False, flip: bool | None = None,
                 extensions: Iterable[str] = IMG_EXTENSIONS, verify: bool | None = None,
                 return_path: bool = False):
        self.root = Path(root).expanduser()
        self.size = int(size)
        if self.size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.train = bool(train)
        if flip and not self.train:
            log.warning("ImageFolderDataset(%s): flip=True ignored because train=False (flips are for training only)",
                        self.root)
        self.flip = self.train if flip is None else bool(flip) and self.train
        self.return_path = return_path
        self.extensions = tuple(extensions)
        self.skipped: list[Path] = []
        self._bad: set[int] = set()

        if ImageFile.LOAD_TRUNCATED_IMAGES:
            log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some other code): truncated images "
                        "will load with grey filling instead of being reported and skipped")
        paths = list_images(self.root, self.extensions)
        if not paths:
            raise EmptyFolderError(f"no images ({', '.join(self.extensions)}) found in folder {self.root}")
        if verify is None:
            verify = len(paths) <= VERIFY_AUTO_LIMIT
        if verify:
            good = []
            for p in paths:
                problem = _verify(p)
                if problem is None:
                    good.append(p)
                else:
                    self._report(p, problem)
            paths = good
            if not paths:
                raise EmptyFolderError(f"no readable images in folder {self.root}: all {len(self.skipped)} "
                                       f"candidates failed to open (first: {self.skipped[0]})")
        self.paths: list[Path] = paths

    def _report(self, path: Path, problem: str) -> None:
        log.warning("skipping unreadable image %s (%s)", path, problem)
        self.skipped.append(path)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """Item ``index`` without augmentation or skipping (raises for a bad file)."""
        return load_image(self.paths[index], self.size)

    def _load_valid(self, index: int) -> tuple[int, torch.Tensor]:
        n = len(self.paths)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                return i, self.load(i)
            except (CorruptImageError, FileNotFoundError) as err:
                self._bad.add(i)
                self._report(self.paths[i], str(err.__cause__ or err))
        raise RuntimeError(f"none of the {n} images in {self.root} could be read; "
                           f"{len(self.skipped)} were skipped (see the log)")

    def __getitem__(self, index: int):
        i, img = self._load_valid(index)
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img, self.paths[i]) if self.return_path else img

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, n={len(self)}, size={self.size}, "
                f"train={self.train}, flip={self.flip}, skipped={len(self.skipped)})")


class CelebAAttributes(Mapping):
    """A CelebA-format attribute file: a read-only mapping file name -> labels.

    ``attrs[name]`` is a float32 tensor (n_attributes,) of {0, 1} (``1`` in the file ->
    1, ``-1`` -> 0, ``0`` -> 0 with mask False); :meth:`mask` gives the bool mask of
    known entries. ``names`` holds the attribute names in file order. Keys are the file
    names as written in the file; :meth:`lookup` also tries the bare name and the stem.
    """

    def __init__(self, path: str | os.PathLike, expected_names: Sequence[str] | None = None):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"attribute file not found: {self.path}")
        text = self.path.read_text()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) < 2:
            raise AttributeFileError(f"{self.path}: expected a count line and a names line, "
                                     f"found {len(lines)} non-empty line(s)")
        try:
            count = int(lines[0].split()[0])
        except ValueError:
            raise AttributeFileError(f"{self.path}, line 1: expected the number of rows, got {lines[0][:60]!r}") from None
        self.names: tuple[str, ...] = tuple(lines[1].split())
        if not self.names:
            raise AttributeFileError(f"{self.path}, line 2: no attribute names")
        if expected_names is not None and tuple(expected_names) != self.names:
            missing = [n for n in expected_names if n not in self.names]
            raise AttributeFileError(f"{self.path}: attribute names differ from the expected ones"
                                     + (f" (missing: {', '.join(missing[:5])})" if missing else " (order differs)"))
        k = len(self.names)
        files: list[str] = []
        values = np.zeros((len(lines) - 2, k), dtype=np.int8)
        for row, line in enumerate(lines[2:]):
            parts = line.split()
            if len(parts) != k + 1:
                raise AttributeFileError(f"{self.path}, line {row + 3}: expected a file name and {k} values, "
                                         f"got {len(parts)} fields")
            try:
                vals = [int(v) for v in parts[1:]]
            except ValueError:
                raise AttributeFileError(f"{self.path}, line {row + 3}: values must be -1, 0 or 1") from None
            if any(v not in (-1, 0, 1) for v in vals):
                raise AttributeFileError(f"{self.path}, line {row + 3}: values must be -1, 0 or 1, "
                                         f"got {sorted(set(vals) - {-1, 0, 1})}")
            files.append(parts[0])
            values[row] = vals
        if count != len(files):
            raise AttributeFileError(f"{self.path}: line 1 announces {count} rows but the file has {len(files)}")
        if len(set(files)) != len(files):
            dup = next(f for i, f in enumerate(files) if f in files[:i])
            raise AttributeFileError(f"{self.path}: file name {dup!r} appears more than once")
        self.files: tuple[str, ...] = tuple(files)
        self._row = {f: i for i, f in enumerate(files)}
        self.labels = torch.from_numpy((values == 1).astype(np.float32))   # (N, k) in {0, 1}
        self.masks = torch.from_numpy(values != 0)                          # (N, k) bool
        self._alias: dict[str, int] | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.labels[self._row[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def mask(self, name: str) -> torch.Tensor:
        """(n_attributes,) bool: which values of ``name`` are known (all, in real CelebA files)."""
        return self.masks[self._row[name]]

    def row(self, name: str) -> int | None:
        """Row of ``name`` in the file: exact key, else the same base name or stem
        (``img/000001.png`` finds ``000001.jpg``); None when absent or ambiguous."""
        if name in self._row:
            return self._row[name]
        if self._alias is None:
            alias: dict[str, int] = {}
            clash: set[str] = set()
            for f, i in self._row.items():
                for key in {Path(f).name, Path(f).stem}:
                    if key in alias and alias[key] != i:
                        clash.add(key)
                    alias[key] = i
            self._alias = {k: v for k, v in alias.items() if k not in clash}
        p = Path(name)
        for key in (p.name, p.stem):
            if key in self._alias:
                return self._alias[key]
        return None

    def lookup(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(labels, mask) for ``name`` (see :meth:`row`), or None."""
        i = self.row(name)
        return None if i is None else (self.labels[i], self.masks[i])

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f: self.labels[i] for f, i in self._row.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, rows={len(self)}, attributes={len(self.names)})"


def write_celeba_attr_file(path: str | os.PathLike, filenames: Sequence[str], labels, names: Sequence[str],
                           mask=None) -> Path:
    """Write a CelebA-format attribute file (see the module docstring).

    ``labels``: (N, k) array-like, truthy/> 0.5 -> ``1``, else ``-1``; ``names``: the k
    attribute names (no whitespace). With ``mask`` ((N, k) or (k,) bool), unknown
    entries are written as ``0`` (a stytr extension that :class:`CelebAAttributes` reads
    back as mask False).
    """
    path = Path(path)
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.float64)
    names = [str(n) for n in names]
    filenames = [str(f) for f in filenames]
    if labels.ndim != 2 or labels.shape != (len(filenames), len(names)):
        raise ValueError(f"labels must have shape ({len(filenames)}, {len(names)}) (files, attributes), "
                         f"got {tuple(labels.shape)}")
    for n in names:
        if not n or any(c.isspace() for c in n):
            raise ValueError(f"attribute names may not be empty or contain whitespace: {n!r}")
    for f in filenames:
        if not f or any(c.isspace() for c in f):
            raise ValueError(f"file names may not be empty or contain whitespace: {f!r}")
    if len(set(filenames)) != len(filenames):
        raise ValueError("file names must be unique")
    values = np.where(labels > 0.5, 1, -1)
    if mask is not None:
        m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
        values = np.where(np.broadcast_to(m, values.shape), values, 0)
    out = [str(len(filenames)), " ".join(names)]
    out += [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(filenames, values.tolist())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    return path


class LabelledImageFolder(ImageFolderDataset):
    """:class:`ImageFolderDataset` with CelebA-format labels: items are
    ``(image, labels (k,) float32 {0,1}, mask (k,) bool)``.

    Images are matched to rows of ``attr_file`` by their path relative to ``root``,
    else by base name or stem. Images without a row get mask all False (a warning
    says how many); if no image matches at all, construction fails. ``attribute_mask``
    ((k,) bool), if given, is ANDed into every mask (e.g. ToyFaces' modelled attributes).
    """

    def __init__(self, root: str | os.PathLike, attr_file: str | os.PathLike, size: int = 256, train: bool = False,
                 flip: bool | None = None, extensions: Iterable[str] = IMG_EXTENSIONS, verify: bool | None = None,
                 attribute_mask=None, return_path: bool = False):
        super().__init__(root, size=size, train=train, flip=flip, extensions=extensions, verify=verify,
                         return_path=False)
        self.return_path = return_path
        self.attributes = attr_file if isinstance(attr_file, CelebAAttributes) else CelebAAttributes(attr_file)
        self.names = self.attributes.names
        k = len(self.names)
        extra = torch.ones(k, dtype=torch.bool)
        if attribute_mask is not None:
            extra = torch.as_tensor(attribute_mask, dtype=torch.bool)
            if extra.shape != (k,):
                raise ValueError(f"attribute_mask must have shape ({k},), got {tuple(extra.shape)}")
        self.attribute_mask = extra
        self._rows: list[int | None] = [self.attributes.row(p.relative_to(self.root).as_posix()) for p in self.paths]
        missing = [p for p, r in zip(self.paths, self._rows) if r is None]
        if len(missing) == len(self.paths):
            raise AttributeFileError(f"none of the {len(self.paths)} images in {self.root} has a row in "
                                     f"{self.attributes.path} (first image: {self.paths[0].name}, "
                                     f"first row: {self.attributes.files[0] if len(self.attributes) else 'none'})")
        if missing:
            log.warning("%d of %d images in %s have no row in %s (mask all False), e.g. %s", len(missing),
                        len(self.paths), self.root, self.attributes.path, missing[0])
        self.unlabelled: list[Path] = missing

    def labels_of(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = self._rows[index]
        k = len(self.names)
        if r is None:
            return torch.zeros(k), torch.zeros(k, dtype=torch.bool)
        return self.attributes.labels[r].clone(), self.attributes.masks[r] & self.attribute_mask

    def __getitem__(self, index: int):
        i, img = self._load_valid(index)
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        labels, mask = self.labels_of(i)
        return (img, labels, mask, self.paths[i]) if self.return_path else (img, labels, mask)
