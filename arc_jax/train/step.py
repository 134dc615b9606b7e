"""The train step: a pure function of (state, frozen decoder, batch), jitted once per decoder.

loss = token-mean next-token cross-entropy over the loss-masked text slots of the decoder, which
reads the compressed table of the encoder (see arc_jax/data/packing.py). With a loss buffer
(data.shape.loss_slots) the decoder's final norm and output head run on the slots the batch lists
as carrying loss only: the same loss and gradients for less work. With gradient
accumulation the batch has a leading micro-batch axis; the step sums cross-entropy and gradients
over the micro-batches (lax.scan) and divides by the total loss tokens once, so A micro-batches
give the gradient of one batch A times as large. Only the trainable groups are differentiated
(the shared encoder unless frozen, and the drawn decoder's head); the decoder is frozen and never
in the optimiser. A special vector (<Rec>, <Cont>) the batch does not read is not updated at all
(`special_reads`; arc_jax/train/optimizer.py). A step whose loss or gradient norm is not finite leaves the state unchanged and
is counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from arc_jax import sharding
from arc_jax.data.packing import TASKS, TrainBatch, special_rows
from arc_jax.model import param_groups
from arc_jax.model.decoder import Decoder
from arc_jax.model.encoder import ARCEncoder
from arc_jax.train import optimizer
from arc_jax.train.optimizer import OptimizerConfig, OptimizerState


class TrainState(NamedTuple):
    params: dict                  # encoder tree (float32 master weights), frozen parts included
    opt: OptimizerState
    bad_steps: jax.Array          # consecutive steps skipped for non-finite values
    skipped: jax.Array            # all steps skipped so far


def init_state(params: dict, frozen_groups: tuple[str, ...] = ()) -> TrainState:
    # Distinct counters: the step donates the state, and one buffer cannot be donated twice.
    return TrainState(params, optimizer.init(params, frozen_groups), jnp.zeros((), jnp.int32),
                      jnp.zeros((), jnp.int32))


def state_shardings(params_sharding, mesh, frozen_groups: tuple[str, ...] = ()) -> TrainState:
    """Shardings of the TrainState `init_state(params, frozen_groups)` makes, every placement
    chosen by arc_jax.sharding."""
    counter = sharding.replicated(mesh)  # the optimiser step and the skipped-step counters
    adam = sharding.adam_shardings(params_sharding, mesh, frozen_groups)
    return TrainState(params_sharding, OptimizerState(counter, adam), counter, counter)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What a jitted step closes over (static)."""

    encoder: ARCEncoder
    decoder: Decoder
    decoder_index: int
    opt_cfg: OptimizerConfig
    encoder_frozen: bool = False
    grad_accum: int = 1  # > 1: the batch has a leading micro-batch axis of this size
    mesh: Mesh | None = None  # the mesh the step is sharded over: binds the activation constraints


def loss_sums(params, decoder_params, batch: TrainBatch, encoder: ARCEncoder, decoder: Decoder,
              decoder_index: int, mesh: Mesh | None = None) -> dict:
    """Sums over the batch: cross-entropy, loss tokens, correct tokens, and both per task. With
    `mesh`, the models' activations are placed on it (arc_jax.sharding.activation_sharding)."""
    with sharding.activation_sharding(mesh) if mesh is not None else contextlib.nullcontext():
        table = encoder.apply({"params": params}, batch.encoder, decoder_index, method=ARCEncoder.compressed_table)
        logits = decoder.apply({"params": decoder_params}, batch.tokens, batch.segment_ids, batch.positions, table,
                               batch.compressed_index, batch.loss_slots, batch.attention_rows)
    targets, mask, task_ids = at_loss_slots(batch)
    logits = logits.astype(jnp.float32)
    ce = cross_entropy(logits, targets)
    sums = {"ce": (ce * mask).sum(), "tokens": mask.sum(), "correct": correct_tokens(logits, targets, mask)}
    for i, task in enumerate(TASKS):
        task_mask = mask * (task_ids == i)
        sums[f"ce/{task}"] = (ce * task_mask).sum()
        sums[f"tokens/{task}"] = task_mask.sum()
    return sums


def target_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """logits [..., vocab] at integer `targets` [...]: each slot's logits summed where the vocabulary's
    index equals its target. Not gathered: a gather's backward pass is a scatter-add into a zeroed
    copy of the logits, where this one's is a select that fuses with the softmax's. Compiled for an
    H200 at bench_gpu_real_shapes' head (8 x 1136 slots x 128,256, bf16 logits), the loss and its
    gradient moved 30.4 GB a step with optax's gather, 9.4 GB with this (notes/loss_bytes.py)."""
    vocab = jnp.arange(logits.shape[-1], dtype=targets.dtype)
    return jnp.sum(jnp.where(vocab == targets[..., None], logits, 0), axis=-1)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Softmax cross-entropy of `logits` [..., vocab] at integer `targets` [...] (optax's
    softmax_cross_entropy_with_integer_labels, the target's logit read by `target_logits`)."""
    return jax.nn.logsumexp(logits, axis=-1) - target_logits(logits, targets)


def correct_tokens(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """How many masked slots score their target highest (a tie at the top counts as correct): the
    target's logit against the row's max, which the softmax cross-entropy computes anyway. An
    argmax reduces (value, index) pairs, which XLA:CPU runs as a loop of its own over the [slots x
    vocabulary] logits: the largest op of the demo's pretraining step in a profile (8.5 ms a step);
    without it the step took 0.98x the time (A/B in one process, quartiles 0.95-1.01), the same
    accuracies."""
    return ((target_logits(logits, targets) >= logits.max(-1)) * mask).sum()


def at_loss_slots(batch: TrainBatch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(targets, loss mask, task ids) where the decoder's logits are: every slot, or with a loss
    buffer the slots it lists ([rows, loss_slots]; its -1 entries carry no loss)."""
    if batch.loss_slots is None:
        return batch.targets, batch.loss_mask, batch.task_ids
    listed = batch.loss_slots >= 0
    take = lambda x: jnp.take_along_axis(x, jnp.maximum(batch.loss_slots, 0), axis=-1)
    return take(batch.targets), take(batch.loss_mask) * listed, jnp.where(listed, take(batch.task_ids), -1)


def metrics_from_sums(sums: dict) -> dict:
    n = jnp.maximum(sums["tokens"], 1.0)
    loss = sums["ce"] / n
    metrics = {"loss": loss, "perplexity": jnp.exp(loss), "accuracy": sums["correct"] / n,
               "loss_tokens": sums["tokens"]}
    for task in TASKS:
        metrics[f"loss/{task}"] = sums[f"ce/{task}"] / jnp.maximum(sums[f"tokens/{task}"], 1.0)
        metrics[f"tokens/{task}"] = sums[f"tokens/{task}"]
    return metrics


def loss_and_metrics(params, decoder_params, batch: TrainBatch, encoder: ARCEncoder, decoder: Decoder,
                     decoder_index: int):
    """(token-mean loss, metrics) of one batch: what evaluation reports."""
    metrics = metrics_from_sums(loss_sums(params, decoder_params, batch, encoder, decoder, decoder_index))
    return metrics["loss"], metrics


def _split(params: dict, decoder_index: int, encoder_frozen: bool) -> tuple[dict, dict]:
    """(differentiated, constant) parts of the encoder tree: the drawn decoder's head, and the
    shared group unless the encoder is frozen."""
    groups = {param_groups.head(decoder_index)} | (set() if encoder_frozen else {param_groups.SHARED})
    trained = {k: v for k, v in params.items() if param_groups.group_of(k) in groups}
    return trained, {k: v for k, v in params.items() if k not in trained}


def _gradients(params, decoder_params, batch: TrainBatch, cfg: StepConfig):
    """(sums, gradient of the summed cross-entropy) over the batch or its micro-batches."""
    trained, constant = _split(params, cfg.decoder_index, cfg.encoder_frozen)

    def ce_sum(trained, micro):
        sums = loss_sums({**constant, **trained}, decoder_params, micro, cfg.encoder, cfg.decoder, cfg.decoder_index,
                         cfg.mesh)
        return sums["ce"], sums

    grad_fn = jax.grad(ce_sum, has_aux=True)
    if cfg.grad_accum == 1:
        grads, sums = grad_fn(trained, batch)
        return sums, grads

    def accumulate(carry, micro):
        grads, sums = grad_fn(trained, micro)
        return jax.tree.map(jnp.add, carry, (sums, grads)), None

    first = jax.tree.map(lambda x: x[0], batch)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(grad_fn, trained, first))
    (sums, grads), _ = jax.lax.scan(accumulate, (zeros[1], zeros[0]), batch)
    return sums, grads


def special_reads(batch: TrainBatch) -> dict[str, jax.Array]:
    """Which special vectors of the drawn head the batch reads, {"rec_tok": bool, "cont_tok": bool}:
    whether any slot's compressed_index is that vector's table row (arc_jax/data/packing.py), in any
    micro-batch. Exact, not inferred from a zero gradient; the optimiser skips a vector not read."""
    index = batch.compressed_index
    return {name: jnp.any(index == row) for name, row in special_rows(batch.encoder).items()}


def train_step(state: TrainState, decoder_params, batch: TrainBatch, *, cfg: StepConfig, mask: dict | None = None):
    sums, grads = _gradients(state.params, decoder_params, batch, cfg)
    n = jnp.maximum(sums["tokens"], 1.0)
    grads = jax.tree.map(lambda g: g / n, grads)
    params, opt, grad_norm = optimizer.update(grads, state.opt, state.params, cfg.decoder_index, cfg.opt_cfg, mask,
                                              special_reads(batch))
    metrics = metrics_from_sums(sums)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = TrainState(keep(params, state.params), keep(opt, state.opt),
                           jnp.where(finite, 0, state.bad_steps + 1), state.skipped + (~finite).astype(jnp.int32))
    unit_lr = cfg.opt_cfg.unit_schedule()(state.opt.step)
    o = cfg.opt_cfg
    metrics = {**metrics, "grad_norm": grad_norm, "skipped": (~finite).astype(jnp.int32),
               "learning_rate/encoder": o.encoder_lr * unit_lr * (not cfg.encoder_frozen),
               "learning_rate/special": o.special_lr * unit_lr, "learning_rate/projector": o.projector_lr * unit_lr}
    return new_state, metrics


def jit_train_step(encoder: ARCEncoder, decoder: Decoder, decoder_index: int, opt_cfg: OptimizerConfig):
    """The jitted step for one decoder (no sharding, everything trains), the state donated."""
    cfg = StepConfig(encoder, decoder, decoder_index, opt_cfg)
    return jax.jit(functools.partial(train_step, cfg=cfg), donate_argnums=0)
