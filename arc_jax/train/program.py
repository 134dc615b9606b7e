"""The trainer's program, built from the config and a mesh alone: the modules, every sharding, the
abstract arguments and the jitted step of each decoder. No data, weights or tokenizer files.

`arc-jax train` (trainer.py) builds it and feeds it real weights and batches; `arc-jax plan`
(arc_jax/tools/plan.py) lowers the same step on the devices of a TPU topology it does not have, with
ShapeDtypeStructs for arguments, so what plan measures (memory, collectives, FLOPs) is the step
training compiles: the same mesh, logical axis rules, parameter / state / batch shardings,
donation, rematerialisation, attention implementation and gradient accumulation.

The batch template is one micro-batch of the run's static shape (a packed batch, or
`pack_batch([], run.encoder, run.data.shape)`, which has the same shapes with no samples); with
grad_accum > 1 the step takes grad_accum of them stacked on a leading axis.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from arc_jax import sharding
from arc_jax.model import ARCEncoder, Decoder, param_groups
from arc_jax.model.config import BackboneConfig
from arc_jax.train import flops, xla_cpu
from arc_jax.train.run_config import DecoderSpec, RunConfig
from arc_jax.train.step import StepConfig, TrainState, init_state, state_shardings, train_step
from arc_jax.train.trainable import shared_mask


def frozen_groups(run: RunConfig) -> tuple[str, ...]:
    """Optimiser groups without moments: a frozen encoder and heads of decoders not in this run."""
    heads = tuple(param_groups.head(d) for d in range(len(run.encoder.projectors)) if d not in run.heads)
    return ((param_groups.SHARED,) if run.trainable.encoder_frozen else ()) + heads


def encoder_module(run: RunConfig) -> ARCEncoder:
    return ARCEncoder(run.encoder, dtype=jnp.dtype(run.compute_dtype), attention_impl=run.attention_impl,
                      remat_policy=run.remat_policy, unroll_layers=run.unroll_layers,
                      attention_span=run.data.shape.encoder_text_len)


def decoder_module(run: RunConfig, cfg: BackboneConfig, spec: DecoderSpec) -> Decoder:
    return Decoder(cfg, dtype=jnp.dtype(run.compute_dtype), param_dtype=jnp.dtype(spec.dtype),
                   attention_impl=run.attention_impl, remat_policy=run.remat_policy,
                   unroll_layers=run.unroll_layers, attention_span=run.data.shape.decoder_sample_len)


@dataclasses.dataclass(frozen=True)
class DecoderPlacement:
    """A frozen decoder's module and where its parameters live; `shapes` are its parameters as
    ShapeDtypeStructs (the config's storage dtype, with their shardings)."""

    spec: DecoderSpec
    module: Decoder
    shardings: dict
    shapes: dict


def place_decoder(run: RunConfig, index: int, cfg: BackboneConfig, template, mesh: Mesh) -> DecoderPlacement:
    """Decoder `index` of the run, of shape `cfg`, placed on `mesh`."""
    spec = run.decoders[index]
    module = decoder_module(run, cfg, spec)
    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), template.tokens, template.segment_ids,
                                               template.positions))["params"]
    shardings = sharding.param_shardings(boxed, mesh)
    shapes = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, jnp.dtype(spec.dtype), sharding=s),
                          nn.unbox(boxed), shardings)
    return DecoderPlacement(spec, module, shardings, shapes)


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    run: RunConfig
    mesh: Mesh
    encoder: ARCEncoder
    encoder_shapes: dict           # the encoder's parameters, boxed with their logical axes (abstract)
    param_shardings: dict
    state_shardings: TrainState
    batch_sharding: object         # a TrainBatch of NamedShardings (micro-batch axis first with grad_accum)
    mask: dict | None              # the trainable part of the shared encoder (arc_jax/train/trainable.py)
    decoders: tuple[DecoderPlacement, ...]

    def make_state(self):
        """The jitted function from encoder parameters to a fresh TrainState, placed."""
        groups = frozen_groups(self.run)
        return jax.jit(lambda p: init_state(p, groups), out_shardings=self.state_shardings)

    def abstract_state(self) -> TrainState:
        """The TrainState as ShapeDtypeStructs with their shardings (what restore and plan take)."""
        state = jax.eval_shape(self.make_state(), nn.unbox(self.encoder_shapes))
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state,
                            self.state_shardings)

    def abstract_batch(self, template):
        """One step's batch as ShapeDtypeStructs: `template` (one micro-batch), stacked grad_accum
        times when the run accumulates gradients."""
        lead = (self.run.grad_accum,) if self.run.grad_accum > 1 else ()
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(lead + x.shape, x.dtype, sharding=s), template,
                            self.batch_sharding)

    def model_flops(self, d: int) -> dict[str, float]:
        """Analytic executed FLOPs of one step of decoder `d` at the static shape, by part
        (arc_jax/train/flops.py; `batch_work` gives a batch's useful ones)."""
        run, dec = self.run, self.decoders[d]
        return flops.train_step_flops(run.encoder, dec.module.cfg, run.data.shape, dec.spec.head,
                                      encoder_frozen=run.trainable.encoder_frozen, grad_accum=run.grad_accum,
                                      attention_impl=run.attention_impl)

    def batch_work(self, d: int, batch) -> dict[str, float]:
        """What the host `batch` of decoder `d` holds (numpy, before it goes to the devices; micro-
        batches stacked): its useful FLOPs ("useful_flops"), the FLOPs of `model_flops` the splash
        kernel skips on it ("skipped_flops", 0 on the other paths) and `flops.batch_counts`."""
        run, dec = self.run, self.decoders[d]
        frozen = run.trainable.encoder_frozen
        useful = flops.useful_train_flops(run.encoder, dec.module.cfg, batch, dec.spec.head, encoder_frozen=frozen)
        skipped = flops.skipped_attention_flops(run.encoder, dec.module.cfg, batch, attention_impl=run.attention_impl,
                                                encoder_frozen=frozen)
        return {"useful_flops": useful["total"], "skipped_flops": skipped, **flops.batch_counts(batch)}

    def step(self, d: int):
        """The jitted train step of decoder `d`: (state, decoder params, batch) -> (state, metrics),
        the state donated."""
        run, dec = self.run, self.decoders[d]
        # The mesh binds the models' activation constraints and the splash kernel's shard_map.
        cfg = StepConfig(self.encoder, dec.module, dec.spec.head, run.optimizer, run.trainable.encoder_frozen,
                         run.grad_accum, self.mesh)
        mask = self.mask

        def step(state, decoder_params, batch):
            new_state, metrics = train_step(state, decoder_params, batch, cfg=cfg, mask=mask)
            return new_state, {**metrics, "bad_steps": new_state.bad_steps}

        return jax.jit(step, in_shardings=(self.state_shardings, dec.shardings, self.batch_sharding),
                       out_shardings=(self.state_shardings, sharding.replicated(self.mesh)), donate_argnums=0,
                       compiler_options=xla_cpu.train_step_options(self.mesh.devices.flat[0].platform))


def build_program(run: RunConfig, mesh: Mesh, template, decoders: list[DecoderPlacement]) -> TrainProgram:
    """The run's program on `mesh`; `template` is one micro-batch (arrays or ShapeDtypeStructs)."""
    encoder = encoder_module(run)
    boxed = jax.eval_shape(lambda: encoder.init(jax.random.key(0), template.encoder))["params"]
    p_sharding = sharding.param_shardings(boxed, mesh)
    mask = shared_mask(nn.unbox(boxed), run.encoder, run.trainable.encoder_layers, run.trainable.embedding)
    return TrainProgram(run, mesh, encoder, boxed, p_sharding, state_shardings(p_sharding, mesh, frozen_groups(run)),
                        sharding.batch_sharding(template, mesh, micro_batches=run.grad_accum > 1), mask,
                        tuple(decoders))
