"""Reconstruction losses: L2, LPIPS (AlexNet), ID (IR-SE50), the ToyFaces perceptual term, W-norm.

Every loss maps (reconstruction, target) images in [-1, 1] to a scalar; ``InversionLoss``
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
