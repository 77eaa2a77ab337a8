"""StyleGAN2-ADA snapshots: imported without running their code, plain containers pass, other globals are
refused by name, and the imported generator renders what NVIDIA's computation renders.

The snapshots are built here in NVIDIA's format (facts from stylegan2-ada-pytorch's
``torch_utils/persistence.py`` and ``training/networks.py``): every network object pickles as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` holds the module source, the
class name and the object's ``__dict__``. The source here plants a side effect (it writes a file).
"""
import collections
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from stytr.checkpoints import CheckpointError
from stytr.models import nvidia_pickle
from stytr.models.nvidia_pickle import EasyDict, PersistentRecord, RefusedGlobalError, SnapshotError, read_snapshot
from stytr.models.stylegan2 import convert_nvidia_pickle, generator_kwargs_from_state, load_nvidia_pickle, \
    load_rosinality_generator

FILTER = torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1]))
FILTER = FILTER / FILTER.sum()  # upfirdn2d.setup_filter([1, 3, 3, 1])
SQRT2 = math.sqrt(2)


# -- a snapshot builder in NVIDIA's format ------------------------------------------------

def payload_source(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('the snapshot ran its code')\n\nclass Generator:\n    pass\n"


class Persistent:
    """Pickles the way a ``persistence.persistent_class`` instance does."""

    def __init__(self, class_name, source, state):
        self.class_name, self.source, self.state = class_name, source, state

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.source, class_name=self.class_name, state=self.state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


class NVIDIAModules:
    """Stand-ins for ``torch_utils.persistence`` and ``dnnlib.util``, present only while a snapshot is
    written (pickle records functions by module and name). Their reconstructor does what NVIDIA's does:
    it executes the stored module source."""

    def __init__(self, monkeypatch):
        persistence = types.ModuleType("torch_utils.persistence")

        def _reconstruct_persistent_obj(meta):
            namespace = {}
            exec(meta["module_src"], namespace)  # what NVIDIA's _src_to_module does
            obj = object.__new__(type(meta["class_name"], (), {}))
            obj.__dict__.update(meta["state"])
            return obj

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
        util = types.ModuleType("dnnlib.util")
        easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
        util.EasyDict = easy
        augment = types.ModuleType("training.augment")
        augment.AugmentPipe = type("AugmentPipe", (), {"__module__": "training.augment"})
        self.EasyDict, self.AugmentPipe = easy, augment.AugmentPipe
        self.monkeypatch = monkeypatch
        self.modules = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                        "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util,
                        "training": types.ModuleType("training"), "training.augment": augment}

    def __enter__(self):
        for name, module in self.modules.items():
            self.monkeypatch.setitem(sys.modules, name, module)
        return self

    def __exit__(self, *exc):
        for name in self.modules:
            self.monkeypatch.delitem(sys.modules, name)


def module_state(params=(), buffers=(), modules=(), **attrs):
    """An ``nn.Module.__dict__`` as it is pickled."""
    return dict(training=False, _parameters=collections.OrderedDict(params), _buffers=collections.OrderedDict(buffers),
                _non_persistent_buffers_set=set(), _backward_hooks=collections.OrderedDict(),
                _forward_hooks=collections.OrderedDict(), _forward_pre_hooks=collections.OrderedDict(),
                _state_dict_hooks=collections.OrderedDict(), _load_state_dict_pre_hooks=collections.OrderedDict(),
                _modules=collections.OrderedDict(modules), **attrs)


def P(t):
    return torch.nn.Parameter(t, requires_grad=False)


class SnapshotBuilder:
    """Random StyleGAN2-ADA networks (skip architecture) and their flat NVIDIA-named tensors."""

    def __init__(self, source, easydict, res=64, w_dim=16, channel_base=512, channel_max=16, n_mlp=2,
                 lr_multiplier=0.02, conv_clamp=0.6, num_fp16_res=2, seed=0):
        self.source, self.EasyDict = source, easydict
        self.res, self.w_dim, self.n_mlp, self.lr, self.clamp = res, w_dim, n_mlp, lr_multiplier, conv_clamp
        self.g = torch.Generator().manual_seed(seed)
        log2 = int(math.log2(res))
        self.resolutions = [2**i for i in range(2, log2 + 1)]
        self.channels = {r: min(channel_base // r, channel_max) for r in self.resolutions}
        self.fp16_from = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 2 * log2 - 2

    def randn(self, *shape, scale=1.0):
        return torch.randn(shape, generator=self.g) * scale

    def obj(self, name, state, **init_kwargs):
        return Persistent(name, self.source, {**state, "_init_args": (), "_init_kwargs": self.EasyDict(init_kwargs)})

    def fc(self, n_in, n_out, lr=1.0, bias_init=0.0, activation="linear"):
        return self.obj("FullyConnectedLayer", module_state(
            params=[("weight", P(self.randn(n_out, n_in) / lr)), ("bias", P(bias_init + self.randn(n_out, scale=0.3 / lr)))],
            activation=activation, weight_gain=np.float64(lr / np.sqrt(n_in)), bias_gain=lr),
            in_features=n_in, out_features=n_out, activation=activation, lr_multiplier=lr, bias_init=bias_init)

    def layer(self, n_in, n_out, res, up):
        return self.obj("SynthesisLayer", module_state(
            params=[("weight", P(self.randn(n_out, n_in, 3, 3))), ("noise_strength", P(self.randn(scale=0.5))),
                    ("bias", P(self.randn(n_out, scale=0.3)))],
            buffers=[("resample_filter", FILTER.clone()), ("noise_const", self.randn(res, res))],
            modules=[("affine", self.fc(self.w_dim, n_in, bias_init=1.0))],
            resolution=res, up=up, use_noise=True, activation="lrelu", conv_clamp=self.clamp, padding=1,
            act_gain=np.float64(np.sqrt(2))),
            in_channels=n_in, out_channels=n_out, w_dim=self.w_dim, resolution=res, up=up, conv_clamp=self.clamp)

    def torgb(self, n_in):
        return self.obj("ToRGBLayer", module_state(
            params=[("weight", P(self.randn(3, n_in, 1, 1))), ("bias", P(self.randn(3, scale=0.3)))],
            modules=[("affine", self.fc(self.w_dim, n_in, bias_init=1.0))],
            conv_clamp=self.clamp, weight_gain=np.float64(1 / np.sqrt(n_in))),
            in_channels=n_in, out_channels=3, w_dim=self.w_dim, conv_clamp=self.clamp)

    def block(self, res):
        out = self.channels[res]
        n_in = self.channels[res // 2] if res > 4 else 0
        params, modules = [], []
        if n_in == 0:
            params.append(("const", P(self.randn(out, 4, 4))))
        else:
            modules.append(("conv0", self.layer(n_in, out, res, up=2)))
        modules += [("conv1", self.layer(out, out, res, up=1)), ("torgb", self.torgb(out))]
        return self.obj("SynthesisBlock", module_state(
            params=params, buffers=[("resample_filter", FILTER.clone())], modules=modules, in_channels=n_in,
            w_dim=self.w_dim, resolution=res, img_channels=3, is_last=res == self.res, architecture="skip",
            use_fp16=res >= self.fp16_from, channels_last=False, num_conv=1 if n_in == 0 else 2, num_torgb=1),
            in_channels=n_in, out_channels=out, w_dim=self.w_dim, resolution=res, img_channels=3,
            is_last=res == self.res, use_fp16=res >= self.fp16_from, conv_clamp=self.clamp)

    def generator(self):
        mapping = self.obj("MappingNetwork", module_state(
            buffers=[("w_avg", self.randn(self.w_dim))],
            modules=[(f"fc{i}", self.fc(self.w_dim, self.w_dim, lr=self.lr, activation="lrelu"))
                     for i in range(self.n_mlp)],
            z_dim=self.w_dim, c_dim=0, w_dim=self.w_dim, num_ws=self.num_ws, num_layers=self.n_mlp, w_avg_beta=0.995),
            z_dim=self.w_dim, c_dim=0, w_dim=self.w_dim, num_ws=self.num_ws, num_layers=self.n_mlp)
        synthesis = self.obj("SynthesisNetwork", module_state(
            modules=[(f"b{r}", self.block(r)) for r in self.resolutions], w_dim=self.w_dim, img_resolution=self.res,
            img_resolution_log2=int(math.log2(self.res)), img_channels=3, block_resolutions=self.resolutions,
            num_ws=self.num_ws), w_dim=self.w_dim, img_resolution=self.res, img_channels=3)
        return self.obj("Generator", module_state(
            modules=[("synthesis", synthesis), ("mapping", mapping)], z_dim=self.w_dim, c_dim=0, w_dim=self.w_dim,
            img_resolution=self.res, img_channels=3, num_ws=self.num_ws),
            z_dim=self.w_dim, c_dim=0, w_dim=self.w_dim, img_resolution=self.res, img_channels=3,
            mapping_kwargs=self.EasyDict(num_layers=self.n_mlp, lr_multiplier=self.lr),
            synthesis_kwargs=self.EasyDict(channel_base=512, channel_max=16, conv_clamp=self.clamp))

    def snapshot(self, **extra):
        G_ema = self.generator()
        augment = self.obj("AugmentPipe", module_state(buffers=[("p", torch.tensor(0.2))], xflip=1.0,
                                                       Hz_fbank=np.linspace(0, 1, 8, dtype=np.float32)), xflip=1)
        D = self.obj("Discriminator", module_state(img_resolution=self.res), img_resolution=self.res)
        training_set_kwargs = dict(class_name="training.dataset.ImageFolderDataset", path="/data/faces.zip",
                                   resolution=self.res, use_labels=False, max_size=None, xflip=False, random_seed=0)
        return dict(training_set_kwargs=training_set_kwargs, G=self.generator(), D=D, G_ema=G_ema,
                    augment_pipe=augment, **extra)


def write(obj, path, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.fixture
def nvidia(monkeypatch):
    return NVIDIAModules(monkeypatch)


@pytest.fixture
def snapshot(tmp_path, nvidia):
    """(path of a 64 px snapshot whose source writes ``marker``, marker, its G_ema as flat tensors)."""
    marker = tmp_path / "payload-ran"
    with nvidia:
        builder = SnapshotBuilder(payload_source(marker), nvidia.EasyDict)
        data = builder.snapshot()
        path = write(data, tmp_path / "network-snapshot-000100.pkl")
    return path, marker, data["G_ema"]


# -- NVIDIA's computation, written out from training/networks.py's maths -----------------

def flat(obj, prefix=""):
    """``{dotted name: tensor}`` and ``{dotted name: attribute}`` of a builder object."""
    tensors, attrs = {}, {}
    for table in ("_parameters", "_buffers"):
        for k, v in obj.state[table].items():
            tensors[prefix + k] = v.detach()
    for k, v in obj.state.items():
        if not k.startswith("_") and k != "training":
            attrs[prefix + k] = v
    for k, child in obj.state["_modules"].items():
        t, a = flat(child, f"{prefix}{k}.")
        tensors.update(t)
        attrs.update(a)
    return tensors, attrs


def reference_render(G, z, psi=1.0, clamp=True):
    t, a = flat(G)

    def fc(name, x):
        y = x @ (t[f"{name}.weight"] * float(a[f"{name}.weight_gain"])).T + t[f"{name}.bias"] * a[f"{name}.bias_gain"]
        return F.leaky_relu(y, 0.2) * SQRT2 if a[f"{name}.activation"] == "lrelu" else y

    def fir(x, f, pad):  # depthwise filter (symmetric, so correlation = convolution)
        x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
        return F.conv2d(x, f.expand(x.shape[1], 1, *f.shape), groups=x.shape[1])

    def clamp_(x, name):
        c = a[f"{name}.conv_clamp"]
        return x.clamp(-c, c) if clamp and c is not None else x

    def layer(name, x, w):
        styles = fc(f"{name}.affine", w)
        weight = t[f"{name}.weight"][None] * styles[:, None, :, None, None]
        weight = weight * (weight.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        if a[f"{name}.up"] == 2:
            y = torch.cat([F.conv_transpose2d(x[i:i + 1], weight[i].transpose(0, 1), stride=2) for i in range(len(x))])
            y = fir(y, t[f"{name}.resample_filter"] * 4, (1, 1))
        else:
            y = torch.cat([F.conv2d(x[i:i + 1], weight[i], padding=1) for i in range(len(x))])
        y = y + t[f"{name}.noise_const"] * t[f"{name}.noise_strength"]
        return clamp_(F.leaky_relu(y + t[f"{name}.bias"][None, :, None, None], 0.2) * SQRT2, name)

    def torgb(name, x, w):
        styles = fc(f"{name}.affine", w) * float(a[f"{name}.weight_gain"])
        y = torch.cat([F.conv2d(x[i:i + 1], t[f"{name}.weight"] * styles[i][None, :, None, None])
                       for i in range(len(x))])
        return clamp_(y + t[f"{name}.bias"][None, :, None, None], name)

    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(a["mapping.num_layers"]):
        x = fc(f"mapping.fc{i}", x)
    ws = t["mapping.w_avg"].lerp(x, psi)[:, None].repeat(1, a["num_ws"], 1)
    img, idx = None, 0
    for res in a["synthesis.block_resolutions"]:
        b = f"synthesis.b{res}"
        if res == 4:
            x = t[f"{b}.const"][None].repeat(len(z), 1, 1, 1)
            x = layer(f"{b}.conv1", x, ws[:, 0])
            img = torgb(f"{b}.torgb", x, ws[:, 1])
            idx = 1
        else:
            x = layer(f"{b}.conv0", x, ws[:, idx])
            x = layer(f"{b}.conv1", x, ws[:, idx + 1])
            up = torch.zeros(*img.shape[:2], 2 * img.shape[2], 2 * img.shape[3])
            up[:, :, ::2, ::2] = img
            img = fir(up, t[f"{b}.resample_filter"] * 4, (2, 1)) + torgb(f"{b}.torgb", x, ws[:, idx + 2])
            idx += 2
    return img


# -- safety ------------------------------------------------------------------------------

def test_plain_pickle_would_run_the_planted_code(snapshot, nvidia):
    # The fixture is armed: loading it the way NVIDIA's legacy.py does executes the stored source.
    path, marker, _ = snapshot
    with nvidia, open(path, "rb") as f:
        pickle.load(f)
    assert marker.read_text() == "the snapshot ran its code"


def test_snapshot_imports_without_running_its_code(snapshot):
    path, marker, _ = snapshot
    G = load_nvidia_pickle(path)
    assert not marker.exists()
    assert not any(name.split(".")[0] in ("torch_utils", "dnnlib", "training") for name in sys.modules)
    info = G.snapshot_info
    assert (info.resolution, info.num_ws, info.mapping_layers) == (64, 10, 2)
    assert info.fp16_resolutions == [32, 64] and info.channels == {4: 16, 8: 16, 16: 16, 32: 16, 64: 8} and info.conv_clamp == pytest.approx(0.6)
    assert info.skipped == ["augment_pipe"]
    assert (G.size, G.n_latent, G.n_mlp, G.style_dim) == (64, 10, 2, 16)
    assert all(p.dtype == torch.float32 for p in G.state_dict().values())


def test_records_are_inert_data(snapshot):
    path, marker, _ = snapshot
    data = read_snapshot(path)
    G = data["G_ema"]
    assert isinstance(G, PersistentRecord) and G.class_name == "Generator"
    assert "the snapshot ran its code" in G.module_src  # kept as text, never executed
    assert isinstance(G.init_kwargs["mapping_kwargs"], EasyDict) and G.init_kwargs["mapping_kwargs"].num_layers == 2
    fc = G.get("mapping").get("fc0")
    assert isinstance(fc.get("weight_gain"), np.float64) and isinstance(fc.get("weight"), torch.nn.Parameter)
    assert set(G.tensors()) >= {"mapping.w_avg", "synthesis.b4.const", "synthesis.b64.torgb.affine.weight"}
    assert not marker.exists()


@pytest.mark.parametrize("numpy_name", ["numpy._core", "numpy.core"])
def test_plain_containers_pass(tmp_path, nvidia, numpy_name):
    marker = tmp_path / "ran"
    with nvidia:
        builder = SnapshotBuilder(payload_source(marker), nvidia.EasyDict)
        extra = dict(meta=nvidia.EasyDict(note="x", sizes=(1, 2)), table=np.arange(6, dtype=np.int16).reshape(2, 3),
                     kind=np.dtype("float32"), gain=np.float32(0.5), labels={"a", "b"},
                     loose_augment=nvidia.AugmentPipe())
        raw = pickle.dumps(builder.snapshot(**extra), protocol=2)
    # Protocol 2 names globals as text lines, so the numpy 1 spelling can be written in place.
    raw = raw.replace(b"numpy._core.", numpy_name.encode() + b".")
    assert numpy_name.encode() + b".multiarray" in raw
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(raw)
    data = read_snapshot(path)
    assert isinstance(data["meta"], EasyDict) and data["meta"].note == "x"
    assert data["table"].dtype == np.int16 and data["table"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert data["kind"] == np.float32 and data["gain"] == np.float32(0.5) and data["labels"] == {"a", "b"}
    assert isinstance(data["loose_augment"], nvidia_pickle.SkippedObject)
    assert data["augment_pipe"].class_name == "AugmentPipe"
    assert data["training_set_kwargs"]["resolution"] == 64
    load_nvidia_pickle(path)
    assert not marker.exists()


class Exec:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def test_an_unknown_global_is_refused_by_name(tmp_path, nvidia):
    marker = tmp_path / "ran"
    with nvidia:
        data = SnapshotBuilder(payload_source(marker), nvidia.EasyDict).snapshot()
    data["G"].state["_hook"] = Exec(f"open({str(marker)!r}, 'w')")
    with nvidia:
        path = write(data, tmp_path / "evil.pkl")
    with pytest.raises(RefusedGlobalError, match=r"evil\.pkl: refused global 'builtins\.exec'") as err:
        load_nvidia_pickle(path)
    assert err.value.global_name == "builtins.exec"
    assert not marker.exists()
    live_module = write({"G_ema": torch.nn.Linear(2, 2)}, tmp_path / "module.pkl")
    with pytest.raises(RefusedGlobalError, match="torch.nn.modules.linear.Linear"):
        read_snapshot(live_module)


def test_wrong_contents_give_errors_that_name_the_file(tmp_path, nvidia):
    with pytest.raises(FileNotFoundError, match="absent.pkl"):
        load_nvidia_pickle(tmp_path / "absent.pkl")
    path = write({"state": {"a": torch.zeros(1)}}, tmp_path / "plain.pkl")
    with pytest.raises(SnapshotError, match="plain.pkl.*'G_ema'"):
        load_nvidia_pickle(path)
    (tmp_path / "truncated.pkl").write_bytes(write({"x": torch.zeros(3)}, tmp_path / "t.pkl").read_bytes()[:40])
    with pytest.raises(SnapshotError, match="truncated.pkl"):
        load_nvidia_pickle(tmp_path / "truncated.pkl")
    with nvidia:
        data = SnapshotBuilder("", nvidia.EasyDict).snapshot()
        data["G_ema"].state["c_dim"] = 10
        path = write(data, tmp_path / "conditional.pkl")
    with pytest.raises(SnapshotError, match="conditional.pkl.*c_dim 10"):
        load_nvidia_pickle(path)


# -- the mapping ---------------------------------------------------------------------------

@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_generator_equals_nvidia_computation(snapshot, psi):
    path, _, G_nv = snapshot
    G = load_nvidia_pickle(path)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, _ = G([z], truncation=psi, truncation_latent=G.latent_avg, randomize_noise=False)
        ref = reference_render(G_nv, z, psi)
        unclamped = reference_render(G_nv, z, psi, clamp=False)
    assert (ours - ref).abs().max() < 1e-4
    assert (unclamped - ref).abs().max() > 0.1  # the clamp is active in this network
    assert torch.equal(G.latent_avg, G_nv.state["_modules"]["mapping"].state["_buffers"]["w_avg"])


def test_convert_writes_a_rosinality_checkpoint(snapshot, tmp_path):
    path, _, G_nv = snapshot
    out = tmp_path / "out" / "converted.pt"
    info = convert_nvidia_pickle(path, out)
    assert info.resolution == 64
    ckpt = torch.load(out, weights_only=True)
    assert set(ckpt) == {"g_ema", "latent_avg", "conv_clamp"} and ckpt["latent_avg"].shape == (16,)
    G, latent_avg = load_rosinality_generator(out)
    assert G.conv_clamp == pytest.approx(0.6)
    z = torch.randn(2, 16)
    with torch.no_grad():
        ours, _ = G([z], truncation=0.7, truncation_latent=latent_avg, randomize_noise=False)
        assert (ours - reference_render(G_nv, z, 0.7)).abs().max() < 1e-4
    with pytest.raises(CheckpointError, match="overwrite"):
        convert_nvidia_pickle(path, path)
    assert not list(out.parent.glob("*.tmp"))


def test_channel_multiplier_inferred_below_the_cap():
    # 64 px at the cap, 128 px under it: the multiplier comes from the first block the cap did not cut.
    from stytr.models.stylegan2 import Generator

    sd = Generator(256, 8, 1, channel_multiplier=1 / 16, channel_max=16).state_dict()
    kw = generator_kwargs_from_state(sd)
    assert kw["channel_multiplier"] == 1 / 16 and kw["channel_max"] == 16
    assert Generator(**kw).state_dict()["convs.10.conv.weight"].shape == sd["convs.10.conv.weight"].shape


# -- command line ------------------------------------------------------------------------------

def run_cli(capsys, *args):
    """(exit status, stdout, stderr) of ``python -m stytr ARGS``, run in this process."""
    from stytr.__main__ import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_convert_nvidia_command(snapshot, tmp_path, nvidia, capsys):
    path, marker, _ = snapshot
    out = tmp_path / "converted.pt"
    code, stdout, stderr = run_cli(capsys, "convert-nvidia", path, out)
    assert code == 0, stderr
    assert "64 px, num_ws 10, 2 mapping layers" in stdout
    assert load_rosinality_generator(out)[0].size == 64 and not marker.exists()

    code, _, stderr = run_cli(capsys, "convert-nvidia", tmp_path / "nothing.pkl", tmp_path / "x.pt")
    assert code == 2 and "nothing.pkl" in stderr and len(stderr.strip().splitlines()) == 1

    with nvidia:
        data = SnapshotBuilder(payload_source(marker), nvidia.EasyDict).snapshot()
        data["G_ema"].state["_hook"] = Exec(f"open({str(marker)!r}, 'w')")
        evil = write(data, tmp_path / "evil.pkl")
    code, _, stderr = run_cli(capsys, "convert-nvidia", evil, tmp_path / "y.pt")
    assert code == 2 and "refused global 'builtins.exec'" in stderr and len(stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "y.pt").exists()


def test_registry_and_config_carry_the_import(snapshot):
    # artifacts.load reads .pkl generators through the importer; a GeneratorConfig with the snapshot's
    # conv_clamp builds a module (e.g. an encoder's decoder) that renders the same from the same weights.
    from stytr import artifacts
    from stytr.config import GeneratorConfig

    path, marker, G_nv = snapshot
    G = artifacts.load("generator", path)
    assert G.latent_avg.shape == (16,) and not any(p.requires_grad for p in G.parameters())
    decoder = GeneratorConfig(size=64, style_dim=16, n_mlp=2, channel_multiplier=1 / 32, channel_max=16,
                              conv_clamp=G.conv_clamp).build()
    decoder.load_state_dict(G.state_dict())
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(decoder([z], randomize_noise=False)[0], G([z], randomize_noise=False)[0])
    assert not marker.exists()


def test_a_domain_file_on_a_snapshot(snapshot, tmp_path):
    """A user's domain on a StyleGAN2-ADA snapshot: --domain gives the encoder's decoder the snapshot's
    architecture and conv_clamp, and the decoder renders what the imported generator renders."""
    import json

    from stytr import artifacts
    from stytr.config import InversionTrainConfig
    from stytr.domains import get_domain
    from stytr.train.for_domain import inversion_config
    from stytr.train.inversion import build_model

    path, marker, _ = snapshot
    (tmp_path / "pics").mkdir()
    domain_file = tmp_path / "nv.json"
    domain_file.write_text(json.dumps({"name": "nv", "generator": path.name, "image_dir": "pics", "image_size": 64}))
    cfg = inversion_config(InversionTrainConfig.preset("smoke"), get_domain(domain_file))
    G = artifacts.load("generator", path)
    assert cfg.model.generator.conv_clamp == G.conv_clamp and cfg.model.generator.size == 64
    model = build_model(cfg)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(model.decoder([z], randomize_noise=False)[0], G([z], randomize_noise=False)[0])
    assert not marker.exists()
