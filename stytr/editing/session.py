"""One photo, many edits: invert once, then render label / baseline / reference edits on demand.

:class:`EditSession` is what the ``edit`` command and the interactive editor
(:class:`stytr.widgets.EditorApp`) share::

    session = EditSession.from_checkpoints("toy", classifier="toy")
    session.set_image("photo.png")                   # or a tensor / PIL image; align=True runs dlib first
    img = session.render({"Smiling": 3, "Eyeglasses": -2}, method="ours", order=1)
    session.save("out/")                             # edited.png, wplus.pt (+ input, reconstruction, side by side)

Strengths are signed: ``+s`` moves the attribute toward presence (target 1),
``-s`` toward absence (target 0), with step ``|s|``; several edits are applied one
after the other, in the dict's order. ``method`` is ``"ours"`` (label editing with
the latent classifier, ``order`` 1, 2 or ``"hvp"``), ``"interfacegan"`` (signed
step along the boundary normal) or ``"stylespace"`` (the attribute's top style
channel; its edited code lives in S). Rendering uses the generator's stored noise
so that edits compare pixel to pixel. Results are cached per (method, order,
edits) for the current image, so moving a slider back to a value seen before costs
nothing.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from ..attributes import CELEBA_ATTRIBUTES, attribute_index
from ..checkpoints import CheckpointError, save_atomic
from .interfacegan import InterFaceGAN
from .label import label_edit
from .stylespace import StyleSpace

__all__ = ["EditSession", "EditResult", "METHODS", "ORDERS", "load_classifier", "load_toy_classifier",
           "fit_toy_baselines", "random_toy_session", "edit_photo", "TOY_CLASSIFIER_FILE"]

METHODS = ("ours", "interfacegan", "stylespace")
ORDERS = (1, 2, "hvp")
TOY_CLASSIFIER_FILE = "toyfaces_latent_classifier.safetensors"


def _parse_order(order):
    if isinstance(order, str) and order.isdigit():
        order = int(order)
    if order not in ORDERS:
        raise ValueError(f"order must be 1, 2 or 'hvp', got {order!r}")
    return order


class EditResult:
    """One rendered edit: ``image`` (3, H, W) in [-1, 1], ``latent`` (W+ (1, N, D), or the list of S codes
    when ``space == 's'``), and what produced it."""

    def __init__(self, image: torch.Tensor, latent, space: str, method: str, order, edits: dict,
                 reference: dict | None = None, seconds: float = 0.0):
        self.image, self.latent, self.space = image, latent, space
        self.method, self.order, self.edits, self.reference = method, order, dict(edits), reference
        self.seconds = seconds

    @property
    def wplus(self) -> torch.Tensor | None:
        return self.latent if self.space == "w+" else None

    def __repr__(self) -> str:
        what = f"reference={self.reference}" if self.reference else f"edits={self.edits}"
        return f"EditResult(method={self.method!r}, order={self.order!r}, {what})"


class EditSession:
    """An inversion model plus the editors that are available for it.

    ``classifier``: a :class:`~stytr.models.latent_classifier.LatentClassifier` (label editing, "ours");
    ``interfacegan``: an :class:`~stytr.editing.interfacegan.InterFaceGAN`; ``stylespace``: a
    :class:`~stytr.editing.stylespace.StyleSpace`; ``editors``: ``{attribute: EditTransformer}`` for
    reference editing. ``attributes`` lists the attributes offered (default: the classifier's, or for a
    toy-sized model the ToyFaces attributes it knows). ``seed`` fixes order 2's random probe.
    """

    def __init__(self, model, classifier=None, interfacegan: InterFaceGAN | None = None,
                 stylespace: StyleSpace | None = None, editors: Mapping[str, Any] | None = None,
                 attributes=None, seed: int = 0, cache_size: int = 64, conditioned_on=None):
        if getattr(model, "decoder", None) is None:
            raise ValueError("EditSession needs an inversion model with its generator (build_generator=True)")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        if self.classifier is not None:
            self.classifier.requires_grad_(False)
        self.interfacegan, self.stylespace = interfacegan, stylespace
        if self.stylespace is not None and self.stylespace.generator is None:
            self.stylespace.generator = self.G
        self.editors = {_lenient_name(a): e.eval() for a, e in (editors or {}).items()}
        self.conditioned_on = list(conditioned_on or [])
        self.seed, self.cache_size = seed, cache_size
        self.attributes = list(attributes) if attributes is not None else self._default_attributes()
        self.lock = threading.RLock()
        self._cache: OrderedDict = OrderedDict()
        self.image = self.wplus = self.reconstruction = None
        self.source = None
        self.result: EditResult | None = None
        self.render_count = 0           # renders that ran the generator (cache misses)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_checkpoints(cls, checkpoint="toy", classifier=None, interfacegan=None, stylespace=None,
                         editors: Mapping[str, Any] | None = None, device="cpu", **kwargs) -> "EditSession":
        """Load everything from files: ``checkpoint`` / ``classifier`` may be ``"toy"`` (the shipped
        ToyFaces weights); ``interfacegan`` / ``stylespace`` are files written by their ``save``;
        ``editors`` maps attributes to EditTransformer checkpoints. Missing files raise
        FileNotFoundError or :class:`~stytr.checkpoints.CheckpointError` naming them."""
        from ..inference import load_inversion_model

        model = _load_inversion(checkpoint, device, load_inversion_model)
        clf = load_classifier(classifier, model, device) if classifier else None
        ifg = InterFaceGAN.load(interfacegan) if interfacegan else None
        ss = StyleSpace.load(stylespace, generator=model.decoder) if stylespace else None
        eds = {}
        for attr, path in (editors or {}).items():
            eds[attr] = load_editor(path, classifier if _is_file(classifier) else None, device, attribute=attr)
        return cls(model, clf, ifg, ss, eds, **kwargs)

    def _default_attributes(self) -> list[str]:
        names = None
        for source in (self.classifier, self.interfacegan, self.stylespace):
            if source is not None:
                names = list(source.attribute_names)
                break
        if names is None:
            names = list(self.editors) or list(CELEBA_ATTRIBUTES)
        if list(names) == list(CELEBA_ATTRIBUTES) and self.model.cfg.style_dim == 128:
            from ..toy import ATTRIBUTES as TOY_ATTRIBUTES   # a toy-sized model: the attributes ToyFaces models

            names = list(TOY_ATTRIBUTES)
        return names

    @property
    def G(self):
        return self.model.decoder

    @property
    def size(self) -> int:
        return int(self.model.cfg.input_size)

    @property
    def methods(self) -> dict[str, bool]:
        """Which edit methods have their model: ``{"ours": bool, "interfacegan": bool, "stylespace": bool}``."""
        return {"ours": self.classifier is not None, "interfacegan": self.interfacegan is not None,
                "stylespace": self.stylespace is not None}

    # -- the image -------------------------------------------------------------------------
    def load_input(self, image, align: bool = False, landmarks=None, detector=None) -> torch.Tensor:
        """Any image source -> (3, size, size) in [-1, 1]: a tensor ((3, H, W) or (1, 3, H, W), values in
        [-1, 1]), a path or a PIL image. ``align=True`` runs FFHQ alignment (dlib, ``landmarks`` = the
        68-point ``.dat``); otherwise the picture is centre-cropped and resized."""
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
            return x.clamp(-1, 1)
        if isinstance(image, Image.Image):
            if align:
                from ..data.align import detect_and_align

                image = detect_and_align(image, detector, output_size=size, name="the picture",
                                         predictor_path=landmarks)[0].image
            return pil_to_tensor(image, size)
        if isinstance(image, (str, os.PathLike)):
            path = Path(image).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"input image not found: {path}")
            if align:
                from ..data.align import align_photo

                aligned = align_photo(path, predictor_path=landmarks, output_size=size, detector=detector)
                return pil_to_tensor(aligned[0], size)
            return load_image(path, size)
        raise TypeError(f"set_image takes a tensor, a path or a PIL image, not {type(image).__name__}")

    @torch.no_grad()
    def invert(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, size, size) -> (W+ (1, N, D), reconstruction (3, size, size))."""
        w = self.model.encode(x[None].to(self.device))
        return w, self._decode(w)

    def set_image(self, image, align: bool = False, landmarks=None, detector=None) -> torch.Tensor:
        """Load (and optionally align) ``image``, invert it; returns the reconstruction (3, size, size)."""
        x = self.load_input(image, align=align, landmarks=landmarks, detector=detector)
        with self.lock:
            self.wplus, self.reconstruction = self.invert(x)
            self.image = x
            self.source = str(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__
            self._cache.clear()
            self.result = None
        return self.reconstruction

    def _require_image(self):
        if self.wplus is None:
            raise RuntimeError("no image yet: call set_image(...) first")

    # -- rendering -------------------------------------------------------------------------
    def _decode(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            img = self.model.decode(w, resize=True, randomize_noise=False)
        return self._fit(img)[0].clamp(-1, 1).cpu()

    def _render_s(self, s_codes) -> torch.Tensor:
        with torch.no_grad():
            img = self.G.synthesize_s(s_codes, randomize_noise=False)
            img = self.model.face_pool(img)
        return self._fit(img)[0].clamp(-1, 1).cpu()

    def _fit(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != self.size:
            img = F.interpolate(img, size=(self.size, self.size), mode="area" if img.shape[-1] > self.size
                                else "bilinear", align_corners=None if img.shape[-1] > self.size else False)
        return img

    def normalize_edits(self, edits: Mapping | None) -> tuple[tuple[str, float], ...]:
        """``{attribute: strength}`` -> ((name, strength), ...) without the zero strengths, names checked."""
        out = []
        for attr, strength in (edits or {}).items():
            s = float(strength)
            if s != 0.0:
                out.append((attribute_name(attr, self._names()), round(s, 6)))
        return tuple(out)

    def _names(self):
        for source in (self.classifier, self.interfacegan, self.stylespace):
            if source is not None:
                return source.attribute_names
        return CELEBA_ATTRIBUTES

    def edit_latent(self, edits: Mapping | None, method: str = "ours", order=1):
        """The edited code of the current image: W+ (1, N, D), or a list of S codes for StyleSpace."""
        self._require_image()
        edits = self.normalize_edits(edits)
        method = method.lower()
        w = self.wplus
        if method == "ours":
            order = _parse_order(order)
            if edits and self.classifier is None:
                raise RuntimeError("label editing ('ours') needs a latent classifier")
            for attr, s in edits:
                gen = torch.Generator().manual_seed(self.seed) if order == 2 else None
                with torch.enable_grad():
                    w = label_edit(w, self.classifier, attr, target=1 if s > 0 else 0, alpha=abs(s), order=order,
                                   generator=gen).detach()
            return w
        if method == "interfacegan":
            if self.interfacegan is None:
                raise RuntimeError("InterFaceGAN editing needs a fitted InterFaceGAN model")
            for attr, s in edits:
                others = [a for a in self.conditioned_on if attribute_name(a, self._names()) != attr]
                w = self.interfacegan.edit(w, attr, s, conditioned_on=others or None)
            return w
        if method == "stylespace":
            if self.stylespace is None:
                raise RuntimeError("StyleSpace editing needs a fitted StyleSpace model")
            with torch.no_grad():
                s_codes = self.G.w_to_s(w)
                for attr, s in edits:
                    s_codes = self.stylespace.edit_s(s_codes, attr, s)
            return s_codes
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    def render(self, edits: Mapping | None = None, method: str = "ours", order=1) -> torch.Tensor:
        """The current image with ``edits`` applied (3, size, size) in [-1, 1]; also kept as ``result``."""
        self._require_image()
        method = method.lower()
        order = _parse_order(order) if method == "ours" else None
        norm = self.normalize_edits(edits)
        key = (method, order, norm)
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
                latent = self.edit_latent(dict(norm), method, order if order is not None else 1)
                space = "s" if method == "stylespace" else "w+"
                image = self._render_s(latent) if space == "s" else self._decode(latent)
                self.render_count += 1
            result = EditResult(image, latent, space, method, order, dict(norm),
                                seconds=time.perf_counter() - start)
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self.result = result
            return image

    def reference_edit(self, ref_image, attribute, align: bool = False, landmarks=None) -> torch.Tensor:
        """Transfer ``attribute`` from ``ref_image`` (tensor / path / PIL) with the attribute's
        EditTransformer; returns the edited image and keeps it as ``result``."""
        self._require_image()
        name = attribute_name(attribute, list(self.editors) + list(CELEBA_ATTRIBUTES))
        if name not in self.editors:
            raise KeyError(f"no reference editor for {name!r}; editors are loaded for {sorted(self.editors)}")
        ref = self.load_input(ref_image, align=align, landmarks=landmarks)
        with self.lock:
            start = time.perf_counter()
            with torch.no_grad():
                ref_w = self.model.encode(ref[None].to(self.device))
                editor = self.editors[name]
                n = editor.cfg.latent_count
                src = self.wplus
                edited = editor.edit(src[:, :n], ref_w[:, :n])
                if src.shape[1] > n:
                    edited = torch.cat([edited, src[:, n:]], 1)
                image = self._decode(edited)
            self.render_count += 1
            self.result = EditResult(image, edited, "w+", "reference", None, {},
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
                      "space": result.space, "source_wplus": self.wplus.detach().cpu(), "method": result.method,
                      "order": result.order, "edits": dict(result.edits), "source": self.source}
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


# -- helpers -----------------------------------------------------------------------------

def attribute_name(attribute, names=CELEBA_ATTRIBUTES) -> str:
    """A checked attribute name (index or loosely spelled name -> the canonical name)."""
    return list(names)[attribute_index(attribute, names)]


def _lenient_name(attribute) -> str:
    try:
        return attribute_name(attribute)
    except KeyError:
        return str(attribute)


def _is_file(spec) -> bool:
    return bool(spec) and str(spec) != "toy" and not isinstance(spec, torch.nn.Module)


def _load_inversion(checkpoint, device, loader):
    if isinstance(checkpoint, torch.nn.Module):
        return checkpoint.to(device).eval()
    if str(checkpoint) != "toy" and not Path(checkpoint).expanduser().exists():
        raise FileNotFoundError(f"inversion checkpoint not found: {checkpoint}")
    try:
        return loader(checkpoint, device=device)
    except (CheckpointError, ImportError, ModuleNotFoundError) as err:
        if str(checkpoint) == "toy":
            raise CheckpointError(f"--checkpoint toy needs the shipped ToyFaces encoder "
                                  f"(data/toyfaces_style_transformer.safetensors, written by the toy inversion run); "
                                  f"it could not be loaded: {err}") from err
        raise


def load_toy_classifier(device="cpu"):
    """The shipped ToyFaces latent classifier (``data/toyfaces_latent_classifier.safetensors``); a
    CheckpointError says what is missing and which command writes it."""
    from ..checkpoints import data_dir
    from ..models.latent_classifier import LatentClassifier

    path = data_dir() / TOY_CLASSIFIER_FILE
    if not path.is_file():
        raise CheckpointError(f"the shipped ToyFaces latent classifier is missing: expected {path} "
                              f"(python -m stytr train-latent-classifier --preset toy --ship writes it), "
                              f"or pass a classifier checkpoint path")
    return LatentClassifier.from_checkpoint(path, map_location=device).to(device).eval()


def load_classifier(spec, model=None, device="cpu"):
    """A latent classifier from ``"toy"``, a checkpoint path or an already built module."""
    from ..models.latent_classifier import LatentClassifier

    if isinstance(spec, torch.nn.Module):
        return spec.to(device).eval()
    if str(spec) == "toy":
        return load_toy_classifier(device)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"latent classifier checkpoint not found: {path}")
    style_dim = model.cfg.style_dim if model is not None else None
    return LatentClassifier.from_checkpoint(path, style_dim=style_dim, map_location=device).to(device).eval()


def load_editor(spec, classifier_path=None, device="cpu", attribute=None):
    """A reference-editing EditTransformer from a checkpoint path, a module, or ``"toy"`` (the shipped
    ToyFaces editor for ``attribute``)."""
    from ..models.edit_transformer import EditTransformer

    if isinstance(spec, torch.nn.Module):
        return spec.to(device).eval()
    if spec == "toy":
        from ..toy.reference_editor import load_reference_editor

        if attribute is None:
            raise ValueError("load_editor('toy') needs the attribute whose shipped editor to load")
        return load_reference_editor(attribute_name(attribute), device=device)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"reference editor checkpoint not found: {path}")
    try:
        return EditTransformer.from_checkpoint(path, device=device)
    except CheckpointError as err:
        if "classifier" in str(err) and classifier_path is not None:
            return EditTransformer.from_checkpoint(path, classifier_path=classifier_path, device=device)
        raise


@torch.no_grad()
def fit_toy_baselines(G, n: int = 2000, seed: int = 0, attributes=None) -> tuple[InterFaceGAN, StyleSpace]:
    """InterFaceGAN and StyleSpace for a ToyFaces generator, fitted on ``n`` samples ``w = G.style(z)``
    with the exact labels ``labels_z(z)`` (the toy generator copies the renderer, so they hold for
    ``G(z)``). Takes a few seconds on a CPU."""
    from ..toy import ATTRIBUTES as TOY_ATTRIBUTES
    from ..toy import attribute_mask, labels_z, sample_z

    z = torch.from_numpy(sample_z(n, seed, G.style_dim)).float()
    labels = torch.from_numpy(labels_z(z.numpy())).float()
    device = next(G.parameters()).device
    w = torch.cat([G.style(z[i:i + 500].to(device)).cpu() for i in range(0, n, 500)])
    wplus = w[:, None].expand(-1, G.n_latent, -1)
    attrs = list(attributes or TOY_ATTRIBUTES)
    mask = attribute_mask()
    ifg = InterFaceGAN.fit(w, labels, mask=mask, attributes=attrs)
    ss = StyleSpace.fit(G, wplus, labels, mask=mask)
    return ifg, ss


def random_toy_session(seed: int = 0, baselines: bool = True, editors=("Smiling",), tiny: bool = True,
                       **kwargs) -> EditSession:
    """An :class:`EditSession` of *untrained* toy-configuration models (random weights): for tests
    and for the notebook before the shipped weights exist. ``tiny`` uses the smoke trunk (one
    residual unit per stage). The edits it renders are meaningless, only the machinery is real."""
    from ..config import EditTransformerConfig, GeneratorConfig, InversionConfig, InversionTrainConfig
    from ..models.edit_transformer import EditTransformer
    from ..models.latent_classifier import LatentClassifier
    from ..models.style_transformer import build_inversion_model

    torch.manual_seed(seed)
    gen = dict(GeneratorConfig.PRESETS["toy"], checkpoint="")
    cfg = InversionTrainConfig.preset("smoke").model if tiny else InversionConfig.preset("toy", generator=gen)
    model = build_inversion_model(cfg).eval()
    with torch.no_grad():
        model.set_latent_avg(model.decoder.mean_latent(1000))
    classifier = LatentClassifier(n_latent=cfg.n_latent, style_dim=cfg.style_dim, hidden=(64, 32), embed_dim=8)
    ifg = ss = None
    if baselines:   # random boundaries (fitting would only import the L-BFGS machinery for nothing)
        from ..toy import attribute_mask, labels_z, sample_z

        fitted = attribute_mask()
        normals = torch.nn.functional.normalize(torch.randn(len(CELEBA_ATTRIBUTES), cfg.style_dim), dim=1)
        ifg = InterFaceGAN(normals * fitted[:, None], torch.zeros(len(CELEBA_ATTRIBUTES)), fitted)
        z = sample_z(512, seed, cfg.style_dim)
        with torch.no_grad():
            w = model.decoder.style(torch.from_numpy(z).float())[:, None].expand(-1, model.decoder.n_latent, -1)
        ss = StyleSpace.fit(model.decoder, w, torch.from_numpy(labels_z(z)).float(), mask=fitted)
    eds = {}
    for attr in editors or ():
        ecfg = EditTransformerConfig.preset("toy", generator=gen, dim_feedforward=64, classifier_hidden=(64, 32),
                                            classifier_embed_dim=8)
        eds[attr] = EditTransformer(ecfg, build_generator=False, build_classifier=False).eval()
    return EditSession(model, classifier, ifg, ss, eds, seed=seed, **kwargs)


# -- the `edit` command ------------------------------------------------------------------

def edit_photo(checkpoint, input, output, attributes=("Smiling",), alphas=(3.0,), order=1, method="ours",
               classifier=None, interfacegan=None, stylespace=None, reference=None, editor=None,
               align: bool = False, landmarks=None, device="cpu") -> dict:
    """(align ->) invert -> edit -> save; what ``python -m stytr edit`` runs. Returns a report dict."""
    attributes = list(attributes) if not isinstance(attributes, str) else [attributes]
    alphas = [float(a) for a in ([alphas] if np.isscalar(alphas) else alphas)]
    if len(alphas) == 1 and len(attributes) > 1:
        alphas = alphas * len(attributes)
    if len(alphas) != len(attributes):
        raise ValueError(f"{len(attributes)} attribute(s) but {len(alphas)} alpha value(s)")
    input_path = Path(input).expanduser()
    if not input_path.exists():
        raise FileNotFoundError(f"input photo not found: {input_path}")
    if reference is not None and not Path(reference).expanduser().exists():
        raise FileNotFoundError(f"reference photo not found: {reference}")
    if reference is not None and editor is None:
        raise ValueError("--reference needs --editor (a reference-editing EditTransformer checkpoint)")
    method = method.lower()
    if reference is None and method == "ours" and classifier is None:
        raise ValueError("label editing (--method ours) needs --classifier (a checkpoint, or 'toy')")
    if method == "interfacegan" and interfacegan is None:
        raise ValueError("--method interfacegan needs --interfacegan (a file written by InterFaceGAN.save)")
    if method == "stylespace" and stylespace is None:
        raise ValueError("--method stylespace needs --stylespace (a file written by StyleSpace.save)")
    for what, spec in (("latent classifier checkpoint", classifier), ("InterFaceGAN file", interfacegan),
                       ("StyleSpace file", stylespace), ("reference editor checkpoint", editor)):
        if _is_file(spec) and not Path(spec).expanduser().is_file():
            raise FileNotFoundError(f"{what} not found: {Path(spec).expanduser()}")
    editors = {attributes[0]: editor} if editor is not None else None
    session = EditSession.from_checkpoints(checkpoint, classifier=classifier, interfacegan=interfacegan,
                                           stylespace=stylespace, editors=editors, device=device)
    session.set_image(input_path, align=align, landmarks=landmarks)
    if reference is not None:
        session.reference_edit(Path(reference).expanduser(), attributes[0], align=align, landmarks=landmarks)
        edits = {}
    else:
        edits = dict(zip(attributes, alphas))
        session.render(edits, method=method, order=order)
    paths = session.save(output)
    mse = ((session.image - session.reconstruction) ** 2).mean().item()
    return {"output": str(output), "paths": {k: str(v) for k, v in paths.items()}, "edits": edits,
            "method": "reference" if reference is not None else method, "reconstruction_mse": mse}
