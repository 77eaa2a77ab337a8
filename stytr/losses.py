"""Training losses: inversion (L2, LPIPS (AlexNet), ID (IR-SE50), the ToyFaces perceptual term,
W-norm) and reference editing (W+ distance and latent-classifier embedding terms).

Every inversion loss maps (reconstruction, target) images in [-1, 1] to a scalar; ``InversionLoss``
combines them with the weights of a config. Nothing here downloads anything: LPIPS
needs torchvision's AlexNet weights in the torch hub cache and the ID loss needs
pSp's ``model_ir_se50.pth``; when a file is missing the error names it and says where it goes.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .toy.predictor import PredictorFeatureDistance

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
IR_SE50_FILE = "pretrained_models/model_ir_se50.pth"


def l2_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(x, y)


def alexnet_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


class LPIPSLoss(nn.Module):
    """LPIPS with the AlexNet backbone through the ``lpips`` package (frozen)."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net != "alex":
            raise ValueError("stytr's LPIPS uses the AlexNet backbone (the paper's choice)")
        weights = alexnet_weights_path()
        if not weights.is_file():
            raise FileNotFoundError(
                f"LPIPS needs torchvision's AlexNet weights {ALEXNET_FILE} in {weights.parent} "
                f"(the torch hub cache; set TORCH_HOME to move it). Copy the file there from a machine that "
                f"has it (torchvision downloads it on first use of alexnet(weights='IMAGENET1K_V1')).")
        import lpips

        self.model = lpips.LPIPS(net="alex", verbose=False).eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x, y):
        return self.model(x, y, normalize=False).mean()


def lpips_available() -> bool:
    return alexnet_weights_path().is_file()


class IDLoss(nn.Module):
    """1 - cosine similarity of ArcFace (IR-SE50) embeddings on the face crop.

    The crop ``[35:223, 32:220]`` of a 256 px image is pooled to the network's input (112
    px), as in pSp. ``weights``: pSp's ``model_ir_se50.pth`` (None: keep ``net``'s own
    weights); ``net``: the identity network, by default the full :class:`IRSEBackbone`."""

    def __init__(self, weights: str | Path | None = IR_SE50_FILE, net: nn.Module | None = None):
        super().__init__()
        from .checkpoints import require_file
        from .models.irse import IRSEBackbone, load_ir_se50_weights

        if weights is not None:  # checked before the 44M-parameter network is built
            weights = require_file(weights, "ID loss weights (pSp's IR-SE50, model_ir_se50.pth)",
                                   f"Download it from the pixel2style2pixel release and put it at {IR_SE50_FILE}")
        net = IRSEBackbone() if net is None else net
        if weights is not None:
            load_ir_se50_weights(net, weights)
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 256:
            x = F.adaptive_avg_pool2d(x, 256)
        x = F.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], getattr(self.net, "input_size", 112))
        return F.normalize(self.net(x), dim=1)

    def forward(self, x, y):
        return (1 - (self.embed(x) * self.embed(y).detach()).sum(1)).mean()


class PredictorPerceptualLoss(nn.Module):
    """The ToyFaces stand-in for LPIPS: distance between the frozen attribute predictor's
    normalised feature maps (see :class:`stytr.toy.PredictorFeatureDistance`)."""

    def __init__(self, predictor):
        super().__init__()
        if predictor is None:
            raise ValueError("the perceptual term needs the domain's image-space judge (Domain.load('predictor'))")
        self.distance = PredictorFeatureDistance(predictor)

    def forward(self, x, y):
        return self.distance(x, y).mean()


def w_norm_loss(w_plus: torch.Tensor, latent_avg: torch.Tensor | None) -> torch.Tensor:
    """Mean L2 distance of W+ codes from the average latent (e4e/pSp's regulariser)."""
    if latent_avg is not None:
        w_plus = w_plus - latent_avg
    return w_plus.norm(2, dim=-1).mean()


def mode_seeking_loss(edit_a: torch.Tensor, edit_b: torch.Tensor, ref_a: torch.Tensor, ref_b: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking term after Mao et al. (MSGAN, CVPR 2019), for reference editing.

    One source edited with two references: per sample the ratio ``mean|edit_a - edit_b| /
    mean|ref_a - ref_b|`` (L1 means over all other axes); the loss is the batch mean of
    ``1 / (ratio + eps)``. Minimising it makes different references give different edits,
    in proportion to how different the references are. The references carry no gradient."""
    if edit_a.shape != edit_b.shape or ref_a.shape != ref_b.shape or edit_a.shape[0] != ref_a.shape[0]:
        raise ValueError(f"mode-seeking needs two edits and two references of one batch, got "
                         f"{tuple(edit_a.shape)}, {tuple(edit_b.shape)}, {tuple(ref_a.shape)}, {tuple(ref_b.shape)}")
    edits = (edit_a - edit_b).abs().flatten(1).mean(1)
    refs = (ref_a - ref_b).detach().abs().flatten(1).mean(1)
    return (1.0 / (edits / refs.clamp_min(eps) + eps)).mean()


class InversionLoss(nn.Module):
    """Weighted sum of the configured terms; returns (total, {name: value})."""

    def __init__(self, l2: float = 1.0, lpips: float = 0.0, id: float = 0.0, perceptual: float = 0.0,
                 w_norm: float = 0.0, id_weights: str = IR_SE50_FILE, predictor=None):
        super().__init__()
        self.weights = {"l2": l2, "lpips": lpips, "id": id, "perceptual": perceptual, "w_norm": w_norm}
        self.lpips = LPIPSLoss() if lpips > 0 else None
        self.id = IDLoss(id_weights) if id > 0 else None
        self.perceptual = PredictorPerceptualLoss(predictor) if perceptual > 0 else None

    def forward(self, recon, target, w_plus=None, latent_avg=None):
        terms = {"l2": l2_loss(recon, target)}
        if self.lpips is not None:
            terms["lpips"] = self.lpips(recon, target)
        if self.id is not None:
            terms["id"] = self.id(recon, target)
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(recon, target)
        if self.weights["w_norm"] > 0 and w_plus is not None:
            terms["w_norm"] = w_norm_loss(w_plus, latent_avg)
        total = sum(self.weights[k] * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}


def reference_editing_loss(classifier, src: torch.Tensor, ref: torch.Tensor, edited: torch.Tensor, attr: int,
                           l2: float = 1.0, ref_weight: float = 1.0, src_weight: float = 1.0
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The published reference-editing loss, with the frozen latent classifier's per-attribute
    embeddings ``e``: ``l2*MSE(src, edited) + ref_weight*MSE(e_attr(edited), e_attr(ref))
    + src_weight*MSE(e_others(edited), e_others(src))``, each MSE a mean over all its elements.
    Returns ``(total, {'l2', 'ref', 'src'})`` (unweighted terms, detached)."""
    _, emb_edit = classifier(edited)
    with torch.no_grad():
        _, emb_ref = classifier(ref)
        _, emb_src = classifier(src)
    others = [i for i in range(emb_edit.shape[1]) if i != attr]
    loss_l2 = F.mse_loss(edited, src)
    loss_ref = F.mse_loss(emb_edit[:, attr], emb_ref[:, attr])
    loss_src = F.mse_loss(emb_edit[:, others], emb_src[:, others]) if others else edited.new_zeros(())
    total = l2 * loss_l2 + ref_weight * loss_ref + src_weight * loss_src
    return total, {"l2": loss_l2.detach(), "ref": loss_ref.detach(), "src": loss_src.detach()}


def domain_perceptual(domain) -> nn.Module:
    """The perceptual distance a domain trains with (``Domain.perceptual``): LPIPS, or on ToyFaces the
    judge's feature distance. Maps (a, b) images in [-1, 1] to the batch mean."""
    if domain.perceptual == "lpips":
        return LPIPSLoss()
    if domain.perceptual == "predictor":
        return PredictorPerceptualLoss(domain.load("predictor"))
    raise ValueError(f"domain {domain.name!r}: unknown perceptual distance {domain.perceptual!r} "
                     f"(expected 'lpips' or 'predictor')")
