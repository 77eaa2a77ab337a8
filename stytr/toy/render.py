"""ToyFaces: procedural cartoon faces parameterised by a standard Gaussian vector.

``render_z(z)`` reads the first :data:`N_FACTORS` coordinates of each z. Every
continuous factor is a fixed monotone function of one coordinate (through the
normal CDF), every binary attribute a threshold on one coordinate, and the
thresholds of some attributes depend on others (Goatee only on male faces,
Gray_Hair mostly on old ones, ...), which gives the domain CelebA-like
correlations. Because the image is a deterministic function of z, ``labels_z(z)``
gives exact labels for any z, including the z of a generator trained to copy the
renderer.

Shapes are drawn as signed-distance fields whose pixel coverage anti-aliases every
edge (optionally on a larger grid averaged down); a whole batch is drawn at once
with numpy and small features only where they can be, so rendering is cheap
enough to feed a trainer online.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from ..attributes import CELEBA_ATTRIBUTES

# Coordinate of z that drives each factor.
FACTORS = {
    "bg_hue": 0, "bg_light": 1, "skin_tone": 2, "face_width": 3, "face_height": 4, "face_dx": 5, "face_dy": 6,
    "hair_colour": 7, "eye_spacing": 8, "eye_size": 9, "mouth_width": 10, "brow_shape": 11,
    "male": 12, "smiling": 13, "mouth_open": 14, "bangs": 15, "eyeglasses": 16, "goatee": 17, "young": 18,
    "gray_hair": 19, "pale_skin": 20, "lipstick": 21, "iris_colour": 22, "shirt_colour": 23,
}
N_FACTORS = 24

# The CelebA attributes ToyFaces models, in CelebA order.
ATTRIBUTES = [a for a in CELEBA_ATTRIBUTES if a in {
    "Bangs", "Black_Hair", "Blond_Hair", "Eyeglasses", "Goatee", "Gray_Hair", "Male", "Mouth_Slightly_Open",
    "No_Beard", "Pale_Skin", "Smiling", "Wearing_Lipstick", "Young"}]
ATTRIBUTE_MASK = np.array([a in ATTRIBUTES for a in CELEBA_ATTRIBUTES], dtype=bool)

# For each attribute, the others that an edit of it may legitimately change, because the
# labelling rules in binary_factors tie them together: a label that is a function of the
# edited attribute's coordinate (Goatee and Wearing_Lipstick depend on "male"; the Bangs
# threshold too), or a condition the edit cannot meet without changing (a goatee needs a
# male face). Keep rates of edits are measured over the other attributes only.
ENTAILED = {
    "Male": ("Bangs", "Goatee", "No_Beard", "Wearing_Lipstick"),
    "Young": ("Black_Hair", "Blond_Hair", "Eyeglasses", "Gray_Hair"),
    "Smiling": ("Mouth_Slightly_Open",),
    "Mouth_Slightly_Open": ("Smiling",),
    "Goatee": ("Male", "No_Beard", "Wearing_Lipstick", "Bangs"),
    "No_Beard": ("Male", "Goatee", "Wearing_Lipstick", "Bangs"),
    "Wearing_Lipstick": ("Male", "Goatee", "No_Beard", "Bangs"),
    "Gray_Hair": ("Black_Hair", "Blond_Hair", "Young"),
    "Black_Hair": ("Blond_Hair", "Gray_Hair"),
    "Blond_Hair": ("Black_Hair", "Gray_Hair"),
    "Eyeglasses": (),
    "Bangs": (),
    "Pale_Skin": (),
}
SIZES = (32, 64, 128)


def _u(z: np.ndarray, name: str) -> np.ndarray:
    """The factor's coordinate mapped to (0, 1) by the standard normal CDF."""
    return ndtr(z[:, FACTORS[name]])


def _c(z: np.ndarray, name: str) -> np.ndarray:
    return z[:, FACTORS[name]]


def _as_z(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] < N_FACTORS:
        raise ValueError(f"z must be (N, D) with D >= {N_FACTORS}, got shape {z.shape}")
    return z


def binary_factors(z) -> dict[str, np.ndarray]:
    """The binary attributes as boolean arrays; the thresholds encode the correlations."""
    z = _as_z(z)
    male = _c(z, "male") > 0.0
    young = _c(z, "young") > -0.75                              # ~77 % young
    smiling = _c(z, "smiling") > 0.0
    # An open mouth is far more common in a smile, as in CelebA.
    mouth_open = _c(z, "mouth_open") > np.where(smiling, 0.2, 1.3)
    bangs = _c(z, "bangs") > np.where(male, 1.4, 0.6)          # mostly on women
    eyeglasses = _c(z, "eyeglasses") > np.where(young, 1.2, 0.5)
    goatee = male & (_c(z, "goatee") > 0.3)                     # only men
    gray_hair = _c(z, "gray_hair") > np.where(young, 2.0, -0.3)  # mostly the old
    pale_skin = _c(z, "pale_skin") > 1.1
    lipstick = ~male & (_c(z, "lipstick") > -0.2)
    hair = _u(z, "hair_colour")
    black_hair = ~gray_hair & (hair < 0.3)
    blond_hair = ~gray_hair & (hair > 0.72)
    return dict(Male=male, Young=young, Smiling=smiling, Mouth_Slightly_Open=mouth_open, Bangs=bangs,
                Eyeglasses=eyeglasses, Goatee=goatee, No_Beard=~goatee, Gray_Hair=gray_hair, Pale_Skin=pale_skin,
                Wearing_Lipstick=lipstick, Black_Hair=black_hair, Blond_Hair=blond_hair)


def labels_z(z) -> np.ndarray:
    """Exact CelebA-ordered labels (N, 40) in {0, 1}; unmodelled attributes are 0 (see ATTRIBUTE_MASK)."""
    z = _as_z(z)
    labels = np.zeros((z.shape[0], len(CELEBA_ATTRIBUTES)), dtype=np.float32)
    for name, value in binary_factors(z).items():
        labels[:, CELEBA_ATTRIBUTES.index(name)] = value
    return labels


# -- signed-distance drawing ----------------------------------------------------

class _Canvas:
    """A batch of RGB images on the oversampled grid, with coordinates in [-1, 1]."""

    def __init__(self, n: int, size: int, background: np.ndarray):
        self.n, self.size = n, size
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        self.y, self.x = axis[None, :, None], axis[None, None, :]
        self.px = 2.0 / size
        self.img = np.broadcast_to(background[:, None, None, :], (n, size, size, 3)).astype(np.float32).copy()

    def window(self, y0, y1, x0, x1) -> "_Canvas":
        """A view onto the rows/columns covering [y0, y1] x [x0, x1] in every sample of the batch.

        Small features are evaluated only there, which is most of the renderer's speed."""
        def index(lo, hi):
            a = int(np.clip(np.floor((np.min(lo) + 1) / self.px) - 1, 0, self.size))
            b = int(np.clip(np.ceil((np.max(hi) + 1) / self.px) + 1, 0, self.size))
            return a, max(b, a)
        (r0, r1), (c0, c1) = index(y0, y1), index(x0, x1)
        view = object.__new__(_Canvas)
        view.n, view.size, view.px = self.n, self.size, self.px
        view.y, view.x = self.y[:, r0:r1], self.x[:, :, c0:c1]
        view.img = self.img[:, r0:r1, c0:c1]
        return view

    def coverage(self, d: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - d / self.px, 0.0, 1.0)

    def paint(self, d: np.ndarray, colour: np.ndarray, where: np.ndarray | None = None, opacity: float = 1.0):
        alpha = self.coverage(d) * opacity
        if where is not None:
            alpha = alpha * where[:, None, None]
        colour = np.asarray(colour, dtype=np.float32)
        if colour.ndim == 1:
            colour = np.broadcast_to(colour, (self.n, 3))
        alpha = alpha[..., None]
        self.img += alpha * (colour[:, None, None, :] - self.img)


def _v(a):
    """Per-sample scalar to a (N, 1, 1) array for broadcasting against the grid."""
    return np.asarray(a, dtype=np.float32)[:, None, None]


def _ellipse(c, cx, cy, rx, ry):
    # Scaled-circle distance: exact on circles, close enough for anti-aliasing on ellipses.
    dx, dy = (c.x - _v(cx)) / _v(rx), (c.y - _v(cy)) / _v(ry)
    return (np.sqrt(dx * dx + dy * dy) - 1.0) * np.minimum(_v(rx), _v(ry))


def _segment(c, x0, y0, x1, y1, radius):
    x0, y0, x1, y1, radius = map(_v, (x0, y0, x1, y1, radius))
    px, py, bx, by = c.x - x0, c.y - y0, x1 - x0, y1 - y0
    h = np.clip((px * bx + py * by) / (bx * bx + by * by + 1e-12), 0.0, 1.0)
    return np.sqrt((px - bx * h) ** 2 + (py - by * h) ** 2) - radius


def _parabola_band(c, cx, cy, half_width, bend, thickness):
    """A stroke along y = cy + bend*(1 - ((x-cx)/half_width)^2) for |x-cx| <= half_width (bend<0 curves up)."""
    cx, cy, hw, bend, t = map(_v, (cx, cy, half_width, bend, thickness))
    xn = (c.x - cx) / hw
    curve = cy + bend * (1 - xn * xn)
    return np.maximum(np.abs(c.y - curve) - t, np.abs(c.x - cx) - hw)


def _hsv_to_rgb(h, s, v):
    h = np.asarray(h) % 1.0
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(h.shape + (3,), dtype=np.float32)
    for k, (r, g, b) in enumerate(table):
        m = i == k
        out[m] = np.stack([np.broadcast_to(r, h.shape)[m], np.broadcast_to(g, h.shape)[m],
                           np.broadcast_to(b, h.shape)[m]], -1)
    return out


def _mix(a, b, t):
    return a + (b - a) * np.asarray(t, dtype=np.float32)[:, None]


# -- the face ---------------------------------------------------------------------

def _draw(z: np.ndarray, size: int) -> np.ndarray:
    n = z.shape[0]
    f = binary_factors(z)
    bg = _hsv_to_rgb(_u(z, "bg_hue"), np.full(n, 0.35), 0.55 + 0.35 * _u(z, "bg_light"))
    c = _Canvas(n, size, bg)

    # Geometry (units: the [-1, 1] canvas).
    fw = 0.50 + 0.12 * _u(z, "face_width")
    fh = 0.62 + 0.12 * _u(z, "face_height") + 0.04 * f["Male"]
    cx = 0.10 * (_u(z, "face_dx") - 0.5)
    cy = 0.06 + 0.10 * (_u(z, "face_dy") - 0.5)
    eye_dx = 0.20 + 0.08 * _u(z, "eye_spacing")
    eye_y = cy - 0.10 * fh
    eye_r = 0.055 + 0.035 * _u(z, "eye_size")
    mouth_y = cy + 0.50 * fh
    mouth_hw = 0.13 + 0.10 * _u(z, "mouth_width") + 0.07 * f["Smiling"]

    skin = _mix(np.array([0.93, 0.78, 0.64], np.float32), np.array([0.50, 0.32, 0.20], np.float32),
                _u(z, "skin_tone"))
    skin = np.where(f["Pale_Skin"][:, None], np.array([0.98, 0.92, 0.88], np.float32), skin)
    shade = _u(z, "hair_colour")
    brown = _mix(np.array([0.45, 0.28, 0.14], np.float32), np.array([0.62, 0.40, 0.20], np.float32), (shade - 0.3) / 0.42)
    hair = np.where(f["Black_Hair"][:, None], _mix(np.array([0.05, 0.04, 0.04], np.float32),
                                                    np.array([0.16, 0.12, 0.10], np.float32), shade / 0.3), brown)
    hair = np.where(f["Blond_Hair"][:, None], _mix(np.array([0.86, 0.72, 0.36], np.float32),
                                                    np.array([0.98, 0.90, 0.55], np.float32), (shade - 0.72) / 0.28), hair)
    hair = np.where(f["Gray_Hair"][:, None], np.array([0.80, 0.80, 0.82], np.float32), hair)
    shirt = _hsv_to_rgb(_u(z, "shirt_colour"), np.full(n, 0.6), np.full(n, 0.55))

    # Long hair behind the head for women; shoulders and neck.
    c.paint(np.maximum(_ellipse(c, cx, cy + 0.25, fw + 0.16, fh + 0.35), _v(cy - 0.1) - c.y), hair, ~f["Male"])
    low = c.window(0.6 + 0 * cx, np.ones(n), -1 + 0 * cx, np.ones(n))
    low.paint(_ellipse(low, cx, np.full(n, 1.25), np.full(n, 0.95), np.full(n, 0.45)), shirt)
    neck = c.window(cy + 0.4 * fh, cy + 1.3 * fh, cx - 0.2, cx + 0.2)
    neck.paint(_segment(neck, cx, cy + 0.5 * fh, cx, cy + 1.05 * fh, np.full(n, 0.17)), skin * 0.9)

    # Head and hair cap.
    head = c.window(cy - fh - 0.2, cy + fh + 0.05, cx - fw - 0.1, cx + fw + 0.1)
    head.paint(_ellipse(head, cx, cy - 0.16, fw + 0.07, fh * 0.8 + 0.02), hair)
    head.paint(_ellipse(head, cx, cy, fw, fh), skin)
    if f["Bangs"].any():
        top = c.window(cy - fh - 0.1, cy - 0.2 * fh, cx - fw, cx + fw)
        fringe = np.maximum(_ellipse(top, cx, cy - 0.5 * fh, fw * 0.98, fh * 0.55), top.y - _v(cy - 0.28 * fh))
        top.paint(fringe, hair, f["Bangs"])
        # A darker lower edge keeps the fringe visible when hair and skin have similar tones.
        edge = np.maximum(np.abs(top.y - _v(cy - 0.28 * fh)) - 0.02, _ellipse(top, cx, cy - 0.5 * fh, fw * 0.98, fh * 0.55))
        top.paint(edge, hair * 0.55, f["Bangs"])

    # Eye region: brows (thicker and straighter on men), eyes, age lines, glasses.
    eyes = c.window(eye_y - 0.3, eye_y + 0.25, cx - eye_dx - 0.25, cx + eye_dx + 0.25)
    brow_t = 0.018 + 0.012 * f["Male"] + 0.008 * _u(z, "brow_shape")
    brow_y = eye_y - eye_r - 0.07
    tilt = 0.01 * _u(z, "brow_shape")
    iris = _hsv_to_rgb(0.55 + 0.35 * _u(z, "iris_colour"), np.full(n, 0.6), np.full(n, 0.45))
    white, pupil = np.array([0.97, 0.97, 0.97], np.float32), np.array([0.05, 0.05, 0.05], np.float32)
    old, wrinkle = ~f["Young"], skin * 0.62
    for side in (-1, 1):
        ex = cx + side * eye_dx
        eyes.paint(_segment(eyes, ex - 0.08, brow_y + tilt, ex + 0.08, brow_y - tilt, brow_t), hair * 0.7)
        eyes.paint(_ellipse(eyes, ex, eye_y, eye_r * 1.35, eye_r), white)
        eyes.paint(_ellipse(eyes, ex, eye_y, eye_r * 0.70, eye_r * 0.70), iris)
        eyes.paint(_ellipse(eyes, ex, eye_y, eye_r * 0.32, eye_r * 0.32), pupil)
        if old.any():
            eyes.paint(_parabola_band(eyes, ex, eye_y + eye_r * 1.5, eye_r * 1.2, eye_r * 0.5, np.full(n, 0.012)),
                       wrinkle, old)

    # Mouth region: nose, smile lines, mouth, goatee.
    mouth = c.window(cy + 0.1 * fh, cy + fh + 0.05, cx - 0.4, cx + 0.4)
    mouth.paint(_ellipse(mouth, cx, cy + 0.22 * fh, np.full(n, 0.05), np.full(n, 0.035)), skin * 0.78)
    if old.any():
        for side in (-1, 1):
            mouth.paint(_segment(mouth, cx + side * 0.16, cy + 0.18 * fh, cx + side * (mouth_hw + 0.07),
                                 mouth_y + 0.02, np.full(n, 0.013)), wrinkle, old)
    lips = np.where(f["Wearing_Lipstick"][:, None], np.array([0.80, 0.10, 0.18], np.float32),
                    skin * 0.4 + np.array([0.12, 0.0, 0.0], np.float32))
    # A positive bend curves the middle of the mouth down: a smile.
    bend = np.where(f["Smiling"], 0.09, 0.0)
    closed = ~f["Mouth_Slightly_Open"]
    mouth.paint(_parabola_band(mouth, cx, mouth_y - bend, mouth_hw, bend, 0.022 + 0.008 * f["Wearing_Lipstick"]),
                lips, closed)
    if f["Mouth_Slightly_Open"].any():
        # Open: between a gently curved upper lip and a deeper lower curve (a "D" when smiling).
        top = mouth_y - 0.035 - 0.5 * bend
        depth = 0.07 + 1.2 * bend
        mx = (mouth.x - _v(cx)) / _v(mouth_hw)
        upper = _v(top) + _v(0.3 * bend) * (1 - mx * mx)
        lower = _v(top) + _v(depth) * (1 - mx * mx)
        d = np.maximum(np.maximum(upper - mouth.y, mouth.y - lower), (np.abs(mx) - 1.0) * _v(mouth_hw))
        mouth.paint(d - 0.02, lips, f["Mouth_Slightly_Open"])
        mouth.paint(d, np.array([0.25, 0.05, 0.08], np.float32), f["Mouth_Slightly_Open"])
    if f["Goatee"].any():
        mouth.paint(_ellipse(mouth, cx, cy + 0.80 * fh, 0.09 + 0.02 * mouth_hw, np.full(n, 0.14)), hair * 0.85,
                    f["Goatee"])

    if f["Eyeglasses"].any():
        frame = np.array([0.08, 0.08, 0.10], np.float32)
        rr = eye_r * 1.35 + 0.05
        for side in (-1, 1):
            ring = np.abs(_ellipse(eyes, cx + side * eye_dx, eye_y, rr, rr * 0.85)) - 0.018
            eyes.paint(ring, frame, f["Eyeglasses"])
        eyes.paint(_segment(eyes, cx - eye_dx + rr, eye_y, cx + eye_dx - rr, eye_y, np.full(n, 0.016)), frame,
                   f["Eyeglasses"])
    return c.img


def render_z(z, size: int = 64, chunk: int = 256, supersample: int = 1) -> np.ndarray:
    """Render faces for latent vectors ``z`` (N, D>=24). Returns float32 (N, 3, size, size) in [-1, 1].

    Edges are anti-aliased analytically from the signed distances (pixel coverage); with
    ``supersample`` > 1 shapes are also drawn that many times larger and averaged down,
    which smooths the thinnest strokes further at a proportional cost."""
    if size not in SIZES:
        raise ValueError(f"ToyFaces renders at sizes {SIZES}, not {size}")
    z = _as_z(z)
    out = np.empty((z.shape[0], 3, size, size), dtype=np.float32)
    for start in range(0, z.shape[0], chunk):
        k = supersample
        hi = _draw(z[start:start + chunk], k * size)
        lo = hi.reshape(hi.shape[0], size, k, size, k, 3).mean(axis=(2, 4)) if k > 1 else hi
        out[start:start + chunk] = lo.transpose(0, 3, 1, 2) * 2 - 1
    return np.clip(out, -1.0, 1.0)
