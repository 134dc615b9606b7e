"""What `arc-jax plan` tries when a run does not fit: a small, stated space of variants of the run
that keep its model, its data and its global batch, each compiled like the run itself.

The space:
- mesh (data, fsdp, tensor): the run's; every device on fsdp, (1, n, 1); fsdp x tensor,
  (1, n / t, t) for t = 2, 4, 8 where t divides the kv heads of every model (tensor parallelism
  splits heads, MLP and vocabulary);
- rematerialisation: the run's policy, then "full" (each block recomputed in the backward pass);
- micro-batches k = 1, 2, 4, 8: the step's rows in k accumulated micro-batches
  (config.grad_accum x k, config.data.shape.encoder_rows and decoder_rows / k), where the rows of a
  micro-batch still divide over data x fsdp.

The walk goes mesh by mesh, then policy, then k upwards; for one mesh and policy the first k that
fits ends it (more micro-batches only repeat the weight gathers). A mesh whose sharded parameters,
optimiser moments and frozen decoders alone exceed HBM (known from the shardings, without a
compile) is skipped whole. At most `budget` variants are compiled; those that fit are ranked by
predicted step time (plan.py's lower bound).
"""

from __future__ import annotations

import dataclasses

from arc_jax.tools.plan import build, decoder_backbone, plan_run, progress
from arc_jax.tools.topology import Topology

SPACE = ("mesh: the run's, (1, n, 1), (1, n/t, t) for t in 2, 4, 8 dividing every model's kv heads; "
         "remat: the run's, full; micro-batches: 1, 2, 4, 8 (rows / k, grad_accum x k)")
TENSOR_SIZES = (2, 4, 8)
MICRO_BATCHES = (1, 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class Variant:
    mesh_shape: tuple[int, int, int]
    remat_policy: str
    micro_batches: int

    def apply(self, run):
        """The run with this variant's mesh, policy and micro-batches (same global batch)."""
        shape = run.data.shape
        rows = dataclasses.replace(shape, encoder_rows=shape.encoder_rows // self.micro_batches,
                                   decoder_rows=shape.decoder_rows // self.micro_batches)
        return dataclasses.replace(run, mesh_shape=self.mesh_shape, remat_policy=self.remat_policy,
                                   grad_accum=run.grad_accum * self.micro_batches,
                                   data=dataclasses.replace(run.data, shape=rows))

    def flags(self, run) -> str:
        """The config overrides that turn `run` into this variant."""
        changed = self.apply(run)
        out = []
        if self.mesh_shape != tuple(run.mesh_shape):
            out.append(f"--config.mesh_shape=[{','.join(map(str, self.mesh_shape))}]")
        if self.remat_policy != run.remat_policy:
            out.append(f"--config.remat_policy={self.remat_policy}")
        if self.micro_batches > 1:
            out += [f"--config.grad_accum={changed.grad_accum}",
                    f"--config.data.shape.encoder_rows={changed.data.shape.encoder_rows}",
                    f"--config.data.shape.decoder_rows={changed.data.shape.decoder_rows}"]
        return " ".join(out)


def candidate_meshes(run, devices: int) -> list[tuple[int, int, int]]:
    """The run's mesh, then all-fsdp, then fsdp x tensor for the tensor sizes every model allows."""
    kv_heads = [run.encoder.backbone.n_kv_heads] + [decoder_backbone(run, d).n_kv_heads
                                                   for d in range(len(run.decoders))]
    meshes = [tuple(run.mesh_shape), (1, devices, 1)]
    meshes += [(1, devices // t, t) for t in TENSOR_SIZES if devices % t == 0 and devices > t
               and all(h % t == 0 for h in kv_heads)]
    return list(dict.fromkeys(meshes))


def micro_batch_counts(run, mesh: tuple[int, int, int]) -> list[int]:
    """The k whose micro-batch rows still split evenly over data x fsdp."""
    split, shape = mesh[0] * mesh[1], run.data.shape
    return [k for k in MICRO_BATCHES
            if all(rows % (k * split) == 0 for rows in (shape.encoder_rows, shape.decoder_rows))]


def static_bytes(run, devices) -> int:
    """Per device: sharded trainable parameters, optimiser state and frozen decoders (no compile)."""
    parts = build(run, devices, quiet=True).parts
    return parts["params"] + parts["adam"] + sum(parts["decoders"])


def search_options(run, topo: Topology, devices, budget: int, quiet: bool = False) -> dict:
    """Walk the space (module docstring) and return what was tried and the variants that fit."""
    policies = list(dict.fromkeys([run.remat_policy, "full"]))
    meshes = candidate_meshes(run, len(devices))
    space = sum(len(policies) * len(micro_batch_counts(run, m)) for m in meshes)
    tried, skipped, fits = 0, 0, []
    progress(f"the run does not fit: searching {space} variants ({SPACE}), at most {budget} compiles", quiet)
    for mesh in meshes:
        counts = micro_batch_counts(run, mesh)
        if not counts:
            continue
        static = static_bytes(Variant(mesh, run.remat_policy, counts[0]).apply(run), devices)
        if static > topo.chip.hbm_bytes:
            progress(f"mesh {mesh}: state and decoders alone take {static / 2**30:.1f} GiB per device: skipped", quiet)
            skipped += len(policies) * len(counts)
            continue
        for policy in policies:
            for k in counts:
                variant = Variant(mesh, policy, k)
                if variant == Variant(tuple(run.mesh_shape), run.remat_policy, 1):
                    continue  # the run itself
                if tried == budget:
                    return _options(space, tried, skipped, fits, exhausted=True)
                tried += 1
                progress(f"variant {tried}: mesh {mesh}, remat {policy}, {k} micro-batch(es)...", quiet)
                r = plan_run(variant.apply(run), topo, devices, quiet=True)
                progress(f"  {'fits' if r['fits'] else 'does not fit'}", quiet)
                if r["fits"]:
                    fits.append({"flags": variant.flags(run), "mesh_shape": list(mesh), "remat_policy": policy,
                                 "micro_batches": k, "predicted_step_seconds": r["predicted_step_seconds"],
                                 "peak_bytes_per_device": r["peak_bytes_per_device"],
                                 "collective_bytes_per_device": r["collective_bytes_per_device"]})
                    break
    return _options(space, tried, skipped, fits, exhausted=False)


def _options(space: int, tried: int, skipped: int, fits: list, exhausted: bool) -> dict:
    note = SPACE + ("; stopped at the compile budget (plan --search-budget)" if exhausted else "")
    return {"space": space, "tried": tried, "skipped_static": skipped, "budget_exhausted": exhausted,
            "description": note, "fits": sorted(fits, key=lambda o: o["predicted_step_seconds"])}
