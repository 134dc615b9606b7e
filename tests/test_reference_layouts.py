"""Pretraining samples as the reference (kyutai-labs/ARC-Encoder, commit 3e04c97) builds them, written
by hand from its rules (notes/reference_recipe.md 2.3-2.7) and compared with arc_jax's builders; the
arc_jax layout kept as an option, without the blind continuation target; the data config fields.

Tokenizers: one id per character (decoder: ord(ch), <s> 1, </s> 2; encoder: ord(ch) + 1000, <s> 1001,
</s> 1002), so every expected id list below is the text read character by character.
"""

import numpy as np
import pytest

from arc_jax.config_loading import ConfigError
from arc_jax.data import tasks
from arc_jax.data.config import parse_data_config
from arc_jax.data.packing import PackingShape, pack_batch
from arc_jax.tools.roundtrip import tiny_configs


from char_tokenizers import DEC, EB, EE, ENC, B, E, d, e  # noqa: F401


def as_lists(sample):
    return {"contexts": [list(c) for c in sample.contexts], "x": list(sample.x), "y": list(sample.y),
            "loss": list(sample.loss_mask), "insertions": list(sample.insertions), "special": sample.special,
            "task": sample.task}


def reference(task, text, max_len, **kw):
    return [as_lists(s) for s in getattr(tasks, f"reference_{task}")(text, DEC, ENC, max_len=max_len, **kw)]


# --- reconstruction ---------------------------------------------------------------------------------

def test_reference_reconstruction_cuts_the_whole_document_into_consecutive_windows():
    """embed_llm/data/tokenize.py:encode (L134-138): a pretraining document is
    llm_tok.encode(text, bos=True, eos=True). embed_llm/data/sequence_iterators.py:
    sequence_iterator_reconstruction (L86-116): x = tokens[:-1], y = tokens[1:], consecutive windows
    x[c:c+n] / y[c:c+n] with every target carrying loss, the block inserted at offset 0 ([C][<Rec>]
    then the window: BOS only in the first window), and the encoder reads
    embed_tok.encode(llm_tok.decode(tokens[c:c+n]), bos=BOS in tokens[c:c+n], eos=EOS in tokens[c:c+n]).

    "abcdefghij", n = 4: tokens <s>abcdefghij</s>, x <s>abcdefghij, y abcdefghij</s>."""
    rec = {"insertions": [0], "special": "rec", "task": "reconstruction"}
    assert reference("reconstruction", "abcdefghij", 4) == [
        {"contexts": [[EB] + e("abc")], "x": [B] + d("abc"), "y": d("abcd"), "loss": [True] * 4, **rec},
        {"contexts": [e("defg")], "x": d("defg"), "y": d("efgh"), "loss": [True] * 4, **rec},
        # the last window: tokens[8:12] = "hij</s>", so the encoder reads the EOS it is trained to emit
        {"contexts": [e("hij") + [EE]], "x": d("hij"), "y": d("ij") + [E], "loss": [True] * 3, **rec},
    ]


def test_reference_reconstruction_eos_in_the_encoder_only_when_the_window_holds_it():
    """sequence_iterator_reconstruction L92-100: the encoder's window is tokens[c:c+n], one token
    longer than x[c:c+n] only when x runs out first. "abcdefg", n = 4: x = <s>abcdefg (8 tokens) is
    two full windows; tokens[4:8] = "defg" holds no EOS, yet the last target is the EOS."""
    rec = {"insertions": [0], "special": "rec", "task": "reconstruction"}
    assert reference("reconstruction", "abcdefg", 4) == [
        {"contexts": [[EB] + e("abc")], "x": [B] + d("abc"), "y": d("abcd"), "loss": [True] * 4, **rec},
        {"contexts": [e("defg")], "x": d("defg"), "y": d("efg") + [E], "loss": [True] * 4, **rec},
    ]


def test_reference_reconstruction_without_encoder_bos_eos():
    """data.encoder_bos_eos = False: the encoder reads the window's text only (arc_jax's former
    encoder input); the decoder side is unchanged."""
    samples = reference("reconstruction", "abcdefghij", 4, encoder_bos_eos=False)
    assert [s["contexts"] for s in samples] == [[e("abc")], [e("defg")], [e("hij")]]
    assert samples[0]["x"] == [B] + d("abc")


# --- continuation -----------------------------------------------------------------------------------

def test_reference_continuation_halves_consecutive_chunks():
    """embed_llm/data/sequence_iterators.py:sequence_iterator_continuation (L429-524), interleave
    unset (the released pretraining yaml): chunks of r = len(x[c:c+2n]) tokens; the first r // 2 are
    compressed (re-encoded with bos = BOS in them when the tokenizers differ, L479-492), the next r // 2
    are the decoder text x[...] with targets y[...], all carrying loss; nothing before the block
    (insertion offset 0, no prefix: max(0, r - 2n) = 0); the first continued token is input only.

    "abcdefghijklmnopqrstu", n = 4: x = <s>a..u (22 tokens) -> chunks of 8, 8 and 6; the last chunk is
    even, so the document's EOS is its last target."""
    cont = {"insertions": [0], "special": "cont", "task": "continuation"}
    assert reference("continuation", "abcdefghijklmnopqrstu", 4) == [
        {"contexts": [[EB] + e("abc")], "x": d("defg"), "y": d("efgh"), "loss": [True] * 4, **cont},
        {"contexts": [e("hijk")], "x": d("lmno"), "y": d("mnop"), "loss": [True] * 4, **cont},
        {"contexts": [e("pqr")], "x": d("stu"), "y": d("tu") + [E], "loss": [True] * 3, **cont},
    ]


def test_reference_continuation_odd_chunks_and_short_tails():
    """sequence_iterator_continuation: an odd chunk drops its last token (h = r // 2 twice), so the
    EOS is no target; a remainder of fewer than 6 tokens is dropped with the rest of the document
    (L438-460); a chunk whose compressed half is one repeated token has its loss masked (L507-514), so
    arc_jax makes no sample of it; a document of fewer than 6 x tokens makes none at all.

    "abcdefghijklmn": x = <s>a..n (15) -> chunks 8 and 7 (h = 3: "hij" | "klm", "n" dropped).
    "abcdefghijkl": x = <s>a..l (13) -> chunk 8, then "hijkl" (5 < 6) dropped."""
    cont = {"insertions": [0], "special": "cont", "task": "continuation"}
    assert reference("continuation", "abcdefghijklmn", 4) == [
        {"contexts": [[EB] + e("abc")], "x": d("defg"), "y": d("efgh"), "loss": [True] * 4, **cont},
        {"contexts": [e("hij")], "x": d("klm"), "y": d("lmn"), "loss": [True] * 3, **cont},
    ]
    assert [s["x"] for s in reference("continuation", "abcdefghijkl", 4)] == [d("defg")]
    assert [s["x"] for s in reference("continuation", "abcdefg" + "zzzzzzzz" + "hijklmno", 4)] == [d("defg"), d("lmno")]
    with pytest.raises(tasks.SkipRecord):
        tasks.reference_continuation("abcd", DEC, ENC, max_len=4)


def test_reference_continuation_with_one_tokenizer_passes_the_decoder_ids():
    """sequence_iterator_continuation L479-499: when llm_tok.model_name == embed_tok.model_name (a
    Llama decoder and the Llama encoder) the compressed half is passed as decoder ids, BOS included,
    not re-encoded. Reconstruction re-encodes in every case (L92-109)."""
    samples = tasks.reference_continuation("abcdefghijklmnopqrstu", DEC, DEC, max_len=4, same_tokenizer=True)
    assert [list(s.contexts[0]) for s in samples] == [[B] + d("abc"), d("hijk"), d("pqr")]
    no_flags = tasks.reference_continuation("abcdefghijklmnopqrstu", DEC, DEC, max_len=4, same_tokenizer=True,
                                            encoder_bos_eos=False)
    assert list(no_flags[0].contexts[0]) == d("abc")


# --- what the packed decoder row holds, slot by slot ------------------------------------------------

def slots(sample):
    """(kind, token, target, loss) per decoder slot of `sample` packed alone: kind "C" for a compressed
    vector, "<Rec>" / "<Cont>" for a special vector, "text" for a text token."""
    cfg = tiny_configs()[0]  # pooling factor 4, <Rec> and <Cont>
    batch, leftover, stats = pack_batch([sample], cfg, PackingShape(1, 32, 1, 64, 4))
    assert not leftover and stats.samples == 1
    special_base = batch.compressed_index.max() - (sample.special == "cont")
    out = []
    for k in range(int((batch.segment_ids[0] > 0).sum())):
        index = int(batch.compressed_index[0, k])
        kind = "text" if index < 0 else "C" if index < special_base else {0: "<Rec>", 1: "<Cont>"}[index - special_base]
        out.append((kind, int(batch.tokens[0, k]) if kind == "text" else None, int(batch.targets[0, k]),
                    bool(batch.loss_mask[0, k])))
    return out


def test_reference_reconstruction_slots():
    """EmbedAugModel.forward (augmented_model.py L111-154): one <Rec> after the compressed block;
    loss on text positions only (transformer_layers.py:insert_embeds). First window of "abcdefghij",
    n = 4: encoder <s>abc (4 tokens) -> one vector at pooling factor 4."""
    first = tasks.reference_reconstruction("abcdefghij", DEC, ENC, max_len=4)[0]
    assert slots(first) == [("C", None, 0, False), ("<Rec>", None, 0, False),
                            ("text", B, ord("a"), True), ("text", ord("a"), ord("b"), True),
                            ("text", ord("b"), ord("c"), True), ("text", ord("c"), ord("d"), True)]


def test_reference_continuation_slots():
    """sequence_iterator_continuation + EmbedAugModel.forward: [C][<Cont>] then the continued half;
    the first continued token ("d") is input only, nothing is predicted before the block."""
    first = tasks.reference_continuation("abcdefghijklmnopqrstu", DEC, ENC, max_len=4)[0]
    assert slots(first) == [("C", None, 0, False), ("<Cont>", None, 0, False),
                            ("text", ord("d"), ord("e"), True), ("text", ord("e"), ord("f"), True),
                            ("text", ord("f"), ord("g"), True), ("text", ord("g"), ord("h"), True)]


TEXT = "The quick brown fox jumps over the lazy dog near the river bank at dawn. " * 4


def _continuations():
    rng = np.random.default_rng(0)
    yield from tasks.reference_continuation(TEXT, DEC, ENC, max_len=16)
    for _ in range(50):  # arc_jax's layout: random prefix lengths, 0 included
        yield tasks.continuation(TEXT, rng, DEC, ENC, max_len=16)
        yield tasks.continuation("abcdefghij", rng, DEC, ENC, max_len=16)


def test_no_target_before_the_first_compressed_slot_carries_loss():
    """Checklist row 16: the reference never predicts a continued token without the compressed text.
    arc_jax's former layout made the first continued token the target, with loss, of the slot right
    before the block. In every layout, no slot before the first compressed one carries loss."""
    for sample in _continuations():
        assert not any(sample.loss_mask[: sample.insertions[0]]), as_lists(sample)
        packed = slots(sample)
        first = next(i for i, s in enumerate(packed) if s[0] == "C")
        assert not any(loss for _, _, _, loss in packed[:first])


# --- the arc_jax layout, kept as an option -----------------------------------------------------------

def test_arc_jax_continuation_keeps_its_prefix_and_reads_its_first_token_as_input():
    """layout = "arc_jax": <s> + a random 0..n prefix + [C][<Cont>] + the continuation; the first
    continued token is input only (row 16), the rest of the continuation carries loss."""
    for seed in range(20):
        s = tasks.continuation(TEXT, np.random.default_rng(seed), DEC, ENC, max_len=16)
        at = s.insertions[0]
        assert s.x[0] == B and s.special == "cont"
        cont = DEC.decode(s.x[at:]) + DEC.decode(s.y[-1:])
        assert len(cont) == 16 and DEC.decode(s.x[1:at]) + ENC.decode(s.contexts[0]) + cont in TEXT
        assert [bool(m) for m in s.loss_mask] == [False] * at + [True] * (len(s.x) - at)


def test_arc_jax_layout_with_encoder_bos_eos():
    """encoder_bos_eos applies to arc_jax's windows too: BOS when the compressed span starts the
    document, EOS when a reconstruction span ends it."""
    rng = np.random.default_rng(0)
    whole = tasks.reconstruction("abcdefghij", rng, DEC, ENC, max_len=16, encoder_bos_eos=True)
    assert list(whole.contexts[0]) == [EB] + e("abcdefghij") + [EE]
    assert list(tasks.reconstruction("abcdefghij", rng, DEC, ENC, max_len=16).contexts[0]) == e("abcdefghij")
    unique = "".join(chr(0x100 + i) for i in range(40))  # every span's place in the text is known
    for task in (tasks.reconstruction, tasks.continuation):
        for _ in range(30):
            ctx = list(task(unique, rng, DEC, ENC, max_len=16, encoder_bos_eos=True).contexts[0])
            text = ENC.decode(ctx)
            start = unique.index(text)
            assert (ctx[0] == EB) == (start == 0)
            assert (ctx[-1] == EE) == (task is tasks.reconstruction and start + len(text) == len(unique))


# --- one document -> its samples, as the pipeline asks --------------------------------------------

def test_reference_pretraining_draws_one_task_per_document():
    """embed_llm/data/dataset.py:sequence_iterator (L172-181): np.random.rand() < continuation per
    document; every window of that document goes to that task."""
    rng = np.random.default_rng(1)
    tasks_of = []
    for _ in range(400):
        samples = tasks.pretraining_samples(TEXT, rng, DEC, ENC, max_len=16, continuation_prob=0.8)
        assert len({s.task for s in samples}) == 1
        tasks_of.append(samples[0].task)
        assert len(samples) == (19 if samples[0].task == "reconstruction" else 9)
    assert abs(tasks_of.count("continuation") / 400 - 0.8) < 0.06
    one = tasks.pretraining_samples(TEXT, rng, DEC, ENC, max_len=16, continuation_prob=0.8, layout="arc_jax")
    assert len(one) == 1


# --- config fields ------------------------------------------------------------------------------------

BASE = {"dir": "/tmp", "sources": "x.jsonl", "encoder_tokenizer": "t", "task": "pretrain", "max_len": 8,
        "continuation_prob": 0.8, "shape": {"encoder_rows": 1, "encoder_len": 8, "decoder_rows": 1, "decoder_len": 8}}


def test_data_config_defaults_are_the_reference():
    data = parse_data_config(BASE)
    assert (data.layout, data.encoder_bos_eos, data.rand_filter, data.single_task_batches) == ("reference", True, 0.8,
                                                                                               True)


@pytest.mark.parametrize("field, value, message", [
    ("layout", "paper", "config.data.layout='paper': expected one of 'reference', 'arc_jax'"),
    ("rand_filter", 1.5, "config.data.rand_filter=1.5: expected a number in [0, 1]"),
    ("continuation_prob", -0.1, "config.data.continuation_prob=-0.1: expected a probability in [0, 1]"),
    ("answer_layout", "spaced", "config.data.answer_layout='spaced': expected one of 'reference', 'eval'"),
])
def test_data_config_values_are_checked(field, value, message):
    with pytest.raises(ConfigError) as error:
        parse_data_config({**BASE, field: value})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
