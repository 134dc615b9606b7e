"""The loss buffer (data.shape.loss_slots): the packer lists each decoder row's loss-carrying slots,
keeps a row's samples within the buffer (counting what it drops), and the train step runs the final
norm and output head on the listed slots only, for the same loss, gradients and update."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from arc_jax.data.packing import PackingShape, pack_batch
from arc_jax.data.tasks import Sample
from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig

BACKBONE = BackboneConfig(dim=4, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=2, hidden_dim=8, vocab_size=16)
ENCODER = EncoderConfig(backbone=BACKBONE, projectors=(ProjectorConfig(4, 6, 6),), compress_rates=(-2,))
# Two decoder rows of 32 slots, each with room for 6 loss tokens; a sample takes 6 text slots,
# 2 pooled vectors and <Cont>: 9 slots, so slots never run out here, only the loss buffer.
SHAPE = PackingShape(encoder_rows=2, encoder_len=16, decoder_rows=2, decoder_len=32, max_contexts_per_row=4,
                     loss_slots=6)


def sample(first: int, loss: tuple[bool, ...]) -> Sample:
    x = tuple(range(first, first + 6))
    return Sample("continuation", ((1, 2, 3, 4),), x, x, loss, (0,), "cont")


def test_the_packer_lists_each_rows_loss_slots_within_the_buffer_and_counts_what_it_drops():
    a = sample(1, (False, False, True, True, True, True))          # 4 loss tokens: row 0
    b = sample(2, (True, True, True, False, True, False))          # 4: not with a (8 > 6), row 1
    c = sample(3, (True, True, True, False, False, False))         # 3: rows 0 and 1 have 2 left: waits
    d = Sample("continuation", ((1, 2, 3, 4),), tuple(range(5, 12)), tuple(range(5, 12)), (True,) * 7, (0,),
               "cont")                                             # 7 > 6: dropped
    e = sample(6, (False, True, False, False, False, True))        # 2: row 0 (4 + 2 = 6)
    batch, leftover, stats = pack_batch([a, b, c, d, e], ENCODER, SHAPE)
    assert leftover == [c]
    assert stats.counts["sample_too_many_loss_tokens"] == 1 and stats.samples == 3
    # A sample's 2 pooled vectors and <Cont> come first, then its 6 text slots: row 0 holds a at
    # slots 0-8 (text 3-8) and e at 9-17 (text 12-17), row 1 holds b at 0-8.
    assert batch.loss_slots.shape == (2, 6)
    assert batch.loss_slots.tolist() == [[5, 6, 7, 8, 13, 17], [3, 4, 5, 7, -1, -1]]
    for row in range(2):  # the listed slots are exactly those carrying loss
        listed = batch.loss_slots[row][batch.loss_slots[row] >= 0]
        assert listed.tolist() == np.flatnonzero(batch.loss_mask[row]).tolist()
    # Without a buffer every sample fits, and nothing is listed.
    plain, leftover, stats = pack_batch([a, b, c, d, e], ENCODER, dataclasses.replace(SHAPE, loss_slots=0))
    assert plain.loss_slots is None and not leftover and stats.samples == 5


def test_a_buffer_larger_than_the_row_is_refused():
    with pytest.raises(ValueError, match="loss_slots=33"):
        PackingShape(encoder_rows=1, encoder_len=16, decoder_rows=1, decoder_len=32, loss_slots=33)


def test_a_train_step_with_the_buffer_equals_the_step_without(tmp_path):
    """tiny_cpu's batch with and without a loss buffer that holds every row's loss tokens (the same
    samples in the same slots): one step gives the same loss, gradient norm, parameters and Adam
    moments (float32), while the head runs on fewer slots than the row's."""
    import jax

    from arc_jax.config_loading import load_config
    from arc_jax.train.run_config import parse_run_config, run_batches
    from one_step import one_step_each

    config_path = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"

    def first_batch(loss_slots):
        config = load_config(config_path, [f"--config.data.dir={tmp_path}", f"--config.data.shape.loss_slots={loss_slots}",
                                           "--config.data.shape.encoder_rows=2", "--config.data.shape.decoder_rows=2"])
        return next(run_batches(parse_run_config(config, device_count=1)))[0], config

    plain, config = first_batch(0)
    most = int((plain.loss_mask > 0).sum(-1).max())
    assert 0 < most < plain.tokens.shape[1]  # the buffer is smaller than a row
    buffered, _ = first_batch(most)
    assert buffered.loss_slots.shape == (plain.tokens.shape[0], most)
    for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(buffered._replace(loss_slots=None)), strict=True):
        np.testing.assert_array_equal(x, y)

    (s_plain, m_plain), (s_buf, m_buf) = one_step_each(config, parse_run_config(config, device_count=1),
                                                       [plain, buffered])
    for key in ("loss", "accuracy", "loss_tokens", "loss/continuation", "loss/reconstruction"):
        np.testing.assert_allclose(float(m_buf[key]), float(m_plain[key]), rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(float(m_buf["grad_norm"]), float(m_plain["grad_norm"]), rtol=1e-5)
    for x, y in zip(jax.tree.leaves((s_buf.params, s_buf.opt)), jax.tree.leaves((s_plain.params, s_plain.opt)),
                    strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6 * max(np.abs(y).max(), 1e-30))


def test_executed_flops_count_the_head_on_the_buffer_by_hand():
    from arc_jax.train import flops

    decoder = BackboneConfig(dim=6, n_layers=1, n_heads=3, n_kv_heads=1, head_dim=2, hidden_dim=8, vocab_size=10)
    shape = PackingShape(encoder_rows=1, encoder_len=10, decoder_rows=2, decoder_len=16, max_contexts_per_row=2)
    # The head [6 x 10] runs forward and backward to its input (2x) on 2 rows of 16 slots, or of 5.
    full, buffered = (flops.train_step_flops(ENCODER, decoder, dataclasses.replace(shape, loss_slots=n))
                      for n in (0, 5))
    head = lambda slots: 2 * (2 * 2 * slots * 6 * 10)
    assert (head(16), head(5)) == (7680, 2400)
    assert full["total"] - buffered["total"] == full["decoder"] - buffered["decoder"] == 7680 - 2400
    assert full["attention"] == buffered["attention"] and full["encoder"] == buffered["encoder"]


def test_a_checkpoint_saved_before_the_buffer_existed_resumes_with_it_off():
    from arc_jax.config_loading import load_config, to_plain
    from arc_jax.train.resume import config_changes

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py",
                         ["--config.data.shape.loss_slots=0"])
    saved = to_plain(config)
    del saved["data"]["shape"]["loss_slots"]
    assert config_changes(saved, config) == []
    config.data.shape.loss_slots = 64
    assert config_changes(saved, config) == ["data.shape.loss_slots 0 -> 64"]
