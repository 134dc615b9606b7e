"""The train step: a pure function of (state, frozen decoder, batch), jitted once per decoder.

loss = token-mean next-token cross-entropy over loss-masked text slots of the decoder, which reads
the compressed table of the encoder (see arc_jax/data/packing.py). Only the encoder tree is
differentiated; the decoder is frozen and never in the optimiser. A step whose loss or gradient
norm is not finite leaves the state unchanged and is counted.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from arc_jax.data.packing import TASKS, TrainBatch
from arc_jax.model.decoder import Decoder
from arc_jax.model.encoder import ARCEncoder
from arc_jax.train import optimizer
from arc_jax.train.optimizer import OptimizerConfig, OptimizerState


class TrainState(NamedTuple):
    params: dict                  # trainable encoder tree (float32 master weights)
    opt: OptimizerState
    bad_steps: jax.Array          # consecutive steps skipped for non-finite values
    skipped: jax.Array            # all steps skipped so far


def init_state(params: dict) -> TrainState:
    # Distinct counters: the step donates the state, and one buffer cannot be donated twice.
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def loss_and_metrics(params, decoder_params, batch: TrainBatch, encoder: ARCEncoder, decoder: Decoder,
                     decoder_index: int):
    table = encoder.apply({"params": params}, batch.encoder, decoder_index, method=ARCEncoder.compressed_table)
    logits = decoder.apply({"params": decoder_params}, batch.tokens, batch.segment_ids, batch.positions, table,
                           batch.compressed_index)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch.targets)
    mask = batch.loss_mask
    n = jnp.maximum(mask.sum(), 1.0)
    loss = (ce * mask).sum() / n
    metrics = {"loss": loss, "accuracy": ((logits.argmax(-1) == batch.targets) * mask).sum() / n,
               "loss_tokens": mask.sum()}
    for i, task in enumerate(TASKS):
        task_mask = mask * (batch.task_ids == i)
        metrics[f"loss/{task}"] = (ce * task_mask).sum() / jnp.maximum(task_mask.sum(), 1.0)
        metrics[f"tokens/{task}"] = task_mask.sum()
    return loss, metrics


def train_step(state: TrainState, decoder_params, batch: TrainBatch, *, encoder: ARCEncoder, decoder: Decoder,
               decoder_index: int, opt_cfg: OptimizerConfig):
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, decoder_params, batch, encoder, decoder, decoder_index)
    params, opt, grad_norm = optimizer.update(grads, state.opt, state.params, decoder_index, opt_cfg)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = TrainState(keep(params, state.params), keep(opt, state.opt),
                           jnp.where(finite, 0, state.bad_steps + 1), state.skipped + (~finite).astype(jnp.int32))
    metrics = {**metrics, "grad_norm": grad_norm, "skipped": (~finite).astype(jnp.int32),
               "learning_rate/encoder": opt_cfg.encoder_lr * opt_cfg.unit_schedule()(state.opt.step)}
    return new_state, metrics


def jit_train_step(encoder: ARCEncoder, decoder: Decoder, decoder_index: int, opt_cfg: OptimizerConfig):
    """The jitted step for one decoder, with the state donated (updated in place)."""
    step = functools.partial(train_step, encoder=encoder, decoder=decoder, decoder_index=decoder_index,
                             opt_cfg=opt_cfg)
    return jax.jit(step, donate_argnums=0)
