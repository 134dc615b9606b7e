"""`arc-jax plan`: compile a config's train step for a TPU topology this machine does not have, and
say whether it fits, what it exchanges and how fast it could run at best.

The step is the trainer's own (arc_jax/train/program.py: same mesh, shardings, donation, remat,
attention, gradient accumulation), lowered with ShapeDtypeStructs on the devices of a topology
description from libtpu (`jax.experimental.topologies`, the `tpu` extra), so nothing is allocated
and no data, weights or tokenizer files are read. From the compiled executable:

- memory per device (`memory_analysis()`): arguments (train state, frozen decoders, batch), outputs,
  temporaries and generated code. Peak = arguments + outputs - aliased outputs (the donated state
  written in place) + temporaries + generated code, plus the parameters of the run's other frozen
  decoders, which stay in HBM while this one's step runs. A step too large for HBM fails to compile
  (RESOURCE_EXHAUSTED): "does not fit", with the sizes of the compiler's message.
- collectives from the HLO text, scanned loops' trip counts applied (hlo_collectives.py).
- FLOPs: the analytic model FLOPs of arc_jax/train/flops.py (the figure MFU uses), and the compiled
  cost analysis, which counts a scanned layer body once (a lower figure, shown for reference).
- a lower bound on step time: the largest of compute (model FLOPs per chip / peak FLOP/s), HBM
  (bytes the compiled program accesses, at least its arguments and outputs once, / HBM bandwidth)
  and ICI (ring traffic of the collectives / ICI bandwidth), with no overlap penalty; the MFU
  ceiling is the compute time over that bound.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time

import ml_collections

from arc_jax.errors import ArcJaxError

GIB = 1024**3


class PlanError(ArcJaxError):
    """A topology plan cannot run (unknown topology, no libtpu, a decoder of unknown shape): one line."""


@dataclasses.dataclass(frozen=True)
class Chip:
    hbm_bytes: int
    peak_flops: float          # bf16 FLOP/s per chip
    hbm_bandwidth: float       # bytes/s per chip
    ici_bandwidth: float       # bytes/s per chip
    topology_prefix: str       # libtpu's name: "v5:2x2x1"
    chip_config: str           # "megacore": one JAX device per chip (its two TensorCores together)
    dims: int                  # torus dimensions


# Per chip, from the Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v5p, v5e, v6e,
# v4): HBM capacity, peak bf16 compute, HBM bandwidth, inter-chip interconnect bandwidth.
# v5p: 95 GiB, 459 TFLOP/s, 2765 GB/s, ICI 4800 Gbps (checked on the v5p page; its newer version
#      states ICI as 1200 GB/s bidirectional per chip: the 600 GB/s used here is the conservative one)
# v5e: 16 GiB, 197 TFLOP/s, 819 GB/s, ICI 1600 Gbps
# v6e: 32 GiB, 918 TFLOP/s, 1640 GB/s, ICI 3584 Gbps
# v4:  32 GiB, 275 TFLOP/s, 1200 GB/s, ICI 2400 Gbps
CHIPS = {
    "v5p": Chip(95 * GIB, 459e12, 2765e9, 4800e9 / 8, "v5", "megacore", 3),
    "v5e": Chip(16 * GIB, 197e12, 819e9, 1600e9 / 8, "v5e", "default", 2),
    "v6e": Chip(32 * GIB, 918e12, 1640e9, 3584e9 / 8, "v6e", "default", 2),
    "v4": Chip(32 * GIB, 275e12, 1200e9, 2400e9 / 8, "v4", "megacore", 3),
}
_GPU = re.compile(r"^\d+x[a-z]\d+", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str                  # as given: "v5p-64"
    chip_name: str             # "v5p"
    topology: str              # libtpu's: "v5:2x4x4"
    chips: int                 # per slice
    num_slices: int = 1

    @property
    def chip(self) -> Chip:
        return CHIPS[self.chip_name]

    @property
    def devices(self) -> int:
        return self.chips * self.num_slices


def _torus(chips: int, dims: int) -> tuple[int, ...] | None:
    """The slice shape of `chips` chips (a power of two): 3D from 2x2x1, doubling the last smallest
    side (2x2x2, 2x2x4, 2x4x4, 4x4x4, ...), as the Cloud TPU tables list them; 2D from 1x1 (2x2,
    2x4, 4x4, 4x8, ...)."""
    shape = [2, 2, 1] if dims == 3 else [1, 1]
    if chips < 4 and dims == 3 or chips & (chips - 1) or chips < 1 or (dims == 2 and chips == 2):
        return None
    while math.prod(shape) < chips:
        smallest = min(shape)
        i = max(j for j, s in enumerate(shape) if s == smallest)
        shape[i] *= 2
    return tuple(shape)


def parse_topology(name: str, num_slices: int = 1) -> Topology:
    """v5p-N and v4-N (N TensorCores, 2 a chip), v5e-N (or v5litepod-N) and v6e-N (N chips);
    PlanError otherwise."""
    known = "v5p-8, v5p-64, v4-32, v5e-16, v5e-256, v6e-256, ..."
    if _GPU.match(name):
        raise PlanError(f"topology {name!r}: GPU topologies are not supported yet; plan compiles for TPU ({known})")
    # v5litepod-N is gcloud's accelerator type for v5e-N (launch/tpu_pod.sh passes it through).
    m = re.fullmatch(r"(v5p|v5e|v6e|v4)-(\d+)", re.sub(r"^v5litepod-", "v5e-", name.strip().lower()))
    if not m:
        raise PlanError(f"unknown topology {name!r}: expected v5p-N, v4-N (N TensorCores) or v5e-N, v6e-N (N chips), "
                        f"e.g. {known}")
    if num_slices < 1:
        raise PlanError(f"--num-slices={num_slices}: must be >= 1")
    chip_name, n = m.group(1), int(m.group(2))
    chip = CHIPS[chip_name]
    chips = n // 2 if chip.dims == 3 else n
    shape = _torus(chips, chip.dims) if chip.dims == 2 or n % 2 == 0 else None
    if shape is None or (chip.dims == 2 and chips > 256):
        unit = "TensorCores (2 a chip), at least 8" if chip.dims == 3 else "chips, at most 256"
        raise PlanError(f"unknown topology {name!r}: {chip_name}-N counts {unit}, a power of two")
    return Topology(name, chip_name, f"{chip.topology_prefix}:{'x'.join(map(str, shape))}", chips, num_slices)


def topology_devices(topo: Topology):
    """The JAX devices of the topology, from libtpu's description (no TPU needed)."""
    # No metadata server to ask off Google Cloud, and nothing for libtpu to guess (it warns otherwise).
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", topo.name)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")  # the compile targets TPU; nothing runs here
    except Exception:  # noqa: BLE001  (backends already up: keep them)
        pass
    # Executables for devices that are not here cannot be read back: keep them out of any cache.
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise PlanError("plan needs libtpu to compile for TPU: pip install 'arc_jax[tpu]' (jax[tpu])") from None
    from jax.experimental import topologies

    bounds = (2, 2, 1) if topo.chip.dims == 3 or topo.chips >= 4 else (1, 1, 1)
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topo.topology,
                                        chip_config_name=topo.chip.chip_config, chips_per_host_bounds=bounds,
                                        num_slices=topo.num_slices)
    return desc.devices


def decoder_backbone(run, index: int):
    """The shape of decoder `index`: its config's backbone, else the config file of its converted
    folder (no weights read)."""
    spec = run.decoders[index]
    if spec.backbone is not None:
        return spec.backbone
    from arc_jax.convert import read_decoder_config

    try:
        return read_decoder_config(spec.path)
    except ArcJaxError as e:
        raise PlanError(f"config.model.decoders[{index}] has no backbone and its path cannot give one ({e}); set "
                        f"--config.model.decoders.{index}.backbone to a preset's shape "
                        f"(arc_jax/model/presets.py)") from None


def progress(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[plan] {message}", flush=True)


def _sharded_bytes(tree) -> int:
    import jax

    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


@dataclasses.dataclass
class Built:
    program: object
    args: list                 # per decoder: (state, decoder params, batch) ShapeDtypeStructs
    parts: dict                # bytes per device: params, adam, decoders (list), batch
    flops: list                # analytic model FLOPs per step, per decoder


def build(run, devices, quiet: bool = False) -> Built:
    """The trainer's program on `devices`, with abstract arguments and their sizes per device."""
    from arc_jax import sharding
    from arc_jax.data.packing import pack_batch
    from arc_jax.train import flops
    from arc_jax.train.program import build_program, place_decoder

    mesh = sharding.make_mesh(run.mesh_shape, devices)
    progress(f"mesh (data, fsdp, tensor) = {tuple(mesh.shape.values())} over {len(devices)} devices", quiet)
    template = pack_batch([], run.encoder, run.data.shape)[0]
    decoders = [place_decoder(run, d, decoder_backbone(run, d), template, mesh) for d in range(len(run.decoders))]
    program = build_program(run, mesh, template, decoders)
    state, batch = program.abstract_state(), program.abstract_batch(template)
    parts = {"params": _sharded_bytes(state.params), "adam": _sharded_bytes((state.opt, state.bad_steps, state.skipped)),
             "decoders": [_sharded_bytes(d.shapes) for d in decoders], "batch": _sharded_bytes(batch)}
    model_flops = [flops.train_step_flops(run.encoder, d.module.cfg, run.data.shape, d.spec.head,
                                          encoder_frozen=run.trainable.encoder_frozen,
                                          grad_accum=run.grad_accum)["total"] for d in decoders]
    return Built(program, [(state, d.shapes, batch) for d in decoders], parts, model_flops)


_EXHAUSTED_SIZES = re.compile(r"([0-9.]+[KMGT]?i?B?)\s+(?:of|exceeds|more than)\s+(?:the\s+)?(?:limit\s+(?:of\s+)?)?"
                              r"([0-9.]+[KMGT]?i?B?)", re.IGNORECASE)


def _exhausted_line(message: str) -> str:
    """One line from a RESOURCE_EXHAUSTED compile error: the sentence that gives the sizes."""
    lines = [s.strip() for s in message.splitlines() if s.strip()]
    sized = [s for s in lines if re.search(r"\d+(\.\d+)?\s*[KMGT]i?B?\b", s) or "bytes" in s.lower()]
    line = (sized or lines or ["RESOURCE_EXHAUSTED"])[0]
    return line[:400]


def compile_step(step, args):
    """(compiled, None), or (None, the one-line reason) when the step does not fit in HBM."""
    try:
        return step.lower(*args).compile(), None
    except Exception as e:  # noqa: BLE001  (XlaRuntimeError / JaxRuntimeError, by message)
        if "RESOURCE_EXHAUSTED" in str(e) or "Ran out of memory" in str(e):
            return None, _exhausted_line(str(e))
        raise


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp", "generated_code")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["generated_code"]
    return out


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost or {}
    return {"flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def analyse_decoder(built: Built, d: int, topo: Topology, quiet: bool = False) -> dict:
    """Compile decoder d's step and measure it (see the module docstring)."""
    from arc_jax.tools.hlo_collectives import collectives

    chip = topo.chip
    others = sum(b for i, b in enumerate(built.parts["decoders"]) if i != d)
    progress(f"compiling the step of decoder {d} for {topo.name} ({topo.topology}, {topo.devices} chips)...", quiet)
    t0 = time.perf_counter()
    compiled, exhausted = compile_step(built.program.step(d), built.args[d])
    progress(f"compiled in {time.perf_counter() - t0:.1f} s" if compiled else "the compiler ran out of HBM", quiet)
    model_flops = built.flops[d]
    compute_s = model_flops / topo.devices / chip.peak_flops
    out = {"decoder": d, "fits": compiled is not None, "model_flops_per_step": model_flops,
           "other_decoders_bytes_per_device": others, "compute_seconds": compute_s}
    if compiled is None:
        return {**out, "error": exhausted}
    memory = _memory(compiled)
    memory["peak"] += others
    cost = _cost(compiled)
    colls, unknown = collectives(compiled.as_text(), topo.devices)
    ici_bytes = sum(c.traffic_bytes for c in colls.values())
    hbm_bytes = max(cost["bytes_accessed"], memory["argument"] + memory["output"])
    bound = {"compute": compute_s, "hbm": hbm_bytes / chip.hbm_bandwidth, "ici": ici_bytes / chip.ici_bandwidth}
    predicted = max(bound.values())
    return {**out, "fits": memory["peak"] <= chip.hbm_bytes, "memory": memory, "compiled_cost": cost,
            "collectives": {k: dataclasses.asdict(v) for k, v in colls.items()}, "unknown_loops": unknown,
            "collective_bytes_per_device": sum(c.bytes for c in colls.values()), "ici_traffic_bytes": ici_bytes,
            "time_bounds": bound, "predicted_step_seconds": predicted,
            "mfu_ceiling": compute_s / predicted if predicted else 0.0}


def plan(config: ml_collections.ConfigDict, topology: str, num_slices: int = 1, quiet: bool = False) -> dict:
    """Compile the config's train step(s) for `topology` and return the figures (format_plan prints them)."""
    from arc_jax.train.run_config import parse_run_config

    topo = parse_topology(topology, num_slices)
    progress(f"topology {topo.name}: {topo.topology} x {topo.num_slices} slice(s), {topo.devices} chips", quiet)
    devices = topology_devices(topo)
    run = parse_run_config(config, device_count=len(devices))
    built = build(run, devices, quiet)
    steps = [analyse_decoder(built, d, topo, quiet) for d in range(len(run.decoders))]
    worst = max(steps, key=lambda s: s.get("memory", {}).get("peak", float("inf")))
    fits = all(s["fits"] for s in steps)
    mem = worst.get("memory", {})
    return {
        "topology": topo.name, "topology_name": topo.topology, "num_slices": topo.num_slices,
        "devices": topo.devices, "mesh_shape": list(run.mesh_shape), "fits": fits,
        "hbm_bytes_per_device": topo.chip.hbm_bytes, "peak_bytes_per_device": mem.get("peak"),
        "argument_bytes_per_device": mem.get("argument"), "temp_bytes_per_device": mem.get("temp"),
        "collective_bytes_per_device": worst.get("collective_bytes_per_device"),
        "flops_per_step": worst["model_flops_per_step"], "predicted_step_seconds": worst.get("predicted_step_seconds"),
        "analytic_bytes_per_device": {"trainable_params": built.parts["params"], "adam_and_counters": built.parts["adam"],
                                      "decoders": built.parts["decoders"], "batch": built.parts["batch"]},
        "chip": dataclasses.asdict(topo.chip), "steps": steps,
        "settings": {"compute_dtype": run.compute_dtype, "remat_policy": run.remat_policy,
                     "attention_impl": run.attention_impl, "grad_accum": run.grad_accum},
    }


def _gib(n) -> str:
    """Bytes in the largest binary unit that keeps them >= 1."""
    if n is None:
        return "-"
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def _step_lines(s: dict, hbm: int) -> list[str]:
    if "memory" not in s:
        return [f"decoder {s['decoder']}: does not fit: {s['error']}",
                "  try: more fsdp devices (config.mesh_shape), config.remat_policy=full, fewer rows per step with "
                "config.grad_accum > 1, or a larger topology"]
    m = s["memory"]
    verdict = "fits" if s["fits"] else "does not fit"
    lines = [f"decoder {s['decoder']}: {verdict}: peak {_gib(m['peak'])} of {_gib(hbm)} HBM per device "
             f"(headroom {_gib(hbm - m['peak'])}, {m['peak'] / hbm:.1%} used)",
             f"  compiled   arguments {_gib(m['argument'])}, outputs {_gib(m['output'])} ({_gib(m['alias'])} aliased "
             f"to donated arguments), temporaries {_gib(m['temp'])}, generated code {_gib(m['generated_code'])}"
             + (f", other frozen decoders {_gib(s['other_decoders_bytes_per_device'])}"
                if s["other_decoders_bytes_per_device"] else ""),
             f"  FLOPs      {s['model_flops_per_step'] / 1e12:,.4f} TFLOP/step model (analytic, flops.py); compiled "
             f"cost analysis {s['compiled_cost']['flops'] / 1e12:,.4f} TFLOP/device (scanned bodies counted once)"]
    for kind, c in sorted(s["collectives"].items()):
        lines.append(f"  {kind:<19}{c['count']:6d} x, {_gib(c['bytes'])} per device, ring traffic "
                     f"{_gib(c['traffic_bytes'])}")
    if s["unknown_loops"]:
        lines.append(f"  loops of unknown trip count (counted once): {', '.join(s['unknown_loops'])}")
    b = s["time_bounds"]
    lines.append(f"  step time  >= {s['predicted_step_seconds'] * 1e3:,.2f} ms (compute {b['compute'] * 1e3:,.2f}, "
                 f"HBM {b['hbm'] * 1e3:,.2f}, ICI {b['ici'] * 1e3:,.2f} ms); MFU ceiling {s['mfu_ceiling']:.1%}")
    return lines


def format_plan(r: dict) -> str:
    """The human summary of `plan`'s result."""
    a, chip = r["analytic_bytes_per_device"], r["chip"]
    lines = [f"plan: {r['topology']} ({r['topology_name']}, {r['num_slices']} slice(s), {r['devices']} chips of "
             f"{_gib(chip['hbm_bytes'])} HBM, {chip['peak_flops'] / 1e12:,.0f} TFLOP/s bf16), mesh (data, fsdp, tensor) "
             f"= {tuple(r['mesh_shape'])}; {r['settings']}",
             f"per device (from the shardings): trainable params {_gib(a['trainable_params'])}, Adam moments and "
             f"counters {_gib(a['adam_and_counters'])}, frozen decoder(s) "
             f"{', '.join(_gib(b) for b in a['decoders'])}, batch {_gib(a['batch'])}"]
    for s in r["steps"]:
        lines += _step_lines(s, r["hbm_bytes_per_device"])
    lines.append(f"verdict: {'fits' if r['fits'] else 'does not fit'} on {r['topology']}")
    return "\n".join(lines)


def main_plan(config: ml_collections.ConfigDict, topology: str, num_slices: int = 1, as_json: bool = False) -> int:
    """`arc-jax plan`: print the summary (or one JSON object); exit status 0 when it fits, 2 when not."""
    import json

    result = plan(config, topology, num_slices, quiet=as_json)
    print(json.dumps(result, indent=1) if as_json else format_plan(result), flush=True)
    return 0 if result["fits"] else 2
