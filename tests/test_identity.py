"""The identity metric: dlib's face-recognition ResNet on the astronaut photo's crop, a pluggable
embedder, and pSp's IR-SE50 file path (a small IR-SE network in the same layout stands in for it)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageFilter

from stytr.data.align import detect_and_align
from stytr.eval.identity import DlibFaceEmbedder, IRSE50Embedder, as_batch, identity_similarity
from stytr.losses import IDLoss
from stytr.models.irse import IRSEBackbone
from stytr.toy.faces import render_faces


@pytest.fixture(scope="module")
def crop() -> Image.Image:
    import skimage.data

    return detect_and_align(Image.fromarray(skimage.data.astronaut()), output_size=256)[0].image


@pytest.mark.photo
def test_dlib_identity_orders_same_person_above_degraded_above_a_cartoon(crop):
    embedder = DlibFaceEmbedder()
    emb = embedder(as_batch(crop))
    assert emb.shape == (1, 128)
    toy = torch.nn.functional.interpolate(render_faces(1, seed=3, size=64)[0], size=256, mode="bilinear")
    blurred = crop.filter(ImageFilter.GaussianBlur(3))
    flipped = crop.transpose(Image.FLIP_LEFT_RIGHT)
    sims = identity_similarity([crop] * 4, torch.cat([as_batch([crop, flipped, blurred]), toy]), embedder)
    same, mirror, blur, cartoon = sims.tolist()
    assert same == pytest.approx(1.0, abs=1e-5)
    assert mirror > 0.95 and blur > 0.9             # still her
    assert cartoon < blur - 0.05 and cartoon < 0.9   # a ToyFaces render is someone else (dlib's cosines run high)
    # the metric reads the same pixels whatever the crop's resolution
    big = crop.resize((1024, 1024), Image.LANCZOS)
    assert identity_similarity(crop, big, embedder).item() > 0.98


def test_any_embedder_plugs_in():
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    mean_colour = lambda imgs: imgs.mean(dim=(2, 3))     # noqa: E731  a toy embedding: the mean colour
    sims = identity_similarity(x, torch.cat([x[:1] * 0.5, -x[1:2], x[2:3]]), mean_colour)
    assert sims[0].item() == pytest.approx(1.0, abs=1e-6) and sims[1].item() == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError, match="pair up"):
        identity_similarity(x, x[:2], mean_colour)


def test_ir_se50_embedder_is_the_id_loss_network(tmp_path):
    kw = dict(units=(1, 1, 1, 1), width=0.125, embed_dim=32)
    torch.manual_seed(0)
    source = IRSEBackbone(**kw).eval()
    path = tmp_path / "model_ir_se50.pth"
    torch.save({k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}, path)

    embedder = IRSE50Embedder(path, net=IRSEBackbone(**kw))          # the file is loaded into the network
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    y = torch.rand(2, 3, 256, 256) * 2 - 1
    sims = identity_similarity(x, y, embedder)
    loss = IDLoss(None, net=source)
    assert torch.allclose(sims, (loss.embed(x) * loss.embed(y)).sum(1), atol=1e-5) and (sims < 0.999).all()
    assert torch.allclose(1 - sims.mean(), loss(x, y), atol=1e-5)
    assert torch.allclose(identity_similarity(x, x, embedder), torch.ones(2), atol=1e-5)

    with pytest.raises(FileNotFoundError, match="model_ir_se50.pth.*pixel2style2pixel"):
        IRSE50Embedder(tmp_path / "missing" / "model_ir_se50.pth")
