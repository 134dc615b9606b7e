"""Generation: KV-cached decoding against the uncached forward pass, sampling, stopping, reuse of
compressed contexts, the tokenizer-level pipeline and `arc-jax generate`."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_tokenizers as tiny

import arc_jax
from arc_jax.inference import decoding
from arc_jax.cli import main
from arc_jax.data.bad_records import DataError
from arc_jax.data.tokenizers import load_tokenizer
from arc_jax.model import ARCEncoder, Decoder, pack_decoder_inputs, pack_encoder_inputs
from arc_jax.model.decoder import unstack_layers
from arc_jax.model.kv_cache import empty_cache
from arc_jax.tools.roundtrip import tiny_configs
from arc_jax.inference.sampling import sample_next, top_p_mask

VOCAB = 512  # room for the tiny sentencepiece tokenizers (360 and 450 pieces)
N_NEW = 8


def random_params(module, seed, *inputs):
    """Parameters of `module` drawn with numpy (no compiled init): std 1/sqrt(fan-in) for the
    matrices, 1 for the embeddings, 1 + noise for norm scales and special vectors."""
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"])
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name in ("scale", "cont_tok", "rec_tok"):
            return (1 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        std = 1.0 if name == "embedding" else (leaf.shape[-1] / np.prod(shape[1 if path[0].key == "layers" else 0:]))
        return (np.sqrt(std) * rng.standard_normal(shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def models():
    enc_cfg, dec_cfg = tiny_configs()
    dec_cfg = dataclasses.replace(dec_cfg, vocab_size=VOCAB)
    enc_cfg = dataclasses.replace(enc_cfg, backbone=dataclasses.replace(enc_cfg.backbone, vocab_size=VOCAB))
    enc_inputs, _ = pack_encoder_inputs([[[1, 2, 3, 4]]], enc_cfg)
    tokens = np.zeros((1, 8), np.int32)
    return (arc_jax.Encoder(enc_cfg, random_params(ARCEncoder(enc_cfg), 1, enc_inputs)),
            arc_jax.DecoderLM(dec_cfg, random_params(Decoder(dec_cfg), 2, tokens, tokens, tokens)))


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory):
    """Two different sentencepiece models, so a mix-up of the encoder's and decoder's shows."""
    root = tmp_path_factory.mktemp("tok")
    lines = tiny.corpus()
    (root / "enc.model").write_bytes(tiny.train_sentencepiece(lines, vocab_size=360))
    (root / "dec.model").write_bytes(tiny.train_sentencepiece(lines, vocab_size=450))
    return root / "enc.model", root / "dec.model"


@pytest.fixture(scope="module")
def pipe(models, tokenizer_files):
    enc, dec = models
    return arc_jax.ARCPipeline(enc, dec, decoder_index=0, encoder_tokenizer=tokenizer_files[0],
                               decoder_tokenizer=tokenizer_files[1])


def ids(seed, n):
    return np.random.default_rng(seed).integers(3, VOCAB, n).tolist()


@pytest.fixture(scope="module")
def prompts(models):
    """Four prompts of different lengths: plain text, one block inside, two blocks, a block first."""
    enc, _ = models
    blocks = enc.compress([ids(1, 37), ids(2, 12), ids(3, 21)])
    return [[ids(4, 5)],
            [ids(5, 3), blocks[0], ids(6, 7)],
            [ids(7, 2), blocks[1], ids(8, 4), blocks[2], ids(9, 11)],
            [blocks[2], ids(10, 1)]]


def greedy_reference(dec, prompt, n):
    """Argmax of the full uncached forward pass (DecoderLM.logits) on the growing sequence."""
    out = []
    for _ in range(n):
        out.append(int(np.argmax(dec.logits(prompt + [out] if out else prompt)[-1])))
    return out


def test_cached_forward_gives_the_uncached_logits(models):
    # Prefill two right-padded rows of different lengths (scanned layers, stacked cache), then
    # decode 3 tokens each (unrolled layers, one cache per layer), as generation does.
    _, dec = models
    unrolled = dec.module.clone(scan_layers=False)
    prefill = jax.jit(functools.partial(dec.module.apply, method=Decoder.cached_forward))
    decode = jax.jit(functools.partial(unrolled.apply, method=Decoder.cached_forward))
    unrolled_variables = {"params": unstack_layers(dec.params, dec.config.n_layers)}
    seqs = [ids(20, 6), ids(21, 11)]
    tokens = np.zeros((2, 16), np.int32)
    for r, s in enumerate(seqs):
        tokens[r, : len(s)] = s
    positions = np.broadcast_to(np.arange(16, dtype=np.int32), (2, 16))
    lengths = np.array([len(s) for s in seqs], np.int32)
    logits, cache = prefill({"params": dec.params}, tokens, positions, empty_cache(dec.config, 2, 16), lengths - 1)
    cache = cache.per_layer(32)
    for step in range(4):
        for r, s in enumerate(seqs):
            np.testing.assert_allclose(np.asarray(logits[r]), dec.logits([s])[-1], atol=1e-5, rtol=1e-5)
        new = np.array([[ids(30 + step, 1)[0]], [ids(40 + step, 1)[0]]], np.int32)
        at = (lengths + step)[:, None]
        if step == 3:  # a token at the wrong position (a gap after the prompt) gives other logits
            wrong, _ = decode(unrolled_variables, new, at + 1, cache, np.zeros(2, np.int32))
        logits, cache = decode(unrolled_variables, new, at, cache, np.zeros(2, np.int32))
        seqs = [s + [int(t)] for s, t in zip(seqs, new[:, 0])]
    for r, s in enumerate(seqs):
        np.testing.assert_allclose(np.asarray(logits[r]), dec.logits([s])[-1], atol=1e-5, rtol=1e-5)
        assert np.abs(np.asarray(wrong[r]) - np.asarray(logits[r])).max() > 1e-2


def test_unrolled_layout_gives_the_scanned_logits(models):
    _, dec = models
    rows = np.stack([ids(50, 12), ids(51, 12)]).astype(np.int32)
    segments = np.ones_like(rows)
    positions = np.broadcast_to(np.arange(12, dtype=np.int32), rows.shape)
    scanned = dec.module.apply({"params": dec.params}, rows, segments, positions)
    unrolled = dec.module.clone(scan_layers=False).apply(
        {"params": unstack_layers(dec.params, dec.config.n_layers)}, rows, segments, positions)
    np.testing.assert_allclose(np.asarray(unrolled), np.asarray(scanned), atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_argmax_of_the_full_forward_pass(models, prompts):
    _, dec = models
    out = decoding.generate_ids(dec, prompts, max_new_tokens=N_NEW)
    expected = [greedy_reference(dec, p, N_NEW) for p in prompts]
    assert out == expected
    # The comparison is sharp: decoding after a one-position gap would give other tokens.
    assert _greedy_with_gap(dec, prompts[2], N_NEW, gap=0) == expected[2]
    assert _greedy_with_gap(dec, prompts[2], N_NEW, gap=1) != expected[2]


def _greedy_with_gap(dec, prompt, n, gap):
    """Greedy tokens with the generated tokens placed `gap` positions after the prompt."""
    inputs, table, _ = pack_decoder_inputs([prompt], row_len=64)
    tokens, index = inputs.tokens.copy(), inputs.compressed_index
    length = int(inputs.segment_ids.sum())
    positions = np.arange(64, dtype=np.int32)[None] + gap * (np.arange(64) >= length)[None]
    forward = jax.jit(dec.module.apply)
    out = []
    for _ in range(n):
        logits = forward({"params": dec.params}, tokens, np.ones_like(tokens), positions, table, index)
        out.append(int(np.argmax(np.asarray(logits)[0, length + len(out) - 1])))
        tokens[0, length + len(out) - 1] = out[-1]
    return out


def test_other_lengths_in_the_same_buckets_compile_nothing(models, prompts):
    _, dec = models
    full = decoding.generate_ids(dec, prompts, max_new_tokens=N_NEW)
    compiled = decoding._prefill._cache_size(), decoding._decode._cache_size()
    # 3 rows pad to the same 4, and the cache still holds the longest prompt + 5 new tokens.
    decoding.generate_ids(dec, prompts[:3], max_new_tokens=N_NEW - 3)
    assert (decoding._prefill._cache_size(), decoding._decode._cache_size()) == compiled
    # One new token comes from the prefill alone: no decode program, the same first tokens.
    assert decoding.generate_ids(dec, prompts, max_new_tokens=1) == [row[:1] for row in full]
    assert (decoding._prefill._cache_size(), decoding._decode._cache_size()) == compiled


def test_sampling_is_reproducible_and_differs_from_greedy(models, prompts):
    _, dec = models
    greedy = decoding.generate_ids(dec, prompts, max_new_tokens=N_NEW)
    a = decoding.generate_ids(dec, prompts, max_new_tokens=N_NEW, temperature=1.5, seed=1)
    assert decoding.generate_ids(dec, prompts, max_new_tokens=N_NEW, temperature=1.5, seed=1) == a
    assert a != greedy
    assert decoding.generate_ids(dec, prompts, max_new_tokens=N_NEW, temperature=1.5, seed=2) != a
    assert all(len(row) == N_NEW for row in a)


def test_top_p_keeps_only_the_nucleus():
    probs = jnp.array([[0.10, 0.45, 0.30, 0.15]])
    assert top_p_mask(probs, 0.4).tolist() == [[False, True, False, False]]  # the top token is always kept
    assert top_p_mask(probs, 0.6).tolist() == [[False, True, True, False]]
    assert top_p_mask(probs, 1.0).tolist() == [[True, True, True, True]]
    logits = jnp.broadcast_to(jnp.log(probs), (4000, 4))  # 4000 rows, each drawn independently
    draw = jax.jit(sample_next, static_argnames="greedy")
    draws = np.asarray(draw(logits, jax.random.key(0), 1.0, 0.6, greedy=False))
    assert set(draws.tolist()) == {1, 2}
    assert abs((draws == 1).mean() - 0.45 / 0.75) < 0.03  # renormalised within the nucleus
    # Temperature sharpens: at 0.25 the top token dominates the same nucleus.
    cold = np.asarray(draw(logits, jax.random.key(0), 0.25, 0.6, greedy=False))
    assert (cold == 1).mean() > 0.8


def test_top_p_breaks_ties_by_sort_order():
    # The kept set is the smallest one reaching top_p, even among equal probabilities: four tokens
    # at 0.25 with top_p 0.3 keep two (0 and 0.25 come before them), the lower ids.
    probs = jnp.full((1, 4), 0.25)
    assert top_p_mask(probs, 0.3).tolist() == [[True, True, False, False]]
    probs = jnp.array([[0.2, 0.4, 0.2, 0.2]])
    assert top_p_mask(probs, 0.5).tolist() == [[True, True, False, False]]


def test_a_stop_token_ends_its_row_early(models, prompts):
    _, dec = models
    free = decoding.generate_ids(dec, prompts, max_new_tokens=N_NEW)
    row = next(r for r in free if len(set(r)) > 2)
    stop = next(t for t in row[1:] if t != row[0])
    out = decoding.generate_ids(dec, prompts, max_new_tokens=N_NEW, stop_ids=[stop])
    for got, full in zip(out, free):
        assert got == (full[: full.index(stop)] if stop in full else full)
    assert any(len(got) < N_NEW for got in out)


def test_contexts_compressed_once_serve_several_prompts(pipe):
    docs = ["The encoder reads the document.", "Zürich data model, naïve context."]
    questions = ["\nQuestion: what reads?\nAnswer:", "\nQuestion: which city?\nAnswer:"]
    once = pipe.compress(docs)
    reused = pipe.generate([["Document:", once[0], "Document:", once[1], q] for q in questions], max_new_tokens=6)
    fresh = [pipe.generate([["Document:", pipe.compress(docs[:1])[0], "Document:", pipe.compress(docs[1:])[0], q]],
                           max_new_tokens=6)[0] for q in questions]
    assert reused == fresh


def test_generate_reads_bos_then_the_pieces_and_returns_text(pipe, tokenizer_files):
    enc_tok, dec_tok = load_tokenizer(tokenizer_files[0]), load_tokenizer(tokenizer_files[1])
    doc = "The compressed context reads vectors."
    [block] = pipe.compress([doc])
    assert block.n_tokens == len(enc_tok.encode(doc)) != len(dec_tok.encode(doc))  # the encoder's tokenizer
    assert block.vectors.shape == (-(-block.n_tokens // 4) + 1, 96) and block.ratio > 1
    prompts = [[block, "\nQuestion: what?\nAnswer:"], "The decoder", ["Document:", block, "\nAnswer:"]]
    texts = pipe.generate(prompts, max_new_tokens=N_NEW)
    assert all(isinstance(t, str) for t in texts) and any(texts)
    as_ids = [[[dec_tok.bos_id], block.vectors, dec_tok.encode("\nQuestion: what?\nAnswer:")],
              [[dec_tok.bos_id], dec_tok.encode("The decoder")],
              [[dec_tok.bos_id], dec_tok.encode("Document:"), block, dec_tok.encode("\nAnswer:")]]
    out = pipe.generate_ids(as_ids, max_new_tokens=N_NEW, stop_ids=[dec_tok.eos_id], vocab_limit=dec_tok.vocab_size)
    assert texts == [dec_tok.decode(o) for o in out]


def test_tokenizers_are_found_next_to_the_checkpoints(models, tokenizer_files, tmp_path):
    enc, dec = models
    enc.save(tmp_path / "enc")
    dec.save(tmp_path / "dec")
    (tmp_path / "enc" / "tokenizer.model").write_bytes(tokenizer_files[0].read_bytes())
    loaded = arc_jax.ARCPipeline(arc_jax.load_encoder(tmp_path / "enc"), arc_jax.load_decoder(tmp_path / "dec"))
    assert loaded.compress(["the token"])[0].n_tokens == len(load_tokenizer(tokenizer_files[0]).encode("the token"))
    assert loaded.generate_ids([[[5, 6, 7]]], max_new_tokens=2)  # no tokenizer needed
    with pytest.raises(DataError, match=r"no decoder tokenizer next to .*dec.*decoder_tokenizer=PATH"):
        loaded.generate(["hello"])
    (tmp_path / "dec" / "tokenizer.model").write_bytes(tokenizer_files[1].read_bytes())
    assert isinstance(arc_jax.ARCPipeline(loaded.encoder, arc_jax.load_decoder(tmp_path / "dec")).generate(
        ["the"], max_new_tokens=2)[0], str)


def test_bad_inputs_are_reported(models, pipe):
    enc, dec = models
    with pytest.raises(ValueError, match="decoder_index=2"):
        arc_jax.ARCPipeline(enc, dec, decoder_index=2)
    other_head = arc_jax.Compressed(enc.compress([[5, 6, 7]], decoder=1)[0], 3, decoder_index=1)
    with pytest.raises(ValueError, match="compressed for decoder 1"):
        pipe.generate_ids([[[1, 2], other_head]], max_new_tokens=2)
    with pytest.raises(ValueError, match="width 64"):
        pipe.generate_ids([[[1, 2], np.zeros((2, 64), np.float32)]], max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        pipe.generate_ids([[[1, VOCAB]]], max_new_tokens=2)
    with pytest.raises(ValueError, match="no tokens"):
        pipe.generate_ids([[[]]], max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p"):
        pipe.generate_ids([[[1]]], temperature=1.0, top_p=0.0)
    assert pipe.generate_ids([[[1]]], max_new_tokens=0) == [[]]


def test_cli_prints_the_answer(models, pipe, tokenizer_files, tmp_path, capsys):
    enc, dec = models
    enc.save(tmp_path / "enc")
    dec.save(tmp_path / "dec")
    docs = ["The encoder reads the document.", "Pooling the context vectors."]
    for i, doc in enumerate(docs):
        (tmp_path / f"doc{i}.txt").write_text(doc)
    prompt = "Question: what reads?\nAnswer:"
    args = ["generate", "--encoder", str(tmp_path / "enc"), "--decoder", str(tmp_path / "dec"),
            "--context", str(tmp_path / "doc0.txt"), str(tmp_path / "doc1.txt"), "--prompt", prompt,
            "--max-new-tokens", str(N_NEW), "--encoder-tokenizer", str(tokenizer_files[0]),
            "--decoder-tokenizer", str(tokenizer_files[1])]
    assert main(args) == 0
    blocks = pipe.compress(docs)
    expected = pipe.generate([[blocks[0], "\n", blocks[1], "\n", prompt]], max_new_tokens=N_NEW)[0]
    assert capsys.readouterr().out == expected + "\n"
    missing = args[:5] + ["--context", str(tmp_path / "nope.txt")] + args[8:]
    assert main(missing) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("arc-jax generate: error: ") and "nope.txt" in err[0]
