"""What `arc-jax plan` reads from a program compiled for hardware it does not have: bytes per
device of abstract (sharded) arguments, the compiled memory and cost analyses, the lower bounds on
run time they give, and the byte counts as people read them. Shared by the train-step planner
(plan.py) and the generation planner (plan_generate.py)."""

from __future__ import annotations

import math

from arc_jax.tools.topology import GIB, Topology


def sharded_bytes(tree) -> int:
    """Bytes per device of a tree of sharded ShapeDtypeStructs (or arrays)."""
    import jax

    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def compiled_memory(compiled) -> dict:
    """Bytes per device: arguments, outputs, aliased outputs (written into donated arguments),
    temporaries, generated code, and the peak = arguments + outputs - aliased + temporaries + code."""
    m = compiled.memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp", "generated_code")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["generated_code"]
    return out


def compiled_cost(compiled) -> dict:
    """FLOPs and bytes accessed per device from XLA's cost analysis (zeros where, as on GPU, it
    gives none; a scanned body is counted once)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost or {}
    return {"flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def time_bounds(flops: float, hbm_bytes: float, link_bytes: float, topo: Topology) -> dict:
    """Seconds of each resource, no overlap penalty: compute (`flops` over all devices at the
    chip's peak), HBM (`hbm_bytes` per device) and interconnect (`link_bytes` of ring traffic per
    device over the topology's slowest link for collectives)."""
    chip = topo.chip
    return {"compute": flops / topo.devices / chip.peak_flops, "hbm": hbm_bytes / chip.hbm_bandwidth,
            "ici": link_bytes / topo.interconnect_bandwidth}


def gib(n) -> str:
    """Bytes in the largest binary unit that keeps them >= 1."""
    if n is None:
        return "-"
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"
