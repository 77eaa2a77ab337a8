"""Inverting image files with a trained encoder (``python -m stytr invert``)."""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoints import save_atomic
from .data.folders import list_images, load_image
from .domains import get_domain
from .viz import interleave, save_grid, save_image


def image_paths(source, exclude=None) -> list[Path]:
    """The images of ``source`` (a file, or a folder searched recursively), leaving out anything under
    ``exclude`` (the output folder, so that a rerun never takes its outputs as inputs)."""
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"input not found: {source}")
    if not source.is_dir():
        return [source]
    paths = list_images(source)
    if exclude is not None:
        ex = Path(exclude).expanduser().resolve()
        paths = [p for p in paths if not p.resolve().is_relative_to(ex)]
    if not paths:
        raise FileNotFoundError(f"no images in {source}")
    return paths


def output_names(paths: list[Path], root: Path) -> list[str]:
    """One distinct file stem per input: the path relative to ``root`` with ``/`` -> ``__``, plus the
    extension when two inputs would otherwise share a name (``a.png`` and ``a.jpg``)."""
    stems = [(p.relative_to(root) if root.is_dir() else Path(p.name)).with_suffix("").as_posix().replace("/", "__")
             for p in paths]
    counts = {s: stems.count(s) for s in stems}
    return [f"{s}_{p.suffix.lstrip('.').lower()}" if counts[s] > 1 else s for s, p in zip(stems, paths)]


@torch.no_grad()
def invert_files(model, source, output, batch: int = 8, force: bool = False, compile: bool = False) -> dict:
    """Invert every image under ``source``; write reconstructions, a side-by-side grid and ``latents.pt``.
    ``compile``: run the model under ``torch.compile`` (pays for large folders: the first batch compiles).

    ``output`` inside ``source`` (or equal to it) is refused unless ``force``; it is never scanned
    for inputs. Unreadable images are skipped and reported (``report['skipped']``)."""
    source, output = Path(source).expanduser(), Path(output).expanduser()
    if source.is_dir() and output.resolve().is_relative_to(source.resolve()) and not force:
        raise ValueError(f"--output {output} lies inside the input folder {source}: its files would mix with the "
                         f"inputs; choose another folder (or pass --force)")
    paths = image_paths(source, exclude=output)
    device = next(model.parameters()).device
    size = model.cfg.input_size
    images, kept, skipped = [], [], []
    for p in paths:
        try:
            images.append(load_image(p, size))
            kept.append(p)
        except (OSError, ValueError) as err:
            skipped.append((str(p), str(err)))
    if not kept:
        raise FileNotFoundError(f"none of the {len(paths)} image(s) under {source} could be read")
    names = output_names(kept, source)
    targets = [output / "reconstructions" / f"{n}.png" for n in names] + [output / "grid.png", output / "latents.pt"]
    inputs = {p.resolve() for p in kept}
    for t in targets:
        if t.resolve() in inputs and not force:
            raise ValueError(f"refusing to overwrite the input {t} with an output (pass --force)")
    (output / "reconstructions").mkdir(parents=True, exist_ok=True)
    recons, codes = [], []
    forward = torch.compile(model) if compile else model
    for start in range(0, len(kept), batch):
        x = torch.stack(images[start:start + batch]).to(device)
        recon, w = forward(x, return_latents=True, randomize_noise=False)
        if recon.shape[-1] != size:
            recon = torch.nn.functional.interpolate(recon, size=(size, size), mode="area")
        recons.append(recon.clamp(-1, 1).cpu())
        codes.append(w.cpu())
    inputs_t, recons, codes = torch.stack(images), torch.cat(recons), torch.cat(codes)
    for path, r in zip(targets, recons):
        save_image(r, path)
    save_grid(interleave(inputs_t, recons), output / "grid.png", nrow=8)
    save_atomic({"files": [str(p) for p in kept], "names": names, "latents": codes}, output / "latents.pt")
    mse = ((inputs_t - recons) ** 2).mean(dim=(1, 2, 3))
    return {"n": len(kept), "mse": mse.mean().item(), "output": str(output), "skipped": skipped}


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


def labelled_codes(domain, model, n: int = 20000, seed: int = 30_000):
    """(W+, labels, mask) for training a latent classifier: the domain's labelled images (ToyFaces renders
    ``n`` faces; a folder domain reads ``image_dir`` with its ``attr_file``) inverted by ``model``."""
    return invert_dataset(model, get_domain(domain).labelled_dataset(n, seed, model.cfg.input_size))
