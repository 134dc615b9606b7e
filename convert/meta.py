"""Meta / Mistral consolidated decoders: params.json beside consolidated.NN.pth (Meta Llama: torch
pickles, one per model-parallel shard) or consolidated.safetensors (Mistral).

params.json, Llama style: dim, n_layers, n_heads, n_kv_heads, vocab_size (-1 in Llama 2: the
embedding table says), multiple_of, ffn_dim_multiplier, norm_eps, rope_theta, use_scaled_rope;
the feed-forward width is implicit (`llama_hidden_dim`). Mistral style states head_dim and
hidden_dim. arc_jax writes the Mistral style (unambiguous) and, for what no Meta release has, extra
fields: "norm_type": "layernorm" (OLMo's weightless LayerNorm), "qkv_bias", "qk_norm" and
"tie_embeddings": true (Qwen; a tied model stores no output.weight).

Model-parallel shards split wq, wk, wv, w1, w3 and output along dim 0, wo, w2 and tok_embeddings
along dim 1, and replicate the norms; reading concatenates one tensor at a time. torch is only
imported to read or write .pth files.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from arc_jax.convert import layout
from arc_jax.convert.errors import ConversionError
from arc_jax.convert.progress import advance
from arc_jax.convert.config_fields import backbone_from_args, field, json_mentions, load_json
from arc_jax.convert.safetensors_io import SafetensorsFile, write_safetensors
from arc_jax.model.config import BackboneConfig, RopeScaling
from arc_jax.model.decoder import Decoder

PARAMS = "params.json"
SAFETENSORS = "consolidated.safetensors"
CONTAINERS = ("pth", "safetensors")
# Meta Llama 1/2 checkpoints store this RoPE buffer; it is recomputed from rope_theta.
_ROPE_BUFFER = "rope.freqs"
# Split axis of each tensor kind (the name before ".weight") in model-parallel shards.
_SPLIT_AXES = {"tok_embeddings": 1, "output": 0, "wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "wo": 1, "w2": 1}
# arc_jax's params.json fields for the backbone options no Meta release has, written only when true.
BACKBONE_OPTIONS = ("qkv_bias", "qk_norm", "tie_embeddings")
# The only Llama 3.x scaling Meta's params.json can express: use_scaled_rope with a factor.
_META_SCALING = RopeScaling()


def split_axis(key: str) -> int | None:
    """The axis along which model-parallel shards split the tensor `key`; None: replicated."""
    parts = key.split(".")
    return _SPLIT_AXES.get(parts[-2]) if len(parts) >= 2 else None


def _import_torch(problem: str):
    """torch, imported only for .pth files; `problem` is the error message without it."""
    try:
        import torch
    except ImportError:
        raise ConversionError(problem) from None
    return torch


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


# ---- the weight files ------------------------------------------------------------------------

class _SafetensorsWeights:
    """consolidated.safetensors (Mistral): one file, nothing to concatenate."""

    def __init__(self, path: Path):
        self.file = SafetensorsFile(path)
        self.where = str(path)

    def keys(self) -> set[str]:
        return set(self.file.keys()) - {_ROPE_BUFFER}

    def shape(self, key: str) -> tuple[int, ...]:
        return self.file.shape(key)

    def get(self, key: str) -> np.ndarray:
        return np.array(self.file.get(key))  # a copy: params must not hold the file's memory map


class _TorchShards:
    """consolidated.00.pth, consolidated.01.pth, ...: memory-mapped, concatenated per tensor."""

    def __init__(self, paths: list[Path]):
        self.torch = _import_torch(f"{paths[0]}: reading .pth checkpoints needs torch (pip install torch)")
        self.paths = paths
        self.shards = [self._load(p) for p in paths]
        self.where = str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({paths[0].name} .. {paths[-1].name})"
        first = set(self.shards[0])
        for p, shard in zip(paths[1:], self.shards[1:]):
            layout.check_keys(set(shard), first, f"{p} (compared with {paths[0].name})")

    def _load(self, path: Path) -> dict:
        try:
            state = self.torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as e:  # torch reports truncation and bad pickles with many exception types
            raise ConversionError(f"{path}: cannot read this torch checkpoint, truncated or not made by torch.save "
                                  f"({_first_line(e)})") from None
        if not isinstance(state, dict) or not all(isinstance(v, self.torch.Tensor) for v in state.values()):
            raise ConversionError(f"{path}: expected a flat dict of tensors (a Meta consolidated checkpoint)")
        state.pop(_ROPE_BUFFER, None)
        return state

    def keys(self) -> set[str]:
        return set(self.shards[0])

    def shape(self, key: str) -> tuple[int, ...]:
        shapes = [tuple(s[key].shape) for s in self.shards]
        axis = split_axis(key)
        if len(shapes) == 1:
            return shapes[0]
        for p, s in zip(self.paths[1:], shapes[1:]):
            same = s == shapes[0] if axis is None else (
                len(s) == len(shapes[0]) and all(a == b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis))
            if not same:
                how = "replicated" if axis is None else f"split along axis {axis}"
                raise ConversionError(f"{p}: {key} has shape {s}, which does not fit {self.paths[0].name}'s "
                                      f"{shapes[0]} ({how})")
        if axis is None:
            return shapes[0]
        return tuple(sum(s[axis] for s in shapes) if i == axis else n for i, n in enumerate(shapes[0]))

    def _numpy(self, path: Path, key: str, t) -> np.ndarray:
        torch = self.torch
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        if t.dtype in (torch.float32, torch.float16, torch.float64):
            return t.numpy()
        raise ConversionError(f"{path}: {key} has dtype {t.dtype}; expected a floating-point weight")

    def get(self, key: str) -> np.ndarray:
        parts = [self._numpy(p, key, s[key]) for p, s in zip(self.paths, self.shards)]
        axis = split_axis(key)
        if len(parts) == 1 or axis is None:
            return np.array(parts[0])  # a copy: params must not hold the file's memory map
        return np.concatenate(parts, axis=axis)


def _open_weights(path: Path):
    if (path / SAFETENSORS).is_file():
        return _SafetensorsWeights(path / SAFETENSORS)
    shards = sorted(path.glob("consolidated*.pth"))
    if not shards:
        raise ConversionError(f"{path}: no {SAFETENSORS} or consolidated.NN.pth")
    return _TorchShards(shards)


# ---- params.json <-> BackboneConfig ----------------------------------------------------------

def config_from_params(args: dict, where: str, vocab_size: int | None) -> BackboneConfig:
    """BackboneConfig from a params.json; `where` is "<file>: "; `vocab_size` is the embedding
    table's row count, used when params.json leaves it out or writes -1."""
    if args.get("moe"):
        raise ConversionError(f"{where}moe: mixture-of-experts decoders are not supported")
    cfg = backbone_from_args(args, 0, where, vocab_size)
    scaling = None
    if field(args, "use_scaled_rope", "bool", where, False):
        scaling = dataclasses.replace(_META_SCALING, factor=field(
            args, "rope_scaling_factor", "float", where, _META_SCALING.factor))
    norm_type = field(args, "norm_type", "str", where, "rmsnorm")
    if norm_type not in ("rmsnorm", "layernorm"):
        raise ConversionError(f"{where}norm_type = {norm_type!r}: expected rmsnorm or layernorm")
    options = {name: field(args, name, "bool", where, False) for name in BACKBONE_OPTIONS}
    return dataclasses.replace(cfg, rope_scaling=scaling, norm_type=norm_type, **options)


def params_json(cfg: BackboneConfig) -> dict:
    """Mistral-style params.json: head_dim and hidden_dim stated, nothing left to derive."""
    args = {"dim": cfg.dim, "n_layers": cfg.n_layers, "head_dim": cfg.head_dim, "hidden_dim": cfg.hidden_dim,
            "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "norm_eps": cfg.norm_eps,
            "vocab_size": cfg.vocab_size, "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        if dataclasses.replace(cfg.rope_scaling, factor=_META_SCALING.factor) != _META_SCALING:
            raise ConversionError(f"params.json records RoPE scaling only as use_scaled_rope with a factor "
                                  f"(other fields as in Llama 3.1), not {cfg.rope_scaling}; write this decoder "
                                  "as hf or arc_jax")
        args["use_scaled_rope"] = True
        args["rope_scaling_factor"] = cfg.rope_scaling.factor
    if cfg.norm_type != "rmsnorm":
        args["norm_type"] = cfg.norm_type
    args.update({name: True for name in BACKBONE_OPTIONS if getattr(cfg, name)})
    return args


# ---- reading ---------------------------------------------------------------------------------

def matches(path: Path) -> bool:
    path = Path(path)
    if not (path / PARAMS).is_file():
        return False
    if not ((path / SAFETENSORS).is_file() or any(path.glob("consolidated*.pth"))):
        return False
    return not json_mentions(path / PARAMS, "embedder_params")  # that is a reference encoder checkpoint


def check_shapes(shape_of: Callable[[str], tuple[int, ...]], cfg: BackboneConfig, where: str) -> None:
    """Compare every tensor's shape with the config before any data is read."""
    for key, expected in layout.decoder_shapes(cfg).items():
        found = tuple(shape_of(key))
        if found != expected:
            raise ConversionError(f"{where}: shape mismatch for {key}: expected {expected}, found {found}")


def read(path: Path) -> tuple[BackboneConfig, dict]:
    path = Path(path)
    args = load_json(path / PARAMS)
    weights = _open_weights(path)
    keys = weights.keys()
    vocab = weights.shape("tok_embeddings.weight")[0] if "tok_embeddings.weight" in keys else None
    cfg = config_from_params(args, f"{path / PARAMS}: ", vocab)
    layout.check_keys(keys, layout.decoder_keys(cfg), weights.where)
    check_shapes(weights.shape, cfg, weights.where)
    return cfg, layout.decoder_from_meta(weights.get, keys, cfg, weights.where)


# ---- writing ---------------------------------------------------------------------------------

def _leaves(tree, path: tuple[str, ...] = ()) -> Iterator[tuple[str, object]]:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _leaves(v, (*path, str(k)))
    else:
        yield "/".join(path), tree


def check_params(params: dict, cfg: BackboneConfig) -> None:
    """The params tree has exactly the leaves and shapes the Flax Decoder declares for `cfg`
    (found by shape evaluation: nothing is allocated)."""
    tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    declared = jax.eval_shape(lambda t: Decoder(cfg).init(jax.random.key(0), t, t, t), tokens)["params"]
    expected = dict(_leaves(nn.unbox(declared)))
    found = dict(_leaves(params))
    layout.check_keys(set(found), set(expected), "params")
    for name, leaf in found.items():
        if tuple(np.shape(leaf)) != expected[name].shape:
            raise ConversionError(f"params: {name} has shape {tuple(np.shape(leaf))}; the config needs "
                                  f"{expected[name].shape}")


class TensorSpec(NamedTuple):
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def plan_tensors(tensors: Iterator[tuple[str, np.ndarray]]) -> list[TensorSpec]:
    """Names, shapes and dtypes of a tensor stream (a first pass: the streams yield views, so only
    the q/k permutations of the HF layout compute anything, one tensor at a time)."""
    return [TensorSpec(name, tuple(a.shape), np.dtype(a.dtype)) for name, a in tensors]


class _Deferred:
    """Stands for a tensor in write_safetensors' header; its bytes come from the second pass of
    the same stream when the writer reaches it, so one tensor at a time is in memory."""

    def __init__(self, spec: TensorSpec, source: Iterator[tuple[str, np.ndarray]]):
        self.spec, self.source = spec, source
        self.shape, self.dtype = spec.shape, spec.dtype

    def __array__(self, dtype=None, copy=None):
        name, array = next(self.source)
        if name != self.spec.name or tuple(array.shape) != self.spec.shape or array.dtype != self.spec.dtype:
            raise ConversionError(f"{name}: the tensor stream changed between passes (expected {self.spec})")
        return array


def write_streamed(path: Path, specs: list[TensorSpec], source: Iterator[tuple[str, np.ndarray]],
                   metadata: dict[str, str] | None = None) -> None:
    """Write `specs` (planned by plan_tensors) to a safetensors file, taking the arrays in order
    from `source`, a fresh pass over the same stream (shared by consecutive files of a shard set)."""
    write_safetensors(path, [(s.name, _Deferred(s, source)) for s in specs], metadata)


_TORCH_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
                 np.dtype(ml_dtypes.bfloat16): "bfloat16"}


def _file_backed_tensor(torch, array: np.ndarray, scratch: Path):
    """A torch tensor whose storage is a memory-mapped scratch file holding `array`.

    torch.save pickles a whole shard at once; with file-backed storages the shard's tensors live
    in the page cache instead of the process's memory, so writing needs one tensor of RAM."""
    path = scratch / f"{len(list(scratch.iterdir()))}.bin"
    np.ascontiguousarray(array).tofile(path)
    dtype = getattr(torch, _TORCH_DTYPES[np.dtype(array.dtype)])
    return torch.from_file(str(path), shared=True, size=int(array.size), dtype=dtype).view(*array.shape)


def write(cfg: BackboneConfig, params: dict, folder: Path, shards: int = 1, container: str = "pth") -> None:
    """params.json plus consolidated.NN.pth (`shards` model-parallel shards, Meta Llama) or
    consolidated.safetensors (Mistral), both written one tensor of memory at a time."""
    folder = Path(folder)
    if container not in CONTAINERS:
        raise ConversionError(f"unknown Meta container {container!r}; choose from {', '.join(CONTAINERS)}")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConversionError(f"shards = {shards!r}: expected a positive integer")
    if container == "safetensors" and shards != 1:
        raise ConversionError("consolidated.safetensors holds one shard; use container='pth' for shards > 1")
    args = params_json(cfg)
    check_params(params, cfg)
    for name, shape in layout.decoder_shapes(cfg).items():
        axis = split_axis(name)
        if axis is not None and shape[axis] % shards:
            raise ConversionError(f"shards = {shards}: {name} {shape} cannot be split into {shards} along axis {axis}")
    torch = None if container == "safetensors" else _import_torch(
        "writing .pth checkpoints needs torch (pip install torch), or write container='safetensors'")
    (folder / PARAMS).write_text(json.dumps(args, indent=2) + "\n")
    if container == "safetensors":
        specs = plan_tensors(layout.decoder_to_meta(params, cfg))
        write_streamed(folder / SAFETENSORS, specs, layout.decoder_to_meta(params, cfg))
        return
    for i in range(shards):
        with tempfile.TemporaryDirectory(dir=folder, prefix=".scratch-") as scratch:
            state = {}
            for name, array in layout.decoder_to_meta(params, cfg):
                axis = split_axis(name)
                part = array if axis is None else np.split(array, shards, axis)[i]
                state[name] = _file_backed_tensor(torch, part, Path(scratch))
                advance(part.nbytes)
            torch.save(state, folder / f"consolidated.{i:02d}.pth")
            del state  # unmap the scratch files before their folder is removed
