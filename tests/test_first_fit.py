"""First-fit packing and spliced decoder rows on handmade cases, each expectation worked out by
hand, so that the training packer and the inference packer keep placing items where they always
have."""

import numpy as np
import pytest

from arc_jax.data.packing import PackingShape, pack_batch
from arc_jax.data.tasks import Sample
from arc_jax.model.inputs import pack_decoder_inputs, pack_rows_first_fit
from arc_jax.tools.roundtrip import tiny_configs


@pytest.mark.parametrize("lengths, row_len, rows", [
    # longest first: 8 opens row 0, 5 opens row 1, 3 joins it, 2 finds no room and opens row 2
    ([5, 3, 8, 2], 8, [[2], [0, 1], [3]]),
    ([4, 4, 4, 4], 8, [[0, 1], [2, 3]]),  # equal lengths keep their order
    # 7, 6, 5 open a row each; 3 fills row 2, 2 fills row 1, 1 fills row 0
    ([1, 7, 3, 5, 2, 6], 8, [[1, 0], [5, 4], [3, 2]]),
    ([], 8, []),
])
def test_rows_first_fit_takes_the_longest_first(lengths, row_len, rows):
    assert pack_rows_first_fit(lengths, row_len) == rows


def test_rows_first_fit_refuses_an_item_longer_than_a_row():
    with pytest.raises(ValueError, match="item 1 has length 9 > row length 8"):
        pack_rows_first_fit([3, 9, 2], 8)


def _sample(contexts, x, insertions):
    return Sample("reconstruction", tuple(contexts), tuple(x), tuple(t + 100 for t in x),
                  tuple(i % 2 == 0 for i in range(len(x))), tuple(insertions), "rec")


def test_batch_rows_fill_in_arrival_order_with_a_sample_placed_whole_or_not_at_all():
    cfg, _ = tiny_configs()  # pools by 4; <Rec> after each context
    s0 = _sample([(11,) * 10], range(1, 6), [0])                 # decoder slots 5 + 3 + 1 = 9
    s1 = _sample([(21,) * 8, (22,) * 6], range(6, 10), [0, 2])   # 4 + (2 + 1) + (2 + 1) = 10
    s1b = _sample([(31,), (32,) * 9], range(40, 42), [0, 0])     # its second context finds no row
    s2 = _sample([(41,) * 7], range(10, 18), [3])                # 8 + 2 + 1 = 11
    s3 = _sample([(51,) * 3], range(20, 22), [0])                # both encoder rows hold 2 contexts
    s4 = _sample([(61,) * 2], range(30, 31), [0])
    shape = PackingShape(encoder_rows=2, encoder_len=16, decoder_rows=2, decoder_len=20, max_contexts_per_row=2)
    batch, leftover, stats = pack_batch([s0, s1, s1b, s2, s3, s4], cfg, shape)
    assert leftover == [s1b, s3, s4] and stats.samples == 3

    # Encoder: s0's context opens row 0; s1's first context needs row 1, its second fits row 0;
    # s1b's first context would fit row 1 but its second fits nowhere, so row 1 keeps its room for s2.
    np.testing.assert_array_equal(batch.encoder.tokens, [[11] * 10 + [22] * 6, [21] * 8 + [41] * 7 + [0]])
    np.testing.assert_array_equal(batch.encoder.segment_ids, [[1] * 10 + [2] * 6, [1] * 8 + [2] * 7 + [0]])

    # Decoder: s0 and s1 share row 0; s2 does not fit the one slot left there and opens row 1.
    o = batch.encoder.stages[-1].segment_ids.shape[1]
    rec = 2 * o  # <Rec> follows the encoder rows in the device's table
    t = -1
    np.testing.assert_array_equal(batch.compressed_index, [
        [0, 1, 2, rec, t, t, t, t, t] + [o, o + 1, rec, t, t, 3, 4, rec, t, t] + [t],
        [t, t, t, o + 2, o + 3, rec, t, t, t, t, t] + [t] * 9])
    np.testing.assert_array_equal(batch.segment_ids, [[1] * 9 + [2] * 10 + [0], [1] * 11 + [0] * 9])
    np.testing.assert_array_equal(batch.positions, [list(range(9)) + list(range(10)) + [0],
                                                    list(range(11)) + [0] * 9])
    np.testing.assert_array_equal(batch.tokens, [[0, 0, 0, 0, 1, 2, 3, 4, 5] + [0, 0, 0, 6, 7, 0, 0, 0, 8, 9] + [0],
                                                 [10, 11, 12, 0, 0, 0, 13, 14, 15, 16, 17] + [0] * 9])
    compressed = batch.compressed_index >= 0
    np.testing.assert_array_equal(np.where(compressed, 0, batch.targets), np.where(batch.tokens, batch.tokens + 100, 0))
    np.testing.assert_array_equal(batch.loss_mask[0, 4:9], [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(batch.loss_mask[1, 6:11], [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(batch.task_ids, [[0] * 19 + [-1], [0] * 11 + [-1] * 9])


def test_inference_rows_hold_one_sample_each_over_a_stacked_table():
    a, b, c = (np.full((n, 2), v, np.float32) for n, v in ((2, 1.0), (1, 2.0), (3, 3.0)))
    inputs, table, text_mask = pack_decoder_inputs([[[5, 6], a, [7]], [b, [8], c]], multiple=4)
    t = -1
    np.testing.assert_array_equal(inputs.tokens, [[5, 6, 0, 0, 7, 0, 0, 0], [0, 8, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(inputs.compressed_index, [[t, t, 0, 1, t, t, t, t], [2, t, 3, 4, 5, t, t, t]])
    np.testing.assert_array_equal(inputs.segment_ids, [[1] * 5 + [0] * 3, [1] * 5 + [0] * 3])
    np.testing.assert_array_equal(inputs.positions, [list(range(8))] * 2)
    np.testing.assert_array_equal(table, np.concatenate([a, b, c]))
    np.testing.assert_array_equal(text_mask, [[1, 1, 0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]])
