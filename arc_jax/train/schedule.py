"""The one-cycle learning-rate schedule, as torch.optim.lr_scheduler.OneCycleLR computes it.

The reference configures OneCycleLR with anneal_strategy="cos" and two phases:
  step 0 .. pct_start * total_steps - 1      cosine from max_lr / div_factor up to max_lr
  .. total_steps - 1                         cosine from max_lr down to initial_lr / final_div_factor
The value at optimiser step k (0-based) is the one torch's scheduler holds during step k.
"""

from __future__ import annotations

import jax.numpy as jnp


def one_cycle_schedule(max_lr: float, total_steps: int, pct_start: float, div_factor: float,
                       final_div_factor: float):
    """step -> learning rate (a jnp function, usable as an optax schedule)."""
    if total_steps < 2:
        raise ValueError(f"total_steps must be >= 2, got {total_steps}")
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    warm_end = float(pct_start * total_steps) - 1.0
    last = float(total_steps - 1)

    def cosine(start, end, pct):
        # torch's end + (start - end) / 2 * (1 + cos(pi pct)), written with cos^2 / sin^2 of the
        # half angle: no cancellation in float32 when the rates differ by orders of magnitude.
        half = jnp.pi * pct / 2.0
        return start * jnp.cos(half) ** 2 + end * jnp.sin(half) ** 2

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = cosine(initial_lr, max_lr, step / warm_end) if warm_end > 0 else max_lr
        anneal = cosine(max_lr, min_lr, (step - warm_end) / (last - warm_end))
        return jnp.where(step <= warm_end, warm, anneal)

    return schedule
