"""One photo, many edits: invert once, then render label / baseline / reference edits on demand.

:class:`EditSession` is what the ``edit`` command and the interactive editor share::

    session = EditSession.for_domain("toyfaces")     # the domain's shipped encoder, classifier, editors
    session.set_image("photo.png")                   # or a tensor / PIL image; align=True runs dlib first
                                                     # (then session.paste_back() puts the edit back)
    img = session.render({"Smiling": 3, "Eyeglasses": -2}, method=Method.LABEL_1)
    session.save("out/")                             # edited.png, wplus.pt (+ input, reconstruction, side by side)

The session holds one :class:`~stytr.editing.Editor` per :class:`~stytr.editing.Method`
(label editing of orders 1, 2 and hvp when a latent classifier is given, InterFaceGAN,
StyleSpace) and one reference editor per attribute. Strengths are signed: ``+s`` moves the
attribute toward presence, ``-s`` toward absence, with step ``|s|``; several edits apply one
after the other, in the dict's order. Only attributes that both the domain and the editor in
use model are accepted, and strengths must be finite and within ``max_strength``. Rendering
uses the generator's stored noise so that edits compare pixel to pixel; results are cached per
(method, edits) for the current image.

Fidelity (:class:`~stytr.fidelity.Fidelity`): codes render with the shared generator (``"w+"``), with
the high-fidelity stage's residual features of the current image (``"high-fidelity"``, given a
``high_fidelity`` stage) or with a generator tuned on the image (``"pti"``, ``pti_steps`` steps of
pivotal tuning); ``set_fidelity`` switches, and every editor works unchanged in every mode.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from ..attributes import CELEBA_ATTRIBUTES, attribute_name
from ..checkpoints import save_atomic
from ..config import PTIConfig
from ..domains import Domain, get_domain
from ..fidelity import Fidelity, Renderer, make_renderer
from ..losses import domain_perceptual
from ..models.high_fidelity import HighFidelityModel
from . import LATENT_METHODS, Editor, InterFaceGANEditor, Method, StyleSpaceEditor, build_editors, check_strength

__all__ = ["EditSession", "EditResult"]


class EditResult:
    """One rendered edit: ``image`` (3, H, W) in [-1, 1], ``latent`` (W+ (1, N, D), or the list of S codes
    when ``space == 's'``), and what produced it."""

    def __init__(self, image: torch.Tensor, latent, space: str, method: Method, edits: dict,
                 reference: dict | None = None, seconds: float = 0.0):
        self.image, self.latent, self.space = image, latent, space
        self.method, self.edits, self.reference = method, dict(edits), reference
        self.seconds = seconds

    @property
    def wplus(self) -> torch.Tensor | None:
        return self.latent if self.space == "w+" else None

    def __repr__(self) -> str:
        what = f"reference={self.reference['attribute']}" if self.reference else f"edits={self.edits}"
        return f"EditResult(method={self.method}, {what})"


class EditSession:
    """An inversion model, the editors available for it, and the current image.

    ``OUTPUT_FILES`` are the names :meth:`save` writes into its folder.

    ``editors``: ``{Method: Editor}`` for the latent methods; ``reference_editors``:
    ``{attribute: EditTransformer}``. ``domain`` says which attributes exist and are modelled
    and gives the default strengths (:meth:`Domain.editing_config`).
    """

    OUTPUT_FILES = ("edited.png", "wplus.pt", "input.png", "reconstruction.png", "side_by_side.png")

    def __init__(self, model, editors: Mapping[Method, Editor] | None = None,
                 reference_editors: Mapping[str, Any] | None = None, domain: Domain | str = "toyfaces",
                 seed: int = 0, cache_size: int = 64, high_fidelity=None, fidelity="w+",
                 pti: PTIConfig | None = None, pti_steps: int | None = None):
        if getattr(model, "decoder", None) is None:
            raise ValueError("EditSession needs an inversion model with its generator (build_generator=True)")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.domain = get_domain(domain)
        self.config = self.domain.editing_config()
        self.editors = {Method.parse(m): e for m, e in (editors or {}).items()}
        for editor in self.editors.values():
            for module in (getattr(editor, "classifier", None),):
                if module is not None:
                    module.to(self.device).eval().requires_grad_(False)
            if isinstance(editor, StyleSpaceEditor) and editor.model.generator is None:
                editor.model.generator = self.G
        self.reference_editors = {attribute_name(a, self.domain.attributes): e.eval()
                                  for a, e in (reference_editors or {}).items()}
        self.seed, self.cache_size = seed, cache_size
        self.lock = threading.RLock()
        self._cache: OrderedDict = OrderedDict()
        self.image = self.wplus = self.reconstruction = None
        self.source = None
        self.photo = self.alignment = None   # the original photo and its Alignment, when aligned
        self.result: EditResult | None = None
        self.render_count = 0           # renders that ran the generator (cache misses)
        # -- fidelity: a stage (or a HighFidelityModel), PTI's settings, the mode and this image's renderer
        if high_fidelity is not None and not isinstance(high_fidelity, HighFidelityModel):
            high_fidelity = HighFidelityModel(model, high_fidelity.to(self.device).eval())
        self.high_fidelity = high_fidelity
        self.pti = pti or PTIConfig.for_domain(self.domain)
        self.pti_steps = self.pti.steps if pti_steps is None else int(pti_steps)
        self._perceptual = None
        self.fidelity = self._check_fidelity(fidelity)
        self.renderer: Renderer | None = None

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def for_domain(cls, domain: Domain | str = "toyfaces", encoder=None, classifier=None, interfacegan=None,
                   stylespace=None, reference_editors: Mapping[str, Any] | None = None, device="cpu",
                   seed: int = 0, high_fidelity=None, **kwargs) -> "EditSession":
        """Load the pieces through :mod:`stytr.artifacts`: each argument is a spec (registered name,
        path or module); ``encoder`` and ``classifier`` default to the domain's, ``False`` leaves a
        piece out. ``reference_editors`` maps attributes to specs (``None``: none); ``high_fidelity``
        is a stage spec, or ``True`` for the domain's (``None``: W+ and PTI only)."""
        dom = get_domain(domain)
        model = dom.load("encoder", device, spec=encoder or None)
        editors: dict[Method, Editor] = {}
        if classifier is not False and (classifier or dom.classifier):
            clf = dom.load("classifier", device, spec=classifier or None, style_dim=model.cfg.style_dim)
            editors.update(build_editors(clf, seed=seed))
        if interfacegan:
            editors[Method.INTERFACEGAN] = InterFaceGANEditor(dom.load("interfacegan", device, spec=interfacegan))
        if stylespace:
            editors[Method.STYLESPACE] = StyleSpaceEditor(dom.load("stylespace", device, spec=stylespace,
                                                                   generator=model.decoder))
        refs = {a: dom.load("reference_editor", device, spec=spec, attribute=a,
                            classifier=classifier if classifier and not isinstance(classifier, torch.nn.Module) else None)
                for a, spec in (reference_editors or {}).items()}
        if high_fidelity is not None and high_fidelity is not False:
            high_fidelity = dom.load("high_fidelity", device, spec=None if high_fidelity is True else high_fidelity)
        else:
            high_fidelity = None
        return cls(model, editors, refs, domain=dom, seed=seed, high_fidelity=high_fidelity, **kwargs)

    # -- fidelity --------------------------------------------------------------------------
    @property
    def fidelities(self) -> list[Fidelity]:
        """The reconstruction modes this session offers (high-fidelity only with a stage)."""
        return [f for f in Fidelity if f is not Fidelity.HIGH or self.high_fidelity is not None]

    def _check_fidelity(self, fidelity) -> Fidelity:
        fidelity = Fidelity.parse(fidelity)
        if fidelity not in self.fidelities:
            raise ValueError(f"no {fidelity} rendering in this session: give it a high-fidelity stage "
                             f"(EditSession.for_domain(..., high_fidelity='toy'))")
        return fidelity

    def set_fidelity(self, fidelity, steps: int | None = None, progress: bool = False) -> torch.Tensor | None:
        """Switch how codes render (``"w+"``, ``"high-fidelity"``, ``"pti"`` with ``steps`` tuning steps);
        the current image, if any, is re-rendered. Returns its new reconstruction."""
        fidelity = self._check_fidelity(fidelity)
        with self.lock:
            if steps is not None:
                if int(steps) < 0:
                    raise ValueError(f"PTI steps must be >= 0, got {steps}")
                self.pti_steps = int(steps)
            self.fidelity = fidelity
            if self.wplus is None:
                return None
            self._set_renderer(progress)
            return self.reconstruction

    def _set_renderer(self, progress: bool = False) -> None:
        if self.fidelity is Fidelity.PTI and self._perceptual is None:
            self._perceptual = domain_perceptual(self.domain).to(self.device)
        x = self.image[None].to(self.device)
        self.renderer = make_renderer(self.fidelity, self.model, x, self.wplus, high_fidelity=self.high_fidelity,
                                      pti=self.pti, perceptual=self._perceptual, steps=self.pti_steps,
                                      progress=progress)
        self.reconstruction = self._decode(self.wplus)
        self._cache.clear()
        self.result = None

    def add_editor(self, method, editor: Editor) -> None:
        with self.lock:
            self.editors[Method.parse(method)] = editor
            self._cache.clear()

    @property
    def G(self):
        return self.model.decoder

    @property
    def size(self) -> int:
        return int(self.model.cfg.input_size)

    @property
    def methods(self) -> list[Method]:
        """The latent methods that have an editor, in :class:`Method` order."""
        return [m for m in LATENT_METHODS if m in self.editors]

    def attributes(self, method=None) -> list[str]:
        """The attributes an edit may name: those the domain models and, for ``method``, its editor
        was fitted on."""
        names = list(self.domain.modelled)
        editor = self.editors.get(Method.parse(method)) if method is not None else None
        fitted = editor.attributes() if editor is not None else None
        return [a for a in names if fitted is None or a in fitted]

    def default_strength(self, method, attribute: str | None = None) -> float:
        return self.config.strength(Method.parse(method), attribute)

    # -- the image -------------------------------------------------------------------------
    def load_input(self, image, align: bool = False, landmarks=None, detector=None) -> torch.Tensor:
        """Any image source -> (3, size, size) in [-1, 1]: a tensor ((3, H, W) or (1, 3, H, W), values in
        [-1, 1]), a path or a PIL image. ``align=True`` runs FFHQ alignment on the most confident face
        (dlib; ``landmarks`` = another 68-point ``.dat`` than the bundled one); otherwise the picture is
        centre-cropped and resized."""
        return self._load(image, align, landmarks, detector)[0]

    def _load(self, image, align: bool, landmarks, detector):
        """(tensor, photo, alignment): the photo and its Alignment record when ``align``, else None."""
        from PIL import Image

        from ..data.folders import load_image, pil_to_tensor

        size = self.size
        if isinstance(image, torch.Tensor):
            x = image.detach().float().cpu()
            if x.ndim == 4:
                if x.shape[0] != 1:
                    raise ValueError(f"one image at a time, got a batch of {x.shape[0]}")
                x = x[0]
            if x.ndim != 3 or x.shape[0] != 3:
                raise ValueError(f"expected an image tensor (3, H, W), got {tuple(image.shape)}")
            if align:
                raise ValueError("align=True needs a photo (path or PIL image), not a tensor")
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x[None], size=(size, size), mode="area" if x.shape[-1] > size else "bilinear",
                                  align_corners=None if x.shape[-1] > size else False)[0]
            return x.clamp(-1, 1), None, None
        if isinstance(image, (str, os.PathLike)):
            path = Path(image).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"input image not found: {path}")
            if not align:
                return load_image(path, size), None, None
            from ..data.align import open_photo

            image, name = open_photo(path), str(path)
        elif isinstance(image, Image.Image):
            name = "the picture"
        else:
            raise TypeError(f"set_image takes a tensor, a path or a PIL image, not {type(image).__name__}")
        if not align:
            return pil_to_tensor(image, size), None, None
        from ..data.align import detect_and_align

        photo = image.convert("RGB")
        record = detect_and_align(photo, detector, output_size=size, name=name, predictor_path=landmarks)[0]
        return pil_to_tensor(record.image, size), photo, record

    @torch.no_grad()
    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """(3, size, size) -> W+ (1, N, D)."""
        return self.model.encode(x[None].to(self.device))

    def set_image(self, image, align: bool = False, landmarks=None, detector=None) -> torch.Tensor:
        """Load (and optionally align) ``image``, invert it; returns the reconstruction (3, size, size).
        With ``align`` the photo and its :class:`~stytr.data.align.Alignment` are kept (``photo``,
        ``alignment``) so that :meth:`paste_back` can put the edit back."""
        x, photo, record = self._load(image, align, landmarks, detector)
        source = str(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__
        self._set(x, source, photo, record)
        return self.reconstruction

    def set_face(self, photo, alignment) -> torch.Tensor:
        """Invert one face already aligned from ``photo`` (an :class:`~stytr.data.align.Alignment`, e.g.
        one of ``detect_and_align(photo, all_faces=True)``); keeps both for :meth:`paste_back`."""
        from ..data.folders import pil_to_tensor

        x = pil_to_tensor(alignment.image, self.size)
        self._set(x, f"face {alignment.face.bbox} of {type(photo).__name__}", photo, alignment)
        return self.reconstruction

    def _set(self, x, source, photo, alignment):
        with self.lock:
            self.wplus, self.image = self.invert(x), x
            self.source = source
            self.photo, self.alignment = photo, alignment
            self._set_renderer()

    @torch.no_grad()
    def paste_back(self, photo=None, feather: float = 0.1):
        """The last result (or the reconstruction) pasted into the aligned photo at its full resolution
        (a PIL image; :func:`stytr.data.align.paste_back`). The code is rendered again, at the session's
        fidelity, at the generator's own resolution, so an FFHQ edit brings 1024 px of detail, not the
        encoder's 256. ``photo``: paste into this copy instead (same size; e.g. one with other faces
        already pasted)."""
        from PIL import Image

        from ..data.align import paste_back
        from ..viz import to_uint8

        self._require_image()
        if self.alignment is None:
            raise RuntimeError("paste-back needs an aligned photo: set_image(..., align=True) or set_face(...)")
        with self.lock:
            latent = self.wplus if self.result is None else self.result.latent
            full = self.renderer.render(latent, full_resolution=True)
            crop = Image.fromarray(to_uint8(full.clamp(-1, 1).cpu())[0])
            return paste_back(self.photo if photo is None else photo, crop, self.alignment, feather=feather)

    def _require_image(self):
        if self.wplus is None:
            raise RuntimeError("no image yet: call set_image(...) first")

    # -- rendering -------------------------------------------------------------------------
    def _decode(self, latent) -> torch.Tensor:
        """A W+ code or a list of S codes of the current image, rendered at the session's fidelity."""
        return self._fit(self.renderer.render(latent))[0].clamp(-1, 1).cpu()

    _render_s = _decode

    def _fit(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != self.size:
            img = F.interpolate(img, size=(self.size, self.size), mode="area" if img.shape[-1] > self.size
                                else "bilinear", align_corners=None if img.shape[-1] > self.size else False)
        return img

    def normalize_edits(self, edits: Mapping | None, method=None) -> tuple[tuple[str, float], ...]:
        """``{attribute: strength}`` -> ((name, strength), ...) without the zero strengths; names and
        strengths checked (see :meth:`attributes` and ``EditingConfig.max_strength``)."""
        allowed = self.attributes(method)
        out = []
        for attr, strength in (edits or {}).items():
            name = attribute_name(attr, self.domain.attributes)
            s = check_strength(strength, self.config.max_strength, name)
            if s == 0.0:
                continue
            if name not in allowed:
                what = f"the {Method.parse(method)} editor" if method is not None else f"domain {self.domain.name!r}"
                raise ValueError(f"{name} cannot be edited: {what} does not model it (editable: {', '.join(allowed)})")
            out.append((name, round(s, 6)))
        return tuple(out)

    def _editor(self, method) -> Editor:
        method = Method.parse(method)
        if method is Method.REFERENCE:
            raise ValueError("reference edits take a reference image: use reference_edit(image, attribute)")
        if method not in self.editors:
            raise RuntimeError(f"no {method} editor in this session (available: {', '.join(map(str, self.methods))})")
        return self.editors[method]

    def edit_latent(self, edits: Mapping | None, method=Method.LABEL_1):
        """The edited code of the current image: W+ (1, N, D), or a list of S codes for StyleSpace."""
        self._require_image()
        norm = self.normalize_edits(edits, method)
        return self._editor(method).edit_many(self.wplus, norm, G=self.renderer.generator)

    def render(self, edits: Mapping | None = None, method=Method.LABEL_1) -> torch.Tensor:
        """The current image with ``edits`` applied (3, size, size) in [-1, 1]; also kept as ``result``."""
        self._require_image()
        method = Method.parse(method)
        norm = self.normalize_edits(edits, method)
        key = (method, norm)
        with self.lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.result = hit
                return hit.image
            start = time.perf_counter()
            if not norm:      # no edit: the reconstruction, whatever the method
                latent, space, image = self.wplus, "w+", self.reconstruction
            else:
                editor = self._editor(method)
                latent = editor.edit_many(self.wplus, norm, G=self.renderer.generator)
                space = editor.space
                image = self._render_s(latent) if space == "s" else self._decode(latent)
                self.render_count += 1
            result = EditResult(image, latent, space, method, dict(norm), seconds=time.perf_counter() - start)
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self.result = result
            return image

    def reference_edit(self, ref_image, attribute, align: bool = False, landmarks=None) -> torch.Tensor:
        """Transfer ``attribute`` from ``ref_image`` (tensor / path / PIL) with the attribute's
        EditTransformer; returns the edited image and keeps it as ``result``."""
        self._require_image()
        name = attribute_name(attribute, self.domain.attributes)
        if name not in self.reference_editors:
            raise KeyError(f"no reference editor for {name!r}; editors are loaded for {sorted(self.reference_editors)}")
        ref = self.load_input(ref_image, align=align, landmarks=landmarks)
        with self.lock:
            start = time.perf_counter()
            with torch.no_grad():
                ref_w = self.model.encode(ref[None].to(self.device))
                editor = self.reference_editors[name]
                n = editor.cfg.latent_count
                src = self.wplus
                edited = editor.edit(src[:, :n], ref_w[:, :n])
                if src.shape[1] > n:
                    edited = torch.cat([edited, src[:, n:]], 1)
                image = self._decode(edited)
            self.render_count += 1
            self.result = EditResult(image, edited, "w+", Method.REFERENCE, {},
                                     reference={"attribute": name, "image": ref, "wplus": ref_w.cpu()},
                                     seconds=time.perf_counter() - start)
            return image

    # -- saving --------------------------------------------------------------------------
    def save(self, directory, side_by_side: bool = True) -> dict[str, Path]:
        """Write the last result: ``edited.png`` and ``wplus.pt`` (its code, with the source W+ and what
        was done), plus ``input.png``, ``reconstruction.png`` and ``side_by_side.png`` (input |
        reconstruction | edit). Returns the paths."""
        from ..viz import save_grid, save_image

        self._require_image()
        with self.lock:
            result = self.result
            if result is None:
                self.render({})
                result = self.result
            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            paths = {"edited": save_image(result.image, directory / "edited.png")}
            record = {"wplus": result.wplus.detach().cpu() if result.wplus is not None else None,
                      "s_codes": [s.detach().cpu() for s in result.latent] if result.space == "s" else None,
                      "space": result.space, "source_wplus": self.wplus.detach().cpu(), "method": str(result.method),
                      "edits": dict(result.edits), "source": self.source, "fidelity": str(self.fidelity)}
            if result.reference:
                record["reference"] = {"attribute": result.reference["attribute"],
                                       "wplus": result.reference["wplus"]}
            paths["wplus"] = save_atomic(record, directory / "wplus.pt")
            if side_by_side:
                paths["input"] = save_image(self.image, directory / "input.png")
                paths["reconstruction"] = save_image(self.reconstruction, directory / "reconstruction.png")
                row = [self.image, self.reconstruction, result.image]
                if result.reference:
                    row.insert(2, result.reference["image"])
                paths["side_by_side"] = save_grid(torch.stack(row), directory / "side_by_side.png", nrow=len(row))
            return paths
