"""How everything is placed on the device mesh, in one place.

The mesh has three named axes, (data, fsdp, tensor), sized by the config (-1 takes the remaining
devices). Parameters carry logical axis names (embed, heads, kv_heads, head_dim, mlp, vocab,
layers); `DEFAULT_RULES` maps them to mesh axes, so FSDP shards `embed` over fsdp and tensor
parallelism splits heads and mlp. Batches are split over data x fsdp on their leading axis.

Activations carry logical names too (activation_batch, activation_length, activation_embed,
activation_vocab), constrained by the model where the residual stream starts, between blocks, at
the pooled outputs and at the logits. Unconstrained, XLA follows the embed-sharded tables: the
whole batch's residual stream ends up split on its width, and every matmul all-reduces a
full-batch output. The constraints bind only inside `activation_sharding` (the train step traces
under it); elsewhere (inference, tests) they are no-ops.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from arc_jax.model import param_groups

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis (None: replicated). Order matters only for duplicates.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),
    # Activations: rows split like the batch, each row's tokens and width whole on its device.
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_vocab", "tensor"),
    ("activation_kv_heads", "tensor"),  # the splash kernel's shards
)


def resolve_mesh_shape(shape: Sequence[int], device_count: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes for `device_count` devices; one entry may be -1 for "the rest".
    ValueError for a shape the devices cannot form."""
    shape = list(shape)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ValueError(f"mesh shape {shape}: expected three ints (data, fsdp, tensor)")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh shape {shape}: sizes must be >= 1 (or -1 for the remaining devices)")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if device_count % known:
            raise ValueError(f"mesh shape {shape}: {known} does not divide the {device_count} devices")
        shape[shape.index(-1)] = device_count // known
    elif known != device_count:
        raise ValueError(f"mesh shape {shape} needs {known} devices; {device_count} are available")
    return tuple(shape)


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh; one entry may be -1 for "the remaining devices"."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(resolve_mesh_shape(shape, devices.size)), MESH_AXES)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules=DEFAULT_RULES):
    """Binds the model's activation constraints (and the splash kernel's shard_map) to `mesh`
    while a function is traced; usable inside `jax.jit`, as the train step does."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(list(rules)):
        yield


def param_shardings(boxed_params, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a tree of boxed (logically annotated) parameters."""
    specs = nn.get_partition_spec(boxed_params)
    return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(batch, mesh: Mesh, micro_batches: bool = False):
    """Every batch array split over data x fsdp on its rows axis (the second axis when the batch
    stacks micro-batches for gradient accumulation)."""
    spec = PartitionSpec(None, BATCH_AXES) if micro_batches else PartitionSpec(BATCH_AXES)
    rows = NamedSharding(mesh, spec)
    return jax.tree.map(lambda _: rows, batch)


def adam_shardings(params_sharding, mesh: Mesh, frozen_groups: tuple[str, ...] = ()) -> dict:
    """Per optimiser group (arc_jax.model.param_groups) but `frozen_groups`, the shardings of its
    Adam state: the moments placed like the parameters they follow, the counts replicated. The train
    side assembles its state's shardings from these (arc_jax.train.step.state_shardings)."""
    count = replicated(mesh)

    def counts(name, g):  # a head keeps one count per part (arc_jax.train.optimizer)
        return {part: count for part in {param_groups.head_part(k) for k in g}} if param_groups.is_head(name) else count

    return {name: optax.ScaleByAdamState(count=counts(name, g), mu=g, nu=g)
            for name, g in param_groups.split(params_sharding).items() if name not in frozen_groups}
