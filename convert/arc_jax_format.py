"""arc_jax's own checkpoint layout: `arc_jax.json` (what the folder holds) + `params/` (Orbax).

  arc_jax.json  {"format": "arc_jax", "format_version": 1, "kind": "encoder" | "decoder",
                 "config": EncoderConfig or BackboneConfig as a dict}
  params/       an Orbax StandardCheckpointer tree in the arc_jax parameter layout

A training workdir (see arc_jax/train/trainer.py) also reads as arc_jax: as an encoder, the
parameters and config of its latest checkpoint; as a decoder, its `decoder_0/` folder. One
checkpoint of a workdir, <workdir>/checkpoints/<step>, reads as that step's encoder.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from arc_jax.convert.errors import ConversionError
from arc_jax.convert.progress import advance
from arc_jax.model.config import BackboneConfig, EncoderConfig

MARKER = "arc_jax.json"
FORMAT_VERSION = 1
_CONCURRENT_GB = 1
# Orbax encodes a few chunks at once, each copied into its own buffer: the extra memory of a save is
# about four chunks plus ~80 MB (a 569 MB model: +300-350 MB with 64 MB chunks, +125-136 MB with
# 16 MB; no difference in write or read time).
_CHUNK_BYTES = 16 << 20


def latest_training_step(path: Path) -> Path | None:
    """The newest complete trainer checkpoint under <path>/checkpoints, if any."""
    steps = path / "checkpoints"
    if not steps.is_dir():
        return None
    numbered = sorted((p for p in steps.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
    return next((p for p in numbered if (p / "state").is_dir() and (p / "config" / "metadata").is_file()), None)


def matches(path: Path) -> bool:
    return (path / MARKER).is_file() or latest_training_step(path) is not None or training_step_folder(path)


def read_kind(path: Path) -> str:
    """"encoder", "decoder", or "workdir" (a training run: both)."""
    if (path / MARKER).is_file():
        return _read_marker(path)["kind"]
    return "workdir"


def _read_marker(folder: Path) -> dict:
    marker = folder / MARKER
    try:
        meta = json.loads(marker.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{marker}: malformed JSON ({e})") from None
    for field in ("kind", "config"):
        if field not in meta:
            raise ConversionError(f"{marker}: missing field {field!r}")
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ConversionError(f"{marker}: format_version {meta['format_version']} is newer than this arc_jax")
    return meta


def read_config(path: Path, kind: str):
    """The config of an arc_jax checkpoint folder, read from its marker alone."""
    if not (path / MARKER).is_file():
        raise ConversionError(f"{path}: a trainer workdir; give the checkpoint folder of the {kind} itself")
    meta = _read_marker(path)
    if meta["kind"] != kind:
        raise ConversionError(f"{path}: this is an arc_jax {meta['kind']}, not a {kind}")
    try:
        return (EncoderConfig if kind == "encoder" else BackboneConfig).from_dict(meta["config"])
    except (TypeError, KeyError, ValueError) as e:
        raise ConversionError(f"{path / MARKER}: bad config ({e})") from None


def training_step_folder(path: Path) -> bool:
    """Whether `path` is one checkpoint of a trainer workdir (<workdir>/checkpoints/<step>)."""
    return path.parent.name == "checkpoints" and path.name.isdigit() and (path / "state").is_dir()


def read(path: Path, kind: str | None = None):
    if not (path / MARKER).is_file() and training_step_folder(path):  # one step of a run, chosen by the user
        if kind == "decoder":
            return _read_training_decoder(path.parent.parent, path)
        return _read_training_encoder(path)
    if not (path / MARKER).is_file():
        step = latest_training_step(path)
        if step is None:
            raise ConversionError(f"{path}: no {MARKER} and no trainer checkpoint (not an arc_jax checkpoint or workdir)")
        if kind == "decoder":
            return _read_training_decoder(path, step)
        return _read_training_encoder(step)
    folder = path
    meta = _read_marker(folder)
    if kind is not None and meta["kind"] != kind:
        raise ConversionError(f"{folder}: this is an arc_jax {meta['kind']}, not a {kind}")
    try:
        cfg = (EncoderConfig if meta["kind"] == "encoder" else BackboneConfig).from_dict(meta["config"])
    except (TypeError, KeyError, ValueError) as e:
        raise ConversionError(f"{folder / MARKER}: bad config ({e})") from None
    params_dir = folder / "params"
    if not params_dir.is_dir():
        raise ConversionError(f"{params_dir}: missing (the parameters of the checkpoint)")
    import orbax.checkpoint as ocp

    try:
        checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(restore_concurrent_gb=_CONCURRENT_GB))
        params = checkpointer.restore(params_dir.resolve())
        advance(sum(np.asarray(a).nbytes for a in _leaves(params)))
    except Exception as e:  # Orbax raises many types for a damaged folder; report it in one line
        raise ConversionError(f"{params_dir}: cannot restore ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return cfg, params


def _read_training_decoder(workdir: Path, step: Path):
    """The first decoder a run trained against: its random weights in the workdir, or the converted
    decoder its config points to."""
    if (workdir / "decoder_0").is_dir():
        return read(workdir / "decoder_0", "decoder")
    config_file = step / "config" / "metadata"
    try:
        source = json.loads(config_file.read_text())["model"]["decoders"][0]["path"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
        raise ConversionError(f"{config_file}: no model.decoders[0].path and no {workdir / 'decoder_0'} ({e})") from None
    from arc_jax.convert import read_decoder

    return read_decoder(source)


def _read_training_encoder(step: Path):
    """(EncoderConfig, params) of a trainer checkpoint (its optimiser state is not kept)."""
    import orbax.checkpoint as ocp

    config_file = step / "config" / "metadata"
    try:
        cfg = EncoderConfig.from_dict(json.loads(config_file.read_text())["model"]["encoder"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConversionError(f"{config_file}: no usable model.encoder config ({e})") from None
    try:
        # As numpy: the run's shardings name its devices, which this process need not have.
        import jax

        checkpointer = ocp.PyTreeCheckpointer()
        tree = checkpointer.metadata((step / "state").resolve()).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = checkpointer.restore((step / "state").resolve(), args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    except Exception as e:  # Orbax raises many types for a damaged folder; report it in one line
        raise ConversionError(f"{step / 'state'}: cannot restore ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return cfg, state["params"]


def write(cfg, params, folder: Path) -> None:
    import orbax.checkpoint as ocp

    kind = "encoder" if isinstance(cfg, EncoderConfig) else "decoder"
    params = _to_numpy(params)
    # Orbax's defaults (a deep copy of every host array, one OCDBT store written at once) double
    # the memory of a save; plain zarr chunks of _CHUNK_BYTES, at most 1 GB in flight, do not.
    save_args = _tree_map(lambda _: ocp.SaveArgs(chunk_byte_size=_CHUNK_BYTES), params)
    with _quiet_absl():  # Orbax warns about the OCDBT and array-metadata features turned off here
        registry = ocp.type_handlers.create_type_handler_registry(
            (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)))
        handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry, use_ocdbt=False,
                                              save_concurrent_gb=_CONCURRENT_GB)
        ocp.Checkpointer(handler, multiprocessing_options=_this_process_alone()).save(
            folder.resolve() / "params", args=ocp.args.PyTreeSave(params, save_args=save_args))
    advance(sum(a.nbytes for a in _leaves(params)))
    meta = {"format": "arc_jax", "format_version": FORMAT_VERSION, "kind": kind, "config": cfg.to_dict()}
    (folder / MARKER).write_text(json.dumps(meta, indent=2) + "\n")


def _this_process_alone():
    """Host-local arrays are written by this process alone: in a multi-process run (a trainer's
    process 0 writing its random decoder while the others wait) Orbax must not hold a barrier with
    the others. (Orbax itself asks JAX for the process index, which starts JAX's CPU backend,
    ~100 MB, in any save.)"""
    import jax
    import orbax.checkpoint as ocp

    if not jax.distributed.is_initialized():
        return ocp.options.MultiprocessingOptions()
    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


@contextlib.contextmanager
def _quiet_absl():
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _leaves(tree):
    for value in tree.values():
        yield from (_leaves(value) if isinstance(value, dict) else [value])


def _tree_map(fn, tree):
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def _to_numpy(tree):
    return _tree_map(np.asarray, tree)  # no copy for numpy leaves or JAX arrays on the CPU
