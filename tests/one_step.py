"""One train step from the same fresh parameters on each of several batches of a config, for tests
that compare two layouts of the same samples (loss buffer, attention rows)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from arc_jax.model import ARCEncoder, BackboneConfig, Decoder
from arc_jax.train.optimizer import OptimizerConfig
from arc_jax.train.step import StepConfig, init_state, train_step


def one_step_each(config, run, batches) -> list:
    """[(state, metrics)] on the host, one step of `run` (the parsed `config`) on each batch, the
    parameters initialised from the first batch's shapes."""
    first = batches[0]
    encoder, decoder = ARCEncoder(run.encoder), Decoder(BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict()))
    # Initialised in one program each (eagerly, each initialiser and op would compile on its own).
    params = jax.device_get(nn.unbox(jax.jit(encoder.init)(jax.random.key(0), first.encoder)["params"]))
    dec_params = nn.unbox(jax.jit(decoder.init)(jax.random.key(1), first.tokens, first.segment_ids,
                                                first.positions)["params"])
    opt = OptimizerConfig(encoder_lr=1e-3, special_lr=1e-3, projector_lr=1e-3, weight_decay=0.1, warmup_steps=1,
                          max_steps=10, initial_lr=1e-4, final_lr=1e-4)
    step = jax.jit(lambda s, b: train_step(s, dec_params, b, cfg=StepConfig(encoder, decoder, 0, opt)))
    return [jax.device_get(step(init_state(jax.tree.map(jnp.array, params)), b)) for b in batches]
