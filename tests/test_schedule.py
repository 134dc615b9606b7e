"""one_cycle_schedule and one_cycle_momentum against torch.optim.lr_scheduler.OneCycleLR, step by step."""

import numpy as np
import pytest

from arc_jax.train.schedule import one_cycle_momentum, one_cycle_schedule


def torch_one_cycle(max_lr, total_steps, pct_start, div_factor, final_div_factor):
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start,
                                                anneal_strategy="cos", div_factor=div_factor,
                                                final_div_factor=final_div_factor, cycle_momentum=False)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


@pytest.mark.parametrize("max_lr,total,warmup,initial,final", [
    (1e-5, 2000, 100, 1e-9, 1e-10),   # pretraining-like: warm-up 1000 of 80k, scaled down
    (5e-5, 300, 50, 1e-8, 1e-9),      # fine-tuning-like: warm-up 50
    (3e-5, 10, 3, 3e-7, 1e-8),
])
def test_one_cycle_matches_torch(max_lr, total, warmup, initial, final):
    # Configured as the reference does: pct_start = warmup / steps, div = max / initial, final_div = max / final.
    args = dict(max_lr=max_lr, total_steps=total, pct_start=warmup / total, div_factor=max_lr / initial,
                final_div_factor=max_lr / final)
    expected = torch_one_cycle(**args)
    schedule = one_cycle_schedule(**args)
    ours = np.array([float(schedule(s)) for s in range(total)])
    np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=1e-14)
    assert ours.argmax() == pytest.approx(warmup - 1, abs=1)


def torch_beta1(total_steps, pct_start, base_momentum, max_momentum):
    """beta1 during each step of AdamW under OneCycleLR's default cycle_momentum=True (reference
    train.py L281-291: betas (0.9, 0.95), beta1 overwritten by the scheduler)."""
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-5, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-5, total_steps=total_steps, pct_start=pct_start,
                                                anneal_strategy="cos", div_factor=1e15, final_div_factor=1e5,
                                                base_momentum=base_momentum, max_momentum=max_momentum)
    betas = []
    for _ in range(total_steps):
        betas.append(opt.param_groups[0]["betas"][0])
        opt.step()
        sched.step()
    return np.array(betas)


@pytest.mark.parametrize("total,warmup", [(2000, 100), (300, 50), (10, 3)])
def test_one_cycle_momentum_matches_torch(total, warmup):
    expected = torch_beta1(total, warmup / total, 0.85, 0.95)
    schedule = one_cycle_momentum(total, warmup / total, 0.85, 0.95)
    ours = np.array([float(schedule(s)) for s in range(total)])
    np.testing.assert_allclose(ours, expected, rtol=0, atol=3e-7)  # float32: ~2 ulps of 0.9
    assert ours[0] == pytest.approx(0.95) and ours[warmup - 1] == pytest.approx(0.85)
    assert ours[-1] == pytest.approx(0.95, abs=1e-7)
