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
import re
import time

import ml_collections

from arc_jax.errors import ArcJaxError
from arc_jax.tools.compiled import compiled_cost, compiled_memory, gib, sharded_bytes, time_bounds
from arc_jax.tools.topology import PlanError, Topology, check_attention, parse_topology, topology_devices

SEARCH_BUDGET = 12  # compiles the search for a fitting variant may spend (plan_search.py)


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


@dataclasses.dataclass
class Built:
    program: object
    args: list                 # per decoder: (state, decoder params, batch) ShapeDtypeStructs
    parts: dict                # bytes per device: params, adam, decoders (list), batch
    flops: list                # analytic model FLOPs per step, per decoder, by part (train/flops.py)


def build(run, devices, quiet: bool = False) -> Built:
    """The trainer's program on `devices`, with abstract arguments and their sizes per device."""
    from arc_jax import sharding
    from arc_jax.data.packing import pack_batch
    from arc_jax.train.program import build_program, place_decoder

    mesh = sharding.make_mesh(run.mesh_shape, devices)
    progress(f"mesh (data, fsdp, tensor) = {tuple(mesh.shape.values())} over {len(devices)} devices", quiet)
    template = pack_batch([], run.encoder, run.data.shape)[0]
    decoders = [place_decoder(run, d, decoder_backbone(run, d), template, mesh) for d in range(len(run.decoders))]
    program = build_program(run, mesh, template, decoders)
    state, batch = program.abstract_state(), program.abstract_batch(template)
    parts = {"params": sharded_bytes(state.params), "adam": sharded_bytes((state.opt, state.bad_steps, state.skipped)),
             "decoders": [sharded_bytes(d.shapes) for d in decoders], "batch": sharded_bytes(batch)}
    model_flops = [program.model_flops(d) for d in range(len(decoders))]
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


def analyse_decoder(built: Built, d: int, topo: Topology, quiet: bool = False) -> dict:
    """Compile decoder d's step and measure it (see the module docstring)."""
    from arc_jax.tools.hlo_collectives import collectives

    chip = topo.chip
    others = sum(b for i, b in enumerate(built.parts["decoders"]) if i != d)
    progress(f"compiling the step of decoder {d} for {topo.name} ({topo.topology}, {topo.devices} chips)...", quiet)
    t0 = time.perf_counter()
    compiled, exhausted = compile_step(built.program.step(d), built.args[d])
    progress(f"compiled in {time.perf_counter() - t0:.1f} s" if compiled else "the compiler ran out of HBM", quiet)
    model_flops = built.flops[d]["total"]
    compute_s = model_flops / topo.devices / chip.peak_flops
    out = {"decoder": d, "fits": compiled is not None, "model_flops_per_step": model_flops,
           "other_decoders_bytes_per_device": others, "compute_seconds": compute_s}
    if compiled is None:
        return {**out, "error": exhausted}
    memory = compiled_memory(compiled)
    memory["peak"] += others
    cost = compiled_cost(compiled)
    if built.program.run.attention_impl == "splash":  # Mosaic kernels are opaque to the cost analysis
        cost["pallas_flops"] = built.flops[d]["attention"] / topo.devices
    colls, unknown = collectives(compiled.as_text(), topo.devices)
    ici_bytes = sum(c.traffic_bytes for c in colls.values())
    hbm_bytes = max(cost["bytes_accessed"], memory["argument"] + memory["output"])
    bound = time_bounds(model_flops, hbm_bytes, ici_bytes, topo)
    predicted = max(bound.values())
    return {**out, "fits": memory["peak"] <= chip.hbm_bytes, "memory": memory, "compiled_cost": cost,
            "collectives": {k: dataclasses.asdict(v) for k, v in colls.items()}, "unknown_loops": unknown,
            "collective_bytes_per_device": sum(c.bytes for c in colls.values()), "ici_traffic_bytes": ici_bytes,
            "time_bounds": bound, "predicted_step_seconds": predicted,
            "mfu_ceiling": compute_s / predicted if predicted else 0.0}


def plan_run(run, topo: Topology, devices, quiet: bool = False) -> dict:
    """Compile the parsed run's train step(s) on `devices` and return the figures."""
    built = build(run, devices, quiet)
    steps = [analyse_decoder(built, d, topo, quiet) for d in range(len(run.decoders))]
    worst = max(steps, key=lambda s: s.get("memory", {}).get("peak", float("inf")))
    mem = worst.get("memory", {})
    return {
        "topology": topo.name, "topology_name": topo.topology, "num_slices": topo.num_slices,
        "devices": topo.devices, "mesh_shape": list(run.mesh_shape), "fits": all(s["fits"] for s in steps),
        "hbm_bytes_per_device": topo.chip.hbm_bytes, "peak_bytes_per_device": mem.get("peak"),
        "argument_bytes_per_device": mem.get("argument"), "temp_bytes_per_device": mem.get("temp"),
        "collective_bytes_per_device": worst.get("collective_bytes_per_device"),
        "flops_per_step": worst["model_flops_per_step"],
        "predicted_step_seconds": max((s.get("predicted_step_seconds", 0.0) for s in steps), default=None)
        if all("predicted_step_seconds" in s for s in steps) else None,
        "analytic_bytes_per_device": {"trainable_params": built.parts["params"], "adam_and_counters": built.parts["adam"],
                                      "decoders": built.parts["decoders"], "batch": built.parts["batch"]},
        "chip": dataclasses.asdict(topo.chip), "steps": steps,
        "settings": {"compute_dtype": run.compute_dtype, "remat_policy": run.remat_policy,
                     "attention_impl": run.attention_impl, "grad_accum": run.grad_accum},
    }


def plan(config: ml_collections.ConfigDict, topology: str, num_slices: int = 1, quiet: bool = False,
         search: bool = True, search_budget: int = SEARCH_BUDGET) -> dict:
    """Compile the config's train step(s) for `topology` and return the figures (format_plan prints
    them); when it does not fit and `search`, also the options that do (plan_search.py)."""
    from arc_jax.tools.plan_search import search_options
    from arc_jax.train.run_config import parse_run_config

    topo = parse_topology(topology, num_slices)
    progress(f"topology {topo.name}: {topo.topology} x {topo.num_slices} slice(s), {topo.devices} chips", quiet)
    devices = topology_devices(topo)
    run = parse_run_config(config, device_count=len(devices))
    check_attention(topo, run.attention_impl)
    result = plan_run(run, topo, devices, quiet)
    if not result["fits"] and search:
        result["options"] = search_options(run, topo, devices, search_budget, quiet)
    return result


_WHAT_TO_TRY = ("; try a larger topology, more fsdp devices (config.mesh_shape), config.remat_policy=full or "
                "micro-batches (config.grad_accum)")


def _step_lines(s: dict, hbm: int) -> list[str]:
    if "memory" not in s:
        return [f"decoder {s['decoder']}: does not fit: {s['error'].rstrip('.')}{_WHAT_TO_TRY}"]
    m = s["memory"]
    verdict = "fits" if s["fits"] else "does not fit"
    lines = [f"decoder {s['decoder']}: {verdict}: peak {gib(m['peak'])} of {gib(hbm)} HBM per device "
             f"(headroom {gib(hbm - m['peak'])}, {m['peak'] / hbm:.1%} used)" + ("" if s["fits"] else _WHAT_TO_TRY),
             f"  compiled   arguments {gib(m['argument'])}, outputs {gib(m['output'])} ({gib(m['alias'])} aliased "
             f"to donated arguments), temporaries {gib(m['temp'])}, generated code {gib(m['generated_code'])}"
             + (f", other frozen decoders {gib(s['other_decoders_bytes_per_device'])}"
                if s["other_decoders_bytes_per_device"] else ""),
             f"  FLOPs      {s['model_flops_per_step'] / 1e12:,.4f} TFLOP/step model (analytic, flops.py); compiled "
             f"cost analysis {s['compiled_cost']['flops'] / 1e12:,.4f} TFLOP/device (scanned bodies counted once)"
             + (f" + {s['compiled_cost']['pallas_flops'] / 1e12:,.4f} TFLOP/device in the splash kernels (analytic, "
                "dense)" if "pallas_flops" in s["compiled_cost"] else "")]
    for kind, c in sorted(s["collectives"].items()):
        lines.append(f"  {kind:<19}{c['count']:6d} x, {gib(c['bytes'])} per device, ring traffic "
                     f"{gib(c['traffic_bytes'])}")
    if s["unknown_loops"]:
        lines.append(f"  loops of unknown trip count (counted once): {', '.join(s['unknown_loops'])}")
    b = s["time_bounds"]
    lines.append(f"  step time  >= {s['predicted_step_seconds'] * 1e3:,.2f} ms (compute {b['compute'] * 1e3:,.2f}, "
                 f"HBM {b['hbm'] * 1e3:,.2f}, ICI {b['ici'] * 1e3:,.2f} ms); MFU ceiling {s['mfu_ceiling']:.1%}")
    return lines


def format_options(options: dict) -> list[str]:
    """The search's summary: what it tried and the variants that fit, fastest first."""
    lines = [f"search: {options['tried']} variant(s) compiled of {options['space']} "
             f"({options['skipped_static']} skipped: their state alone exceeds HBM); {options['description']}"]
    if not options["fits"]:
        lines.append("  none fits: a larger topology (or more slices) is needed")
    for i, o in enumerate(options["fits"], 1):
        lines.append(f"  {i}. step >= {o['predicted_step_seconds'] * 1e3:,.2f} ms, peak {gib(o['peak_bytes_per_device'])}"
                     f": {o['flags']}")
    return lines


def format_plan(r: dict) -> str:
    """The human summary of `plan`'s result."""
    a, chip = r["analytic_bytes_per_device"], r["chip"]
    lines = [f"plan: {r['topology']} ({r['topology_name']}, {r['num_slices']} slice(s), {r['devices']} chips of "
             f"{gib(chip['hbm_bytes'])} HBM, {chip['peak_flops'] / 1e12:,.0f} TFLOP/s bf16), mesh (data, fsdp, tensor) "
             f"= {tuple(r['mesh_shape'])}; {r['settings']}",
             f"per device (from the shardings): trainable params {gib(a['trainable_params'])}, Adam moments and "
             f"counters {gib(a['adam_and_counters'])}, frozen decoder(s) "
             f"{', '.join(gib(b) for b in a['decoders'])}, batch {gib(a['batch'])}"]
    for s in r["steps"]:
        lines += _step_lines(s, r["hbm_bytes_per_device"])
    if "options" in r:
        lines += format_options(r["options"])
    lines.append(f"verdict: {'fits' if r['fits'] else 'does not fit'} on {r['topology']}")
    return "\n".join(lines)


def main_plan(config: ml_collections.ConfigDict, topology: str, num_slices: int = 1, as_json: bool = False,
              search: bool = True, search_budget: int | None = None) -> int:
    """`arc-jax plan`: print the summary (or one JSON object); exit status 0 when it fits, 2 when not."""
    import json

    if search_budget is not None and search_budget < 0:
        raise PlanError(f"--search-budget={search_budget}: must be >= 0")
    budget = SEARCH_BUDGET if search_budget is None else search_budget
    result = plan(config, topology, num_slices, quiet=as_json, search=search and budget > 0, search_budget=budget)
    print(json.dumps(result, indent=1) if as_json else format_plan(result), flush=True)
    return 0 if result["fits"] else 2
