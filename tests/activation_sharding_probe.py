"""Run with 8 fake CPU devices (XLA_FLAGS set by the caller); prints a JSON report. Used by
test_activation_sharding.py.

- splash under a 2-device mesh (rows split, then kv heads split): the kernel runs per shard under
  shard_map (the Pallas interpreter on CPU), and matches the "xla" path, values and gradients;
- the tiny config's train step on an FSDP mesh compiled with and without the activation
  constraints: the bytes its collectives move, per device per step."""

import json
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arc_jax import sharding
from arc_jax.config_loading import load_config
from arc_jax.data.packing import pack_batch
from arc_jax.model import ARCEncoder, Decoder
from arc_jax.model.attention import dot_product_attention
from arc_jax.train.run_config import parse_run_config
from arc_jax.train.step import StepConfig, init_state, state_shardings, train_step
from tiny_shapes import two_a_row

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8}
_COLLECTIVE = re.compile(r"= (.*?) (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(-start)?\(")


def _bytes(text: str) -> int:
    return sum(_BYTES[t] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
               for t, dims in re.findall(r"\b(\w+)\[([0-9,]*)\]", text) if t in _BYTES)


def collective_bytes(hlo: str) -> int:
    """Result bytes of the collectives in the compiled program; the tiny config's layers are
    scanned, so an op in a loop body is counted once (both programs alike)."""
    return sum(_bytes(m.group(1)) for m in _COLLECTIVE.finditer(hlo))


def splash_under_mesh(mesh_shape) -> dict:
    rng = np.random.default_rng(0)
    b, t = 4, 128
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, n, 16)), jnp.float32) for n in (4, 2, 2))
    seg = np.ones((b, t), np.int32)
    seg[0, 60:], seg[1, 100:], seg[3, 70:] = 2, 0, 0
    pos = np.broadcast_to(np.arange(t), (b, t))
    mesh = sharding.make_mesh(mesh_shape, jax.devices()[:2])

    def loss(impl, q, k, v):
        out = dot_product_attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos,
                                    kv_positions=pos, causal=True, implementation=impl, same_sequence=True)
        return jnp.sum(jnp.where(jnp.asarray(seg > 0)[:, :, None, None], jnp.sin(out), 0.0)), out

    def sharded(q, k, v):
        with sharding.activation_sharding(mesh):
            return jax.value_and_grad(lambda *a: loss("splash", *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)

    (_, ref), ref_grads = jax.value_and_grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)
    (_, out), grads = jax.jit(sharded, in_shardings=sharding.replicated(mesh))(q, k, v)
    real = seg > 0
    return {"shard_map": "shard_map" in str(jax.make_jaxpr(sharded)(q, k, v)),
            "max_out_diff": float(np.abs(np.asarray(out)[real] - np.asarray(ref)[real]).max()),
            "max_grad_diff": max(float(np.abs(np.asarray(a) - np.asarray(r)).max()) for a, r in zip(grads, ref_grads))}


def step_collectives(config_path: str, mesh_shape, constrain: bool) -> int:
    config = load_config(config_path, two_a_row(encoder_rows=8, decoder_rows=8))
    run = parse_run_config(config, device_count=jax.device_count())
    mesh = sharding.make_mesh(mesh_shape)
    template = pack_batch([], run.encoder, run.data.shape)[0]
    encoder, decoder = ARCEncoder(run.encoder), Decoder(run.decoders[0].backbone)
    boxed = jax.eval_shape(lambda: encoder.init(jax.random.key(0), template.encoder))["params"]
    dec_boxed = jax.eval_shape(lambda: decoder.init(jax.random.key(0), template.tokens, template.segment_ids,
                                                    template.positions))["params"]
    s_sharding = state_shardings(sharding.param_shardings(boxed, mesh), mesh)
    d_sharding = sharding.param_shardings(dec_boxed, mesh)
    b_sharding = sharding.batch_sharding(template, mesh)
    cfg = StepConfig(encoder, decoder, 0, run.optimizer, mesh=mesh if constrain else None)
    step = jax.jit(lambda s, d, b: train_step(s, d, b, cfg=cfg), in_shardings=(s_sharding, d_sharding, b_sharding),
                   out_shardings=(s_sharding, sharding.replicated(mesh)), donate_argnums=0)
    abstract = lambda tree, shardings: jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                                    tree, shardings)
    state = jax.eval_shape(init_state, nn.unbox(boxed))
    batch = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s), template,
                         b_sharding)
    compiled = step.lower(abstract(state, s_sharding), abstract(nn.unbox(dec_boxed), d_sharding), batch).compile()
    return collective_bytes(compiled.as_text())


def main(config_path):
    report = {"devices": jax.device_count(),
              "splash": {str(shape): splash_under_mesh(shape) for shape in ([2, 1, 1], [1, 1, 2])},
              "collective_bytes": {str(c): step_collectives(config_path, [1, -1, 1], c) for c in (False, True)}}
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
