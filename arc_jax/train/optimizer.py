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
  being the group's (a head part's) own update count, as torch's Adam does.
- Gradient clipping by global norm over the groups that received gradients (torch's
  clip_grad_norm_: scale min(1, clip / (norm + 1e-6))).
- Multi-decoder: a step updates the shared encoder and the drawn decoder's head only; the other
  heads and their Adam moments stay bit-identical (no decay, no moment decay), as in torch where
  parameters without gradients are skipped. Adam's bias correction counts each group's own
  updates, like torch's per-parameter step.
- Special vectors: a batch reads <Rec> (reconstruction), <Cont> (continuation, fine-tuning) or,
  when it mixes tasks, both. `update` takes which ones the batch read (`special_reads`, found from
  the batch by arc_jax.train.step.special_reads) and skips the other one as torch skips a
  parameter whose .grad is None (the reference zeroes grads to None and holds one task per batch):
  its value, Adam moments and update count stay bit-identical, and its gradient (zero anyway) is
  left out of the clipping norm. So a head's parts (param_groups.HEAD_PARTS: rec_tok, cont_tok,
  projector) each keep their own Adam count (`ScaleByAdamState.count` of a head is a dict by
  part); the shared group keeps one count.
- Checkpoints saved before the parts had their own counts hold one count per head:
  `from_one_count_per_head` turns such a state into this layout (arc_jax.train.checkpoint does
  on restore), each part starting from its head's count, which it equals there (every part of
  the drawn head was updated at every step).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from arc_jax.model import param_groups
from arc_jax.model.param_groups import HEAD_PARTS, SHARED, SPECIAL
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
    adam: dict[str, Any]            # group name -> optax ScaleByAdamState (a head's count: a dict by part)


def max_learning_rates(params: dict, cfg: OptimizerConfig) -> dict:
    """A tree like params holding each parameter's max learning rate."""
    def head_rates(head):
        return {k: jax.tree.map(lambda _, k=k: cfg.special_lr if k in SPECIAL else cfg.projector_lr, v)
                for k, v in head.items()}

    return {k: head_rates(v) if param_groups.is_head(k) else jax.tree.map(lambda _: cfg.encoder_lr, v)
            for k, v in params.items()}


def head_parts(head: dict) -> dict[str, tuple[str, ...]]:
    """The keys of a head's tree by part (param_groups.HEAD_PARTS order), for the parts it has."""
    keys = {part: tuple(k for k in sorted(head) if param_groups.head_part(k) == part) for part in HEAD_PARTS}
    return {part: ks for part, ks in keys.items() if ks}


def _group_init(name: str, part: dict) -> optax.ScaleByAdamState:
    state = optax.scale_by_adam().init(part)
    if param_groups.is_head(name):  # one count per part of the head
        state = state._replace(count={p: jnp.zeros((), jnp.int32) for p in head_parts(part)})
    return state


def init(params: dict, frozen_groups: tuple[str, ...] = ()) -> OptimizerState:
    """Adam moments for every group except `frozen_groups` (a frozen encoder holds no moments)."""
    return OptimizerState(jnp.zeros((), jnp.int32), {name: _group_init(name, part) for name, part
                                                     in param_groups.split(params).items()
                                                     if name not in frozen_groups})


def one_count_per_head(adam: dict) -> dict:
    """`adam` (a state's, or its abstract shapes) in the layout of checkpoints saved before a
    head's parts had their own counts: one count per head (here: its projector's)."""
    return {name: s._replace(count=s.count[param_groups.PROJECTOR]) if param_groups.is_head(name) else s
            for name, s in adam.items()}


def from_one_count_per_head(adam: dict) -> dict:
    """The inverse of `one_count_per_head`: each part of a head gets the head's count. Jit it (as
    arc_jax.train.checkpoint does) for distinct count buffers, which a donated state needs."""
    return {name: s._replace(count={p: s.count for p in head_parts(s.mu)}) if param_groups.is_head(name) else s
            for name, s in adam.items()}


def saved_with_one_count_per_head(adam_tree: dict) -> bool:
    """Whether a saved Adam state (a tree of dicts, as Orbax's metadata shows it: group -> {count,
    mu, nu}) has one count per head."""
    return any(param_groups.is_head(name) and not isinstance(group["count"], dict)
               for name, group in adam_tree.items())


def _adamw(adam, grads, state, params, rates, unit_lr, cfg: OptimizerConfig):
    direction, state = adam.update(grads, state)
    params = jax.tree.map(lambda p, d, lr: (p - lr * unit_lr * (d + cfg.weight_decay * p)).astype(p.dtype),
                          params, direction, rates)
    return params, state


def update(grads: dict, state: OptimizerState, params: dict, decoder: int, cfg: OptimizerConfig,
           mask: dict | None = None, special_reads: dict | None = None) -> tuple[dict, OptimizerState, jax.Array]:
    """One AdamW step on decoder `decoder`'s head (a static int) and, when it has gradients, the
    shared encoder.

    `grads` holds the groups that were differentiated: a full tree, or only the head's keys when
    the encoder is frozen. `mask` (optional, a tree like the shared group with 0/1 arrays that
    broadcast to each parameter) marks the trainable part of the shared encoder: masked entries
    get no gradient (nor count in the clipping norm), no update and no decay, as torch parameters
    with requires_grad=False. `special_reads` ({"rec_tok": bool, "cont_tok": bool} scalars, traced
    or not; None: both read) says which special vectors of the head the batch read: one it did not
    read is skipped as torch skips a parameter without gradient (module docstring). Returns new
    params, new state and the pre-clipping gradient norm."""
    head = param_groups.head(decoder)
    param_parts, grad_parts = param_groups.split(params), param_groups.split(grads)
    active = ((SHARED,) if grad_parts[SHARED] else ()) + (head,)
    if mask is not None and grad_parts[SHARED]:
        grad_parts[SHARED] = jax.tree.map(lambda g, m: g * m, grad_parts[SHARED], mask)
    if not set(special_reads or {}) <= set(SPECIAL):
        raise ValueError(f"special_reads has keys {sorted(special_reads)}: expected some of {SPECIAL}")
    reads = {k: v for k, v in (special_reads or {}).items() if k in param_parts[head]}  # vectors the head has
    # An unread vector's gradient is zero already; torch's clip_grad_norm_ skips it (None) all the same.
    grad_parts[head] = {k: jnp.where(reads[k], g, jnp.zeros_like(g)) if k in reads else g
                        for k, g in grad_parts[head].items()}
    norm = optax.tree.norm({name: grad_parts[name] for name in active})
    scale = jnp.minimum(1.0, cfg.clip_norm / (norm + 1e-6))
    unit_lr = cfg.unit_schedule()(state.step)
    rates = param_groups.split(max_learning_rates(params, cfg))
    if mask is not None:
        rates[SHARED] = jax.tree.map(lambda r, m: r * m, rates[SHARED], mask)
    # A traced beta1 is fine for optax (what optax.inject_hyperparams passes it): it enters the
    # moment update and the bias correction 1 - b1**count, count being this group's (part's) own.
    adam = optax.scale_by_adam(b1=cfg.beta1(state.step), b2=cfg.b2, eps=cfg.eps)
    new_params, new_adam = dict(param_parts), dict(state.adam)
    for name in active:
        g = jax.tree.map(lambda x: x * scale, grad_parts[name])
        if name == SHARED:
            new_params[name], new_adam[name] = _adamw(adam, g, state.adam[name], param_parts[name], rates[name],
                                                      unit_lr, cfg)
            continue
        old, p_out, mu, nu, count = state.adam[name], {}, {}, {}, {}
        for part, keys in head_parts(param_parts[name]).items():
            sub = lambda tree, keys=keys: {k: tree[k] for k in keys}
            part_state = optax.ScaleByAdamState(old.count[part], sub(old.mu), sub(old.nu))
            p_new, s_new = _adamw(adam, sub(g), part_state, sub(param_parts[name]), sub(rates[name]), unit_lr, cfg)
            if part in reads:  # not read: value, moments and count as they were, bit for bit
                keep = lambda new, prev, r=reads[part]: jax.tree.map(lambda a, b: jnp.where(r, a, b), new, prev)
                p_new, s_new = keep(p_new, sub(param_parts[name])), keep(s_new, part_state)
            p_out.update(p_new)
            mu.update(s_new.mu)
            nu.update(s_new.nu)
            count[part] = s_new.count
        new_params[name], new_adam[name] = p_out, optax.ScaleByAdamState(count, mu, nu)
    return param_groups.join(new_params), OptimizerState(state.step + 1, new_adam), norm
