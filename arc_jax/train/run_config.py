"""A training config, checked and typed before anything is built or compiled.

`parse_run_config(config)` turns the ml_collections ConfigDict of a config file into a RunConfig
and raises ConfigError naming the field for anything it cannot run: an unknown field, a value of
the wrong type, a mesh the devices cannot form, batch rows the mesh cannot split, a decoder whose
width is not its projector's output, a data section field the input pipeline cannot read (the
data section's fields are in arc_jax/data/config.py). `run_batches(run, d)` is the run's input
pipeline for decoder d.

Fields of a training config (see configs/tiny_cpu.py for a complete one):

    seed, max_steps, checkpoint_every       ints (required)
    keep_checkpoints = 3                    last checkpoints kept
    max_bad_steps = 10                      consecutive non-finite steps before training stops
    log_every = 10                          steps between metric lines / TensorBoard points
    grad_accum = 1                          micro-batches (each of config.data.shape) per step
    compute_dtype = "float32"               "bfloat16": matmuls in bf16, f32 master weights and loss
    remat_policy = "none"                   per block: none | full | dots | dots_no_batch | dots_no_batch_attention
    unroll_layers = False                   compile the layer stacks unrolled (the same stacked
                                            parameters): no loop, each layer's weights and saved
                                            activations where they lie; faster steps on CPU,
                                            compiles that grow with the depth
    attention_impl = "xla"                  xla | jax_nn (cuDNN on GPU in bf16) | splash (TPU)
    init_encoder = ""                       start from this encoder (any format arc_jax reads,
                                            or a trainer workdir); "" = random init
    init_special_from_head = -1             k >= 0: a head init_encoder does not have (a new
                                            decoder's) starts its <Rec>/<Cont> from init_encoder's
                                            head k (the reference's OLMo run: head 0); -1 = ones
    decoder_schedule = "random"             the decoder each step trains, with several decoders:
                                            "random": drawn per step (a function of seed and step)
                                            with probabilities decoder_weights | "alternate" (two
                                            decoders; the reference's fair_instruct): decoder
                                            step % 2 of the 1-based step, decoder 1 re-using the
                                            records of decoder 0's latest batch (trainer.py)
    decoder_weights = []                    "random"'s relative weights, one per decoder; [] = equal
                                            (the reference's prob_forward)
    model.encoder                           EncoderConfig.from_dict input
    model.decoders                          list, one entry per frozen decoder:
        path                                converted decoder folder; "" = random weights, made
                                            once and saved in <workdir>/decoder_<i> (tiny configs)
        backbone                            BackboneConfig dict (required when path is "")
        tokenizer                           the decoder's tokenizer file ("{data_dir}" allowed)
        head = i                            encoder head (projector + special vectors) it reads
        dtype = "bfloat16"                  storage of the frozen weights
    trainable.encoder_layers = -1           train the last k encoder layers (-1: all, 0: none)
    trainable.embedding = True              train the encoder's token embedding matrix
    optimizer                               OptimizerConfig fields (max_steps from config.max_steps):
        encoder_lr, special_lr, projector_lr  one-cycle peaks: shared encoder, <Rec>/<Cont>, projector
        weight_decay, warmup_steps, clip_norm
        initial_lr, final_lr                OneCycleLR div_factor = encoder_lr / initial_lr,
                                            final_div_factor = encoder_lr / final_lr
        b1 = 0.9, b2 = 0.999, eps = 1e-8    AdamW (torch's defaults; the paper configs: b2 0.95)
        b1_schedule = "constant"            "constant": beta1 = b1 | "one_cycle": beta1 cycled as
                                            torch's OneCycleLR(cycle_momentum=True) does, b1_max ->
                                            b1_min over the warm-up, back to b1_max at the end
                                            (the paper configs, as the reference)
        b1_min = 0.85, b1_max = 0.95        OneCycleLR's base_momentum / max_momentum
    mesh_shape = [-1, 1, 1]                 (data, fsdp, tensor); -1 = the remaining devices
    eval.sources = ""                       held-out data (config.data.sources syntax); "" = none
    eval.every = 0, eval.batches = 2        evaluation loss per task every N steps on M batches
    data                                    DataConfig fields (arc_jax/data/config.py)
"""

from __future__ import annotations

import dataclasses

import ml_collections

from arc_jax.config_loading import ConfigError, checked_fields, typed
from arc_jax.config_loading import to_plain as _plain
from arc_jax.data.config import DataConfig, parse_data_config
from arc_jax.data.packing import PackingShape
from arc_jax.model.config import BackboneConfig, EncoderConfig
from arc_jax.model.stack import REMAT_POLICIES
from arc_jax.train.optimizer import B1_SCHEDULES, OptimizerConfig

DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLS = ("xla", "jax_nn", "splash")
DECODER_SCHEDULES = ("random", "alternate")


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    path: str
    backbone: BackboneConfig | None
    tokenizer: str
    head: int
    dtype: str


@dataclasses.dataclass(frozen=True)
class Trainable:
    encoder_layers: int = -1
    embedding: bool = True

    @property
    def encoder_frozen(self) -> bool:
        return self.encoder_layers == 0 and not self.embedding


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    sources: str = ""
    every: int = 0
    batches: int = 2


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int
    max_steps: int
    checkpoint_every: int
    encoder: EncoderConfig
    decoders: tuple[DecoderSpec, ...]
    optimizer: OptimizerConfig
    data: DataConfig
    trainable: Trainable = Trainable()
    eval: EvalSpec = EvalSpec()
    keep_checkpoints: int = 3
    max_bad_steps: int = 10
    log_every: int = 10
    grad_accum: int = 1
    compute_dtype: str = "float32"
    remat_policy: str = "none"
    unroll_layers: bool = False
    attention_impl: str = "xla"
    init_encoder: str = ""
    init_special_from_head: int = -1
    decoder_schedule: str = "random"
    decoder_weights: tuple[float, ...] = ()
    mesh_shape: tuple[int, int, int] = (-1, 1, 1)

    @property
    def heads(self) -> tuple[int, ...]:
        """The encoder heads this run trains (one per decoder)."""
        return tuple(d.head for d in self.decoders)


_TOP_LEVEL = {"seed": int, "max_steps": int, "checkpoint_every": int, "keep_checkpoints": int,
              "init_special_from_head": int,
              "max_bad_steps": int, "log_every": int, "grad_accum": int, "compute_dtype": str,
              "remat_policy": str, "unroll_layers": bool, "attention_impl": str, "init_encoder": str, "decoder_schedule": str}
_SECTIONS = {"model", "optimizer", "trainable", "eval", "mesh_shape", "data", "decoder_weights"}
_DECODER_FIELDS = {"path": str, "backbone": (dict, type(None)), "tokenizer": str, "head": int, "dtype": str}


def _dataclass_from(cls, fields: dict, name: str):
    """cls(**fields) with unknown fields and wrong types reported by name."""
    return cls(**checked_fields(cls, fields, name))


def _model_config(cls, fields, name: str):
    try:
        return cls.from_dict(_plain(fields))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: {e}") from None


def _decoder(entry, index: int, n_heads: int) -> DecoderSpec:
    name = f"config.model.decoders[{index}]"
    fields = _plain(entry)
    if not isinstance(fields, dict):
        raise ConfigError(f"{name}: expected a dict of {sorted(_DECODER_FIELDS)}")
    unknown = sorted(set(fields) - set(_DECODER_FIELDS))
    if unknown:
        raise ConfigError(f"{name} has unknown field(s) {unknown}; known: {sorted(_DECODER_FIELDS)}")
    fields = {"path": "", "backbone": None, "head": index, "dtype": "bfloat16", **fields}
    if "tokenizer" not in fields:
        raise ConfigError(f"{name}.tokenizer is required")
    for key, expected in _DECODER_FIELDS.items():
        typed(fields[key], expected, f"{name}.{key}")
    if not fields["path"] and fields["backbone"] is None:
        raise ConfigError(f"{name}: give a converted decoder (path) or a backbone to initialise randomly")
    if fields["dtype"] not in DTYPES:
        raise ConfigError(f"{name}.dtype={fields['dtype']!r}: expected one of {DTYPES}")
    if not 0 <= fields["head"] < n_heads:
        raise ConfigError(f"{name}.head={fields['head']}: the encoder has {n_heads} projector(s)")
    backbone = None if fields["backbone"] is None else _model_config(BackboneConfig, fields["backbone"],
                                                                     f"{name}.backbone")
    return DecoderSpec(fields["path"], backbone, fields["tokenizer"], fields["head"], fields["dtype"])


def parse_run_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> RunConfig:
    """The typed run of a training config; ConfigError (naming the field) for anything wrong."""
    unknown = sorted(set(config.keys()) - set(_TOP_LEVEL) - _SECTIONS)
    if unknown:
        raise ConfigError(f"config has unknown field(s) {unknown}")
    for key in ("seed", "max_steps", "checkpoint_every"):
        if key not in config:
            raise ConfigError(f"config.{key} is required")
    top = {k: typed(config[k], t, f"config.{k}") for k, t in _TOP_LEVEL.items() if k in config}
    for key in ("max_steps", "checkpoint_every", "keep_checkpoints", "max_bad_steps", "log_every", "grad_accum"):
        if key in top and top[key] < 1:
            raise ConfigError(f"config.{key}={top[key]}: must be >= 1")
    if top.get("compute_dtype", "float32") not in DTYPES:
        raise ConfigError(f"config.compute_dtype={top['compute_dtype']!r}: expected one of {DTYPES}")
    if top.get("remat_policy", "none") not in REMAT_POLICIES:
        raise ConfigError(f"config.remat_policy={top['remat_policy']!r}: expected one of {sorted(REMAT_POLICIES)}")
    if top.get("attention_impl", "xla") not in ATTENTION_IMPLS:
        raise ConfigError(f"config.attention_impl={top['attention_impl']!r}: expected one of {ATTENTION_IMPLS}")
    special_from = top.get("init_special_from_head", -1)
    if special_from < -1 or (special_from >= 0 and not top.get("init_encoder")):
        raise ConfigError(f"config.init_special_from_head={special_from}: expected -1 (off) or a head index of "
                          "config.init_encoder (which must be set)")

    if "model" not in config or "encoder" not in config.model:
        raise ConfigError("config.model.encoder is required")
    model_unknown = sorted(set(config.model.keys()) - {"encoder", "decoders"})
    if model_unknown:
        raise ConfigError(f"config.model has unknown field(s) {model_unknown} (decoders go in config.model.decoders, "
                          "a list)")
    encoder = _model_config(EncoderConfig, config.model.encoder, "config.model.encoder")
    entries = config.model.get("decoders")
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ConfigError("config.model.decoders: expected a non-empty list of decoders")
    decoders = tuple(_decoder(e, i, len(encoder.projectors)) for i, e in enumerate(entries))
    heads = [d.head for d in decoders]
    if len(set(heads)) != len(heads):
        raise ConfigError(f"config.model.decoders: two decoders read the same encoder head ({heads})")
    for i, d in enumerate(decoders):
        out_dim = encoder.projectors[d.head].out_dim
        if d.backbone is not None and d.backbone.dim != out_dim:
            raise ConfigError(f"config.model.decoders[{i}].backbone.dim={d.backbone.dim} but its projector "
                              f"(config.model.encoder.projectors[{d.head}].out_dim) gives {out_dim}")

    weights = _decoder_schedule(top.get("decoder_schedule", "random"), config.get("decoder_weights", []),
                                len(decoders))

    optimizer_fields = {**_plain(config.get("optimizer", {})), "max_steps": top["max_steps"]}
    if optimizer_fields.get("b1_schedule", "constant") not in B1_SCHEDULES:
        raise ConfigError(f"config.optimizer.b1_schedule={optimizer_fields['b1_schedule']!r}: expected one of "
                          f"{B1_SCHEDULES}")
    optimizer = _dataclass_from(OptimizerConfig, optimizer_fields, "config.optimizer")
    if not 0 < optimizer.warmup_steps < optimizer.max_steps:
        raise ConfigError(f"config.optimizer.warmup_steps={optimizer.warmup_steps} must be in "
                          f"(0, config.max_steps={optimizer.max_steps})")
    trainable = _dataclass_from(Trainable, _plain(config.get("trainable", {})), "config.trainable")
    n_layers = encoder.backbone.n_layers
    if not -1 <= trainable.encoder_layers <= n_layers:
        raise ConfigError(f"config.trainable.encoder_layers={trainable.encoder_layers}: expected -1 (all) or 0.."
                          f"{n_layers} (the encoder's layers)")
    eval_spec = _dataclass_from(EvalSpec, _plain(config.get("eval", {})), "config.eval")
    if "data" not in config:
        raise ConfigError("config.data is required")
    data = parse_data_config(config.data)
    mesh_shape = _mesh_shape(config, device_count)
    run = RunConfig(encoder=encoder, decoders=decoders, optimizer=optimizer, data=data, trainable=trainable,
                    eval=eval_spec, mesh_shape=mesh_shape, decoder_weights=weights, **top)
    _check_batch_split(data.shape, mesh_shape)
    return run


def _decoder_schedule(schedule: str, weights, n_decoders: int) -> tuple[float, ...]:
    """The checked decoder_weights (floats) of a checked decoder_schedule."""
    if schedule not in DECODER_SCHEDULES:
        raise ConfigError(f"config.decoder_schedule={schedule!r}: expected one of {DECODER_SCHEDULES}")
    if schedule == "alternate" and n_decoders != 2:
        raise ConfigError(f"config.decoder_schedule='alternate' alternates two decoders; config.model.decoders has "
                          f"{n_decoders}")
    weights = _plain(weights)
    if not isinstance(weights, (list, tuple)) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                                          for w in weights):
        raise ConfigError(f"config.decoder_weights={weights!r}: expected a list of numbers, one per decoder")
    weights = tuple(float(w) for w in weights)
    if weights and (len(weights) != n_decoders or min(weights) < 0 or sum(weights) <= 0):
        raise ConfigError(f"config.decoder_weights={list(weights)}: expected {n_decoders} weights >= 0, not all 0 "
                          "([] = equal)")
    if schedule == "alternate" and len(set(weights)) > 1:
        raise ConfigError(f"config.decoder_weights={list(weights)} weights the 'random' schedule; 'alternate' trains "
                          "each decoder every other step (set equal weights or [])")
    return weights


def run_batches(run: RunConfig, decoder: int = 0, *, sources: str | None = None, process_index: int | None = None,
                process_count: int | None = None, remember: int = 0):
    """This process's training batches of `run` for decoder `decoder` (its tokenizer tokenises the
    decoder side); `sources` replaces config.data.sources (held-out evaluation data); `remember`
    batches' sample keys are kept for another decoder's pipeline to replay. See
    arc_jax.data.pipeline.build_batches."""
    from arc_jax.data.pipeline import build_batches

    return build_batches(run.data, run.encoder, run.seed, run.decoders[decoder].tokenizer, sources=sources,
                         process_index=process_index, process_count=process_count, remember=remember)


def _mesh_shape(config, device_count: int | None) -> tuple[int, int, int]:
    from arc_jax.sharding import resolve_mesh_shape

    if device_count is None:
        import jax

        device_count = jax.device_count()
    shape = config.get("mesh_shape", [-1, 1, 1])
    try:
        return resolve_mesh_shape(shape, device_count)
    except ValueError as e:
        raise ConfigError(f"config.mesh_shape={list(shape)}: {e}") from None


def _check_batch_split(shape: PackingShape, mesh_shape: tuple[int, int, int]) -> None:
    """Batch rows are split over data x fsdp: each must divide them, and attention rows' groups."""
    split = mesh_shape[0] * mesh_shape[1]
    for field in ("encoder_rows", "decoder_rows"):
        rows = getattr(shape, field)
        if rows % split:
            raise ConfigError(f"config.data.shape.{field}={rows} is not divisible by data x fsdp = {split} "
                              f"(config.mesh_shape resolved to {list(mesh_shape)})")
    if shape.has_attention_rows and shape.attention_groups % split:
        raise ConfigError(f"config.data.shape.attention_groups={shape.attention_groups} is not a multiple of data x "
                          f"fsdp = {split} (config.mesh_shape resolved to {list(mesh_shape)}): each device gathers "
                          "its texts into attention rows within its own rows")
