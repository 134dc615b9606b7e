"""AdamW over the trainable groups, as the reference's torch optimiser behaves.

- Groups (arc_jax.model.param_groups): the shared encoder (backbone and embedding) and one head
  per decoder (`decoder_{d}`: <Rec>/<Cont> vectors and projector). Frozen decoders are never in here.
- Each parameter has its own max learning rate (encoder, special vectors, projector); all follow
  the same one-cycle shape, so lr(step) = max_lr * unit_one_cycle(step), as torch's OneCycleLR
  with a list of max rates and shared div factors. The step is global. The reference has no
  separate rate for <Rec>/<Cont>: they are in its encoder ("embedder") group (reference train.py
  L258-271), so the paper configs set special_lr = encoder_lr; special_lr exists for the paper's
  Table 11 (3e-5 for multi-decoder fine-tuning), an option.
- AdamW (torch.optim.AdamW) with decoupled decay on every trainable parameter:
  p <- p - lr * (adam(g) + weight_decay * p). The fields' defaults are torch's (betas 0.9, 0.999,
  beta1 constant); the paper configs set the reference's (reference train.py L272: betas (0.9, 0.95),
  eps 1e-8) and b1_schedule "one_cycle".
- beta1 (b1_schedule): "constant" keeps b1; "one_cycle" moves it as the reference's OneCycleLR
  (cycle_momentum=True, its default) does: cosine from b1_max (0.95) down to b1_min (0.85) over the
  warm-up, back to b1_max by the last step, the LR's phases mirrored (arc_jax.train.schedule).
  Both the moment update and the bias correction 1 - beta1**t use the current step's beta1, t
  being the group's own update count, as torch's Adam does.
- Gradient clipping by global norm over the groups that received gradients (torch's
  clip_grad_norm_: scale min(1, clip / (norm + 1e-6))).
- Multi-decoder: a step updates the shared encoder and the drawn decoder's head only; the other
  heads and their Adam moments stay bit-identical (no decay, no moment decay), as in torch where
  parameters without gradients are skipped. Adam's bias correction counts each group's own
  updates, like torch's per-parameter step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from arc_jax.model import param_groups
from arc_jax.model.param_groups import SHARED, SPECIAL
from arc_jax.train.schedule import one_cycle_momentum, one_cycle_schedule

B1_SCHEDULES = ("constant", "one_cycle")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    encoder_lr: float = 1e-5
    special_lr: float = 1e-5
    projector_lr: float = 5e-5
    weight_decay: float = 0.1
    warmup_steps: int = 1000
    max_steps: int = 80000
    initial_lr: float = 1e-9  # of the encoder group: div_factor = encoder_lr / initial_lr
    final_lr: float = 1e-10  # final_div_factor = encoder_lr / final_lr (torch OneCycleLR semantics)
    clip_norm: float = 1.0
    b1: float = 0.9  # Adam's beta1 when b1_schedule == "constant"
    b2: float = 0.999
    eps: float = 1e-8
    b1_schedule: str = "constant"  # "constant" (b1) | "one_cycle" (b1_max -> b1_min -> b1_max, as OneCycleLR)
    b1_min: float = 0.85  # torch OneCycleLR's base_momentum
    b1_max: float = 0.95  # torch OneCycleLR's max_momentum

    def __post_init__(self):
        if self.b1_schedule not in B1_SCHEDULES:
            raise ValueError(f"b1_schedule={self.b1_schedule!r}: expected one of {B1_SCHEDULES}")

    def unit_schedule(self):
        """The one-cycle shape with peak 1 (each parameter scales it by its max rate)."""
        return one_cycle_schedule(1.0, self.max_steps, self.warmup_steps / self.max_steps,
                                  self.encoder_lr / self.initial_lr, self.encoder_lr / self.final_lr)

    def beta1(self, step) -> jax.Array | float:
        """Adam's beta1 during optimiser step `step` (0-based; traced or not)."""
        if self.b1_schedule == "constant":
            return self.b1
        return one_cycle_momentum(self.max_steps, self.warmup_steps / self.max_steps, self.b1_min,
                                  self.b1_max)(step)


class OptimizerState(NamedTuple):
    step: jax.Array                 # global optimiser step
    adam: dict[str, Any]            # group name -> optax ScaleByAdamState


def max_learning_rates(params: dict, cfg: OptimizerConfig) -> dict:
    """A tree like params holding each parameter's max learning rate."""
    def head_rates(head):
        return {k: jax.tree.map(lambda _, k=k: cfg.special_lr if k in SPECIAL else cfg.projector_lr, v)
                for k, v in head.items()}

    return {k: head_rates(v) if param_groups.is_head(k) else jax.tree.map(lambda _: cfg.encoder_lr, v)
            for k, v in params.items()}


def init(params: dict, frozen_groups: tuple[str, ...] = ()) -> OptimizerState:
    """Adam moments for every group except `frozen_groups` (a frozen encoder holds no moments)."""
    adam = optax.scale_by_adam()
    return OptimizerState(jnp.zeros((), jnp.int32), {name: adam.init(part) for name, part
                                                     in param_groups.split(params).items()
                                                     if name not in frozen_groups})


def update(grads: dict, state: OptimizerState, params: dict, decoder: int, cfg: OptimizerConfig,
           mask: dict | None = None) -> tuple[dict, OptimizerState, jax.Array]:
    """One AdamW step on decoder `decoder`'s head (a static int) and, when it has gradients, the
    shared encoder.

    `grads` holds the groups that were differentiated: a full tree, or only the head's keys when
    the encoder is frozen. `mask` (optional, a tree like the shared group with 0/1 arrays that
    broadcast to each parameter) marks the trainable part of the shared encoder: masked entries
    get no gradient (nor count in the clipping norm), no update and no decay, as torch parameters
    with requires_grad=False. Returns new params, new state and the pre-clipping gradient norm."""
    head = param_groups.head(decoder)
    param_parts, grad_parts = param_groups.split(params), param_groups.split(grads)
    active = ((SHARED,) if grad_parts[SHARED] else ()) + (head,)
    if mask is not None and grad_parts[SHARED]:
        grad_parts[SHARED] = jax.tree.map(lambda g, m: g * m, grad_parts[SHARED], mask)
    norm = optax.tree.norm({name: grad_parts[name] for name in active})
    scale = jnp.minimum(1.0, cfg.clip_norm / (norm + 1e-6))
    unit_lr = cfg.unit_schedule()(state.step)
    rates = param_groups.split(max_learning_rates(params, cfg))
    if mask is not None:
        rates[SHARED] = jax.tree.map(lambda r, m: r * m, rates[SHARED], mask)
    # A traced beta1 is fine for optax (what optax.inject_hyperparams passes it): it enters the
    # moment update and the bias correction 1 - b1**count, count being this group's own.
    adam = optax.scale_by_adam(b1=cfg.beta1(state.step), b2=cfg.b2, eps=cfg.eps)
    new_params, new_adam = dict(param_parts), dict(state.adam)
    for name in active:
        g = jax.tree.map(lambda x: x * scale, grad_parts[name])
        direction, new_adam[name] = adam.update(g, state.adam[name])
        new_params[name] = jax.tree.map(
            lambda p, d, lr: (p - lr * unit_lr * (d + cfg.weight_decay * p)).astype(p.dtype),
            param_parts[name], direction, rates[name])
    return param_groups.join(new_params), OptimizerState(state.step + 1, new_adam), norm
