"""The trainer's options on tiny models: several decoders, training only some encoder layers or only
a new head, gradient accumulation, bf16 compute, and the stop after consecutive non-finite steps."""

import copy
import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arc_jax.cli import main
from arc_jax.config_loading import load_config
from arc_jax.data.pipeline import global_compressed_index
from arc_jax.data.packing import TASKS, PackingShape, output_len, special_rows
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig
from arc_jax.train.optimizer import OptimizerConfig
from arc_jax.train.run_config import parse_run_config, run_batches
from arc_jax.train.step import StepConfig, init_state, special_reads, train_step
from arc_jax.train.trainable import shared_mask
from arc_jax.train.trainer import drawn_decoder
from one_step import random_params

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"
OPT = OptimizerConfig(encoder_lr=1e-2, special_lr=1e-2, projector_lr=1e-2, weight_decay=0.1, warmup_steps=1,
                      max_steps=10, initial_lr=1e-3, final_lr=1e-3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-head encoder (heads 0 and 1 project to the same decoder width), a decoder, batches."""
    config = load_config(CONFIG, [f"--config.data.dir={tmp_path_factory.mktemp('data')}"])
    enc_dict = config.model.encoder.to_dict()
    enc_dict["projectors"] = enc_dict["projectors"] * 2
    enc_cfg = EncoderConfig.from_dict(enc_dict)
    dec_cfg = BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict())
    batches = run_batches(parse_run_config(config, device_count=1))
    batch_list = [next(batches)[0] for _ in range(3)]
    encoder, decoder = ARCEncoder(enc_cfg), Decoder(dec_cfg)
    first = batch_list[0]
    params, dec_params = random_params(encoder, decoder, first)
    shape = PackingShape(**config.data.shape)
    return config, encoder, decoder, params, dec_params, batch_list, shape


def steps(tiny, n, *, head=0, frozen_groups=(), encoder_frozen=False, mask=None, encoder=None, batches=None,
          grad_accum=1):
    _, default_encoder, decoder, params, dec_params, batch_list, _ = tiny
    cfg = StepConfig(encoder or default_encoder, decoder, head, OPT, encoder_frozen, grad_accum)
    step = jax.jit(lambda s, d, b: train_step(s, d, b, cfg=cfg, mask=mask), donate_argnums=0)
    state = init_state(jax.tree.map(jnp.array, params), frozen_groups)
    for batch in (batches or batch_list)[:n]:
        state, metrics = step(state, dec_params, batch)
    return jax.device_get(state), jax.device_get(metrics)


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_a_step_for_one_decoder_leaves_the_other_head_and_its_moments_bit_identical(tiny):
    params = tiny[3]
    state, _ = steps(tiny, 2, head=0)
    fresh = init_state(params)
    assert same(state.params["decoder_1"], params["decoder_1"])
    assert same(state.opt.adam["decoder_1"], jax.device_get(fresh.opt.adam["decoder_1"]))
    assert not same(state.params["decoder_0"], params["decoder_0"])
    assert not same(state.params["layers"], params["layers"])


def test_training_the_last_layer_only_keeps_the_others_and_the_embedding(tiny):
    params = tiny[3]
    enc_cfg = tiny[1].cfg
    assert enc_cfg.backbone.n_layers == 2  # one scanned layer, then the pooling layer
    mask = shared_mask(params, enc_cfg, encoder_layers=1, embedding=False)
    state, _ = steps(tiny, 2, mask=mask)
    assert same(state.params["tok_embeddings"], params["tok_embeddings"])
    assert same(state.params["layers"], params["layers"])
    assert not same(state.params["pooling_layers_0"], params["pooling_layers_0"])
    assert not same(state.params["decoder_0"], params["decoder_0"])
    # A mask that trains everything is no mask at all.
    assert shared_mask(params, enc_cfg, encoder_layers=-1, embedding=True) is None


def test_a_frozen_encoder_trains_only_the_new_head_and_holds_no_encoder_moments(tiny):
    params = tiny[3]
    state, metrics = steps(tiny, 2, head=1, frozen_groups=("shared", "decoder_0"), encoder_frozen=True)
    assert set(state.opt.adam) == {"decoder_1"}
    shared = {k: v for k, v in params.items() if not k.startswith("decoder_")}
    assert same({k: state.params[k] for k in shared}, shared)
    assert same(state.params["decoder_0"], params["decoder_0"])
    assert not same(state.params["decoder_1"], params["decoder_1"])
    assert float(metrics["learning_rate/encoder"]) == 0.0


def test_two_accumulated_micro_batches_equal_one_batch_twice_as_large(tiny):
    _, _, _, _, _, batch_list, shape = tiny
    a, b = batch_list[0], batch_list[1]
    out_len = output_len(a.encoder, shape)
    rows = shape.encoder_rows

    def placed(batch, block):  # rows of block `block` of a batch with 2x the rows
        index = global_compressed_index(batch.compressed_index, block * rows, rows, 2 * rows, out_len)
        return batch._replace(compressed_index=index)

    big = jax.tree.map(lambda x, y: np.concatenate([x, y]), placed(a, 0), placed(b, 1))
    stacked = jax.tree.map(lambda x, y: np.stack([x, y]), a, b)
    one, m1 = steps(tiny, 1, batches=[big])
    accumulated, m2 = steps(tiny, 1, batches=[stacked], grad_accum=2)
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m2["grad_norm"]), rtol=1e-5)
    # Adam's first moment is linear in the (clipped) gradient; its first update is ~ lr * sign(g),
    # which float noise flips where g ~ 0, so compare the moments.
    for group in one.opt.adam:
        for x, y in zip(jax.tree.leaves(one.opt.adam[group].mu), jax.tree.leaves(accumulated.opt.adam[group].mu),
                        strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5 * np.abs(x).max())
    # The second micro-batch counts: a step on the first alone has another gradient.
    _, m_first = steps(tiny, 1, batches=[a])
    assert abs(float(m_first["grad_norm"]) - float(m2["grad_norm"])) > 1e-3 * float(m2["grad_norm"])


def test_bfloat16_compute_tracks_float32(tiny):
    encoder = tiny[1]
    bf16 = dataclasses.replace(encoder, dtype=jnp.bfloat16)
    state32, m32 = steps(tiny, 1)
    state16, m16 = steps(tiny, 1, encoder=bf16)
    assert {x.dtype for x in jax.tree.leaves(state16.params)} == {np.dtype(np.float32)}  # f32 master weights
    assert abs(float(m16["loss"]) - float(m32["loss"])) < 2e-2
    assert float(m16["loss"]) != float(m32["loss"])  # the compute really ran in bf16


def test_decoders_are_drawn_uniformly_and_reproducibly():
    draws = [drawn_decoder(0, s, 2) for s in range(1, 2001)]
    assert draws == [drawn_decoder(0, s, 2) for s in range(1, 2001)]
    assert 0.45 < np.mean(draws) < 0.55
    assert draws != [drawn_decoder(1, s, 2) for s in range(1, 2001)]


def test_consecutive_non_finite_steps_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, capsys):
    # A learning rate of 1e30 makes the first update blow the parameters up: every later step is
    # non-finite, skipped and counted.
    args = ["train", "--config", str(CONFIG), "--workdir", str(tmp_path / "run"), f"--config.data.dir={tmp_path}",
            "--config.max_steps=20", "--config.checkpoint_every=1", "--config.optimizer.warmup_steps=1",
            "--config.optimizer.initial_lr=1e29", "--config.optimizer.encoder_lr=1e30",
            "--config.optimizer.projector_lr=1e30", "--config.max_bad_steps=3", "--config.eval.every=0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "3 consecutive steps had a non-finite loss" in err and "config.max_bad_steps" in err
    saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] < 4  # steps 2 and 3 were skipped but kept; step 4 (the third) is not saved


def test_rematerialised_blocks_give_the_gradients_of_stored_activations(tiny):
    encoder = tiny[1]
    remat = dataclasses.replace(encoder, remat_policy="full")
    plain, m_plain = steps(tiny, 1)
    recomputed, m_remat = steps(tiny, 1, encoder=remat)
    np.testing.assert_allclose(float(m_plain["grad_norm"]), float(m_remat["grad_norm"]), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(plain.opt.adam["shared"].mu), jax.tree.leaves(recomputed.opt.adam["shared"].mu),
                    strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5 * np.abs(x).max())
    assert np.isclose(float(m_plain["perplexity"]), np.exp(float(m_plain["loss"])), rtol=1e-5)


def reading(batch, which: str):
    """`batch` with its special-vector slots pointed at <Rec> ("rec"), <Cont> ("cont"), or <Cont>
    but the first, <Rec> ("both"): batches of one task, or mixed, from the same samples."""
    rows = special_rows(batch.encoder)
    index = np.asarray(batch.compressed_index)
    special = index >= rows["rec_tok"]
    assert special.any()
    index = np.where(special, rows["rec_tok" if which == "rec" else "cont_tok"], index)
    if which == "both":
        index.flat[np.flatnonzero(special)[0]] = rows["rec_tok"]
    return batch._replace(compressed_index=index)


def test_packed_batches_place_rec_for_reconstruction_and_cont_otherwise(tiny):
    for batch in tiny[5]:
        rows = special_rows(batch.encoder)
        assert rows["rec_tok"] == batch.encoder.tokens.shape[0] * output_len(batch.encoder, tiny[6])
        index, task = batch.compressed_index, batch.task_ids
        special = index >= rows["rec_tok"]
        assert special.any() and set(np.unique(index[special])) <= set(rows.values())
        np.testing.assert_array_equal(index[special] == rows["rec_tok"], task[special] == TASKS.index("reconstruction"))


def test_special_reads_comes_from_the_batch_exactly(tiny):
    batch = tiny[5][0]
    reads = lambda b: {k: bool(v) for k, v in jax.jit(special_reads)(b).items()}
    assert reads(reading(batch, "rec")) == {"rec_tok": True, "cont_tok": False}
    assert reads(reading(batch, "cont")) == {"rec_tok": False, "cont_tok": True}
    assert reads(reading(batch, "both")) == {"rec_tok": True, "cont_tok": True}
    none = batch._replace(compressed_index=np.where(batch.compressed_index >= special_rows(batch.encoder)["rec_tok"],
                                                    0, batch.compressed_index))
    assert reads(none) == {"rec_tok": False, "cont_tok": False}
    # Micro-batches: read if any micro-batch reads it.
    stacked = jax.tree.map(lambda x, y: np.stack([x, y]), reading(batch, "rec"), reading(batch, "cont"))
    assert reads(stacked) == {"rec_tok": True, "cont_tok": True}


@pytest.mark.parametrize("read, unread", [("rec_tok", "cont_tok"), ("cont_tok", "rec_tok")])
def test_a_one_task_batch_leaves_the_other_special_vector_its_moments_and_count_bit_identical(tiny, read, unread):
    params = tiny[3]
    fresh = jax.device_get(init_state(params))
    one_task = reading(tiny[5][0], "rec" if read == "rec_tok" else "cont")
    state, _ = steps(tiny, 1, batches=[one_task])
    head, adam, fresh_adam = state.params["decoder_0"], state.opt.adam["decoder_0"], fresh.opt.adam["decoder_0"]
    assert np.array_equal(head[unread], params["decoder_0"][unread])
    assert np.array_equal(adam.mu[unread], fresh_adam.mu[unread]) and np.array_equal(adam.nu[unread],
                                                                                      fresh_adam.nu[unread])
    assert {k: int(v) for k, v in adam.count.items()} == {read: 1, unread: 0, "projector": 1}
    assert not np.array_equal(head[read], params["decoder_0"][read])
    # Two steps, one task each: each vector stepped once.
    state, _ = steps(tiny, 2, batches=[one_task, reading(tiny[5][1], "cont" if read == "rec_tok" else "rec")])
    assert {k: int(v) for k, v in state.opt.adam["decoder_0"].count.items()} == {read: 1, unread: 1, "projector": 2}


def test_a_mixed_batch_moves_both_special_vectors(tiny):
    params = tiny[3]
    state, _ = steps(tiny, 1, batches=[reading(tiny[5][0], "both")])
    for name in ("rec_tok", "cont_tok"):
        assert not np.array_equal(state.params["decoder_0"][name], params["decoder_0"][name])
    assert {k: int(v) for k, v in state.opt.adam["decoder_0"].count.items()} == {"rec_tok": 1, "cont_tok": 1,
                                                                                 "projector": 1}


@pytest.fixture(scope="module")
def one_head_encoder(tmp_path_factory, tiny):
    """An init_encoder checkpoint with one head (head 0), as a multi-decoder run's encoder is to
    the run that adds a decoder (configs/add_olmo.py)."""
    from arc_jax.convert import write_encoder

    config, _, _, _, _, batch_list, _ = tiny
    cfg = EncoderConfig.from_dict(config.model.encoder.to_dict())
    params = jax.device_get(nn.unbox(jax.jit(ARCEncoder(cfg).init)(jax.random.key(7), batch_list[0].encoder)["params"]))
    params["decoder_0"] = {k: v + 0.5 for k, v in params["decoder_0"].items()}  # rec/cont no longer ones
    return write_encoder(cfg, params, tmp_path_factory.mktemp("init") / "encoder", "arc_jax"), params


def initial_encoder(tiny, init_path, special_from: int | None):
    """_initial_encoder of a run with two heads whose decoder reads the new head 1."""
    from arc_jax import sharding
    from arc_jax.train.program import build_program
    from arc_jax.train.trainer import _initial_encoder

    config = copy.deepcopy(tiny[0])  # its decoders list is shared by a shallow copy
    with config.unlocked():
        config.model.encoder.projectors = list(config.model.encoder.projectors) * 2
        config.model.decoders[0].head = 1
        config.init_encoder = str(init_path)
        if special_from is not None:
            config.init_special_from_head = special_from
    run = parse_run_config(config, device_count=1)
    template = tiny[5][0]
    program = build_program(run, sharding.make_mesh(run.mesh_shape), template, [])
    return jax.device_get(_initial_encoder(run, program.encoder, template, program.param_shardings))


def test_a_new_head_starts_its_special_vectors_from_the_init_checkpoints_head(tiny, one_head_encoder):
    path, saved = one_head_encoder
    params = initial_encoder(tiny, path, 0)
    for name in ("rec_tok", "cont_tok"):
        np.testing.assert_array_equal(params["decoder_1"][name], saved["decoder_0"][name])
    assert not np.allclose(params["decoder_1"]["layer1"], saved["decoder_0"]["layer1"])  # a fresh projector
    assert same(params["decoder_0"], saved["decoder_0"]) and same(params["layers"], saved["layers"])
    # Off (the default): ones, as a fresh head.
    off = initial_encoder(tiny, path, None)
    for name in ("rec_tok", "cont_tok"):
        np.testing.assert_array_equal(off["decoder_1"][name], np.ones_like(saved["decoder_0"][name]))
    np.testing.assert_array_equal(off["decoder_1"]["layer1"], params["decoder_1"]["layer1"])


def test_a_checkpoint_with_every_tensor_is_loaded_without_a_random_init(tiny, one_head_encoder, monkeypatch):
    """A run whose init_encoder has all its tensors (a fine-tuning started from its pretraining) takes
    them as they are and never makes (compiles) the random parameters."""
    from arc_jax import sharding
    from arc_jax.train import trainer
    from arc_jax.train.program import build_program

    def no_random_init(*args):
        raise AssertionError("the random encoder was made")

    monkeypatch.setattr(trainer, "_random_encoder", no_random_init)
    path, saved = one_head_encoder
    config = copy.deepcopy(tiny[0])  # its decoders list is shared by a shallow copy
    with config.unlocked():
        config.init_encoder = str(path)
    run = parse_run_config(config, device_count=1)
    template = tiny[5][0]
    program = build_program(run, sharding.make_mesh(run.mesh_shape), template, [])
    params = trainer._initial_encoder(run, program.encoder, template, program.param_shardings)
    assert jax.tree.map(lambda x: x.sharding, params) == program.param_shardings
    assert same(jax.device_get(params), saved)


def test_init_special_from_a_head_the_checkpoint_lacks_is_a_one_line_error(tiny, one_head_encoder):
    from arc_jax.config_loading import ConfigError

    with pytest.raises(ValueError, match=r"has no head 1 to start new heads' <Rec>/<Cont> from") as error:
        initial_encoder(tiny, one_head_encoder[0], 1)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="init_special_from_head"):
        initial_encoder(tiny, "", 0)


def test_a_batch_whose_samples_were_all_dropped_stops_the_run_with_the_reasons(tmp_path, capsys):
    # A decoder span of 2 slots holds no sample (each takes its compressed vectors, a special token and text).
    args = ["train", "--config", str(CONFIG), "--workdir", str(tmp_path / "run"), f"--config.data.dir={tmp_path}",
            "--config.max_steps=2", "--config.optimizer.warmup_steps=1", "--config.data.shape.decoder_span=2",
            "--config.eval.every=0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "step 1: the batch for decoder 0 holds no sample (" in err and " sample_too_long" in err, err
    assert "arc-jax data check --config CONFIG" in err
