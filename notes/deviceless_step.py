"""Compile the trainer's train step for devices this host does not have (a TPU topology) and print
its memory and the bytes its collectives move per device per step, as JSON.

    python notes/deviceless_step.py configs/tiny_cpu.py v5:2x2x1 1,4,1 [--config.x=y ...]

Run from an environment with libtpu, on CPU (TPU_SKIP_MDS_QUERY=1 JAX_PLATFORMS=cpu). The step is
built as the trainer builds it (step.py's train_step, its jit shardings and donation) from the
config alone: shapes by jax.eval_shape, an empty packed batch as the batch template, no weights.
Decoders need `backbone` in the config. `--no-constraints` compiles without the activation
constraints (StepConfig.mesh unset). A measurement script, not part of arc_jax: `arc-jax plan` is
the maintained tool.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arc_jax import sharding
from arc_jax.config_loading import load_config
from arc_jax.data.packing import pack_batch
from arc_jax.model import ARCEncoder, Decoder, param_groups
from arc_jax.train.run_config import parse_run_config
from arc_jax.train.step import StepConfig, init_state, state_shardings, train_step
from arc_jax.train.trainable import shared_mask

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
          "f64": 8, "s64": 8, "u64": 8, "f8e4m3fn": 1, "f8e5m2": 1}
_SHAPE = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")


def _shape_bytes(text: str) -> int:
    return sum(_BYTES.get(t, 4) * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
               for t, dims in _SHAPE.findall(text) if t in _BYTES)


def _condition_bound(comps: dict, line: str) -> int:
    """A while loop's trip count when the compiler dropped known_trip_count (TPU): the s32 constant
    its condition compares the counter with (scans count from 0 up to it)."""
    m = re.search(r"condition=%?([\w.\-]+)", line)
    if not m or m.group(1) not in comps:
        return 1
    bounds = [int(c) for c in re.findall(r"s32\[\]\S* constant\((\d+)\)", "\n".join(comps[m.group(1)]))]
    return max(bounds, default=1)


def collective_bytes(hlo: str) -> dict[str, int]:
    """Bytes per collective kind, each op counted max(operands, result) times the number of times
    its computation runs (a while body: its trip count times its caller's)."""
    comps, current, entry = {}, None, None
    for line in hlo.splitlines():
        m = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m:
            current = m.group(2)
            comps[current] = []
            entry = current if m.group(1) else entry
        elif current and line.strip() and line.strip() != "}":
            comps[current].append(line)
    runs: dict[str, int] = {}

    def visit(name: str, times: int) -> None:
        runs[name] = runs.get(name, 0) + times
        for line in comps.get(name, ()):
            trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
            trip = int(trip.group(1)) if trip else _condition_bound(comps, line)
            for key, callee in re.findall(r"(body|condition|to_apply|calls|branch_computations)=\{?%?([\w.\-]+)",
                                          line):
                if callee in comps and key in ("body", "condition", "branch_computations", "calls"):
                    visit(callee, times * (trip if key == "body" else 1))

    visit(entry, 1)
    totals = dict.fromkeys(COLLECTIVES, 0)
    for name, times in runs.items():
        for line in comps[name]:
            m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.*?) ([a-z\-]+)\((.*)", line)
            if not m or m.group(2).removesuffix("-start") not in COLLECTIVES or m.group(2).endswith("-done"):
                continue
            result, operands = m.group(1), m.group(3).split("), ")[0]
            if m.group(2).endswith("-start") and result.startswith("("):  # (operands, outputs)
                result = max((_shape_bytes(p) for p in re.findall(r"\[[^\]]*\][^,)]*", result)), default=0)
                result = max(result, _shape_bytes(m.group(1)) - _shape_bytes(operands))
            else:
                result = _shape_bytes(result)
            totals[m.group(2).removesuffix("-start")] += times * max(result, _shape_bytes(operands))
    return totals


def build(config_path: str, mesh_shape, devices, overrides, constrain: bool = True):
    config = load_config(config_path, [f"--config.mesh_shape={list(mesh_shape)}", *overrides])
    run = parse_run_config(config, device_count=len(devices))
    mesh = sharding.make_mesh(run.mesh_shape, devices)
    template = pack_batch([], run.encoder, run.data.shape)[0]
    encoder = ARCEncoder(run.encoder, dtype=jnp.dtype(run.compute_dtype), attention_impl=run.attention_impl,
                         remat_policy=run.remat_policy)
    spec = run.decoders[0]
    decoder = Decoder(spec.backbone, dtype=jnp.dtype(run.compute_dtype), param_dtype=jnp.dtype(spec.dtype),
                      attention_impl=run.attention_impl, remat_policy=run.remat_policy)
    boxed = jax.eval_shape(lambda: encoder.init(jax.random.key(0), template.encoder))["params"]
    dec_boxed = jax.eval_shape(lambda: decoder.init(jax.random.key(0), template.tokens, template.segment_ids,
                                                    template.positions))["params"]
    heads = tuple(param_groups.head(d) for d in range(len(run.encoder.projectors)) if d not in run.heads)
    groups = ((param_groups.SHARED,) if run.trainable.encoder_frozen else ()) + heads
    p_sharding, d_sharding = sharding.param_shardings(boxed, mesh), sharding.param_shardings(dec_boxed, mesh)
    s_sharding = state_shardings(p_sharding, mesh, groups)
    b_sharding = sharding.batch_sharding(template, mesh, micro_batches=run.grad_accum > 1)
    mask = shared_mask(nn.unbox(boxed), run.encoder, run.trainable.encoder_layers, run.trainable.embedding)
    extra = {"mesh": mesh} if constrain and "mesh" in StepConfig.__dataclass_fields__ else {}
    cfg = StepConfig(encoder, decoder, spec.head, run.optimizer, run.trainable.encoder_frozen, run.grad_accum,
                     **extra)

    def step(state, decoder_params, batch):
        new_state, metrics = train_step(state, decoder_params, batch, cfg=cfg, mask=mask)
        return new_state, {**metrics, "bad_steps": new_state.bad_steps}

    jitted = jax.jit(step, in_shardings=(s_sharding, d_sharding, b_sharding),
                     out_shardings=(s_sharding, sharding.replicated(mesh)), donate_argnums=0)
    state = jax.eval_shape(lambda p: init_state(p, groups), nn.unbox(boxed))
    abstract = lambda tree, shardings, dtype=None: jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype, sharding=s), tree, shardings)
    lead = (run.grad_accum,) if run.grad_accum > 1 else ()
    batch = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(lead + np.shape(x), np.asarray(x).dtype, sharding=s),
                         template, b_sharding)
    args = (abstract(state, s_sharding), abstract(nn.unbox(dec_boxed), d_sharding, jnp.dtype(spec.dtype)), batch)
    return jitted, args


def main(config_path: str, topology: str, mesh_shape: str, *overrides: str) -> None:
    from jax.experimental import topologies

    constrain = "--no-constraints" not in overrides
    overrides = [o for o in overrides if o != "--no-constraints"]
    chips = [int(c) for c in topology.split(":")[1].split("x")]
    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology, chip_config_name="megacore",
                                           chips_per_host_bounds=tuple(min(c, 2) if i < 2 else 1
                                                                       for i, c in enumerate(chips)),
                                           num_slices=1).devices
    jitted, args = build(config_path, [int(s) for s in mesh_shape.split(",")], devices, overrides, constrain)
    report = {"config": config_path, "topology": topology, "devices": len(devices), "mesh": mesh_shape,
              "overrides": overrides, "constraints": constrain}
    try:
        compiled = jitted.lower(*args).compile()
    except Exception as e:  # noqa: BLE001 - the failure is the measurement
        report["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        print(json.dumps(report))
        return
    mem = compiled.memory_analysis()
    gib = lambda n: round(n / 2**20, 3)  # MiB
    report["memory_mib"] = {k: gib(getattr(mem, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}
    report["memory_mib"]["peak"] = gib(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                       - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
    hlo = compiled.as_text()
    if os.environ.get("DUMP_HLO"):
        Path(os.environ["DUMP_HLO"]).write_text(hlo)
    report["collective_mib"] = {k: gib(v) for k, v in collective_bytes(hlo).items()}
    report["collective_mib"]["total"] = round(sum(report["collective_mib"].values()), 4)
    report["mosaic_kernels"] = hlo.count('custom_call_target="tpu_custom_call"')
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
