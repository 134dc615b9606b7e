"""Run with 8 fake CPU devices (XLA_FLAGS set by the caller): one train step on several meshes
versus one device; prints a JSON report. Used by test_sharding.py.

    [PROBE_MESHES='[[8, 1, 1], ...]'] python sharded_step_probe.py CONFIG DATA_DIR [--config.a.b=value ...]"""

import functools
import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arc_jax import sharding
from arc_jax.config_loading import load_config
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig
from arc_jax.train.optimizer import OptimizerConfig
from arc_jax.train.run_config import parse_run_config, run_batches
from arc_jax.train.step import StepConfig, init_state, state_shardings, train_step


def max_diff(a, b) -> float:
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def first_moments(state):
    """Adam's first moments after one step: (1 - b1) times the gradient, so gradients compare
    through them without Adam's normalisation (which magnifies rounding where a gradient is ~eps)."""
    return [s.mu for s in state.opt.adam.values()]


def main(config_path, data_dir, *overrides):
    jax.config.update("jax_default_matmul_precision", "highest")
    config = load_config(config_path, [f"--config.data.dir={data_dir}", "--config.data.shape.encoder_rows=8",
                                       "--config.data.shape.decoder_rows=8", *overrides])
    batch, _ = next(run_batches(parse_run_config(config, device_count=1)))
    enc_cfg = EncoderConfig.from_dict(config.model.encoder.to_dict())
    dec_cfg = BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict())
    encoder, decoder = ARCEncoder(enc_cfg), Decoder(dec_cfg)
    boxed = jax.jit(encoder.init)(jax.random.key(0), batch.encoder)["params"]
    dec_boxed = jax.jit(decoder.init)(jax.random.key(1), batch.tokens, batch.segment_ids, batch.positions)["params"]
    params, dec_params = jax.device_get(nn.unbox(boxed)), jax.device_get(nn.unbox(dec_boxed))
    opt = OptimizerConfig(encoder_lr=1e-3, special_lr=1e-3, projector_lr=1e-3, warmup_steps=1, max_steps=10,
                          initial_lr=1e-4, final_lr=1e-4)

    def step(state, dec, b, mesh=None):
        return train_step(state, dec, b, cfg=StepConfig(encoder, decoder, 0, opt, mesh=mesh))

    ref_state, ref_metrics = jax.jit(step)(init_state(jax.tree.map(jnp.array, params)), dec_params, batch)
    ref_state = jax.device_get(ref_state)
    ref_max_grad = max(float(np.abs(x).max()) for x in jax.tree.leaves(first_moments(ref_state)))
    total_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(params))
    report = {"devices": jax.device_count(), "reference_loss": float(ref_metrics["loss"]),
              "reference_max_grad": ref_max_grad, "meshes": {}}
    for shape in json.loads(os.environ.get("PROBE_MESHES", "[[8, 1, 1], [1, -1, 1], [2, 2, 2]]")):
        mesh = sharding.make_mesh(shape)
        p_sharding = sharding.param_shardings(boxed, mesh)
        d_sharding = sharding.param_shardings(dec_boxed, mesh)
        s_sharding = state_shardings(p_sharding, mesh)
        b_sharding = sharding.batch_sharding(batch, mesh)
        state = jax.device_put(init_state(jax.tree.map(jnp.array, params)), s_sharding)
        sharded_step = jax.jit(functools.partial(step, mesh=mesh), in_shardings=(s_sharding, d_sharding, b_sharding),
                               out_shardings=(s_sharding, sharding.replicated(mesh)), donate_argnums=0)
        per_device = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(state.params))
        new_state, metrics = sharded_step(state, jax.device_put(dec_params, d_sharding),
                                          jax.device_put(batch, b_sharding))
        new_state = jax.device_get(new_state)
        report["meshes"][str(shape)] = {"loss": float(metrics["loss"]),
                                        "max_param_diff": max_diff(new_state.params, ref_state.params),
                                        "max_grad_diff": max_diff(first_moments(new_state), first_moments(ref_state)),
                                        "param_bytes_fraction": per_device / total_bytes}
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
