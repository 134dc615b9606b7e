"""Checkpoint and resume: a run restored from step k continues bit-identically."""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.config_loading import load_config, to_plain
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig
from arc_jax.train.checkpoint import TrainCheckpoints, abstract_like
from arc_jax.train.optimizer import OptimizerConfig
from arc_jax.train.run_config import parse_run_config, run_batches
from arc_jax.train.step import init_state, jit_train_step

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"
OPT = OptimizerConfig(encoder_lr=1e-2, special_lr=1e-2, projector_lr=1e-2, warmup_steps=2, max_steps=20,
                      initial_lr=1e-3, final_lr=1e-3)


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path):
    config = load_config(CONFIG, [f"--config.data.dir={tmp_path / 'data'}"])
    enc_cfg = EncoderConfig.from_dict(config.model.encoder.to_dict())
    dec_cfg = BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict())
    run = parse_run_config(config, device_count=1)
    batches = run_batches(run)
    first = next(run_batches(run))[0]
    encoder, decoder = ARCEncoder(enc_cfg), Decoder(dec_cfg)
    params = jax.device_get(nn.unbox(encoder.init(jax.random.key(0), first.encoder)["params"]))
    dec_params = nn.unbox(decoder.init(jax.random.key(1), first.tokens, first.segment_ids, first.positions)["params"])
    step = jit_train_step(encoder, decoder, 0, OPT)

    state = init_state(jax.tree.map(jnp.array, params))
    checkpoints = TrainCheckpoints(tmp_path / "run")
    for i in range(1, 6):
        state, _ = step(state, dec_params, next(batches)[0])
        if i == 3:
            checkpoints.save(i, state, batches.get_state(), to_plain(config))
    checkpoints.wait()
    uninterrupted = jax.device_get(state)

    # A new process would rebuild everything from the config and the checkpoint.
    restored_checkpoints = TrainCheckpoints(tmp_path / "run")
    assert restored_checkpoints.latest_step == 3
    fresh = init_state(jax.tree.map(jnp.array, params))
    state, data_state, saved_config = restored_checkpoints.restore(abstract_like(fresh))
    assert saved_config["data"]["sources"] == config.data.sources
    resumed_batches = run_batches(run)
    resumed_batches.set_state(data_state)
    for _ in range(2):
        state, _ = step(state, dec_params, next(resumed_batches)[0])
    for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(uninterrupted)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    checkpoints.close()
    restored_checkpoints.close()
