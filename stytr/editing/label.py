"""Label-based editing of W+ codes with a latent attribute classifier.

Three ways to get an edit direction ``d`` (B, n_latent, style_dim); the edit is
always ``w_edit = w - alpha * d``:

``order=1`` (supplementary Algorithm 1)
    ``d`` = dL/dw of the BCE between the classifier's probability for the attribute
    and ``y_t = target``, normalised per W+ row (each row has unit L2 norm). The
    step descends the loss, so a positive ``alpha`` moves toward ``target``.

``order=2`` (supplementary Algorithm 2, implemented as printed)
    With a random probe ``r`` (N(0, I) unless given) and ``r0 = 0``::

        d = grad_r L(w + xi*r) - grad_r0 L(w + r0)      # = xi*∇L(w + xi*r) - ∇L(w)

    normalised per row. The first term carries the factor ``xi`` from the chain
    rule, the second does not, so for a small ``xi`` the result is close to
    ``-∇L(w)``: the step *ascends* the loss of the label it was given. To move
    toward the desired value we therefore hand the loss ``y_t = 1 - target``
    (``target`` in this API is always the value you want). Note that the
    finite-difference Hessian term inside ``d`` has relative weight ``xi**2``
    (1e-8 for xi = 1e-4), below float32 resolution, so in practice the
    direction equals Algorithm 1's up to rounding and the random probe.

``order=AS_RELEASED`` (``"2-released"``: Algorithm 2 as the authors' released code runs it; off by default)
    The released label-editing coach (``training/coach_label_edit.py`` of
    sapphire497/style-transformer) draws the probe ``a ~ N(0, I)`` of the shape of
    ``w``, forms the same difference of gradients at ``w + xi*a`` and at ``w``
    with the label set to the *desired* value (``y_t = target``), normalises it per
    row to ``d``, and edits with ``w - alpha*(a - d)``::

        w_edit = w - alpha*a + alpha*d

    So the random probe itself enters the edit: every W+ entry moves by
    ``N(0, alpha**2)`` on top of Algorithm 1's unit-row step (``+alpha*d`` moves
    toward ``target`` because ``d ≈ -∇L`` points down the loss of the desired
    label). This variant reproduces that, with two differences that do not
    change the direction: the loss is our saturation-free BCE (the released
    ``binary_cross_entropy_with_logits`` has an exactly zero gradient for a very
    confident classifier, and the division by the row norm then gives NaN), and
    ``layers`` masks the probe too. The released script uses ``alpha = 3``.

``order="hvp"`` (ours: exact curvature, see :func:`hvp_direction`)
    A trust-region Newton step on the attribute loss, restricted to the span of
    the per-row gradient directions, with exact Hessian-vector products.

``attribute`` is an index or a CelebA name; ``classifier`` is any callable on the
flattened W+ (B, n_latent*style_dim) that returns logits (B, n_attr) or
``(logits, embeddings)``; samples must be independent of one another (no
batch statistics), which holds for :class:`stytr.models.LatentClassifier`.
"""
from __future__ import annotations

from typing import Callable, Iterable, Union

import torch
import torch.nn.functional as F

from ..attributes import CELEBA_ATTRIBUTES, attribute_index

__all__ = ["AS_RELEASED", "ORDERS", "label_edit", "direction", "direction_cosine", "normalize_per_layer", "attribute_logit",
           "hvp_direction", "layer_hessian"]

Order = Union[int, str]
_EPS = 1e-12

#: Algorithm 2 as the authors' released code runs it (the probe enters the edit); see the module docstring.
AS_RELEASED = "2-released"
#: Every label-editing order; 1, 2 and "hvp" are the defaults' family, AS_RELEASED is opt-in.
ORDERS = (1, 2, "hvp", AS_RELEASED)


# -- helpers -----------------------------------------------------------------------

def _resolve_attribute(classifier, attribute) -> int:
    names = getattr(classifier, "attribute_names", None) or CELEBA_ATTRIBUTES
    return attribute_index(attribute, names)


def _check_w(w: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if w.ndim == 2:
        return w.unsqueeze(0), True
    if w.ndim != 3:
        raise ValueError(f"w must be (B, n_latent, style_dim) or (n_latent, style_dim), got {tuple(w.shape)}")
    return w, False


def _targets(target, batch: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"target must be a number or a ({batch},) tensor, got shape {tuple(t.shape)}")
    if ((t < 0) | (t > 1)).any():
        raise ValueError("target is the desired attribute value: 0 or 1 (probabilities in [0, 1] also work)")
    return t


def _row_mask(layers, n_latent: int, like: torch.Tensor) -> torch.Tensor:
    """(n_latent, 1) float mask of the W+ rows that may change."""
    mask = torch.zeros(n_latent, 1, dtype=like.dtype, device=like.device)
    if layers is None:
        return mask + 1
    rows = [layers] if isinstance(layers, int) else list(layers)
    for r in rows:
        if not -n_latent <= int(r) < n_latent:
            raise ValueError(f"layer {r} out of range for {n_latent} W+ rows")
        mask[int(r)] = 1
    return mask


def attribute_logit(classifier: Callable, w: torch.Tensor, attribute: int) -> torch.Tensor:
    """The classifier's logit (B,) for ``attribute`` at W+ codes ``w`` (B, n_latent, style_dim)."""
    out = classifier(w.flatten(1))
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"the classifier must return logits (B, n_attr); got shape {tuple(out.shape)}")
    return out[:, attribute]


def _loss(classifier, w, attribute, y) -> torch.Tensor:
    # BCE on sigmoid(logit), written as y*softplus(-x) + (1-y)*softplus(x): the same value as
    # binary_cross_entropy_with_logits, but its gradient -y*sigmoid(-x) + (1-y)*sigmoid(x) stays
    # non-zero for a confident classifier. torch's BCE backward forms sigmoid(x) - y, which is
    # exactly 0 in float32 once |x| > ~17, and then Algorithm 2 (whose dominant term is the
    # gradient toward the label the code already has) returns no direction at all. The size of
    # the gradient does not matter: every direction is normalised per W+ row.
    # Summed over the batch so every sample's gradient is its own.
    x = attribute_logit(classifier, w, attribute)
    return (y * F.softplus(-x) + (1 - y) * F.softplus(x)).sum()


def normalize_per_layer(d: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Each W+ row divided by its L2 norm over the style axis (all-zero rows stay zero).

    Rows are first divided by their largest |entry|, so that the tiny gradients of a confident
    classifier (1e-12 and less) are normalised too instead of vanishing under ``eps``."""
    scale = d.abs().amax(dim=-1, keepdim=True)
    d = d / torch.where(scale > 0, scale, torch.ones_like(scale))
    return d / d.norm(dim=-1, keepdim=True).clamp_min(eps)


def direction_cosine(d1: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per sample between two W+ directions (B, ...) -> (B,)."""
    if d1.shape != d2.shape:
        raise ValueError(f"directions differ in shape: {tuple(d1.shape)} vs {tuple(d2.shape)}")
    if d1.ndim == 2:
        d1, d2 = d1.unsqueeze(0), d2.unsqueeze(0)
    return F.cosine_similarity(d1.flatten(1), d2.flatten(1), dim=1, eps=_EPS)


# -- Algorithms 1 and 2 -------------------------------------------------------------

def _first_order(classifier, w, attribute, target):
    w_ = w.detach().requires_grad_(True)
    return torch.autograd.grad(_loss(classifier, w_, attribute, target), w_)[0]


def _probe(w, r, generator) -> torch.Tensor:
    if r is None:
        r = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu" if generator is None
                        else generator.device).to(w.device)
    return torch.as_tensor(r, dtype=w.dtype, device=w.device).expand_as(w)


def _second_order(classifier, w, attribute, target, xi, r, generator):
    # Sign convention, checked against the authors' training/coach_label_edit.py: its second-order branch
    # sets the edited attribute's label to 1 where its (commented-out) first-order branch sets 0, i.e. the
    # label given to the second-order loss is the opposite of the one given to the first-order loss, which
    # is what Algorithm 2's ascent-like sign calls for. That script then subtracts 3*(r - d) instead of
    # alpha*d (flipping the sign once more and adding the probe r itself); we follow Algorithm 2 as printed.
    y = 1 - target
    r = _probe(w, r, generator)
    r_d = r.detach().clone().requires_grad_(True)
    r_0 = torch.zeros_like(w, requires_grad=True)
    w0 = w.detach()
    grad_d = torch.autograd.grad(_loss(classifier, w0 + xi * r_d, attribute, y), r_d)[0]
    grad_0 = torch.autograd.grad(_loss(classifier, w0 + r_0, attribute, y), r_0)[0]
    return grad_d - grad_0


def _as_released(classifier, w, attribute, target, xi, r, generator, mask):
    """The released coach's ``a - d``: the probe minus the per-row normalised gradient difference,
    with the label set to ``target`` (``_second_order`` uses ``1 - target``, hence the flip)."""
    r = _probe(w, r, generator)
    d = normalize_per_layer(_second_order(classifier, w, attribute, 1 - target, xi, r, None) * mask)
    return (r - d) * mask


# -- exact second order --------------------------------------------------------------

def layer_hessian(classifier: Callable, w: torch.Tensor, attribute: int | str, target,
                  layers: Iterable[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attribute loss's gradient and Hessian on the span of the per-row gradient directions.

    With ``g = ∇_w L(w)`` (L = BCE toward ``target``), ``e_l`` the unit vector
    holding ``g``'s row ``l`` direction in row ``l`` and zeros elsewhere, returns
    ``(e, a, M)``: ``e`` (B, n_latent, style_dim) the unit rows, ``a`` (B, n_latent)
    the row norms ``|g_l| = g·e_l``, and ``M`` (B, n_latent, n_latent) with
    ``M[l, k] = e_l^T H e_k``, from one exact Hessian-vector product (double
    backward) per edited row. Rows outside ``layers`` get zeros.
    """
    w, _ = _check_w(w)
    attribute = _resolve_attribute(classifier, attribute)
    t = _targets(target, w.shape[0], w)
    mask = _row_mask(layers, w.shape[1], w)
    with torch.enable_grad():
        w_ = w.detach().requires_grad_(True)
        g = torch.autograd.grad(_loss(classifier, w_, attribute, t), w_, create_graph=True)[0]
        gm = g.detach() * mask
        a = gm.norm(dim=-1)
        e = gm / a.clamp_min(_EPS).unsqueeze(-1)
        M = torch.zeros(w.shape[0], w.shape[1], w.shape[1], dtype=w.dtype, device=w.device)
        rows = torch.nonzero(mask.flatten()).flatten().tolist()
        for i, l in enumerate(rows):
            v = torch.zeros_like(w)
            v[:, l] = e[:, l]
            hv = torch.autograd.grad(g, w_, grad_outputs=v, retain_graph=i < len(rows) - 1, allow_unused=True)[0]
            if hv is not None:
                M[:, :, l] = (hv * e).sum(-1)
    return e, a, M


def _trust_region_coefficients(a: torch.Tensor, M: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Per sample, argmin_c  -a^T c + c^T M c / 2  subject to |c| <= radius (B,), radius > 0.

    The multiplier (damping) is found by bisection, as in Moré and Sorensen's
    trust-region method; computed in float64.
    """
    a64, M64 = a.double(), M.double()
    radius = radius.double().to(a.device)
    M64 = 0.5 * (M64 + M64.transpose(1, 2))
    lam, Q = torch.linalg.eigh(M64)                                  # ascending eigenvalues
    ap = (Q.transpose(1, 2) @ a64.unsqueeze(-1)).squeeze(-1)         # a in the eigenbasis
    a_norm = a64.norm(dim=-1)
    scale = lam.abs().amax(-1) + a_norm / radius
    floor = (1e-12 * scale).unsqueeze(-1)

    def coeffs(mu):  # (B,) damping -> (B, k) coefficients in the eigenbasis
        denom = (lam + mu.unsqueeze(-1)).clamp_min(floor)
        return torch.where(ap.abs() > 0, ap / denom, torch.zeros_like(ap))

    lo = (-lam[:, 0]).clamp_min(0.0)
    hi = lo + a_norm / radius + floor.squeeze(-1)                   # |c(hi)| <= radius by construction
    interior = (lam[:, 0] > 0) & (coeffs(torch.zeros_like(lo)).norm(dim=-1) <= radius)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        too_long = coeffs(mid).norm(dim=-1) > radius
        lo, hi = torch.where(too_long, mid, lo), torch.where(too_long, hi, mid)
    mu = torch.where(interior, torch.zeros_like(hi), hi)
    return (Q @ coeffs(mu).unsqueeze(-1)).squeeze(-1)


def hvp_direction(classifier: Callable, w: torch.Tensor, attribute: int | str, target, alpha: float = 1.0,
                  layers: Iterable[int] | None = None) -> torch.Tensor:
    """Exact second-order edit direction (ours); ``w - |alpha| * d`` is the step.

    What it computes. Let ``g = ∇L(w)`` for L = BCE toward ``target`` and let
    ``e_l`` be the unit direction of ``g``'s row ``l`` (the per-row directions of
    Algorithm 1). The step is ``s = Σ_l c_l e_l`` with ``c`` minimising the exact
    second-order model ``L(w - s) ≈ L - a^T c + ½ c^T M c`` (``a_l = |g_l|``,
    ``M = E^T H E`` from :func:`layer_hessian`) inside the ball
    ``|c| <= |alpha|·sqrt(k)``, k = number of edited rows with a non-zero gradient
    — the length of Algorithm 1's step. The damping (trust-region multiplier)
    is found by bisection; when the undamped Newton step already lies inside the
    ball, its direction is kept. The step is finally scaled to length
    ``|alpha|·sqrt(k)``, so ``alpha`` means the same step length as in
    Algorithm 1 but curvature decides how it is shared between the rows. The
    returned ``d = s/|alpha|`` has RMS row norm 1 (rows are *not* individually
    unit). ``alpha = 0`` returns the limit ``c ∝ a``, i.e. the plain gradient
    scaled to that length.

    Why it is better defined than Algorithm 2. Algorithm 2's Hessian information
    enters as ``xi**2 · H r`` next to ``-(1 - xi)∇L`` (weight ~1e-8, lost in
    float32 rounding) and depends on a random probe; here ``H e_l`` are exact
    Hessian-vector products (double backward), there is no ``xi`` to tune, no
    randomness, and ``a^T c > 0`` always, so the step descends the loss toward
    ``target`` to first order. For a classifier whose activations are piecewise
    linear (LeakyReLU, as in LCNet) the Hessian is ``σ(1-σ)∇z∇z^T`` almost
    everywhere, so ``M`` is rank one along ``a`` and the step reduces to the
    un-normalised gradient (Euclidean steepest descent) — the curvature decides
    only that the rows share the step in proportion to their gradient norms.

    Cost: one forward/backward with graph, plus one double-backward per edited
    row (n_latent of them: 18 for FFHQ), plus an eigen-decomposition of a small
    (n_latent × n_latent) matrix per sample.
    """
    w, squeeze = _check_w(w)
    e, a, M = layer_hessian(classifier, w, attribute, target, layers)
    rows = (a > 0).sum(-1).clamp_min(1).to(w.dtype)
    radius = abs(float(alpha))
    c = _trust_region_coefficients(a, M, radius * rows.sqrt()) if radius > 0 else a.double()
    step = (c.to(w.dtype).unsqueeze(-1) * e)
    length = step.flatten(1).norm(dim=-1).clamp_min(_EPS)
    d = step * (rows.sqrt() / length).view(-1, 1, 1)
    return d.squeeze(0) if squeeze else d


# -- public entry points -------------------------------------------------------------

def direction(w: torch.Tensor, classifier: Callable, attribute: int | str, target=1, order: Order = 1,
              xi: float = 1e-4, r: torch.Tensor | None = None, layers: Iterable[int] | None = None,
              alpha: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The edit direction ``d`` of :func:`label_edit` (``w_edit = w - alpha * d``), detached.

    Orders 1 and 2: each edited W+ row has unit L2 norm (rows outside ``layers``
    are zero). ``order="hvp"``: see :func:`hvp_direction` (needs ``alpha``, RMS
    row norm 1). ``order=AS_RELEASED``: the probe minus a unit-row direction,
    ``r - d`` (rows of norm about sqrt(style_dim)). All point *away* from ``target``
    (to first order) so that subtracting them moves toward it;
    :func:`direction_cosine` compares two of them per sample.
    """
    w, squeeze = _check_w(w)
    attribute = _resolve_attribute(classifier, attribute)
    t = _targets(target, w.shape[0], w)
    mask = _row_mask(layers, w.shape[1], w)
    with torch.enable_grad():
        if order == 1 or order == "1":
            d = normalize_per_layer(_first_order(classifier, w, attribute, t) * mask)
        elif order == 2 or order == "2":
            d = normalize_per_layer(_second_order(classifier, w, attribute, t, xi, r, generator) * mask)
        elif order == "hvp":
            d = hvp_direction(classifier, w, attribute, t, alpha=alpha, layers=layers)
        elif order == AS_RELEASED:
            d = _as_released(classifier, w, attribute, t, xi, r, generator, mask)
        else:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    d = d.detach()
    return d.squeeze(0) if squeeze else d


def label_edit(w: torch.Tensor, classifier: Callable, attribute: int | str, target=1, alpha: float = 3.0,
               order: Order = 1, xi: float = 1e-4, r: torch.Tensor | None = None,
               layers: Iterable[int] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Edit W+ codes ``w`` (B, n_latent, style_dim) so that ``attribute`` moves toward ``target``.

    ``target`` is the desired value (0 or 1; a (B,) tensor edits samples toward
    different values) for every order — the label that Algorithm 2 needs
    internally (``1 - target``) is chosen here. ``alpha`` is the step per W+ row
    (the authors' script uses 3); a negative ``alpha`` moves away from
    ``target`` (for ``"hvp"``: toward ``1 - target`` with step ``|alpha|``).
    ``xi`` and ``r`` (the probe, shape of ``w`` or of one code) are used by
    order 2 and ``AS_RELEASED`` only (``xi`` = 1e-4 as in the authors' script; the supplementary's
    "10e-4" would literally be 1e-3); ``layers`` restricts the edit to these W+ rows. Returns the
    edited codes, detached.
    """
    w_b, squeeze = _check_w(w)
    if order == "hvp" and alpha < 0:
        target = 1 - _targets(target, w_b.shape[0], w_b)
    d = direction(w_b, classifier, attribute, target, order=order, xi=xi, r=r, layers=layers, alpha=alpha,
                  generator=generator)
    step = abs(alpha) if order == "hvp" else alpha
    out = (w_b.detach() - step * d)
    return out.squeeze(0) if squeeze else out
