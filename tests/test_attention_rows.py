"""Attention rows (arc_jax/model/attention_rows.py): each packed text attended alone in a short row
of its own gives the packed rows' attention (outputs and gradients), the packer gives each text the
shortest free attention row of its group, and the executed FLOPs count the attention rows."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arc_jax.config_loading import ConfigError
from arc_jax.data.packing import PackingShape, pack_batch
from arc_jax.data.tasks import Sample
from arc_jax.model.attention import dot_product_attention
from arc_jax.model.attention_rows import Allocator, attend_in_rows, layout
from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig


def _packed(lengths_by_row, row_len):
    """Segment ids and positions of rows holding texts of the given lengths side by side."""
    seg = np.zeros((len(lengths_by_row), row_len), np.int32)
    pos = np.zeros_like(seg)
    for r, lengths in enumerate(lengths_by_row):
        start = 0
        for k, n in enumerate(lengths, start=1):
            seg[r, start:start + n], pos[r, start:start + n] = k, np.arange(n)
            start += n
    return seg, pos


# Four rows of 24 slots in two groups of two rows; each group has attention rows of 8, 12 and 20.
LENGTHS = [[5, 11, 7], [20], [3, 8, 12], [6, 6]]
SPEC = ((2, 8), (1, 12), (2, 20))


def _rows_of(seg, lengths_of_spec):
    alloc = Allocator(SPEC, groups=2, group_rows=2)
    places = {(r, k): alloc.take(r, n) for r, lengths in enumerate(LENGTHS) for k, n in enumerate(lengths, start=1)}
    return layout(seg, places, SPEC, lengths_of_spec, groups=2)


def _attention_case(seed):
    """LENGTHS packed in rows of 24 with their attention rows, random q [4, 24, 4, 8], k and v
    [4, 24, 2, 8], and a cotangent for the outputs, zero at the padding."""
    seg, pos = _packed(LENGTHS, 24)
    rows = _rows_of(seg, [n for _, n in SPEC])
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((4, 24, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((4, 24, 2, 8)), jnp.float32) for _ in range(2))
    cot = jnp.asarray(rng.standard_normal(q.shape), jnp.float32) * (seg > 0)[..., None, None]
    return seg, pos, rows, q, k, v, cot


@pytest.mark.parametrize("causal", [False, True])
def test_attention_in_rows_equals_the_packed_rows_attention_and_its_gradients(causal):
    seg, pos, rows, q, k, v, cot = _attention_case(0)

    def loss(q, k, v, rows):
        out = dot_product_attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos,
                                    kv_positions=pos, causal=causal, same_sequence=True, rows=rows)
        return jnp.sum(out * cot), out

    (_, packed), packed_grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, None)
    (_, in_rows), rows_grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, (rows, rows))
    real = (seg > 0)[..., None, None]
    np.testing.assert_allclose(np.where(real, in_rows, 0), np.where(real, packed, 0), atol=1e-6)
    assert not np.any(np.where(real, 0, in_rows))  # padding comes back as zeros
    for a, b in zip(rows_grads, packed_grads):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_pooled_queries_in_rows_equal_the_packed_rows():
    """A pooling layer: queries pooled by 4 (positions 0..m-1 of each text) against the texts' keys."""
    seg, pos = _packed(LENGTHS, 24)
    pooled = [[-(-n // 4) for n in lengths] for lengths in LENGTHS]
    q_seg, q_pos = _packed(pooled, 8)
    kv_rows = _rows_of(seg, [n for _, n in SPEC])
    q_rows = _rows_of(q_seg, [-(-n // 4) for _, n in SPEC])
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.standard_normal((4, 8, 2, 4)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((4, 24, 2, 4)), jnp.float32) for _ in range(2))
    for causal in (False, True):
        f = lambda q, k, v, rows, causal=causal: dot_product_attention(
            q, k, v, q_segment_ids=q_seg, kv_segment_ids=seg, q_positions=q_pos, kv_positions=pos, causal=causal,
            rows=rows)
        real = (q_seg > 0)[..., None, None]
        np.testing.assert_allclose(np.where(real, f(q, k, v, (q_rows, kv_rows)), 0),
                                   np.where(real, f(q, k, v, None), 0), atol=1e-6)


@jax.custom_vjp
def _undefined_at_padding(x, valid):
    """x, whose cotangent is NaN at the slots `valid` [rows, length] marks 0: a fused kernel masked
    by lengths (cuDNN's) promises nothing about its rows' padding, in its outputs or its gradients."""
    return x


def _undefined_fwd(x, valid):
    return x, valid


def _undefined_bwd(valid, g):
    return jnp.where(valid[:, :, None, None] > 0, g, jnp.nan), None


_undefined_at_padding.defvjp(_undefined_fwd, _undefined_bwd)


def test_what_a_kernel_leaves_undefined_at_the_attention_rows_padding_never_reaches_the_texts():
    """The attention rows' padding slots (after each row's text) are the kernel's to fill as it likes:
    NaN there, forward and backward, must leave the packed rows' outputs and gradients those of the
    packed attention (the gathers' backward adds nothing from them into a text's slot)."""
    seg, pos, rows, q, k, v, cot = _attention_case(2)

    def attend(q, k, v, q_valid, kv_valid):
        q, k, v = (_undefined_at_padding(x, valid) for x, valid in ((q, q_valid), (k, kv_valid), (v, kv_valid)))
        at = jnp.broadcast_to(jnp.arange(q.shape[1], dtype=jnp.int32), q_valid.shape)
        out = dot_product_attention(q, k, v, q_segment_ids=q_valid, kv_segment_ids=kv_valid, q_positions=at,
                                    kv_positions=at, causal=True, same_sequence=True)
        return jnp.where(q_valid[:, :, None, None] > 0, out, jnp.nan)

    def loss(q, k, v):
        return jnp.sum(attend_in_rows(attend, q, k, v, rows, rows) * cot)

    def packed_loss(q, k, v):
        return jnp.sum(dot_product_attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos,
                                             kv_positions=pos, causal=True, same_sequence=True) * cot)

    got, want = jax.grad(loss, argnums=(0, 1, 2))(q, k, v), jax.grad(packed_loss, argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(loss(q, k, v), packed_loss(q, k, v), rtol=1e-6)
    for a, b in zip(got, want):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, atol=1e-5)


def _equations(jaxpr):
    """The equations of `jaxpr` and of the jaxprs inside it (jit's, custom rules')."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for inner in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def test_the_gathers_backward_scatters_each_slot_once():
    """Every index of the attention rows' gathers is distinct (padding points past the end, where
    the gather reads zeros and its backward drops the update), so their backward scatter-adds are
    marked unique: XLA then writes them without atomic adds on a GPU."""
    seg, _ = _packed(LENGTHS, 24)
    rows = _rows_of(seg, [n for _, n in SPEC])
    attend = lambda q, k, v, q_valid, kv_valid: (q + k + v) * kv_valid[:, :, None, None]  # noqa: E731
    x = jnp.ones((4, 24, 2, 8), jnp.float32)
    jaxpr = jax.make_jaxpr(jax.grad(lambda x: jnp.sum(attend_in_rows(attend, x, x, x, rows, rows))))(x)
    eqns = list(_equations(jaxpr.jaxpr))
    scatters = [e for e in eqns if e.primitive.name.startswith("scatter")]
    gathers = [e for e in eqns if e.primitive.name == "gather"]
    assert len(scatters) == 3 * len(SPEC) + 1 and len(gathers) == 3 * len(SPEC) + 1
    for eqn in scatters + gathers:
        assert eqn.params["unique_indices"], eqn
        assert eqn.params["mode"] == jax.lax.GatherScatterMode.FILL_OR_DROP, eqn


def test_each_text_takes_the_shortest_free_attention_row_of_its_group():
    seg, _ = _packed(LENGTHS, 24)
    rows = _rows_of(seg, [n for _, n in SPEC])
    index, inverse = rows.rows, rows.inverse
    # Group 0 (rows 0, 1): 5 -> an 8, 11 -> the 12, 7 -> the other 8, 20 -> a 20.
    assert index[0][0, 0, :5].tolist() == list(range(0, 5)) and index[0][0, 0, 5] == -1
    assert index[1][0, 0, :11].tolist() == list(range(5, 16))
    assert index[0][0, 1, :7].tolist() == list(range(16, 23))
    assert index[2][0, 0].tolist() == list(range(24, 44))  # row 1 of the group starts at slot 24
    assert (index[2][0, 1] == -1).all()  # a 20 left free
    # Group 1 (rows 2, 3): 3 -> an 8, 8 -> the other 8, 12 -> the 12, 6 and 6 -> the two 20s (the
    # 8s and the 12 taken).
    assert index[0][1, 0, :3].tolist() == [0, 1, 2] and index[0][1, 1].tolist() == list(range(3, 11))
    assert index[2][1, 0, :6].tolist() == list(range(24, 30)) and index[2][1, 1, :6].tolist() == list(range(30, 36))
    # The inverse sends each packed slot to its attention slot (8s at 0-15, the 12 at 16-27, 20s
    # at 28-67); padding to the zero row after them (68).
    assert inverse.shape == (2, 48)
    assert inverse[0, :5].tolist() == list(range(5)) and inverse[0, 5] == 16 and inverse[0, 23] == 68
    assert inverse[1, 24] == 28 and inverse[1, 30] == 48 and inverse[1, 36] == 68
    with pytest.raises(ValueError, match="no free attention row"):
        Allocator(SPEC, groups=2, group_rows=2).take(0, 21)


BACKBONE = BackboneConfig(dim=4, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=2, hidden_dim=8, vocab_size=16)
ENCODER = EncoderConfig(backbone=BACKBONE, projectors=(ProjectorConfig(4, 6, 6),), compress_rates=(-2,))


def _sample(context_len: int, text_len: int) -> Sample:
    x = tuple(range(1, text_len + 1))
    return Sample("continuation", (tuple(range(1, context_len + 1)),), x, x, (True,) * text_len, (0,), "cont")


def test_the_packer_cuts_drops_and_carries_over_what_the_attention_rows_cannot_hold():
    """By hand: one row a group; encoder attention rows 2 x 8 and 1 x 16, decoder 2 x 12 and 1 x 20."""
    shape = PackingShape(encoder_rows=2, encoder_len=32, decoder_rows=2, decoder_len=40, max_contexts_per_row=4,
                         encoder_attention_rows=[[1, 16], [2, 8]], decoder_attention_rows=[[2, 12], [1, 20]],
                         attention_groups=2)
    assert shape.encoder_attention_rows == ((2, 8), (1, 16)) and shape.encoder_text_len == 16
    assert shape.decoder_sample_len == 20
    a = _sample(20, 6)   # context cut to 16; 8 vectors (pooled by 2) + <Cont> + 6 = 15 decoder slots: row 0, the 20
    b = _sample(6, 17)   # 3 + 1 + 17 = 21 decoder slots, longer than the longest attention row: dropped
    c = _sample(8, 5)    # encoder row 0 (an 8); 4 + 1 + 5 = 10: decoder row 0, a 12
    d = _sample(7, 10)   # encoder row 0 (the other 8); 15 slots: row 0 has room but no free 20: row 1's 20
    e = _sample(14, 3)   # encoder row 0 is full: row 1's 16; 7 + 1 + 3 = 11: decoder row 0, the other 12
    f = _sample(9, 2)    # encoder row 1 has room, but its group's 16 is taken and its 8s are too short: waits
    batch, leftover, stats = pack_batch([a, b, c, d, e, f], ENCODER, shape)
    assert stats.counts["context_truncated"] == 1 and stats.counts["sample_too_long"] == 1
    assert leftover == [f] and stats.samples == 4
    eights, sixteens = batch.encoder.attention_rows[0].rows
    assert sixteens[0, 0].tolist() == list(range(16))
    assert sorted(map(list, eights[0].tolist())) == [list(range(16, 24)), list(range(24, 31)) + [-1]]
    assert sixteens[1, 0].tolist() == list(range(14)) + [-1, -1] and (eights[1] == -1).all()
    fours, pooled_eights = batch.encoder.attention_rows[1].rows  # after pooling by 2: rows of 4 and 8
    assert pooled_eights[0, 0].tolist() == list(range(8))
    assert sorted(map(list, fours[0].tolist())) == [[8, 9, 10, 11], [12, 13, 14, 15]]
    twelves, twenties = batch.attention_rows.rows
    assert twenties[0, 0].tolist() == list(range(15)) + [-1] * 5 and twenties[1, 0, :15].tolist() == list(range(15))
    assert sorted(map(list, twelves[0].tolist())) == [list(range(15, 25)) + [-1, -1], list(range(25, 36)) + [-1]]
    assert (twelves[1] == -1).all()
    # Without attention rows every sample but b fits the same rows.
    plain = dataclasses.replace(shape, encoder_attention_rows=(), decoder_attention_rows=())
    batch, leftover, stats = pack_batch([a, b, c, d, e, f], ENCODER, plain)
    assert batch.attention_rows is None and batch.encoder.attention_rows is None and stats.samples == 5


def test_a_samples_contexts_take_attention_rows_together():
    """By hand: one encoder row a group, each group with one attention row of 8 and one of 16. A sample
    of two contexts of 12: first fit would put both in row 0, whose group has one row of 16; the
    second goes to row 1 and its group's 16 instead (the sample had waited for the next batch)."""
    shape = PackingShape(encoder_rows=2, encoder_len=32, decoder_rows=2, decoder_len=40, max_contexts_per_row=4,
                         encoder_attention_rows=[[1, 8], [1, 16]], attention_groups=2)
    x = tuple(range(1, 4))
    two = Sample("continuation", (tuple(range(1, 13)), tuple(range(1, 13))), x, x, (True,) * 3, (0, 0), "cont")
    batch, leftover, stats = pack_batch([two], ENCODER, shape)
    assert leftover == [] and stats.samples == 1
    eights, sixteens = batch.encoder.attention_rows[0].rows
    # Each group's 16 holds the first 12 slots of its row (slots are numbered within a group's rows).
    assert sixteens[0, 0].tolist() == sixteens[1, 0].tolist() == list(range(12)) + [-1] * 4
    assert (eights == -1).all()


def test_shapes_with_bad_attention_rows_are_refused_by_name(tmp_path):
    from arc_jax.config_loading import load_config
    from arc_jax.data.config import parse_data_config

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py",
                         [f"--config.data.dir={tmp_path}"])
    for fields, match in (({"encoder_attention_rows": [[2, 0]]}, r"config\.data\.shape\.encoder_attention_rows"),
                          ({"decoder_attention_rows": [[2, 8], [1, 8]]}, "each length once"),
                          ({"encoder_attention_rows": [[2, 8]], "attention_groups": 3}, "attention_groups=3"),
                          ({"decoder_attention_rows": [[1, 4096]]}, "longer than decoder_len")):
        with config.unlocked():
            config.data.shape.update({"encoder_attention_rows": [], "decoder_attention_rows": [], "attention_groups": 1})
            config.data.shape.update(fields)
        with pytest.raises(ConfigError, match=match):
            parse_data_config(config.data)


def test_a_train_step_in_attention_rows_equals_the_step_on_the_packed_rows(tmp_path):
    """tiny_cpu_finetune's first batch (attention rows on both sides, pooling by 4) and the same batch
    without its attention rows (the same samples in the same slots, attended on the packed rows): one
    step gives the same loss, gradients and update (float32)."""
    from arc_jax.config_loading import load_config
    from arc_jax.train.run_config import parse_run_config, run_batches
    from one_step import one_step_each

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu_finetune.py",
                         [f"--config.data.dir={tmp_path}"])
    run = parse_run_config(config, device_count=1)
    in_rows = next(run_batches(run))[0]
    assert in_rows.attention_rows is not None and len(in_rows.encoder.attention_rows) == 2
    packed = in_rows._replace(attention_rows=None, encoder=in_rows.encoder._replace(attention_rows=None))
    (s_packed, m_packed), (s_rows, m_rows) = one_step_each(config, run, [packed, in_rows])
    for key in ("loss", "accuracy", "loss_tokens"):
        np.testing.assert_allclose(float(m_rows[key]), float(m_packed[key]), rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(float(m_rows["grad_norm"]), float(m_packed["grad_norm"]), rtol=1e-5)
    moments = lambda s: [a.mu for a in s.opt.adam.values()]
    for x, y in zip(jax.tree.leaves(moments(s_rows)), jax.tree.leaves(moments(s_packed)), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6 * max(np.abs(y).max(), 1e-30))


def test_executed_flops_count_the_attention_rows_by_hand():
    from arc_jax.train import flops

    decoder = BackboneConfig(dim=6, n_layers=1, n_heads=3, n_kv_heads=1, head_dim=2, hidden_dim=8, vocab_size=10)
    shape = PackingShape(encoder_rows=2, encoder_len=32, decoder_rows=2, decoder_len=40, max_contexts_per_row=4,
                         encoder_attention_rows=[[1, 16], [2, 8]], decoder_attention_rows=[[2, 12], [1, 20]],
                         attention_groups=2)
    plain = dataclasses.replace(shape, encoder_attention_rows=(), decoder_attention_rows=())
    rows, without = (flops.train_step_flops(ENCODER, decoder, s) for s in (shape, plain))
    # The weights are the packed rows' either way: only attention differs. A(t, s) = 2 * rows * 2 * t * s * H * d.
    a = lambda n_rows, t, s, heads_dim: 2 * n_rows * 2 * t * s * heads_dim
    # Encoder (bidirectional, H * d = 4): its plain layer on 2 groups x (2 rows of 8 + 1 of 16), then
    # its pooling layer (by 2) with queries of 4 and 8 against keys of 8 and 16; 3 passes.
    encoder = a(4, 8, 8, 4) + a(2, 16, 16, 4) + a(4, 4, 8, 4) + a(2, 8, 16, 4)
    # Without: the plain layer on 2 rows of 32, the pooling layer's queries (pooled_row_lengths(32, [2], 4)
    # = 20 slots) against 32.
    encoder_without = a(2, 32, 32, 4) + a(2, 20, 32, 4)
    # Decoder (causal, H * d = 6): rows of 12 and 20 cannot be cut into block-causal chunks of >= 16,
    # so they are dense; 3 passes. Without: 2 rows of 40 in 2 block-causal chunks of 20, (40 + 20) / 2 keys.
    decoder_rows, decoder_without = a(4, 12, 12, 6) + a(2, 20, 20, 6), a(2, 40, 30, 6)
    assert rows["attention"] == 3 * encoder + 3 * decoder_rows
    assert without["attention"] == 3 * encoder_without + 3 * decoder_without
    assert rows["total"] - without["total"] == rows["attention"] - without["attention"]


def test_a_run_whose_devices_would_split_a_group_of_attention_rows_is_refused(tmp_path):
    from arc_jax.config_loading import load_config
    from arc_jax.train.run_config import parse_run_config

    path = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu_finetune.py"
    overrides = [f"--config.data.dir={tmp_path}", "--config.data.shape.encoder_rows=2", "--config.data.shape.decoder_rows=2"]
    with pytest.raises(ConfigError, match=r"config\.data\.shape\.attention_groups=1 is not a multiple of data x fsdp = 2"):
        parse_run_config(load_config(path, overrides), device_count=2)
    parse_run_config(load_config(path, overrides + ["--config.data.shape.attention_groups=2"]), device_count=2)


def test_the_check_tries_the_attention_rows_with_the_fewest_pairs_that_hold_the_groups_texts():
    import itertools

    from arc_jax.data.check import _attention_row_specs

    # Three groups (of rows, in one batch or several) of two texts each; the longest 31 -> rows of 32.
    groups = [[10, 30], [12, 28], [9, 31]]
    specs = _attention_row_specs(groups, limit=64)
    # One length: each group needs 2 rows of 32. Two: each has one text of at most 16 slots, one longer.
    assert specs == [((1, 16), (1, 32)), ((2, 32),)]
    assert _attention_row_specs(groups, limit=24) == [((1, 16), (1, 24)), ((2, 24),)]
    # A long tail: every quantile i / k (k <= 8) of these lengths is 8, so quantile cuts gave rows of 8
    # and of the longest, 64, only, a 40 taking a row of 64 (9 x 8² + 2 x 64² pairs); the cheapest has a
    # row of 40 for the groups' second-longest text (9 x 8² + 40² + 64²).
    tail = [[8] * 9 + [40, 40], [8] * 9 + [40, 64], [8] * 11]
    assert ((9, 8), (1, 40), (1, 64)) in _attention_row_specs(tail, limit=64)
    # For the median group (no text longer than 40) still a row of the longest text, in every group.
    assert all(spec[-1][1] == 64 for spec in _attention_row_specs(tail, limit=64, quantile=0.5))
    # Rows for the most texts a group had, whatever the quantile: the median group's 2 would keep 4 of
    # the crowded group's 8s waiting, and rows of 8 cost little.
    crowded = [[8, 8], [8, 8], [8, 8], [8] * 5 + [40]]
    assert _attention_row_specs(crowded, limit=64, quantile=0.5) == [((5, 8), (1, 40)), ((6, 40),)]

    def holds(spec, texts):
        allocator = Allocator(spec, groups=1, group_rows=1)
        return all(allocator.claim(0, n) for n in sorted(texts, reverse=True))

    # Against every spec of rows of the lengths the texts take, as many of each as a group has texts
    # (brute force, the packer's own allocator): the cheapest spec holding every group's texts is tried.
    rng = np.random.default_rng(0)
    for groups in [tail] + [None] * 5:
        groups = groups or [list(rng.choice([8, 16, 24, 48], size=rng.integers(1, 5))) for _ in range(4)]
        lengths = sorted({n for texts in groups for n in texts})
        pairs = lambda spec: sum(count * length ** 2 for count, length in spec)  # noqa: E731
        every = (tuple((c, n) for c, n in zip(counts, lengths) if c)
                 for counts in itertools.product(range(max(map(len, groups)) + 1), repeat=len(lengths)))
        cheapest = min(pairs(spec) for spec in every if spec and all(holds(spec, t) for t in groups))
        tried = _attention_row_specs(groups, limit=64)
        assert min(pairs(spec) for spec in tried if all(holds(spec, t) for t in groups)) == cheapest


def test_data_shards_pack_whole_groups_of_rows_with_their_attention_rows(tmp_path):
    """Two data shards (as two processes would) each pack one of the two groups: the global batch has
    the config's attention rows per group, not per shard's group twice over; groups a shard count does
    not divide are refused by name."""
    from arc_jax.config_loading import load_config
    from arc_jax.data.pipeline import DataError
    from arc_jax.train.run_config import parse_run_config, run_batches

    path = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu_finetune.py"
    overrides = [f"--config.data.dir={tmp_path}", "--config.data.shape.encoder_rows=2",
                 "--config.data.shape.decoder_rows=2", "--config.data.shards=2"]
    run = parse_run_config(load_config(path, overrides + ["--config.data.shape.attention_groups=2"]), device_count=1)
    batch = next(run_batches(run))[0]
    spec = run.data.shape.encoder_attention_rows
    assert [r.shape for r in batch.encoder.attention_rows[0].rows] == [(2, count, length) for count, length in spec]
    assert batch.attention_rows.inverse.shape == (2, 576)
    # Each group's attention rows hold exactly its rows' texts.
    for g in range(2):
        listed = np.concatenate([r[g].reshape(-1) for r in batch.encoder.attention_rows[0].rows])
        assert sorted(listed[listed >= 0].tolist()) == np.flatnonzero(batch.encoder.segment_ids[g]).tolist()
    with pytest.raises(DataError, match=r"attention_groups=1 is not a multiple of the 2 data shard"):
        next(run_batches(parse_run_config(load_config(path, overrides), device_count=1)))
