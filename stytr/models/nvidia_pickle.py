"""Read NVIDIA StyleGAN2-ADA snapshots (``network-snapshot-*.pkl``) without running any of their code.

Facts about the format (NVlabs/stylegan2-ada-pytorch): a snapshot is a plain pickle of
``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``. Every network class is a
``torch_utils.persistence`` "persistent class": an instance pickles as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` carries the whole
source of the defining module, the class name and the instance ``__dict__``. Plain ``pickle``
executes that source, so loading a snapshot runs whatever the file contains.

:class:`SnapshotUnpickler` resolves only an allow-list of globals: tensor and storage rebuilders
(storages are read by ``torch.load(weights_only=True)``), plain containers, ``dnnlib.util.EasyDict``,
numpy arrays, scalars and dtypes (under ``numpy.core`` and numpy 2's ``numpy._core``). The persistent
call yields an inert :class:`PersistentRecord` (class name, source text, constructor arguments,
state) and the source is never executed; anything else is refused by name.

:func:`import_generator` then maps ``G_ema`` onto the rosinality layout of
:class:`stytr.models.stylegan2.Generator` (which imports this module, not the other way round).
"""
from __future__ import annotations

import collections
import io
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import CheckpointError, require_file

__all__ = ["SnapshotError", "RefusedGlobalError", "PersistentRecord", "SnapshotUnpickler", "read_snapshot",
           "SnapshotInfo", "ImportedGenerator", "import_generator", "ROSINALITY_LR_MLP"]

# The mapping network's learning-rate multiplier that rosinality-layout files assume
# (``generator_kwargs_from_state`` infers no other); imported weights are rescaled to it.
ROSINALITY_LR_MLP = 0.01


class SnapshotError(CheckpointError):
    """A file is not a StyleGAN2-ADA snapshot this importer can map."""


class RefusedGlobalError(SnapshotError):
    """The pickle names a global (class or function) outside the allow-list."""

    def __init__(self, global_name: str, source: str = "snapshot"):
        self.global_name = global_name
        super().__init__(f"{source}: refused global {global_name!r}: stytr reads StyleGAN2-ADA snapshots without "
                         f"running their code, and this pickle asks for something other than tensors, plain "
                         f"containers and NVIDIA's persistent network classes")


@dataclass
class PersistentRecord:
    """What a ``torch_utils.persistence`` object becomes here: data, never a live class."""

    class_name: str
    module_src: str
    version: int
    state: dict

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}))

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute of the original object: a plain attribute, parameter, buffer or submodule."""
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.state.get(table) or {}
            if name in entries:
                return entries[name]
        return self.state.get(name, default)

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers by dotted name, like ``nn.Module.state_dict``."""
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for table in ("_parameters", "_buffers"):
            for name, value in (self.state.get(table) or {}).items():
                if isinstance(value, torch.Tensor) and name not in skip:
                    out[prefix + name] = value.detach()
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(f"{prefix}{name}."))
        return out

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name!r}, {len(self.tensors())} tensors)"


class EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class SkippedObject:
    """Whatever a skipped class (the augmentation pipeline) was built from, dropped."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        pass


# -- the allow-list -------------------------------------------------------------

def _reconstruct_persistent_obj(meta) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise SnapshotError("a persistent object without the expected meta (type 'class', class_name, state)")
    return PersistentRecord(class_name=meta["class_name"], module_src=str(meta.get("module_src", "")),
                            version=int(meta.get("version", -1)), state=dict(meta.get("state") or {}))


def _load_storage_bytes(data: bytes):
    # A storage pickled outside torch.save is a nested legacy-format torch.save blob; torch's own
    # rebuilder reads it with weights_only=False, ours with weights_only=True.
    if not isinstance(data, (bytes, bytearray)):
        raise SnapshotError("a storage whose payload is not bytes")
    return torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, torch.TypedStorage):
        raise SnapshotError(f"a tensor rebuilt from a {type(storage).__name__}, not a storage")
    # Hooks and metadata are dropped: a tensor's numbers are all we take.
    return torch._utils._rebuild_tensor_v2(storage, int(storage_offset), tuple(size), tuple(stride), False,
                                           collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, torch.Tensor):
        raise SnapshotError(f"a parameter rebuilt from a {type(data).__name__}, not a tensor")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


_np_core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core


def _numpy_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise SnapshotError(f"a numpy array of type {getattr(subtype, '__name__', subtype)!r}")
    return _np_core.multiarray._reconstruct(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise SnapshotError(f"a numpy scalar of dtype {dtype!r}")
    return _np_core.multiarray.scalar(dtype, data)


def _numpy_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise SnapshotError(f"a numpy buffer of dtype {dtype!r}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _codecs_encode(text, encoding="utf-8"):
    # Protocol-2 pickles write bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding != "latin1":
        raise SnapshotError("a _codecs.encode call other than the one protocol 2 uses for bytes")
    return text.encode("latin1")


_NUMPY = {"multiarray._reconstruct": _numpy_reconstruct, "multiarray.scalar": _numpy_scalar,
          "numeric._frombuffer": _numpy_frombuffer}

ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("training.augment", "AugmentPipe"): SkippedObject,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"{root}.{mod}", name): fn for root in ("numpy.core", "numpy._core")
       for key, fn in _NUMPY.items() for mod, name in [key.split(".")]},
}


class SnapshotUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only :data:`ALLOWED` globals (and torch dtypes)."""

    def __init__(self, file, source: str = "snapshot"):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 2 spells builtins the Python 2 way
            module = "builtins"
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "dnnlib.tflib.network":
            raise SnapshotError(f"{self.source} is a TensorFlow StyleGAN2 pickle; convert it to a PyTorch "
                                f"snapshot with NVIDIA's legacy.py first")
        raise RefusedGlobalError(f"{module}.{name}", self.source)

    def persistent_load(self, pid):
        raise SnapshotError(f"{self.source}: unexpected persistent id {pid!r} (not a pickle.dump snapshot)")


def read_snapshot(path: str | Path) -> Any:
    """The unpickled contents of a snapshot, with persistent objects as :class:`PersistentRecord`."""
    path = require_file(path, "StyleGAN2-ADA snapshot")
    with open(path, "rb") as f:
        try:
            return SnapshotUnpickler(f, str(path)).load()
        except CheckpointError:
            raise
        except Exception as err:  # truncated or foreign files fail in many ways
            raise SnapshotError(f"could not read {path} as a StyleGAN2-ADA snapshot: {type(err).__name__}: {err}") \
                from err


# -- G_ema onto the rosinality layout ---------------------------------------------

@dataclass
class SnapshotInfo:
    resolution: int
    num_ws: int
    mapping_layers: int
    w_dim: int
    channels: dict[int, int]
    conv_clamp: float | None
    fp16_resolutions: list[int]
    lr_multiplier: float
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        fp16 = ", ".join(map(str, self.fp16_resolutions)) or "none"
        return (f"StyleGAN2-ADA generator: {self.resolution} px, num_ws {self.num_ws}, {self.mapping_layers} mapping "
                f"layers (w_dim {self.w_dim}, lr multiplier {self.lr_multiplier:g}), conv_clamp {self.conv_clamp}, "
                f"fp16 blocks {fp16} (computed in float32 here)")


@dataclass
class ImportedGenerator:
    """A rosinality-layout ``g_ema`` state dict plus what the layout cannot hold."""

    state: dict[str, torch.Tensor]
    latent_avg: torch.Tensor | None
    conv_clamp: float | None
    info: SnapshotInfo


def _fail(source: str, what: str) -> SnapshotError:
    return SnapshotError(f"{source}: {what}")


def _child(record: PersistentRecord, name: str, source: str, where: str) -> PersistentRecord:
    child = record.get(name)
    if not isinstance(child, PersistentRecord):
        raise _fail(source, f"{where} has no {name!r} network")
    return child


def _tensor(record: PersistentRecord, name: str, source: str, where: str) -> torch.Tensor:
    value = record.get(name)
    if not isinstance(value, torch.Tensor):
        raise _fail(source, f"{where}.{name} is missing")
    return value.detach().to(torch.float32)  # fp16-marked blocks still keep float32 weights; be sure


def _fully_connected(fc: PersistentRecord, lr_mul: float, source: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """NVIDIA applies ``weight_gain`` and ``bias_gain`` at use time; rescale so that our layer
    (effective weight ``W * lr_mul / sqrt(in)``, bias ``b * lr_mul``) computes the same."""
    weight, bias = _tensor(fc, "weight", source, where), _tensor(fc, "bias", source, where)
    fan_in = weight.shape[1]
    weight_gain = float(fc.get("weight_gain", fc.init_kwargs.get("lr_multiplier", 1) / math.sqrt(fan_in)))
    bias_gain = float(fc.get("bias_gain", fc.init_kwargs.get("lr_multiplier", 1)))
    weight = (weight.double() * (weight_gain * math.sqrt(fan_in) / lr_mul)).float()
    bias = (bias.double() * (bias_gain / lr_mul)).float()
    return weight, bias


def _check_filter(layer: PersistentRecord, source: str, where: str) -> torch.Tensor:
    f = _tensor(layer, "resample_filter", source, where)
    if f.shape != (4, 4):
        raise _fail(source, f"{where} resamples with a {tuple(f.shape)} filter; only 4-tap filters map onto ours")
    return f


def import_generator(path: str | Path, key: str = "G_ema") -> ImportedGenerator:
    """Read ``path`` safely and map its ``key`` generator onto the rosinality ``Generator`` layout."""
    source = str(path)
    data = read_snapshot(path)
    if not isinstance(data, dict) or not isinstance(data.get(key), PersistentRecord):
        found = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise _fail(source, f"expected a StyleGAN2-ADA snapshot dict with {key!r}, found {found}")
    G = data[key]
    if G.class_name != "Generator":
        raise _fail(source, f"{key} is a {G.class_name}, not a Generator")
    skipped = [name for name, value in data.items()
               if isinstance(value, SkippedObject) or (isinstance(value, PersistentRecord)
                                                         and value.class_name == "AugmentPipe")]
    if int(G.get("c_dim", 0) or 0) != 0:
        raise _fail(source, f"{key} is conditional (c_dim {G.get('c_dim')}); our generator has no label input")
    if int(G.get("img_channels", 3)) != 3:
        raise _fail(source, f"{key} renders {G.get('img_channels')} channels; ours renders RGB")
    mapping = _child(G, "mapping", source, key)
    synthesis = _child(G, "synthesis", source, key)
    z_dim, w_dim = int(G.get("z_dim")), int(G.get("w_dim"))
    if z_dim != w_dim:
        raise _fail(source, f"z_dim {z_dim} differs from w_dim {w_dim}; our mapping keeps one width")

    state: dict[str, torch.Tensor] = {}
    # Mapping: normalize_2nd_moment is our PixelNorm (style.0); fc{i} is style.{i+1}.
    n_mlp = int(mapping.get("num_layers"))
    lr_multiplier = float(_child(mapping, "fc0", source, "mapping").get("bias_gain", 0.01))
    for i in range(n_mlp):
        fc = _child(mapping, f"fc{i}", source, "mapping")
        if fc.get("activation") != "lrelu":
            raise _fail(source, f"mapping.fc{i} uses activation {fc.get('activation')!r}; ours is lrelu")
        weight, bias = _fully_connected(fc, ROSINALITY_LR_MLP, source, f"mapping.fc{i}")
        if weight.shape != (w_dim, w_dim):
            raise _fail(source, f"mapping.fc{i} is {tuple(weight.shape)}; ours needs ({w_dim}, {w_dim}) throughout")
        state[f"style.{i + 1}.weight"], state[f"style.{i + 1}.bias"] = weight, bias
    w_avg = mapping.get("w_avg")
    latent_avg = w_avg.detach().to(torch.float32).clone() if isinstance(w_avg, torch.Tensor) else None

    resolution = int(synthesis.get("img_resolution"))
    log2 = int(round(math.log2(resolution)))
    if 2**log2 != resolution or resolution < 8:
        raise _fail(source, f"resolution {resolution} is not a power of two of at least 8")
    channels: dict[int, int] = {}
    fp16: list[int] = []
    clamps: set = set()
    noise_index = 0

    def styled(layer: PersistentRecord, target: str, where: str, up: bool) -> None:
        nonlocal noise_index
        if layer.get("activation") != "lrelu":
            raise _fail(source, f"{where} uses activation {layer.get('activation')!r}; ours is lrelu")
        if int(layer.get("up", 1)) != (2 if up else 1):
            raise _fail(source, f"{where} upsamples by {layer.get('up')}, expected {2 if up else 1}")
        weight = _tensor(layer, "weight", source, where)
        if weight.shape[-1] != 3:
            raise _fail(source, f"{where} has {weight.shape[-1]}x{weight.shape[-1]} kernels; ours are 3x3")
        filt = _check_filter(layer, source, where)
        affine = _child(layer, "affine", source, where)
        # The demodulated convolution does not depend on the weight's scale, so no gain is folded in.
        state[f"{target}.conv.weight"] = weight.unsqueeze(0)
        state[f"{target}.conv.modulation.weight"], state[f"{target}.conv.modulation.bias"] = \
            _fully_connected(affine, 1.0, source, f"{where}.affine")
        state[f"{target}.activate.bias"] = _tensor(layer, "bias", source, where)
        res = int(layer.get("resolution"))
        if layer.get("use_noise", True):
            noise = _tensor(layer, "noise_const", source, where)
            strength = _tensor(layer, "noise_strength", source, where)
        else:  # no noise input: a zero strength is the same thing
            noise, strength = torch.zeros(res, res), torch.zeros(())
        state[f"{target}.noise.weight"] = strength.reshape(1)
        state[f"noises.noise_{noise_index}"] = noise.reshape(1, 1, res, res)
        noise_index += 1
        if up:  # our transposed convolution is followed by a blur with the same filter, gain 4
            state[f"{target}.conv.blur.kernel"] = filt * 4
        clamps.add(layer.get("conv_clamp"))

    def to_rgb(layer: PersistentRecord, target: str, where: str) -> None:
        weight = _tensor(layer, "weight", source, where)
        if weight.shape[0] != 3 or weight.shape[-1] != 1:
            raise _fail(source, f"{where} weight is {tuple(weight.shape)}; expected (3, C, 1, 1)")
        # NVIDIA scales the styles by weight_gain; our ToRGB scales the weight by 1/sqrt(C): the same product.
        gain = float(layer.get("weight_gain", 1 / math.sqrt(weight.shape[1])))
        state[f"{target}.conv.weight"] = (weight.double() * gain * math.sqrt(weight.shape[1])).float().unsqueeze(0)
        state[f"{target}.conv.modulation.weight"], state[f"{target}.conv.modulation.bias"] = \
            _fully_connected(_child(layer, "affine", source, where), 1.0, source, f"{where}.affine")
        state[f"{target}.bias"] = _tensor(layer, "bias", source, where).reshape(1, 3, 1, 1)
        clamps.add(layer.get("conv_clamp"))

    for i, res in enumerate(2**k for k in range(2, log2 + 1)):
        where = f"synthesis.b{res}"
        block = _child(synthesis, f"b{res}", source, "synthesis")
        if block.get("architecture", "skip") != "skip":
            raise _fail(source, f"{where} uses the {block.get('architecture')!r} architecture; ours is 'skip'")
        if block.get("use_fp16"):
            fp16.append(res)
        if res == 4:
            const = _tensor(block, "const", source, where)
            state["input.input"] = const.unsqueeze(0)
            styled(_child(block, "conv1", source, where), "conv1", f"{where}.conv1", up=False)
            to_rgb(_child(block, "torgb", source, where), "to_rgb1", f"{where}.torgb")
        else:
            styled(_child(block, "conv0", source, where), f"convs.{2 * i - 2}", f"{where}.conv0", up=True)
            styled(_child(block, "conv1", source, where), f"convs.{2 * i - 1}", f"{where}.conv1", up=False)
            to_rgb(_child(block, "torgb", source, where), f"to_rgbs.{i - 1}", f"{where}.torgb")
            state[f"to_rgbs.{i - 1}.upsample.kernel"] = _check_filter(block, source, where) * 4
        channels[res] = int(_tensor(_child(block, "conv1", source, where), "weight", source, where).shape[0])

    if len(clamps) != 1:
        raise _fail(source, f"layers use different conv_clamp values {sorted(map(str, clamps))}; ours takes one")
    conv_clamp = clamps.pop()
    conv_clamp = None if conv_clamp is None else float(conv_clamp)
    num_ws = int(G.get("num_ws", synthesis.get("num_ws")))
    if num_ws != 2 * log2 - 2:
        raise _fail(source, f"num_ws {num_ws} does not fit a {resolution} px skip generator ({2 * log2 - 2})")
    info = SnapshotInfo(resolution=resolution, num_ws=num_ws, mapping_layers=n_mlp, w_dim=w_dim, channels=channels,
                        conv_clamp=conv_clamp, fp16_resolutions=fp16, lr_multiplier=lr_multiplier, skipped=skipped)
    return ImportedGenerator(state=state, latent_avg=latent_avg, conv_clamp=conv_clamp, info=info)
