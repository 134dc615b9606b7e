"""Fresh encoder and decoder parameters for a batch, and one train step from them on each of several
batches of a config, for tests that compare two layouts of the same samples (loss buffer, attention
rows)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from arc_jax.model import ARCEncoder, BackboneConfig, Decoder
from arc_jax.train.optimizer import OptimizerConfig
from arc_jax.train.step import StepConfig, init_state, train_step


def random_params(encoder: ARCEncoder, decoder: Decoder, batch) -> tuple[dict, dict]:
    """(encoder parameters on the host, decoder parameters) from keys 0 and 1, shaped for `batch`
    (a TrainBatch), each initialised in one jitted program: eagerly, every initialiser and op
    compiles on its own."""
    params = jax.device_get(nn.unbox(jax.jit(encoder.init)(jax.random.key(0), batch.encoder)["params"]))
    dec_params = nn.unbox(jax.jit(decoder.init)(jax.random.key(1), batch.tokens, batch.segment_ids,
                                                batch.positions)["params"])
    return params, dec_params


def one_step_each(config, run, batches) -> list:
    """[(state, metrics)] on the host, one step of `run` (the parsed `config`) on each batch, the
    parameters initialised from the first batch's shapes."""
    encoder, decoder = ARCEncoder(run.encoder), Decoder(BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict()))
    params, dec_params = random_params(encoder, decoder, batches[0])
    opt = OptimizerConfig(encoder_lr=1e-3, special_lr=1e-3, projector_lr=1e-3, weight_decay=0.1, warmup_steps=1,
                          max_steps=10, initial_lr=1e-4, final_lr=1e-4)
    step = jax.jit(lambda s, b: train_step(s, dec_params, b, cfg=StepConfig(encoder, decoder, 0, opt)))
    return [jax.device_get(step(init_state(jax.tree.map(jnp.array, params)), b)) for b in batches]
