"""Interactive attribute editor for Jupyter (ipywidgets 8).

::

    from stytr.apps.editor import EditorApp
    app = EditorApp.from_checkpoints("toy", classifier="toy")     # or EditorApp(EditSession(...))
    app.display()

Pick an image (a ToyFaces sample by seed, a file path, or an upload; dlib alignment
optional), move the attribute sliders (label-editing strengths: + toward presence,
- toward absence; each spans twice the largest default strength for its attribute
in the domain's ``EditingConfig``, unless ``max_strength`` is given), choose the edit method (ours / InterFaceGAN / StyleSpace;
methods without a model are left out and listed as unavailable) and, for ours,
the order (1 / 2 / hvp). With reference editors, pick a reference image and an
attribute and press "Apply reference". "Save" writes the edited image and its
code (``edited.png``, ``wplus.pt``, ``side_by_side.png`` ...) to a new numbered
folder under the output folder.

Slider moves are debounced (:class:`stytr.apps.common.Debouncer`): every change
restarts a timer of ``debounce_s`` (0.15 s), and only when it runs out is the
preview rendered, so dragging does not queue one generator call per intermediate
value (a drag longer than ``max_wait_s`` still refreshes that often). The render
runs on the timer's thread under the session's lock. ``update_now()`` renders
synchronously (tests, notebooks);
``last_latency_s`` is the time of the last update (edit + render + PNG encoding)
and ``benchmark_latency(n)`` their median over ``n`` uncached updates.

Every control is an attribute for programmatic driving: ``app.sliders["Smiling"]``,
``app.method``, ``app.order``, ``app.seed``, ``app.path`` + ``app.load_button``,
``app.upload``, ``app.ref_source`` / ``app.ref_seed`` / ``app.ref_attribute`` /
``app.ref_apply``, ``app.output_dir`` + ``app.save_button``, ``app.preview``,
``app.input_view``, ``app.recon_view``, ``app.status``.
"""
from __future__ import annotations

import html
import io
import statistics
import time
from pathlib import Path
from typing import Any, Mapping

import ipywidgets as w
import torch
from IPython.display import display
from PIL import Image

from ..editing import Method, build_editors
from ..editing.session import EditSession
from ..toy import render_faces
from ..toy.baselines import fit_toy_baselines
from .common import Debouncer, close_widgets, to_png

__all__ = ["EditorApp"]

METHOD_LABELS = {"ours": "ours (label)", "interfacegan": "InterFaceGAN", "stylespace": "StyleSpace"}
TOY_SAMPLE = "ToyFaces sample"


def _ui_method(method: Method) -> str:
    """The method button a session Method belongs to (the label orders share one)."""
    return "ours" if method.order is not None else str(method)


class EditorApp:
    def __init__(self, session: EditSession, references: Mapping[str, Any] | None = None, output_dir="edits",
                 max_strength: float | None = None, step: float = 0.1, debounce_s: float = 0.15, max_wait_s: float = 0.6,
                 display_size: int = 192, landmarks=None, seed: int = 0, method: str | None = None, order=1,
                 attributes=None):
        self.session = session
        self.references = dict(references or {})
        self.debouncer = Debouncer(self._update, debounce_s, max_wait_s)
        self.landmarks = landmarks
        self.last_latency_s: float | None = None
        self.latencies: list[float] = []
        self.render_count = 0          # updates that reached the preview
        self.last_saved: dict | None = None
        self.last_error: str | None = None
        self._suspend = 0              # >0: control changes do not schedule renders
        self._mode = "label"           # "label" (sliders) or "reference" (last reference edit shown)
        px = f"{int(display_size)}px"

        def image_view():
            return w.Image(format="png", width=display_size, height=display_size,
                           layout=w.Layout(width=px, height=px, object_fit="contain"))

        # -- image source ----------------------------------------------------------------
        self.source = w.ToggleButtons(options=[(TOY_SAMPLE, "toy"), ("File path", "path"), ("Upload", "upload")],
                                      value="toy", description="Image:", style={"button_width": "140px"})
        self.seed = w.IntSlider(value=seed, min=0, max=9999, description="seed", continuous_update=False)
        self.path = w.Text(placeholder="path/to/photo.png", description="file", layout=w.Layout(width="320px"))
        self.load_button = w.Button(description="Load", icon="folder-open", layout=w.Layout(width="90px"))
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.align = w.Checkbox(value=False, description="align face (dlib)", indent=False)
        self.source_box = w.HBox()
        self.input_view, self.recon_view, self.preview = image_view(), image_view(), image_view()

        # -- edit controls ---------------------------------------------------------------
        have = {_ui_method(m) for m in session.methods}
        available = [m for m in METHOD_LABELS if m in have]
        missing = [METHOD_LABELS[m] for m in METHOD_LABELS if m not in have]
        self.available_methods = available
        self.method = w.ToggleButtons(options=[(METHOD_LABELS[m], m) for m in available] or [("none", "none")],
                                      value=method if method in available else (available[0] if available else "none"),
                                      description="method", style={"button_width": "110px"},
                                      disabled=len(available) <= 1)
        self.method_note = w.HTML(f"<small>unavailable (no model): {', '.join(missing)}</small>" if missing else "")
        self.order = w.ToggleButtons(options=[("1", 1), ("2", 2), ("hvp", "hvp")], value=order, description="order",
                                     style={"button_width": "60px"})
        attrs = list(attributes) if attributes is not None else session.attributes()
        limit = {a: max_strength if max_strength is not None else self._slider_limit(a) for a in attrs}
        self.sliders = {a: w.FloatSlider(value=0.0, min=-limit[a], max=limit[a], step=step,
                                         description=a.replace("_", " "), continuous_update=True,
                                         readout_format=".1f", style={"description_width": "150px"},
                                         layout=w.Layout(width="420px"))
                        for a in attrs}
        self.reset_button = w.Button(description="Reset sliders", icon="undo", layout=w.Layout(width="140px"))
        self.output_dir = w.Text(value=str(output_dir), description="save to", layout=w.Layout(width="300px"))
        self.save_button = w.Button(description="Save", icon="save", button_style="success",
                                    layout=w.Layout(width="90px"))
        self.status = w.HTML("")

        # -- reference editing -------------------------------------------------------------
        self.ref_source = self.ref_seed = self.ref_attribute = self.ref_apply = self.ref_view = None
        ref_box = None
        if session.reference_editors:
            self.ref_source = w.Dropdown(options=list(self.references) + [TOY_SAMPLE], value=TOY_SAMPLE,
                                         description="reference")
            self.ref_seed = w.IntSlider(value=seed + 1, min=0, max=9999, description="ref seed",
                                        continuous_update=False)
            self.ref_attribute = w.Dropdown(options=list(session.reference_editors), description="attribute")
            self.ref_apply = w.Button(description="Apply reference", icon="exchange", button_style="info",
                                      layout=w.Layout(width="150px"))
            self.ref_view = image_view()
            ref_box = w.VBox([w.HTML("<b>Reference editing</b>"),
                              w.HBox([w.VBox([self.ref_source, self.ref_seed, self.ref_attribute, self.ref_apply]),
                                      w.VBox([w.Label("reference"), self.ref_view])])])
            self.ref_source.observe(lambda _: self._show_reference(), names="value")
            self.ref_seed.observe(lambda _: self._show_reference(), names="value")
            self.ref_apply.on_click(lambda _: self.apply_reference())

        # -- events ------------------------------------------------------------------------
        self.source.observe(lambda _: self._layout_source(), names="value")
        self.seed.observe(lambda _: self._on_seed(), names="value")
        self.load_button.on_click(lambda _: self.load_path())
        self.upload.observe(lambda _: self._on_upload(), names="value")
        for s in self.sliders.values():
            s.observe(self._on_slider, names="value")
        self.method.observe(lambda _: self._on_method(), names="value")
        self.order.observe(lambda _: self._on_control(), names="value")
        self.reset_button.on_click(lambda _: self.reset())
        self.save_button.on_click(lambda _: self.save())

        # -- layout ------------------------------------------------------------------------
        def titled(title, view):
            return w.VBox([w.HTML(f"<b>{title}</b>"), view])

        views = w.HBox([titled("input", self.input_view), titled("reconstruction", self.recon_view),
                        titled("edit", self.preview)])
        controls = w.VBox([self.method, self.method_note, self.order,
                           w.VBox(list(self.sliders.values()), layout=w.Layout(max_height="420px", overflow="auto")),
                           self.reset_button])
        footer = w.HBox([self.output_dir, self.save_button, self.status])
        parts = [w.VBox([self.source, self.source_box, self.align]), w.HBox([views, controls]), footer]
        if ref_box is not None:
            parts.insert(2, ref_box)
        self.widget = w.VBox(parts)
        self._layout_source()
        self._on_method()
        if session.wplus is None:
            self.load_sample(seed)
        else:
            self._show_inputs()
            self.update_now()
        if self.ref_view is not None:
            self._show_reference()

    def _slider_limit(self, attribute: str) -> float:
        """Twice the largest default strength (the session's EditingConfig) of any method for ``attribute``."""
        defaults = [self.session.default_strength(m, attribute) for m in self.session.methods]
        return min(2 * max(defaults, default=2.5), self.session.config.max_strength)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_checkpoints(cls, checkpoint="toy", classifier="toy", interfacegan=None, stylespace=None,
                         editors=None, device="cpu", fit_baselines: bool = False, **app_kwargs) -> "EditorApp":
        """Load the models (see :meth:`EditSession.for_domain`, ToyFaces; ``"toy"`` = shipped weights).
        ``fit_baselines=True`` fits InterFaceGAN and StyleSpace on toy generator samples when no files are
        given (a few seconds)."""
        session = EditSession.for_domain("toyfaces", encoder=checkpoint, classifier=classifier,
                                         interfacegan=interfacegan, stylespace=stylespace,
                                         reference_editors=editors, device=device)
        if fit_baselines and (Method.INTERFACEGAN not in session.editors or Method.STYLESPACE not in session.editors):
            ifg, ss = fit_toy_baselines(session.G)
            for m, ed in build_editors(interfacegan=ifg, stylespace=ss).items():
                session.editors.setdefault(m, ed)
        return cls(session, **app_kwargs)

    # -- display ---------------------------------------------------------------------------
    def display(self):
        display(self.widget)

    def _ipython_display_(self):
        self.display()

    def close(self):
        """Stop a pending render and close every widget of the editor."""
        self.debouncer.cancel()
        close_widgets(self.widget)

    # -- images ----------------------------------------------------------------------------
    def _layout_source(self):
        kind = self.source.value
        self.source_box.children = {"toy": [self.seed], "path": [self.path, self.load_button],
                                    "upload": [self.upload]}[kind]

    def _toy_sample(self, seed: int) -> torch.Tensor:
        size = self.session.size
        return render_faces(1, int(seed), size=size if size in (32, 64, 128) else 128)[0][0]

    def set_image(self, image, align: bool | None = None):
        """Invert a new image (tensor / path / PIL), show it and re-render the current edit."""
        align = self.align.value if align is None else align
        try:
            self.session.set_image(image, align=align, landmarks=self.landmarks)
        except Exception as err:  # shown in the status line; the previous image stays
            self._error(err)
            return False
        self._mode = "label"
        self._show_inputs()
        self.update_now()
        return True

    def load_sample(self, seed: int | None = None):
        if seed is not None and seed != self.seed.value:
            self._suspend += 1
            try:
                self.seed.value = seed
            finally:
                self._suspend -= 1
        return self.set_image(self._toy_sample(self.seed.value), align=False)

    def load_path(self, path=None):
        if path is not None:
            self.path.value = str(path)
        if not self.path.value.strip():
            self._error("type a file path first")
            return False
        return self.set_image(Path(self.path.value.strip()).expanduser())

    def _on_seed(self):
        if not self._suspend:
            self.load_sample()

    def _on_upload(self):
        if not self.upload.value:
            return
        item = self.upload.value[0]
        try:
            img = Image.open(io.BytesIO(bytes(item["content"])))
            img.load()
        except Exception as err:
            self._error(f"cannot read {item.get('name', 'upload')}: {err}")
            return
        self.set_image(img)

    def _show_inputs(self):
        self.input_view.value = to_png(self.session.image)
        self.recon_view.value = to_png(self.session.reconstruction)

    def _reference_image(self):
        choice = self.ref_source.value
        if choice == TOY_SAMPLE:
            return self._toy_sample(self.ref_seed.value)
        return self.session.load_input(self.references[choice])

    def _show_reference(self):
        if self.ref_view is None:
            return
        self.ref_seed.disabled = self.ref_source.value != TOY_SAMPLE
        try:
            self.ref_view.value = to_png(self._reference_image())
        except Exception as err:
            self._error(err)

    # -- edits -------------------------------------------------------------------------------
    def edits(self) -> dict[str, float]:
        """The slider values that are non-zero and usable with the current method."""
        return {a: s.value for a, s in self.sliders.items() if s.value != 0 and not s.disabled}

    def _supported(self, attribute: str, method: str) -> bool:
        if method not in self.available_methods:
            return False
        return attribute in self.session.attributes(self._method(method))

    def _method(self, method: str | None = None) -> Method:
        """The session's Method for the UI's method button (and, for label editing, the order)."""
        method = method or self.method.value
        if method == "ours":
            return {1: Method.LABEL_1, 2: Method.LABEL_2, "hvp": Method.LABEL_HVP}[self.order.value]
        return Method.parse(method)

    def _on_method(self):
        method = self.method.value
        self.order.disabled = method != "ours"
        for a, s in self.sliders.items():
            s.disabled = not self._supported(a, method)
        self._on_control()

    def _on_slider(self, change):
        self._mode = "label"
        self._on_control()

    def _on_control(self):
        if not self._suspend:
            self.schedule()

    def schedule(self):
        """Debounced update: (re)start the timer; the render runs when it expires."""
        self.debouncer.schedule()

    def cancel_pending(self):
        self.debouncer.cancel()

    @property
    def pending(self) -> bool:
        return self.debouncer.pending

    def wait(self, timeout: float = 5.0) -> bool:
        """Block until no debounced update is pending (True) or ``timeout`` seconds pass (False)."""
        return self.debouncer.wait(timeout)

    def update_now(self) -> float | None:
        """Render the current edit synchronously (cancelling a pending debounced one); returns the latency."""
        self.cancel_pending()
        return self._update()

    def _update(self) -> float | None:
        if self.session.wplus is None:
            return None
        start = time.perf_counter()
        try:
            with self.session.lock:
                if self._mode == "reference" and self.session.result is not None \
                        and self.session.result.method is Method.REFERENCE:
                    image = self.session.result.image
                else:
                    method = self.method.value
                    edits = self.edits() if method in self.available_methods else {}
                    image = self.session.render(edits, method=self._method()) if edits else \
                        self.session.render({}, method=Method.LABEL_1)
                self.preview.value = to_png(image)
                self.render_count += 1
        except Exception as err:
            self._error(err)
            return None
        return self._done(start, "updated")

    def _done(self, start: float, what: str) -> float:
        latency = time.perf_counter() - start
        self.last_latency_s = latency
        self.latencies.append(latency)
        self.last_error = None
        self.status.value = f"<small>{what} in {1000 * latency:.0f} ms</small>"
        return latency

    def _error(self, err):
        self.last_error = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)
        self.status.value = f"<span style='color:#b00'>{html.escape(self.last_error)}</span>"

    def reset(self):
        """All sliders back to 0 (one update)."""
        self._suspend += 1
        try:
            for s in self.sliders.values():
                s.value = 0.0
        finally:
            self._suspend -= 1
        self._mode = "label"
        self.schedule()

    def apply_reference(self, attribute: str | None = None):
        """Reference editing of ``attribute`` (default: the dropdown's) with the chosen reference."""
        if self.ref_attribute is None:
            self._error("no reference editors were given")
            return None
        if attribute is not None:
            self.ref_attribute.value = attribute
        self.cancel_pending()
        start = time.perf_counter()
        try:
            image = self.session.reference_edit(self._reference_image(), self.ref_attribute.value)
            self.preview.value = to_png(image)
            self.render_count += 1
        except Exception as err:
            self._error(err)
            return None
        self._mode = "reference"
        return self._done(start, f"reference edit ({self.ref_attribute.value})")

    # -- saving / measuring -----------------------------------------------------------------------
    def save(self, directory=None) -> dict | None:
        """Write the edit shown in the preview to a new ``edit_NNN`` folder under the output folder."""
        self.wait()
        root = Path(directory if directory is not None else self.output_dir.value).expanduser()
        k = 0
        while (root / f"edit_{k:03d}").exists():
            k += 1
        try:
            with self.session.lock:
                if self._mode != "reference" or self.session.result is None:
                    method = self.method.value
                    edits = self.edits() if method in self.available_methods else {}
                    self.session.render(edits, method=self._method() if edits else Method.LABEL_1)
                paths = self.session.save(root / f"edit_{k:03d}")
        except Exception as err:
            self._error(err)
            return None
        self.last_saved = paths
        self.status.value = f"<small>saved to {html.escape(str(root / f'edit_{k:03d}'))}</small>"
        return paths

    def benchmark_latency(self, n: int = 10, attribute: str | None = None) -> float:
        """Median latency (s) of ``n`` synchronous, uncached updates moving one slider; restores it."""
        candidates = [a for a, s in self.sliders.items() if not s.disabled]
        if not candidates:
            raise RuntimeError("no enabled attribute slider to move")
        slider = self.sliders[attribute or candidates[0]]
        old = slider.value
        times = []
        self._suspend += 1
        try:
            for i in range(n):
                slider.value = (1 if i % 2 == 0 else -1) * min(slider.max, 1.0 + 0.5 * (i % 5))
                self.session._cache.clear()
                t = self.update_now()
                if t is None:
                    raise RuntimeError(f"update failed: {self.last_error}")
                times.append(t)
            slider.value = old
        finally:
            self._suspend -= 1
        self.update_now()
        return statistics.median(times)
