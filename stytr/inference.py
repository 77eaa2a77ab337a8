"""Inverting image files with a trained encoder (``python -m stytr invert``)."""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoints import save_atomic
from .viz import interleave, save_grid, save_image


def load_inversion_model(checkpoint, device="cpu"):
    """Any inversion checkpoint (ours, best/last/final of a run, or an authors' release); 'toy' = the shipped one."""
    from .models.style_transformer import InversionModel

    if str(checkpoint) == "toy":
        from .toy.encoder import load_encoder

        return load_encoder(device=device)
    return InversionModel.from_checkpoint(checkpoint, device=device)


def image_paths(source) -> list[Path]:
    from .data.folders import list_images

    source = Path(source)
    if source.is_dir():
        paths = list_images(source)
        if not paths:
            raise FileNotFoundError(f"no images in {source}")
        return paths
    if not source.exists():
        raise FileNotFoundError(f"input not found: {source}")
    return [source]


@torch.no_grad()
def invert_files(model, source, output, batch: int = 8) -> dict:
    """Invert every image under ``source``; write reconstructions, a side-by-side grid and ``latents.pt``."""
    from .data.folders import load_image

    output = Path(output)
    (output / "reconstructions").mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    paths = image_paths(source)
    size = model.cfg.input_size
    inputs, recons, codes = [], [], []
    for start in range(0, len(paths), batch):
        x = torch.stack([load_image(p, size) for p in paths[start:start + batch]]).to(device)
        recon, w = model(x, return_latents=True, randomize_noise=False)
        if recon.shape[-1] != size:
            recon = torch.nn.functional.interpolate(recon, size=(size, size), mode="area")
        inputs.append(x.cpu())
        recons.append(recon.clamp(-1, 1).cpu())
        codes.append(w.cpu())
    inputs, recons, codes = torch.cat(inputs), torch.cat(recons), torch.cat(codes)
    for p, r in zip(paths, recons):
        save_image(r, output / "reconstructions" / f"{p.stem}.png")
    save_grid(interleave(inputs, recons), output / "grid.png", nrow=8)
    save_atomic({"files": [str(p) for p in paths], "latents": codes}, output / "latents.pt")
    mse = ((inputs - recons) ** 2).mean(dim=(1, 2, 3))
    return {"n": len(paths), "mse": mse.mean().item(), "output": str(output)}


@torch.no_grad()
def invert_dataset(model, dataset, batch: int = 64, progress: bool = True):
    """W+ codes of a labelled dataset whose items are (image, labels, mask).

    Returns ``(wplus (N, n_latent, style_dim), labels (N, 40), mask (N, 40))`` on the CPU."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    model.eval()
    codes, labels, masks = [], [], []
    for x, y, m in tqdm(DataLoader(dataset, batch_size=batch), desc="invert", disable=not progress):
        codes.append(model.encode(x.to(device)).cpu())
        labels.append(y)
        masks.append(m if m.ndim == 2 else m.expand(len(y), -1))
    return torch.cat(codes), torch.cat(labels), torch.cat(masks)


def labelled_codes(preset: str, model, n: int = 20000, seed: int = 30_000, image_dir: str = "", attr_file: str = ""):
    """(W+, labels, mask) for training a latent classifier: ToyFaces renders inverted by ``model`` in the toy
    preset, or a CelebA-HQ folder plus its ``list_attr_celeba.txt`` at full scale."""
    if preset == "toy":
        from .toy import ToyFacesDataset

        dataset = ToyFacesDataset(n, seed=seed, size=model.cfg.input_size)
    else:
        from .data.folders import LabelledImageFolder

        dataset = LabelledImageFolder(image_dir, attr_file, size=model.cfg.input_size)
    return invert_dataset(model, dataset)
