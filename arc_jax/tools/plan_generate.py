"""`arc-jax plan --generate`: compile the programs that answer a batch of questions about
compressed contexts (encoder compress, decoder prefill, decoder decode loop) for a TPU topology
this machine does not have, and say whether they fit, what they exchange and how fast they could
run at best.

The programs are the library's own jitted functions, lowered with ShapeDtypeStructs (nothing is
allocated, no weights read) on the devices of libtpu's topology description (topology.py):

- compress: `api.encoder_programs(module)[1]`, the program of `Encoder.compress`, on `batch`
  contexts of `context` encoder tokens each, laid out as `Encoder.compress` lays them out (one
  text per row of bucket_length(context) slots unless texts are tiny, rows padded to a power of
  two, at most 64 rows a call: `--batch` is capped there);
- prefill: `decoding.prefill_program`, generation's prefill, on the prompts as `generate_ids`
  packs them: per context, the eval's few-shot layout without shots (arc_jax/evaluation/harness.py)
  as token counts: PREFIX_TOKENS text tokens (BOS, "Document:"), the compressed block (the
  context's pooled vectors and <Cont>), QUESTION_TOKENS text tokens ("\\nQuestion: ...\\nAnswer:");
  prompt and KV-cache lengths bucketed to powers of two as `generate_ids` does by default;
- decode: `decoding.decode_program`, the on-device while loop, greedy (temperature 0, the eval's),
  one stop id (EOS), up to `max_new_tokens` tokens (the first comes from the prefill).

Weights and activations are bfloat16 (the released checkpoints' dtype, which `load_encoder` and
`load_decoder` keep); attention is "xla" (their default).

Layout (the library's logical axis rules, arc_jax/sharding.py DEFAULT_RULES, on a mesh (data,
fsdp, tensor) per model): tensor parallelism first, the largest power of two that divides the
devices and every width split over `tensor` (heads, kv heads, feed-forward width, vocabulary, the
projector's hidden width): weights split across it (an 8B decoder over 8 v5e chips: 1.9 GiB each),
one all-reduce per attention and feed-forward per token and no weight gathering, which decode
would pay at every token. The remaining devices go to `data`, the batch's rows split over them
(the rows of every input, the KV cache's rows; the KV cache's kv heads over tensor), up to the
number of rows; any devices left after that go to `fsdp`, which splits the weights' model width
further (gathered when used). `mesh_shape` (--mesh) overrides this for both models. The
programs trace without `sharding.activation_sharding`, as inference runs them: XLA propagates the
argument shardings. The decode loop receives the KV cache, first token and done mask with the
shardings the compiled prefill gives them.

Reported per program, as `arc-jax plan` does for the train step (plan.py):

- memory per device (`memory_analysis()`): arguments, outputs, temporaries, generated code; peak
  = arguments + outputs - aliased + temporaries + code, plus the weights of the other model, which
  a pipeline keeps in HBM meanwhile (the decoder's during compress, the encoder's during prefill
  and decode). The decode program slices the stacked layer weights into per-layer buffers once per
  call (decoding.py, stack.py): where XLA copies them, they are among its temporaries. RESOURCE_EXHAUSTED while
  compiling is "does not fit" with the compiler's sizes.
- collectives from the HLO text (hlo_collectives.py). The decode loop's trip count is a traced
  value: its body is counted once per generated token after the first (max_new_tokens - 1, no
  early stop), the rest once.
- FLOPs, analytic (matmuls, 2abc, as arc_jax/train/flops.py counts them, `block_matmul_flops`) on
  the shapes the programs run (padded rows and lengths, dense attention as the "xla" path): the
  encoder's layers and pooling layer(s) and the projector; the prefill's layers and one logit row
  per prompt; per decode step, every row's token through the layers attending the whole cache and
  the output head.
- a lower bound on time: the largest of compute (FLOPs / devices / peak FLOP/s), HBM and ICI
  (collective ring traffic / ICI bandwidth). HBM for compress and prefill: the bytes the compiled
  program accesses, at least its arguments and outputs once. A decode step reads at least the
  decoder's weights and the whole KV cache on each device (the analytic bytes); the loop's setup
  copies the weights once and pads the cache. Decode time = setup + (max_new_tokens - 1) steps;
  the tokens/s bound is the batch over the time of one step.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import numpy as np

from arc_jax.tools.compiled import compiled_cost, compiled_memory, gib, sharded_bytes, time_bounds
from arc_jax.tools.plan import compile_step, progress
from arc_jax.tools.topology import PlanError, Topology, parse_topology, topology_devices

# Encoder presets: (backbone of bench_inference.bench_configs, pooling factor). "arc8"/"arc4" are the
# released ARC8 / ARC4 encoders (Llama 3.2 3B less 2 layers, a projector to the decoder's width).
ENCODER_PRESETS = {"arc8": ("llama3.2-3b", 8), "arc4": ("llama3.2-3b", 4), "scaled": ("scaled", 4),
                   "tiny": ("tiny", 4)}
PREFIX_TOKENS = 4       # BOS and "Document:"
QUESTION_TOKENS = 32    # "\nQuestion: ...\nAnswer:"
MAX_ROWS = 64           # rows of one call of Encoder.compress and generate_ids (their max_rows)
DTYPE = "bfloat16"
PROGRAMS = ("compress", "prefill", "decode")


def decoder_presets() -> list[str]:
    from arc_jax.tools.bench_inference import DECODER_PRESETS

    return sorted(DECODER_PRESETS)


def generation_configs(encoder_preset: str | None, decoder_preset: str | None):
    """(EncoderConfig, BackboneConfig) of the presets; PlanError (one line, the known names) otherwise."""
    from arc_jax.tools.bench_inference import bench_configs

    known_enc, known_dec = ", ".join(sorted(ENCODER_PRESETS)), ", ".join(decoder_presets())
    if not encoder_preset:
        raise PlanError(f"--generate needs --encoder-preset (one of {known_enc})")
    if not decoder_preset:
        raise PlanError(f"--generate needs --decoder-preset (one of {known_dec})")
    if encoder_preset not in ENCODER_PRESETS:
        raise PlanError(f"unknown encoder preset {encoder_preset!r}: choose from {known_enc}")
    if decoder_preset not in decoder_presets():
        raise PlanError(f"unknown decoder preset {decoder_preset!r}: choose from {known_dec}")
    backbone, pooling = ENCODER_PRESETS[encoder_preset]
    return bench_configs(backbone, decoder_preset, pooling)


# ---------------------------------------------------------------------------------------------
# Shapes and abstract arguments


@dataclasses.dataclass(frozen=True)
class Layout:
    """The static shapes of one call, as Encoder.compress and generate_ids lay them out."""

    batch: int
    context: int
    max_new_tokens: int
    encoder_inputs: object     # EncoderInputs of numpy arrays (dummy ids)
    one_text_per_row: bool
    block_len: int             # decoder slots per context: pooled vectors (+ <Cont>)
    decoder_inputs: object     # DecoderInputs of numpy arrays
    table_rows: int            # rows of the compressed-vector table (device_table's padding)
    prompt_len: int            # positions of each prompt
    prefill_len: int
    cache_len: int
    out_len: int

    @property
    def encoder_rows(self) -> int:
        return self.encoder_inputs.tokens.shape[0]

    @property
    def rows(self) -> int:
        return self.decoder_inputs.tokens.shape[0]


def generation_layout(enc_cfg, batch: int, context: int, max_new_tokens: int) -> Layout:
    """Shapes of compress, prefill and decode for `batch` contexts of `context` tokens."""
    from arc_jax.inference.decoding import generation_lengths
    from arc_jax.inference.shapes import bucket_length, stage_lengths
    from arc_jax.model.inputs import pack_decoder_inputs, pack_encoder_inputs, pack_rows_first_fit

    if not 1 <= batch <= MAX_ROWS:
        raise PlanError(f"--batch={batch}: must be 1..{MAX_ROWS} (one call of compress and generate_ids runs at "
                        f"most {MAX_ROWS} rows; a larger batch runs as several)")
    if context < 1 or max_new_tokens < 1:
        raise PlanError(f"--context={context} and --max-new-tokens={max_new_tokens} must be >= 1")
    if enc_cfg.n_memory_tokens or not enc_cfg.compress_rates:
        raise PlanError("plan --generate plans pooling encoders (compress_rates), not memory tokens")
    # Encoder.compress (api.Encoder._run): texts packed first-fit into rows of a bucketed length.
    row_len = bucket_length(context)
    packed = pack_rows_first_fit([context] * batch, row_len)
    packed += [[]] * (bucket_length(len(packed), 1) - len(packed))
    texts_per_row = max(len(r) for r in packed)
    enc_inputs, places = pack_encoder_inputs([[[1] * context for _ in row] for row in packed], enc_cfg,
                                             row_len=row_len, stage_lens=stage_lengths(enc_cfg, row_len, texts_per_row))
    block_len = places[0].length + int(enc_cfg.cont_tok)
    # generate_ids (decoding._run_chunk): rows padded to a power of two with one-token prompts.
    rows = bucket_length(batch, 1)
    prompt = [[1] * PREFIX_TOKENS, np.zeros((block_len, 0), np.float32), [1] * QUESTION_TOKENS]
    prompt_len = PREFIX_TOKENS + block_len + QUESTION_TOKENS
    prefill_len, cache_len = generation_lengths(prompt_len, max_new_tokens)
    dec_inputs, table, _ = pack_decoder_inputs([prompt] * batch + [[[0]]] * (rows - batch), row_len=prefill_len)
    return Layout(batch, context, max_new_tokens, enc_inputs, texts_per_row <= 1, block_len, dec_inputs,
                  bucket_length(len(table), 8), prompt_len, prefill_len, cache_len, bucket_length(max_new_tokens, 8))


def inference_mesh_shape(devices: int, rows: int, widths) -> tuple[int, int, int]:
    """(data, fsdp, tensor): see the module docstring."""
    tensor = 1
    while devices % (2 * tensor) == 0 and all(w % (2 * tensor) == 0 for w in widths):
        tensor *= 2
    data = math.gcd(devices // tensor, rows)
    return data, devices // tensor // data, tensor


def tensor_widths(cfg, projectors=()) -> list[int]:
    """Widths the logical rules split over `tensor`: heads, kv heads, feed-forward, vocabulary, and
    the projectors' hidden widths."""
    return [cfg.n_heads, cfg.n_kv_heads, cfg.hidden_dim, cfg.vocab_size, *(p.hidden_dim for p in projectors)]


def abstract_params(module, init, mesh, dtype):
    """A module's parameters as ShapeDtypeStructs in `dtype`, placed by the logical axis rules."""
    import flax.linen as nn
    import jax

    from arc_jax import sharding

    boxed = jax.eval_shape(init)["params"]
    shardings = sharding.param_shardings(boxed, mesh)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype, sharding=s), nn.unbox(boxed), shardings)


def check_divisible(tree, what: str) -> None:
    """PlanError when an argument cannot be split evenly over the mesh axes its sharding names."""
    import jax

    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        spec, mesh = x.sharding.spec, x.sharding.mesh
        for size, axes in zip(x.shape, spec):
            n = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
            if size % n:
                raise PlanError(f"{what}{jax.tree_util.keystr(path)} of shape {x.shape} cannot be split {spec} over "
                                f"the mesh {dict(mesh.shape)}: choose another --mesh")


def _abstract(tree, sharding):
    """numpy arrays (and None) as ShapeDtypeStructs with one sharding."""
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding), tree)


# ---------------------------------------------------------------------------------------------
# Programs


@dataclasses.dataclass(frozen=True)
class Program:
    """A jitted function with its static keyword arguments bound, and its abstract arguments."""

    name: str
    jitted: object
    static: dict
    args: tuple
    flops: float
    mesh_shape: tuple

    def lower(self, *args):
        return self.jitted.lower(*args, **self.static)


@dataclasses.dataclass
class Models:
    mesh: dict                  # "encoder" / "decoder": their Mesh
    encoder: object             # ARCEncoder module
    decoder: object             # Decoder module
    encoder_params: dict
    decoder_params: dict


def build_models(enc_cfg, dec_cfg, layout: Layout, devices, mesh_shape=None, quiet: bool = False) -> Models:
    """The modules (bfloat16) and their abstract parameters, each on its inference mesh."""
    import jax
    import jax.numpy as jnp

    from arc_jax import sharding
    from arc_jax.model import ARCEncoder, Decoder, pack_encoder_inputs

    dtype = jnp.dtype(DTYPE)
    encoder = ARCEncoder(enc_cfg, dtype=dtype, param_dtype=dtype, attention_impl="xla")
    decoder = Decoder(dec_cfg, dtype=dtype, param_dtype=dtype, attention_impl="xla")
    shapes = {"encoder": mesh_shape or inference_mesh_shape(len(devices), layout.encoder_rows,
                                                            tensor_widths(enc_cfg.backbone, enc_cfg.projectors)),
              "decoder": mesh_shape or inference_mesh_shape(len(devices), layout.rows, tensor_widths(dec_cfg))}
    try:
        mesh = {k: sharding.make_mesh(s, devices) for k, s in shapes.items()}
    except ValueError as e:
        raise PlanError(f"--mesh: {e}") from None
    for k, m in mesh.items():
        progress(f"{k} mesh (data, fsdp, tensor) = {tuple(m.shape.values())} over {len(devices)} devices", quiet)
    sample, _ = pack_encoder_inputs([[list(range(1, 9))]], enc_cfg)
    tokens = jnp.ones((1, 8), jnp.int32)
    key = jax.random.key(0)
    enc_params = abstract_params(encoder, lambda: encoder.init(key, sample), mesh["encoder"], dtype)
    dec_params = abstract_params(decoder, lambda: decoder.init(key, tokens, tokens, tokens), mesh["decoder"], dtype)
    check_divisible(enc_params, "encoder parameter ")
    check_divisible(dec_params, "decoder parameter ")
    return Models(mesh, encoder, decoder, enc_params, dec_params)


def rows_sharding(mesh, rows: int):
    """Rows over `data` (replicated over fsdp and tensor)."""
    from jax.sharding import NamedSharding, PartitionSpec

    if rows % mesh.shape["data"]:
        raise PlanError(f"{rows} rows cannot be split over data={mesh.shape['data']}: choose another --mesh")
    return NamedSharding(mesh, PartitionSpec("data"))


def compress_program(models: Models, layout: Layout) -> Program:
    from arc_jax.inference.api import encoder_programs

    mesh = models.mesh["encoder"]
    inputs = _abstract(layout.encoder_inputs, rows_sharding(mesh, layout.encoder_rows))
    static = {"decoder": 0, "one_text_per_row": layout.one_text_per_row}
    return Program("compress", encoder_programs(models.encoder)[1], static, ({"params": models.encoder_params}, inputs),
                   compress_flops(models.encoder.cfg, layout), tuple(mesh.shape.values()))


def sampling_arguments(mesh, decoder_cfg):
    """decoding.Sampling as generate_ids passes it (one stop id, padded to 4), replicated."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from arc_jax.inference.decoding import Sampling

    rep = NamedSharding(mesh, PartitionSpec())
    key = jax.eval_shape(lambda: jax.random.key(0))
    scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype, sharding=rep)  # noqa: E731
    return Sampling(jax.ShapeDtypeStruct((4,), jnp.int32, sharding=rep), scalar(jnp.float32), scalar(jnp.float32),
                    scalar(jnp.int32), jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=rep))


def prefill_program(models: Models, layout: Layout) -> Program:
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from arc_jax.inference.decoding import prefill_program as prefill

    mesh, cfg, dec = models.mesh["decoder"], models.decoder.cfg, layout.decoder_inputs
    rows = rows_sharding(mesh, layout.rows)
    row = lambda dtype: jax.ShapeDtypeStruct((layout.rows,), dtype, sharding=rows)  # noqa: E731
    table = jax.ShapeDtypeStruct((layout.table_rows, cfg.dim), jnp.dtype(DTYPE),
                                 sharding=NamedSharding(mesh, PartitionSpec()))
    args = (models.decoder_params, _abstract(dec.tokens, rows), table,
            _abstract(dec.compressed_index, rows), row(jnp.int32), row(jnp.bool_), sampling_arguments(mesh, cfg))
    return Program("prefill", prefill, {"module": models.decoder, "greedy": True}, args,
                   prefill_flops(cfg, layout), tuple(mesh.shape.values()))


def decode_program(models: Models, layout: Layout, prefill_outputs=None) -> Program:
    """The decode loop, its KV cache, first token and done mask placed as the compiled prefill
    returns them (`prefill_outputs`: its out_info), else rows over data and kv heads over tensor."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from arc_jax.inference.decoding import decode_program as decode
    from arc_jax.model.kv_cache import KVCache

    mesh, cfg = models.mesh["decoder"], models.decoder.cfg
    rows = rows_sharding(mesh, layout.rows)
    if prefill_outputs is None:
        cache_spec = NamedSharding(mesh, PartitionSpec(None, "data", None, "tensor", None))
        cache_shape = (cfg.n_layers, layout.rows, layout.prefill_len, cfg.n_kv_heads, cfg.head_dim)
        half = jax.ShapeDtypeStruct(cache_shape, jnp.dtype(DTYPE), sharding=cache_spec)
        token = jax.ShapeDtypeStruct((layout.rows,), jnp.int32, sharding=rows)
        prefill_outputs = (token, jax.ShapeDtypeStruct((layout.rows,), jnp.bool_, sharding=rows), KVCache(half, half))
    token, done, cache = prefill_outputs
    lengths = jax.ShapeDtypeStruct((layout.rows,), jnp.int32, sharding=rows)
    budget = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, PartitionSpec()))
    args = (models.decoder_params, cache, token, done, lengths, budget, sampling_arguments(mesh, cfg))
    static = {"module": models.decoder, "cache_len": layout.cache_len, "out_len": layout.out_len, "greedy": True}
    return Program("decode", decode, static, args, decode_step_flops(cfg, layout) * (layout.max_new_tokens - 1),
                   tuple(mesh.shape.values()))


# ---------------------------------------------------------------------------------------------
# Analytic FLOPs (arc_jax/train/flops.py's convention) on the shapes the programs run


def compress_flops(cfg, layout: Layout) -> float:
    """The encoder's layers on its padded rows (pooling layers on their stages) and the projector
    on the pooled rows and the two special vectors."""
    from arc_jax.train.flops import block_matmul_flops

    b, rows = cfg.backbone, layout.encoder_rows
    n = layout.encoder_inputs.tokens.shape[1]
    stages = [s.segment_ids.shape[1] for s in layout.encoder_inputs.stages]
    total = (b.n_layers - len(stages)) * sum(block_matmul_flops(b, rows, n, n))
    kv = n
    for q in stages:
        total += sum(block_matmul_flops(b, rows, q, kv))
        kv = q
    p = cfg.projectors[0]
    return total + 2 * (rows * stages[-1] + 2) * (p.in_dim * p.hidden_dim + p.hidden_dim * p.out_dim)


def prefill_flops(cfg, layout: Layout) -> float:
    from arc_jax.train.flops import block_matmul_flops

    rows, t = layout.rows, layout.prefill_len
    return cfg.n_layers * sum(block_matmul_flops(cfg, rows, t, t)) + 2 * rows * cfg.dim * cfg.vocab_size


def decode_step_flops(cfg, layout: Layout) -> float:
    """One token per row through the layers (its own k, v), attending all cache_len slots."""
    from arc_jax.train.flops import block_matmul_flops

    weights = block_matmul_flops(cfg, layout.rows, 1, 1)[0]
    attention = block_matmul_flops(cfg, layout.rows, 1, layout.cache_len)[1]
    return cfg.n_layers * (weights + attention) + 2 * layout.rows * cfg.dim * cfg.vocab_size


# ---------------------------------------------------------------------------------------------
# Measuring a compiled program


_STATS = ("count", "bytes", "traffic_bytes")


def loop_collectives(hlo: str, devices: int, trips: int) -> tuple[dict, dict, list[str]]:
    """({kind: count, bytes, traffic_bytes} of the program with its loops of unknown trip count run
    `trips` times, the same of one iteration of those loops, their names). An iteration is what
    counting the loops twice adds to counting them once (hlo_collectives counts unknown loops once,
    and reads a known_trip_count the while op carries)."""
    from arc_jax.tools.hlo_collectives import collectives

    def as_dicts(colls):
        return {k: {f: getattr(c, f) for f in _STATS} for k, c in colls.items()}

    once, unknown = collectives(hlo, devices)
    once = as_dicts(once)
    if not unknown:
        return once, {}, []
    twice = hlo
    for name in unknown:
        twice = re.sub(rf"^(\s*(?:ROOT )?%{re.escape(name)} = .*)$", r'\1, plan_trip_count={"known_trip_count":{"n":"2"}}',
                       twice, flags=re.MULTILINE)
    twice = as_dicts(collectives(twice, devices)[0])
    body = {k: {f: v[f] - once.get(k, {}).get(f, 0) for f in _STATS} for k, v in twice.items()}
    body = {k: v for k, v in body.items() if v["count"]}
    total = {k: {f: once.get(k, {}).get(f, 0) + (trips - 1) * body.get(k, {}).get(f, 0) for f in _STATS}
             for k in once.keys() | body.keys()}
    return total, body, unknown


def analyse(program: Program, topo: Topology, resident: int, trips: int = 1, quiet: bool = False):
    """(figures, compiled or None): compile the program and measure it (module docstring)."""
    progress(f"compiling {program.name} for {topo.name} ({topo.topology}, {topo.devices} chips)...", quiet)
    t0 = time.perf_counter()
    compiled, exhausted = compile_step(program, program.args)
    progress(f"compiled in {time.perf_counter() - t0:.1f} s" if compiled else "the compiler ran out of HBM", quiet)
    out = {"program": program.name, "mesh_shape": list(program.mesh_shape), "fits": compiled is not None,
           "flops": program.flops, "resident_bytes_per_device": resident}
    if compiled is None:
        return {**out, "error": exhausted}, None
    memory = compiled_memory(compiled)
    memory["peak"] += resident
    cost = compiled_cost(compiled)
    colls, body, loops = loop_collectives(compiled.as_text(), topo.devices, trips)
    ici = sum(c["traffic_bytes"] for c in colls.values())
    bounds = time_bounds(program.flops, max(cost["bytes_accessed"], memory["argument"] + memory["output"]), ici, topo)
    out |= {"fits": memory["peak"] <= topo.chip.hbm_bytes, "memory": memory, "compiled_cost": cost,
            "collectives": colls, "loop_collectives": body, "loops": loops,
            "collective_bytes_per_device": sum(c["bytes"] for c in colls.values()), "ici_traffic_bytes": ici,
            "time_bounds": bounds, "predicted_seconds": max(bounds.values())}
    return out, compiled


def decode_bounds(r: dict, program: Program, layout: Layout, topo: Topology) -> dict:
    """Per step and in all, the decode loop's time bounds (module docstring), into its figures."""
    weights, prompt_cache = sharded_bytes(program.args[0]), sharded_bytes(program.args[1])
    cache = prompt_cache * layout.cache_len // layout.prefill_len
    steps = layout.max_new_tokens - 1
    body = r.get("loop_collectives", {})
    step_bytes = sum(c["bytes"] for c in body.values())
    step_ici = sum(c["traffic_bytes"] for c in body.values())
    step = time_bounds(r["flops"] / steps, weights + cache, step_ici, topo)
    setup = time_bounds(0.0, 2 * weights + prompt_cache + cache, r["ici_traffic_bytes"] - steps * step_ici, topo)
    step_s, setup_s = max(step.values()), max(setup.values())
    r |= {"steps": steps, "per_token": {"flops": r["flops"] / steps, "hbm_bytes": weights + cache,
                                        "collective_bytes_per_device": step_bytes, "ici_traffic_bytes": step_ici,
                                        "time_bounds": step, "seconds": step_s},
          "setup": {"time_bounds": setup, "seconds": setup_s},
          "time_bounds": {k: setup[k] + steps * step[k] for k in step}, "predicted_seconds": setup_s + steps * step_s,
          "tokens_per_second": layout.batch / step_s if step_s else 0.0}
    return r


# ---------------------------------------------------------------------------------------------
# The plan


def plan_generate(enc_cfg, dec_cfg, batch: int, context: int, topology: str, num_slices: int = 1,
                  max_new_tokens: int = 64, mesh_shape=None, quiet: bool = False) -> dict:
    """Compile compress, prefill and decode for `topology` and return the figures (format_generate
    prints them)."""
    topo = parse_topology(topology, num_slices)
    progress(f"topology {topo.name}: {topo.topology} x {topo.num_slices} slice(s), {topo.devices} chips", quiet)
    layout = generation_layout(enc_cfg, batch, context, max_new_tokens)
    devices = topology_devices(topo)
    models = build_models(enc_cfg, dec_cfg, layout, devices, mesh_shape, quiet)
    weights = {"encoder": sharded_bytes(models.encoder_params), "decoder": sharded_bytes(models.decoder_params)}
    programs = {}
    programs["compress"], _ = analyse(compress_program(models, layout), topo, weights["decoder"], quiet=quiet)
    programs["prefill"], prefill = analyse(prefill_program(models, layout), topo, weights["encoder"], quiet=quiet)
    if max_new_tokens > 1:  # else the prefill's logits give the only token: no decode program
        outputs = prefill.out_info if prefill is not None else None
        if outputs is not None and any(getattr(x, "sharding", None) is None for x in _leaves(outputs)):
            outputs = None
        decode = decode_program(models, layout, outputs)
        programs["decode"], compiled = analyse(decode, topo, weights["encoder"], max_new_tokens - 1, quiet)
        if compiled is not None:
            decode_bounds(programs["decode"], decode, layout, topo)
    for r in programs.values():  # the flat figures of the JSON summary
        m = r.get("memory", {})
        r |= {"peak_bytes_per_device": m.get("peak"), "argument_bytes_per_device": m.get("argument"),
              "temp_bytes_per_device": m.get("temp")}
        r.setdefault("collective_bytes_per_device", None)
        r.setdefault("predicted_seconds", None)
    fits = all(r["fits"] for r in programs.values())
    times = [r["predicted_seconds"] for r in programs.values()]
    total = sum(times) if None not in times else None
    return {
        "topology": topo.name, "topology_name": topo.topology, "num_slices": topo.num_slices, "devices": topo.devices,
        "fits": fits, "hbm_bytes_per_device": topo.chip.hbm_bytes, "chip": dataclasses.asdict(topo.chip),
        "encoder": enc_cfg.to_dict(), "decoder": dec_cfg.to_dict(), "dtype": DTYPE,
        "layout": {"batch": batch, "context": context, "max_new_tokens": max_new_tokens,
                   "encoder_rows": layout.encoder_rows, "encoder_row_len": int(layout.encoder_inputs.tokens.shape[1]),
                   "block_len": layout.block_len, "prefix_tokens": PREFIX_TOKENS, "question_tokens": QUESTION_TOKENS,
                   "prompt_len": layout.prompt_len, "rows": layout.rows, "prefill_len": layout.prefill_len,
                   "cache_len": layout.cache_len},
        "weight_bytes_per_device": weights, "programs": programs, "predicted_seconds": total,
        "decode_tokens_per_second": programs.get("decode", {}).get("tokens_per_second"),
    }


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def _flop(n: float) -> str:
    return f"{n / 1e12:,.3f} TFLOP" if n >= 1e12 else f"{n / 1e9:,.3f} GFLOP"


def _ms(bounds: dict) -> str:
    return ", ".join(f"{k} {v * 1e3:,.3f}" for k, v in bounds.items()) + " ms"


def _program_lines(r: dict, hbm: int) -> list[str]:
    head = f"{r['program']} (mesh (data, fsdp, tensor) = {tuple(r['mesh_shape'])})"
    if "memory" not in r:
        return [f"{head}: does not fit: {r['error']}",
                "  try: a larger topology, a smaller --batch or --context, or another --mesh"]
    m = r["memory"]
    lines = [f"{head}: {'fits' if r['fits'] else 'does not fit'}: peak {gib(m['peak'])} of {gib(hbm)} HBM per "
             f"device (headroom {gib(hbm - m['peak'])}, {m['peak'] / hbm:.1%} used)",
             f"  compiled   arguments {gib(m['argument'])}, outputs {gib(m['output'])} ({gib(m['alias'])} aliased), "
             f"temporaries {gib(m['temp'])}, generated code {gib(m['generated_code'])}, the other model's weights "
             f"{gib(r['resident_bytes_per_device'])}",
             f"  FLOPs      {_flop(r['flops'])} (analytic, all devices); compiled cost analysis "
             f"{_flop(r['compiled_cost']['flops'])} per device (loop bodies counted once)"]
    for kind, c in sorted(r["collectives"].items()):
        lines.append(f"  {kind:<19}{c['count']:8,d} x, {gib(c['bytes'])} per device, ring traffic "
                     f"{gib(c['traffic_bytes'])}")
    if "per_token" in r:
        t = r["per_token"]
        lines += [f"  per token  >= {t['seconds'] * 1e3:,.3f} ms ({_ms(t['time_bounds'])}; reads "
                  f"{gib(t['hbm_bytes'])} of weights and KV cache, exchanges {gib(t['collective_bytes_per_device'])}"
                  f" per device): <= {r['tokens_per_second']:,.0f} tokens/s for the batch",
                  f"  decode     {r['steps']} steps after the prefill's token, setup (weight slices, cache) >= "
                  f"{r['setup']['seconds'] * 1e3:,.3f} ms"]
    lines.append(f"  time       >= {r['predicted_seconds'] * 1e3:,.3f} ms ({_ms(r['time_bounds'])})")
    return lines


def format_generate(r: dict) -> str:
    """The human summary of `plan_generate`'s result."""
    chip, lay, enc = r["chip"], r["layout"], r["encoder"]
    pooling = "/".join(str(-k) for k in enc["compress_rates"])
    lines = [f"plan --generate: {r['topology']} ({r['topology_name']}, {r['num_slices']} slice(s), {r['devices']} chips "
             f"of {gib(chip['hbm_bytes'])} HBM, {chip['peak_flops'] / 1e12:,.0f} TFLOP/s bf16); {r['dtype']} weights",
             f"encoder {enc['backbone']['n_layers']} layers x {enc['backbone']['dim']}, pooling {pooling}; decoder "
             f"{r['decoder']['n_layers']} layers x {r['decoder']['dim']}, vocabulary {r['decoder']['vocab_size']}; "
             f"weights per device: encoder {gib(r['weight_bytes_per_device']['encoder'])}, decoder "
             f"{gib(r['weight_bytes_per_device']['decoder'])}",
             f"batch {lay['batch']} contexts of {lay['context']} tokens ({lay['encoder_rows']} encoder rows of "
             f"{lay['encoder_row_len']}) -> {lay['block_len']} vectors each; prompts {lay['prefix_tokens']} + "
             f"{lay['block_len']} + {lay['question_tokens']} = {lay['prompt_len']} positions on {lay['rows']} rows "
             f"(prefill {lay['prefill_len']}, KV cache {lay['cache_len']}), up to {lay['max_new_tokens']} new tokens"]
    for p in r["programs"].values():
        lines += _program_lines(p, r["hbm_bytes_per_device"])
    if r["predicted_seconds"] is not None:
        new = lay["batch"] * lay["max_new_tokens"]
        lines.append(f"total: >= {r['predicted_seconds'] * 1e3:,.2f} ms for the batch (compress, prefill, decode), "
                     f"<= {new / r['predicted_seconds']:,.0f} new tokens/s end to end")
    lines.append(f"verdict: {'fits' if r['fits'] else 'does not fit'} on {r['topology']}")
    return "\n".join(lines)


def parse_mesh(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise PlanError(f"--mesh {text!r}: expected DATA,FSDP,TENSOR, three positive ints (e.g. 2,1,8)")
    return shape


def main_plan_generate(encoder_preset: str | None, decoder_preset: str | None, batch: int, context: int,
                       topology: str, num_slices: int = 1, max_new_tokens: int = 64, mesh: str | None = None,
                       as_json: bool = False) -> int:
    """`arc-jax plan --generate`: print the summary (or one JSON object); exit status 0 when every
    program fits, 2 when one does not."""
    import json

    enc_cfg, dec_cfg = generation_configs(encoder_preset, decoder_preset)
    result = plan_generate(enc_cfg, dec_cfg, batch, context, topology, num_slices, max_new_tokens, parse_mesh(mesh),
                           quiet=as_json)
    result |= {"encoder_preset": encoder_preset, "decoder_preset": decoder_preset}
    print(json.dumps(result, indent=1) if as_json else format_generate(result), flush=True)
    return 0 if result["fits"] else 2
