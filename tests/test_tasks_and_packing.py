"""Training tasks (what is compressed, what the decoder reads, which targets carry loss, where
special vectors go) and the static-shape batch packer, checked against the per-sample API."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arc_jax
from arc_jax.data import tasks
from arc_jax.data.packing import TASKS, PackingShape, pack_batch
from arc_jax.model import ARCEncoder, Decoder
from arc_jax.tools.roundtrip import random_params, tiny_configs


class CharTokenizer:
    """Bytes as ids 3..258 (0 pad, 1 bos, 2 eos); `shift` makes a second, different tokenizer."""

    def __init__(self, shift: int = 0):
        self.shift, self.bos_id, self.eos_id, self.vocab_size = shift, 1, 2, 259 + shift

    def encode(self, text, bos=False, eos=False):
        ids = [b + 3 + self.shift for b in text.encode()]
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids):
        return bytes(i - 3 - self.shift for i in ids if i > 2).decode(errors="replace")


DEC, ENC = CharTokenizer(), CharTokenizer(shift=-3)  # ENC: bytes as 0..255, within the tiny vocab
TEXT = "The quick brown fox jumps over the lazy dog near the river bank at dawn. " * 4


def rng(seed=0):
    return np.random.default_rng(seed)


def decoded_targets(sample):
    return DEC.decode([t for t, m in zip(sample.y, sample.loss_mask) if m])


def test_reconstruction_compresses_a_span_the_decoder_reproduces():
    s = tasks.reconstruction(TEXT, rng(), DEC, ENC, max_len=40)
    assert s.special == "rec" and s.insertions == (0,) and s.x[0] == DEC.bos_id
    assert all(s.loss_mask)
    span = DEC.decode(s.y)
    assert len(s.y) == 40 and span in TEXT
    assert ENC.decode(s.contexts[0]) == span  # re-tokenised with the encoder's tokenizer


def test_continuation_loss_is_on_the_continuation_only():
    s = tasks.continuation(TEXT, rng(1), DEC, ENC, max_len=30)
    prefix = DEC.decode(s.x[1: s.insertions[0]])
    middle = ENC.decode(s.contexts[0])
    first = DEC.decode(s.x[s.insertions[0]: s.insertions[0] + 1])  # read after the block, no target
    cont = first + decoded_targets(s)
    assert s.special == "cont" and len(middle) == 30 and len(cont) == 30
    assert prefix + middle + cont in TEXT  # three consecutive windows of the text
    assert not any(s.loss_mask[: s.insertions[0]])  # nothing predicted before the block reads it


def test_continuation_of_a_short_text_splits_it():
    s = tasks.continuation("abcdefghij", rng(), DEC, ENC, max_len=30)
    first = DEC.decode(s.x[s.insertions[0]: s.insertions[0] + 1])
    assert ENC.decode(s.contexts[0]) + first + decoded_targets(s) == "abcdefghij"[len(DEC.decode(s.x[1: s.insertions[0]])):]
    with pytest.raises(tasks.SkipRecord):
        tasks.continuation("a", rng(), DEC, ENC)


def test_pretraining_mixes_tasks_at_the_configured_ratio():
    r = rng(3)
    kinds = [tasks.pretraining(TEXT, r, DEC, ENC, 16, continuation_prob=0.8).task for _ in range(2000)]
    assert abs(kinds.count("continuation") / 2000 - 0.8) < 0.03


def test_few_shot_answers_are_drawn_from_each_records_list():
    """(The layout itself is checked against the reference in tests/test_reference_prompts.py.)"""
    examples = [tasks.QARecord.from_json({"question": f"q{i}?", "answer": [f"a{i}", f"b{i}"],
                                          "passages": [f"p{i} one", f"p{i} two"]}) for i in range(3)]
    answers = {decoded_targets(tasks.few_shot(examples, rng(seed), DEC, ENC)) for seed in range(20)}
    assert answers == {"a2", "b2"}


def test_qa_records_need_question_answer_and_passage():
    with pytest.raises(tasks.SkipRecord, match="passage"):
        tasks.QARecord.from_json({"question": "q", "answer": "a"})
    with pytest.raises(tasks.SkipRecord, match="answer"):
        tasks.QARecord.from_json({"question": "q", "answer": ["", " "], "passage": "p"})


def test_long_context_chunks_are_compressed_separately_and_capped():
    s = tasks.long_context("x" * 2500, "Summarise.", "ok", DEC, ENC, chunk_len=1024, max_chunks=32)
    assert [len(c) for c in s.contexts] == [1024, 1024, 452]
    assert s.special is None and s.insertions[1:] == (0, 0)
    assert decoded_targets(s) == "ok " and s.y[-1] == DEC.eos_id
    capped = tasks.long_context("x" * 5000, "q", "a", DEC, ENC, chunk_len=1024, max_chunks=2)
    assert [len(c) for c in capped.contexts] == [1024, 1024]


@pytest.fixture(scope="module")
def models():
    encoder_cfg, decoder_cfg = tiny_configs()
    enc_params, dec_params = random_params(encoder_cfg, decoder_cfg, seed=7)
    return arc_jax.Encoder(encoder_cfg, enc_params), arc_jax.DecoderLM(decoder_cfg, dec_params)


def _samples():
    examples = [tasks.QARecord.from_json({"question": f"q{i}", "answer": "yes", "passage": f"doc {i} " * (i + 3)})
                for i in range(2)]
    return [tasks.reconstruction(TEXT, rng(0), DEC, ENC, 23),
            tasks.continuation(TEXT, rng(1), DEC, ENC, 17),
            tasks.few_shot(examples, rng(2), DEC, ENC),
            tasks.reconstruction(TEXT, rng(3), DEC, ENC, 9)]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _batch_logits(encoder_module, decoder_module, enc_params, dec_params, batch):
    """What the train step will compute: encoder -> flat table with specials -> projector -> decoder."""
    h, _ = encoder_module.apply({"params": enc_params}, batch.encoder, method=ARCEncoder.encode)
    head = enc_params["decoder_0"]
    flat = jnp.concatenate([h.reshape(-1, h.shape[-1]), jnp.stack([head["rec_tok"], head["cont_tok"]])])
    table = flat @ head["layer1"] @ head["layer2"]
    return decoder_module.apply({"params": dec_params}, batch.tokens, batch.segment_ids, batch.positions, table,
                                batch.compressed_index)


def _segments(sample, blocks):
    """The sample as the API's dec.logits reads it: text pieces and compressed blocks in order."""
    pieces, cursor = [], 0
    for offset, block in zip(sample.insertions, blocks):
        if offset:
            pieces.append(list(sample.x[cursor: cursor + offset]))
        cursor += offset
        pieces.append(block)
    if cursor < len(sample.x):
        pieces.append(list(sample.x[cursor:]))
    return pieces


def test_packed_batch_gives_the_logits_of_each_sample_run_alone(models):
    enc, dec = models
    samples = _samples()
    shape = PackingShape(encoder_rows=2, encoder_len=64, decoder_rows=2, decoder_len=160, max_contexts_per_row=4)
    batch, leftover, stats = pack_batch(samples, enc.config, shape)
    assert not leftover and stats.samples == 4
    assert batch.tokens.shape == (2, 160) and batch.encoder.tokens.shape == (2, 64)
    logits = np.asarray(_batch_logits(ARCEncoder(enc.config), Decoder(dec.config), enc.params, dec.params, batch))
    seen = 0
    for row in range(2):
        for seg in range(1, batch.segment_ids[row].max() + 1):
            slots = batch.segment_ids[row] == seg
            text = slots & (batch.compressed_index[row] < 0)
            tokens = tuple(batch.tokens[row][text])
            sample = next(s for s in samples if s.x == tokens)
            blocks = [enc.compress([list(c)], task="reconstruction" if sample.special == "rec" else "continuation")[0]
                      for c in sample.contexts]
            expected = dec.logits(_segments(sample, blocks))
            np.testing.assert_allclose(logits[row][text], expected, atol=2e-4, rtol=1e-4)
            np.testing.assert_array_equal(batch.targets[row][text], sample.y)
            np.testing.assert_array_equal(batch.loss_mask[row][text], np.asarray(sample.loss_mask, np.float32))
            assert set(batch.task_ids[row][slots]) == {TASKS.index(sample.task)}
            seen += 1
    assert seen == 4
    assert 0 < stats.decoder_efficiency <= 1 and 0 < stats.encoder_efficiency <= 1


def test_what_does_not_fit_is_counted_or_returned(models):
    enc, _ = models
    samples = _samples()
    tight = PackingShape(encoder_rows=1, encoder_len=32, decoder_rows=1, decoder_len=80, max_contexts_per_row=4)
    batch, leftover, stats = pack_batch(samples, enc.config, tight)
    assert stats.samples + len(leftover) + stats.counts["sample_too_long"] == len(samples)
    assert stats.counts["carried_over"] == len(leftover) and stats.samples >= 1
    long = tasks.reconstruction(TEXT, rng(), DEC, ENC, 60)  # 60 text slots + 32 // 4 vectors + <Rec>
    _, _, stats = pack_batch([long], enc.config, tight)
    assert stats.counts["context_truncated"] == 1 and stats.samples == 1
    _, _, stats = pack_batch([long], enc.config, PackingShape(1, 32, 1, 68, 4))
    assert stats.counts["sample_too_long"] == 1 and stats.samples == 0


def _view(sample):
    """The decoder's text with <C> at each insertion point."""
    text, cursor = "", 0
    x = sample.x[1:] if sample.x[:1] == (DEC.bos_id,) else sample.x
    shift = len(sample.x) - len(x)
    for offset in sample.insertions:
        take = offset - shift if cursor == 0 else offset
        text += DEC.decode(x[cursor: cursor + take]) + "<C>"
        cursor += take
    return text + DEC.decode(x[cursor:])


def test_arc_jax_layout_chat_variants_use_the_reference_chat_template():
    rec = tasks.reconstruction(TEXT, rng(), DEC, ENC, max_len=20, chat=True)
    span = ENC.decode(rec.contexts[0])
    assert _view(rec) == f"[INST] Text:<C>Replicate the input text. [/INST] Replicated text:\n{span.strip()} "
    assert decoded_targets(rec) == span.strip() + " "
    cont = tasks.continuation(TEXT, rng(2), DEC, ENC, max_len=20, chat=True)
    assert _view(cont).startswith("[INST] Text:<C>Continue the previous text. [/INST] Text continuation:\n...")
    read = ENC.decode(cont.contexts[0]) + decoded_targets(cont)  # the target is stripped: compare words
    assert "".join(read.split()) in "".join(TEXT.split())
