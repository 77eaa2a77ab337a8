"""Image folders, CelebA attribute files, and FFHQ-style face alignment (synthetic faces, fake detectors)."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from stytr.data.align import (DetectedFace, DlibNotInstalledError, FaceModelsNotInstalledError, LandmarkDetector,
                              NoFaceError, align_face, align_photo, aligned_coordinates, detect_and_align,
                              landmarks_to_quad, order_faces, quad_from_keypoints)
from stytr.data.folders import (AttributeFileError, CelebAAttributes, CorruptImageError, EmptyFolderError,
                                ImageFolderDataset, LabelledImageFolder, load_image, write_celeba_attr_file)

# ------------------------------------------------------------------------------------------------ folders


def _save_png(path: Path, rgb, size=(20, 20), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, rgb).save(path)
    return path


def _asym_png(path: Path, size=16):
    """Left half white, right half black: shows whether an item was flipped."""
    arr = np.zeros((size, size, 3), np.uint8)
    arr[:, : size // 2] = 255
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "faces"
    _save_png(root / "a.png", (255, 0, 0))
    _save_png(root / "sub" / "b.png", 128, mode="L")                    # grayscale, in a sub-folder
    _save_png(root / "sub" / "deeper" / "c.png", (0, 0, 255, 0), mode="RGBA")  # transparent -> white
    _save_png(root / "d.jpg", (0, 255, 0), size=(30, 20))               # not square -> centre crop
    good = (root / "a.png").read_bytes()
    (root / "broken.png").write_bytes(good[: len(good) // 2])          # truncated PNG
    (root / "notes.png").write_text("this is not an image\n")          # text behind an image suffix
    noise = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(root / "cut.jpg", quality=90)
    jpeg = (root / "cut.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])             # truncated JPEG: passes verify()
    (root / "README.txt").write_text("ignored: not an image suffix\n")
    return root


def test_folder_skips_corrupt_and_non_image_files_by_path(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="stytr.data.folders"):
        ds = ImageFolderDataset(folder, size=8, return_path=True)
    # verify() at construction catches the truncated PNG and the text file ...
    assert len(ds) == 5
    assert sorted(p.name for p in ds.skipped) == ["broken.png", "notes.png"]
    for name in ("broken.png", "notes.png"):
        assert any(name in r.getMessage() and str(folder) in r.getMessage() for r in caplog.records)
    assert all(p.suffix != ".txt" for p in ds.paths)
    # ... the truncated JPEG only fails to decode, in __getitem__: reported, next item returned
    with caplog.at_level(logging.WARNING, logger="stytr.data.folders"):
        items = [ds[i] for i in range(len(ds))]
    assert sorted(p.name for p in ds.skipped) == ["broken.png", "cut.jpg", "notes.png"]
    assert any("cut.jpg" in r.getMessage() for r in caplog.records)
    assert all(path.name != "cut.jpg" for _, path in items)
    x = torch.stack([img for img, _ in items])
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    by_name = {path.name: img for img, path in items}
    assert torch.allclose(by_name["a.png"][:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.allclose(by_name["b.png"][:, 0, 0], torch.full((3,), 128 / 127.5 - 1), atol=1e-6)
    assert torch.allclose(by_name["c.png"], torch.ones(3, 8, 8))
    assert by_name["d.jpg"][1].mean() > 0.9 and by_name["d.jpg"][0].mean() < -0.9


def test_folder_lazy_decode_error_reported_and_next_item_returned(folder, caplog):
    ds = ImageFolderDataset(folder, size=8, verify=False, return_path=True)
    assert len(ds) == 7  # nothing checked up front
    bad_names = ("broken.png", "cut.jpg", "notes.png")
    with caplog.at_level(logging.WARNING, logger="stytr.data.folders"):
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]
    for img, path in items:
        assert path.name not in bad_names and img.shape == (3, 8, 8)
    assert sorted(p.name for p in ds.skipped) == list(bad_names)  # each reported once
    assert sum("broken.png" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_flip_only_in_training(tmp_path):
    _asym_png(tmp_path / "x.png")
    evals = ImageFolderDataset(tmp_path, size=16)
    assert not evals.flip and all(evals[0][0, 0, 0] == 1 for _ in range(20))
    assert not ImageFolderDataset(tmp_path, size=16, flip=True).flip  # ignored outside training
    assert not ImageFolderDataset(tmp_path, size=16, train=True, flip=False).flip
    train = ImageFolderDataset(tmp_path, size=16, train=True)
    torch.manual_seed(0)
    lefts = {float(train[0][0, 0, 0]) for _ in range(40)}
    assert lefts == {1.0, -1.0}


def test_empty_folder_and_missing_folder_errors(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("x")
    with pytest.raises(EmptyFolderError, match="empty"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(EmptyFolderError, match="x.png"):
        ImageFolderDataset(tmp_path / "bad")


def test_load_image(tmp_path):
    path = _save_png(tmp_path / "p.png", (255, 255, 255), size=(40, 40))
    x = load_image(path, 16)
    assert x.shape == (3, 16, 16) and torch.allclose(x, torch.ones_like(x))
    assert load_image(path, None).shape == (3, 40, 40)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png", 16)
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(CorruptImageError, match="c.jpg"):
        load_image(tmp_path / "c.jpg", 16)


def test_celeba_attr_round_trip_and_labelled_folder(tmp_path):
    names = [f"Attr_{i}" for i in range(40)]
    files = ["000001.png", "000002.png", "000003.png"]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (3, 40)).astype(np.float32)
    path = write_celeba_attr_file(tmp_path / "list_attr_celeba.txt", files, labels, names)
    lines = path.read_text().splitlines()
    assert lines[0] == "3" and lines[1].split() == names
    assert set(lines[2].split()[1:]) <= {"1", "-1"}
    attrs = CelebAAttributes(path)
    assert attrs.names == tuple(names) and list(attrs) == files and len(attrs) == 3
    for i, f in enumerate(files):
        assert attrs[f].dtype == torch.float32 and torch.equal(attrs[f], torch.from_numpy(labels[i]))
        assert attrs.mask(f).all()
    assert attrs.lookup("sub/000002.jpg") is not None and attrs.lookup("999.png") is None

    # unknown entries (stytr's 0) come back as mask False
    mask = np.ones(40, bool)
    mask[5:] = False
    back = CelebAAttributes(write_celeba_attr_file(tmp_path / "masked.txt", files, labels, names, mask=mask))
    assert torch.equal(back.mask(files[0]), torch.from_numpy(mask))
    assert torch.equal(back[files[0]][:5], torch.from_numpy(labels[0, :5]))

    images = tmp_path / "images"
    for f in files[:2]:
        _save_png(images / f, (10, 20, 30))
    _save_png(images / "unlabelled.png", (10, 20, 30))
    ds = LabelledImageFolder(images, path, size=8)
    assert [p.name for p in ds.unlabelled] == ["unlabelled.png"]
    img, lab, m = ds[0]
    assert img.shape == (3, 8, 8) and lab.shape == (40,) and m.shape == (40,) and m.dtype == torch.bool
    assert torch.equal(lab, torch.from_numpy(labels[0])) and m.all()
    assert not ds[2][2].any()


def test_celeba_attr_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("2\nA B\nx.png 1 -1\ny.png 1\n")
    with pytest.raises(AttributeFileError, match=r"bad.txt, line 4"):
        CelebAAttributes(bad)
    bad.write_text("3\nA B\nx.png 1 -1\n")
    with pytest.raises(AttributeFileError, match="announces 3"):
        CelebAAttributes(bad)
    bad.write_text("1\nA B\nx.png 1 2\n")
    with pytest.raises(AttributeFileError, match="-1, 0 or 1"):
        CelebAAttributes(bad)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        CelebAAttributes(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="shape"):
        write_celeba_attr_file(tmp_path / "w.txt", ["a.png"], np.zeros((1, 3)), ["A", "B"])


# ------------------------------------------------------------------------------------------------ alignment


def synthetic_landmarks(eye_left, eye_right, mouth_left, mouth_right, r=5.0):
    """68 dlib-order landmarks whose eye centres and mouth corners are the given points
    (each eye is a ring of 6 points around its centre; the rest sit at the face centre)."""
    eye_left, eye_right, mouth_left, mouth_right = (np.asarray(p, float)
                                                    for p in (eye_left, eye_right, mouth_left, mouth_right))
    lm = np.tile((eye_left + eye_right + mouth_left + mouth_right) / 4, (68, 1))
    ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang)], 1) * r
    lm[36:42] = eye_left + ring
    lm[42:48] = eye_right + ring
    for i in range(48, 55):
        lm[i] = mouth_left + (mouth_right - mouth_left) * (i - 48) / 6
    return lm


def rotate(points, centre, degrees):
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (np.asarray(points, float) - centre) @ rot.T + centre


def face_points(centre, d, degrees):
    """Eye centres and mouth corners of an upright face (eye distance d, eye-to-mouth d) rotated about ``centre``."""
    cx, cy = centre
    upright = np.array([[cx - d / 2, cy], [cx + d / 2, cy], [cx - 0.4 * d, cy + d], [cx + 0.4 * d, cy + d]])
    return rotate(upright, np.asarray(centre, float), degrees)


def draw_face(img, pts, eye_colour=(255, 0, 0), radius=5):
    draw = ImageDraw.Draw(img)
    for x, y in pts[:2]:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=eye_colour)
    draw.line([tuple(pts[2]), tuple(pts[3])], fill=(0, 0, 255), width=5)
    return img


def colour_centroids(img, colour):
    """Centroids (x, y) of pixels close to ``colour`` in the left and right halves of ``img``."""
    a = np.asarray(img).astype(int)
    hit = np.abs(a - np.array(colour)).max(axis=2) < 60
    ys, xs = np.nonzero(hit)
    half = img.size[0] / 2
    return [np.array([xs[s].mean(), ys[s].mean()]) if s.any() else None for s in (xs < half, xs >= half)]


def test_quad_orientation_and_size_for_upright_and_rotated_faces():
    pts = face_points((100, 100), 40, 0)
    quad = quad_from_keypoints(*pts)
    # upright face: axis-aligned square of side 4 * eye distance, centred 0.1 of the way to the mouth
    expected = np.array([[20, 24], [20, 184], [180, 184], [180, 24]], float)
    assert np.allclose(quad, expected)
    assert np.allclose(landmarks_to_quad(synthetic_landmarks(*pts)), expected)
    # a wide mouth distance sets the size instead (1.8 |eye_to_mouth|)
    far = quad_from_keypoints([90, 100], [110, 100], [95, 150], [105, 150])
    assert np.isclose(np.hypot(*(far[3] - far[0])), 2 * 1.8 * 50)

    for deg in (-40, 17, 90):
        quad = landmarks_to_quad(synthetic_landmarks(*face_points((100, 100), 40, deg)))
        top = quad[3] - quad[0]
        side = quad[1] - quad[0]
        assert np.isclose(np.degrees(np.arctan2(top[1], top[0])), deg)      # top edge follows the eyes
        assert np.isclose(top @ side, 0) and np.isclose(np.hypot(*top), 160) and np.isclose(np.hypot(*side), 160)
        assert top[0] * side[1] - top[1] * side[0] > 0                      # corners keep their handedness
    with pytest.raises(ValueError, match="68"):
        landmarks_to_quad(np.zeros((5, 2)))


@pytest.mark.parametrize("deg,centre,size", [(25, (200, 190), 400), (-12, (300, 260), 640)])
def test_align_rotated_synthetic_face_puts_eyes_at_canonical_positions(deg, centre, size):
    pts = face_points(centre, 80, deg)
    img = draw_face(Image.new("RGB", (size, size), (128, 128, 128)), pts)
    lm = synthetic_landmarks(*pts)
    out = align_face(img, lm, output_size=128, transform_size=512)
    assert out.size == (128, 128) and out.mode == "RGB"
    left, right = colour_centroids(out, (255, 0, 0))
    # FFHQ's canonical eye positions for this face shape: (0.375, 0.475) and (0.625, 0.475) of the side
    canonical = np.array([[0.375, 0.475], [0.625, 0.475]]) * 128 - 0.5
    assert np.allclose(left, canonical[0], atol=1.0) and np.allclose(right, canonical[1], atol=1.0)
    assert np.allclose(aligned_coordinates(pts[:2], landmarks_to_quad(lm), 128) - 0.5, canonical, atol=1e-6)
    mouth = np.mean(colour_centroids(out, (0, 0, 255)), axis=0)
    assert np.allclose(mouth, [0.5 * 128 - 0.5, 0.725 * 128 - 0.5], atol=1.5)


def test_align_padding_fills_outside_of_photo():
    # a face near the top-left corner: a third of the quad lies outside the photo
    pts = face_points((70, 60), 60, 10)
    img = draw_face(Image.new("RGB", (300, 300), (128, 128, 128)), pts)
    lm = synthetic_landmarks(*pts)
    padded = np.asarray(align_face(img, lm, 64, 256, enable_padding=True)).astype(int)
    black = np.asarray(align_face(img, lm, 64, 256, enable_padding=False)).astype(int)
    assert (black[:4, :4] == 0).all()                       # outside the photo, without padding
    assert np.abs(padded[:4, :4] - 128).max() < 20          # reflected grey, faded to the median
    left, right = colour_centroids(Image.fromarray(padded.astype(np.uint8)), (255, 0, 0))
    assert np.allclose(left, [0.375 * 64 - 0.5, 0.475 * 64 - 0.5], atol=1.0)


def _two_face_photo(tmp_path, small_score=1.0, big_score=0.5):
    img = Image.new("RGB", (400, 260), (128, 128, 128))
    small = face_points((90, 110), 40, 0)
    big = face_points((270, 100), 80, 5)
    draw_face(img, small, eye_colour=(0, 255, 0), radius=3)
    draw_face(img, big, eye_colour=(255, 0, 0), radius=5)
    path = tmp_path / "two.png"
    img.save(path)
    faces = [DetectedFace((60, 80, 120, 160), synthetic_landmarks(*small), small_score),
             DetectedFace((200, 50, 340, 210), synthetic_landmarks(*big), big_score)]
    return path, faces


def test_face_choice_most_confident_then_largest():
    lm = synthetic_landmarks(*face_points((100, 100), 40, 0))
    small, big = (0, 0, 10, 10), (0, 0, 50, 50)
    pick = lambda *faces: order_faces([DetectedFace(b, lm, s) for b, s in faces])[0]
    assert pick((small, 0.9), (big, 0.2)).bbox == small          # confidence wins over size
    assert pick((small, 0.5), (big, 0.5)).bbox == big            # a tie goes to the larger box
    assert pick((small, None), (big, None)).bbox == big          # a detector without scores: the largest
    assert pick((big, None), (small, 0.1)).bbox == small         # any score beats none


def test_align_photo_with_fake_detector(tmp_path):
    path, faces = _two_face_photo(tmp_path)
    seen = []

    def detector(arr):
        seen.append(arr.shape)
        return list(faces)

    (out,) = align_photo(path, output_size=64, detector=detector)
    assert seen == [(260, 400, 3)]
    assert out.size == (64, 64)
    assert all(c is not None for c in colour_centroids(out, (0, 255, 0)))   # the confident (green-eyed) face
    both = align_photo(path, output_size=64, all_faces=True, detector=detector)
    assert len(both) == 2
    assert all(c is not None for c in colour_centroids(both[0], (0, 255, 0)))
    assert all(c is not None for c in colour_centroids(both[1], (255, 0, 0)))
    records = detect_and_align(Image.open(path), detector, output_size=32, all_faces=True)
    assert [r.face.score for r in records] == [1.0, 0.5]
    assert all(r.detections == records[0].detections for r in records) and records[0].source_size == (400, 260)
    assert np.allclose(records[1].quad, faces[1].quad)
    _, tied = _two_face_photo(tmp_path, 0.7, 0.7)
    (rec,) = detect_and_align(Image.open(path), lambda arr: tied, output_size=32)
    assert rec.face.bbox == tied[1].bbox                                   # equal scores: the larger face

    with pytest.raises(NoFaceError, match="two.png"):
        align_photo(path, detector=lambda arr: [])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        align_photo(tmp_path / "missing.jpg", detector=detector)
    assert issubclass(NoFaceError, ValueError)


def test_landmark_detector_errors_name_the_align_extra(tmp_path, monkeypatch):
    import importlib.util
    import sys

    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail even where it is installed
    with pytest.raises(DlibNotInstalledError, match=r'pip install -e "\.\[align\]"'):
        LandmarkDetector()
    monkeypatch.undo()

    pytest.importorskip("dlib")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a))
    with pytest.raises(FaceModelsNotInstalledError, match=r'shape_predictor_68_face_landmarks.dat.*\.\[align\]'):
        LandmarkDetector()
    monkeypatch.undo()
    missing = tmp_path / "models" / "shape_predictor_68_face_landmarks.dat"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        LandmarkDetector(missing)


@pytest.fixture(scope="module")
def astronaut():
    """scikit-image's 512 x 512 portrait of Eileen Collins (face in the upper middle); needs dlib too."""
    pytest.importorskip("dlib")
    skdata = pytest.importorskip("skimage.data")
    return skdata.astronaut()


def test_landmark_detector_with_an_explicit_predictor_file(tmp_path, astronaut):
    """``predictor_path`` still takes another landmark model: a tiny one trained here on one picture
    (the bundled 68-point model is tested on the same photo in test_align_real.py)."""
    import dlib

    img = astronaut
    box = (179, 83, 266, 170)  # the HOG detector's box for this face (upsample=0)
    w = box[2] - box[0]
    template = synthetic_landmarks([0.3, 0.4], [0.7, 0.4], [0.35, 0.78], [0.65, 0.78], r=0.04)
    parts = [dlib.point(int(round(box[0] + w * x)), int(round(box[1] + w * y))) for x, y in template]
    opts = dlib.shape_predictor_training_options()
    opts.tree_depth, opts.cascade_depth, opts.num_trees_per_cascade_level = 2, 2, 2
    opts.oversampling_amount, opts.num_threads = 2, 1
    predictor = dlib.train_shape_predictor([img], [[dlib.full_object_detection(dlib.rectangle(*box), parts)]], opts)
    dat = tmp_path / "tiny_68.dat"
    predictor.save(str(dat))
    photo = tmp_path / "astronaut.png"
    Image.fromarray(img).save(photo)

    faces = LandmarkDetector(dat)(img)
    assert faces and faces[0].landmarks.shape == (68, 2)
    left, top, right, bottom = faces[0].bbox
    assert np.all((faces[0].landmarks >= [left - 20, top - 20]) & (faces[0].landmarks <= [right + 20, bottom + 20]))
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)   # dlib's order
    assert not np.allclose(faces[0].landmarks, LandmarkDetector()(img)[0].landmarks)    # the file was used
    (out,) = align_photo(photo, predictor_path=dat, output_size=64)
    assert out.size == (64, 64) and out.mode == "RGB"
    assert len(align_photo(photo, predictor_path=dat, output_size=32, all_faces=True)) == len(faces)
