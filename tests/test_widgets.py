"""The interactive editor (stytr.apps.editor.EditorApp), driven programmatically with random toy weights."""
from __future__ import annotations

import datetime
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("ipywidgets")

from stytr.checkpoints import load  # noqa: E402
from stytr.config import EditTransformerConfig, GeneratorConfig, InversionTrainConfig  # noqa: E402
from stytr.editing import Method, build_editors  # noqa: E402
from stytr.editing.session import EditSession  # noqa: E402
from stytr.toy.baselines import random_toy_session  # noqa: E402
from stytr.models.edit_transformer import EditTransformer  # noqa: E402
from stytr.models.latent_classifier import LatentClassifier  # noqa: E402
from stytr.models.inversion import build_inversion_model  # noqa: E402
from stytr.toy import render_faces  # noqa: E402
from stytr.apps.editor import EditorApp  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def session():
    return random_toy_session(seed=0)


@pytest.fixture
def app(session, tmp_path):
    return EditorApp(session, output_dir=str(tmp_path / "edits"), debounce_s=0.15, seed=3)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_slider_update_changes_preview(app):
    before = app.preview.value
    assert before and app.input_view.value and app.recon_view.value
    app.sliders["Smiling"].value = 3.0
    latency = app.update_now()
    assert latency is not None and latency == app.last_latency_s and app.last_error is None
    assert app.preview.value != before
    assert np.abs(_pixels(app.preview.value) - _pixels(before)).mean() > 0.5
    assert "ms" in app.status.value
    app.sliders["Smiling"].value = 0.0
    app.update_now()
    assert app.preview.value == app.recon_view.value      # no edit: the reconstruction


def test_debounce_collapses_a_burst(app):
    app.update_now()
    start_renders, start_session = app.render_count, app.session.render_count
    before = app.preview.value
    for i in range(20):                                   # a drag: 20 values within a few milliseconds
        app.sliders["Male"].value = 0.2 * (i + 1)
    assert app.pending
    assert app.wait(timeout=10)
    renders = app.render_count - start_renders
    assert 1 <= renders <= 2, renders
    assert app.session.render_count - start_session <= 2
    assert app.preview.value != before
    # the debounced render used the last value
    assert app.session.result.edits == {"Male": 4.0}


def test_save_button_writes_image_and_code(app, tmp_path):
    app.sliders["Eyeglasses"].value = -2.0
    app.update_now()
    app.save_button.click()
    folder = tmp_path / "edits" / "edit_000"
    for name in ("edited.png", "wplus.pt", "side_by_side.png", "input.png", "reconstruction.png"):
        assert (folder / name).is_file(), name
    record = load(folder / "wplus.pt")
    assert record["edits"] == {"Eyeglasses": -2.0} and record["wplus"].shape == (1, 10, 128)
    saved = np.asarray(Image.open(folder / "edited.png").convert("RGB")).astype(int)
    assert np.array_equal(saved, _pixels(app.preview.value))
    app.save_button.click()                                # a second save goes to a new folder
    assert (tmp_path / "edits" / "edit_001" / "edited.png").is_file()
    assert "saved" in app.status.value


def test_method_and_order_switching(app):
    assert set(app.method.options) == {("ours (label)", "ours"), ("InterFaceGAN", "interfacegan"),
                                       ("StyleSpace", "stylespace")}
    app.sliders["Smiling"].value = 2.0
    previews = {}
    for method in ("ours", "interfacegan", "stylespace"):
        app.method.value = method
        assert app.order.disabled == (method != "ours")
        app.update_now()
        assert app.last_error is None, app.last_error
        assert app.session.result.method == (Method.LABEL_1 if method == "ours" else Method(method))
        previews[method] = app.preview.value
    assert len(set(previews.values())) == 3
    app.method.value = "stylespace"
    app.update_now()
    assert app.session.result.space == "s"
    app.method.value = "ours"
    for order in (2, "hvp"):
        app.order.value = order
        app.update_now()
        assert app.session.result.method.order == order and app.last_error is None


def test_missing_methods_are_left_out(tmp_path):
    torch.manual_seed(1)
    model = build_inversion_model(InversionTrainConfig.preset("smoke").model).eval()
    clf = LatentClassifier(n_latent=10, style_dim=128, hidden=(64, 32), embed_dim=8)
    app = EditorApp(EditSession(model, build_editors(clf)), output_dir=str(tmp_path))
    assert [v for _, v in app.method.options] == ["ours"] and app.method.disabled
    assert "InterFaceGAN" in app.method_note.value and "StyleSpace" in app.method_note.value
    assert app.ref_apply is None
    assert app.apply_reference() is None and "no reference editors" in app.last_error


def test_image_sources(app, tmp_path):
    first = app.input_view.value
    app.seed.value = 11                                     # ToyFaces sample by seed
    assert app.input_view.value != first
    faces, _ = render_faces(1, seed=5, size=64)
    pic = ((faces[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(pic).save(tmp_path / "photo.png")
    app.source.value = "path"
    assert app.path in app.source_box.children
    assert app.load_path(tmp_path / "photo.png")
    assert np.abs(_pixels(app.input_view.value) - pic.astype(int)).max() <= 1
    assert not app.load_path(tmp_path / "missing.png")
    assert "not found" in app.last_error and "missing.png" in app.status.value
    buf = io.BytesIO()
    Image.fromarray(pic[:, ::-1].copy()).save(buf, format="PNG")
    app.upload.value = ({"name": "flipped.png", "type": "image/png", "size": len(buf.getvalue()),
                         "content": memoryview(buf.getvalue()),
                         "last_modified": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)},)
    assert np.abs(_pixels(app.input_view.value) - pic[:, ::-1].astype(int)).max() <= 1


def test_reference_editing(app, tmp_path):
    assert app.ref_attribute.options == ("Smiling",)
    app.ref_seed.value = 42
    ref_png = app.ref_view.value
    before = app.preview.value
    assert app.apply_reference() is not None, app.last_error
    assert app.session.result.method == "reference" and app.preview.value != before
    app.ref_apply.click()                                   # the button does the same
    assert app.last_error is None
    app.save()
    record = load(tmp_path / "edits" / "edit_000" / "wplus.pt")
    assert record["method"] == "reference" and record["reference"]["attribute"] == "Smiling"
    app.ref_seed.value = 43
    assert app.ref_view.value != ref_png
    app.sliders["Smiling"].value = 1.0                      # back to label editing
    app.update_now()
    assert app.session.result.method is Method.LABEL_1


def test_reference_editor_without_generator_from_checkpoint(session, tmp_path):
    gen = dict(GeneratorConfig.PRESETS["toy"], checkpoint="")
    cfg = EditTransformerConfig.preset("toy", generator=gen, dim_feedforward=64, n_attr=4,
                                       classifier_hidden=(32, 16), classifier_embed_dim=4)
    torch.save(EditTransformer(cfg).checkpoint_dict(), tmp_path / "editor.pt")
    loaded = EditTransformer.from_checkpoint(tmp_path / "editor.pt")
    s = EditSession(session.model, {m: session.editors[m] for m in session.methods}, {"Young": loaded})
    s.set_image(render_faces(1, seed=1, size=64)[0][0])
    out = s.reference_edit(render_faces(1, seed=2, size=64)[0][0], "young")
    assert out.shape == (3, 64, 64) and s.result.reference["attribute"] == "Young"


def test_latency_benchmark(app):
    median = app.benchmark_latency(5)
    assert 0 < median < 2.0                                  # generous: shared CI cores
    assert len(app.latencies) >= 5 and app.sliders[next(iter(app.sliders))].value == 0.0


def test_display_and_cache(app, session):
    from ipywidgets import VBox

    assert isinstance(app.widget, VBox) and hasattr(app, "_ipython_display_")
    app.sliders["Young"].value = 1.5
    app.update_now()
    n = session.render_count
    t0 = time.perf_counter()
    app.sliders["Young"].value = 0.5
    app.update_now()
    app.sliders["Young"].value = 1.5                         # seen before: served from the cache
    app.update_now()
    assert session.render_count == n + 1
    assert time.perf_counter() - t0 < 5


def test_close_frees_every_widget(session, tmp_path):
    from stytr.apps.common import widget_tree

    app = EditorApp(session, output_dir=str(tmp_path), debounce_s=5.0)
    app.sliders["Smiling"].value = 1.0                       # a render is pending ...
    assert app.pending
    widgets = widget_tree(app.widget)
    app.close()                                              # ... and is dropped with the widgets
    assert not app.pending and all(wid.comm is None for wid in widgets)


def test_slider_ranges_follow_the_domain_defaults(session, tmp_path):
    """ToyFaces' EditingConfig: label and InterFaceGAN 8, StyleSpace 10; Male x1.5, Young x0.75."""
    app = EditorApp(session, output_dir=str(tmp_path))
    assert {a: app.sliders[a].max for a in ("Smiling", "Male", "Young")} == {"Smiling": 20.0, "Male": 30.0,
                                                                             "Young": 15.0}
    assert app.sliders["Male"].min == -30.0
    app.close()
    fixed = EditorApp(session, output_dir=str(tmp_path), max_strength=4.0)
    assert {s.max for s in fixed.sliders.values()} == {4.0}
    fixed.close()
