"""The one-cycle schedules, as torch.optim.lr_scheduler.OneCycleLR computes them.

The reference configures OneCycleLR with anneal_strategy="cos" and two phases (reference train.py
L281-291):
  step 0 .. pct_start * total_steps - 1      cosine from max_lr / div_factor up to max_lr
  .. total_steps - 1                         cosine from max_lr down to initial_lr / final_div_factor
With its default cycle_momentum=True the same phases move Adam's beta1 the other way: cosine from
max_momentum (0.95) down to base_momentum (0.85) over the warm-up, then back up to max_momentum.
The value at optimiser step k (0-based) is the one torch's scheduler holds during step k.
"""

from __future__ import annotations

import jax.numpy as jnp


def two_phase_cosine(start: float, peak: float, end: float, total_steps: int, pct_start: float):
    """step -> value: OneCycleLR's two cosine phases, start -> peak until step pct_start *
    total_steps - 1, then peak -> end at step total_steps - 1 (a jnp function)."""
    if total_steps < 2:
        raise ValueError(f"total_steps must be >= 2, got {total_steps}")
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
    warm_end = float(pct_start * total_steps) - 1.0
    last = float(total_steps - 1)

    def cosine(a, b, pct):
        # torch's b + (a - b) / 2 * (1 + cos(pi pct)), written with cos^2 / sin^2 of the half
        # angle: no cancellation in float32 when the values differ by orders of magnitude.
        half = jnp.pi * pct / 2.0
        return a * jnp.cos(half) ** 2 + b * jnp.sin(half) ** 2

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = cosine(start, peak, step / warm_end) if warm_end > 0 else peak
        anneal = cosine(peak, end, (step - warm_end) / (last - warm_end))
        return jnp.where(step <= warm_end, warm, anneal)

    return schedule


def one_cycle_schedule(max_lr: float, total_steps: int, pct_start: float, div_factor: float,
                       final_div_factor: float):
    """step -> learning rate (a jnp function, usable as an optax schedule)."""
    initial_lr = max_lr / div_factor
    return two_phase_cosine(initial_lr, max_lr, initial_lr / final_div_factor, total_steps, pct_start)


def one_cycle_momentum(total_steps: int, pct_start: float, base_momentum: float = 0.85,
                       max_momentum: float = 0.95):
    """step -> Adam's beta1 under OneCycleLR(cycle_momentum=True, base_momentum, max_momentum):
    max -> base over the warm-up, base -> max by the last step (the LR's phases, mirrored)."""
    return two_phase_cosine(max_momentum, base_momentum, max_momentum, total_steps, pct_start)
