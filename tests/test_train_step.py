"""The train step on tiny_cpu: the loss falls, non-finite steps are skipped, the decoder is frozen."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arc_jax.config_loading import load_config
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig
from arc_jax.train.optimizer import OptimizerConfig
from arc_jax.train.run_config import parse_run_config, run_batches
from arc_jax.train.step import init_state, jit_train_step
from one_step import random_params

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"


def opt_config(lr):
    return OptimizerConfig(encoder_lr=lr, special_lr=lr, projector_lr=lr, weight_decay=0.0, warmup_steps=5,
                           max_steps=60, initial_lr=lr / 10, final_lr=lr / 10)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = load_config(CONFIG, [f"--config.data.dir={tmp_path_factory.mktemp('tiny')}"])
    batches = run_batches(parse_run_config(config, device_count=1))
    enc_cfg = EncoderConfig.from_dict(config.model.encoder.to_dict())
    dec_cfg = BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict())
    batch_list = [next(batches)[0] for _ in range(40)]
    encoder, decoder = ARCEncoder(enc_cfg), Decoder(dec_cfg)
    first = batch_list[0]
    params, dec_params = random_params(encoder, decoder, first)
    return batch_list, encoder, decoder, params, dec_params


def run(setup, lr, params=None):
    """Losses of 40 steps from fresh copies of the initial parameters (the step donates its state)."""
    batch_list, encoder, decoder, init_params, dec_params = setup
    step = jit_train_step(encoder, decoder, 0, opt_config(lr))
    state = init_state(jax.tree.map(jnp.array, init_params if params is None else params))
    losses = []
    for batch in batch_list:
        state, metrics = step(state, dec_params, batch)
        losses.append(float(metrics["loss"]))
    return state, np.array(losses)


def test_training_lowers_the_loss_below_an_untrained_control_and_the_decoder_stays_frozen(setup):
    # Same batches, same random frozen decoder: only the encoder's learning differs.
    dec_params = setup[4]
    frozen = jax.tree.map(np.array, dec_params)
    _, control = run(setup, 1e-12)
    state, trained = run(setup, 1e-2)
    assert trained[-10:].mean() < control[-10:].mean() - 0.1, (trained, control)
    assert int(state.skipped) == 0
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(dec_params)))


def test_a_non_finite_step_leaves_the_state_unchanged_and_is_counted(setup):
    batch_list, encoder, decoder, params, dec_params = setup
    poisoned = {**params, "decoder_0": {**params["decoder_0"], "layer2": params["decoder_0"]["layer2"].copy()}}
    poisoned["decoder_0"]["layer2"][0, 0] = np.nan
    state = init_state(jax.tree.map(jnp.array, poisoned))
    before = jax.tree.map(np.array, (state.params, state.opt))
    state, metrics = jit_train_step(encoder, decoder, 0, opt_config(1e-2))(state, dec_params, batch_list[0])
    after = jax.tree.map(np.array, (state.params, state.opt))
    assert int(metrics["skipped"]) == 1 and int(state.skipped) == 1 and int(state.bad_steps) == 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        assert np.array_equal(a, b, equal_nan=True)


def test_cross_entropy_is_optaxs_and_its_backward_scatters_nothing():
    """Values and gradients against optax's softmax_cross_entropy_with_integer_labels (float32,
    random logits over a vocabulary of 50, every target present); the gradient is elementwise: no
    scatter-add into a zeroed copy of the logits, as a gather's backward would be."""
    import optax

    from arc_jax.train.step import cross_entropy

    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 40, 50)) * 4, jnp.float32)
    targets = jnp.asarray(rng.permutation(np.arange(120) % 50).reshape(3, 40))
    weights = jnp.asarray(rng.random((3, 40)), jnp.float32)
    ours = lambda x: jnp.sum(cross_entropy(x, targets) * weights)  # noqa: E731
    theirs = lambda x: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(x, targets) * weights)  # noqa: E731
    np.testing.assert_allclose(cross_entropy(logits, targets),
                               optax.softmax_cross_entropy_with_integer_labels(logits, targets), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(theirs)(logits), atol=1e-7)
    assert "scatter" not in str(jax.make_jaxpr(jax.grad(ours))(logits))
    assert "scatter" in str(jax.make_jaxpr(jax.grad(theirs))(logits))  # what the check would catch


def test_correct_tokens_counts_the_masked_slots_whose_target_scores_highest():
    """Against numpy's argmax on random logits (no ties), masked slots left out; a target tied at
    the top with an earlier index counts as correct (argmax would name the earlier one)."""
    from arc_jax.train.step import correct_tokens

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 40, 17)).astype(np.float32)
    targets = rng.integers(0, 17, size=(3, 40))
    targets[:, ::3] = logits[:, ::3].argmax(-1)  # some right, most wrong
    mask = (rng.random((3, 40)) < 0.7).astype(np.float32)
    expected = ((logits.argmax(-1) == targets) * mask).sum()
    assert 0 < expected < mask.sum()
    assert float(correct_tokens(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))) == expected
    tie = np.zeros((1, 1, 4), np.float32)
    tie[0, 0, [1, 3]] = 1.0
    assert float(correct_tokens(jnp.asarray(tie), jnp.asarray([[3]]), jnp.ones((1, 1)))) == 1.0
