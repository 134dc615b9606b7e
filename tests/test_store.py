"""The compressed store (arc_jax/inference/store.py, pq.py; `arc-jax index`, `generate --store`,
`eval --store`): vectors read back as online compression gives them, resume after a kill, several
processes, refusal of another encoder, product quantisation against faiss itself."""

import dataclasses
import json
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

import arc_jax
from arc_jax.errors import DataError
from arc_jax.inference import pq as pq_codec
from arc_jax.inference import store as store_module
from arc_jax.model import ARCEncoder, Decoder, pack_encoder_inputs
from arc_jax.tools.roundtrip import tiny_configs
from xla_flags import with_devices

HEAD = 1  # the tiny encoder's second decoder head: a store is for one head
VOCAB = 512  # room for a tiny sentencepiece tokenizer (byte fallback: > 259 pieces)


def configs():
    enc, dec = tiny_configs()
    return (dataclasses.replace(enc, backbone=dataclasses.replace(enc.backbone, vocab_size=VOCAB)),
            dataclasses.replace(dec, vocab_size=VOCAB))


def random_params(module, seed, *inputs):
    """Parameters drawn with numpy from the module's shapes (no compiled init)."""
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"])
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name in ("scale", "cont_tok", "rec_tok"):
            return (1 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        fan_in = 1.0 if name == "embedding" else shape[-2] if len(shape) > 1 else 1.0
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def make_encoder(seed=1, dtype=None):
    cfg, _ = configs()
    inputs, _ = pack_encoder_inputs([[[1, 2, 3, 4]]], cfg)
    return arc_jax.Encoder(cfg, random_params(ARCEncoder(cfg), seed, inputs), dtype)


@pytest.fixture(scope="module")
def encoder():
    return make_encoder()


@pytest.fixture(scope="module")
def decoder():
    _, cfg = configs()
    tokens = np.zeros((1, 8), np.int32)
    return arc_jax.DecoderLM(cfg, random_params(Decoder(cfg), 2, tokens, tokens, tokens))


# 14 texts of 17..40 tokens: one encoder row length (64), units of 4 records.
TEXTS = [np.random.default_rng(i).integers(3, VOCAB, 17 + (7 * i) % 24).tolist() for i in range(14)]
UNIT = 4
OPTIONS = dict(decoder_index=HEAD, records_per_unit=UNIT, batch_size=UNIT, chunk_rows=16, progress=False)


def online(encoder, texts=TEXTS):
    """Encoder.compress by units: the batches the store compresses (so the same packing)."""
    return [b for i in range(0, len(texts), UNIT) for b in encoder.compress(texts[i: i + UNIT], decoder=HEAD)]


@pytest.fixture(scope="module")
def built(encoder, tmp_path_factory):
    """A float32 store of the float32 encoder, uninterrupted."""
    return arc_jax.write_store(encoder, TEXTS, tmp_path_factory.mktemp("s") / "store",
                               record_ids=[f"doc{i}" for i in range(len(TEXTS))], **OPTIONS)


def raw_arrays(path):
    """Every array of a store as written (gaps between units included) and its store.json."""
    names = ["vectors", "codes", "codebooks", "special"] + [f"records/{n}" for n in store_module._RECORD_ARRAYS]
    out = {n: store_module._read_whole(path / n) for n in names if (path / n).exists()}
    return out, (path / "store.json").read_bytes(), (path / "ids.txt").read_bytes()


def assert_same_store(a, b):
    arrays_a, meta_a, ids_a = raw_arrays(a)
    arrays_b, meta_b, ids_b = raw_arrays(b)
    assert meta_a == meta_b and ids_a == ids_b and arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        assert arrays_a[name].dtype == arrays_b[name].dtype
        assert np.array_equal(arrays_a[name].view(np.uint8), arrays_b[name].view(np.uint8)), name


def test_round_trip_reads_back_the_online_vectors_bit_exact(built, encoder):
    expected = online(encoder)
    blocks = built.read(range(len(TEXTS)))
    assert len(built) == len(TEXTS) and built.ids[3] == "doc3" and built.decoder_index == HEAD
    for i, (block, want) in enumerate(zip(blocks, expected)):
        assert block.vectors.dtype == np.float32 and np.array_equal(block.vectors, want), i
        assert block.n_tokens == len(TEXTS[i]) and block.decoder_index == HEAD
    assert np.array_equal(built[5].vectors, expected[5]) and np.array_equal(built[-1].vectors, expected[-1])
    assert np.array_equal(built.by_id("doc9").vectors, expected[9])
    assert built.meta["n_vectors"] == sum(len(b) - 1 for b in expected)  # <Cont> stored once
    with pytest.raises(KeyError, match="no record with id 'nope'"):
        built.by_id("nope")
    with pytest.raises(IndexError):
        built[len(TEXTS)]


def test_bf16_store_holds_the_bf16_rounding_of_the_vectors(encoder, tmp_path):
    import ml_dtypes

    store = arc_jax.write_store(encoder, TEXTS[:6], tmp_path / "bf16", vector_dtype="bfloat16", **OPTIONS)
    expected = online(encoder, TEXTS[:6])
    assert store.bytes_per_vector == 2 * store.dim
    for block, want in zip(store.read(range(6)), expected):
        rounded = want[:-1].astype(ml_dtypes.bfloat16).astype(np.float32)
        assert np.array_equal(block.vectors[:-1], rounded) and np.array_equal(block.vectors[-1], want[-1])


def test_resume_after_a_kill_mid_index_ends_with_the_same_store(built, encoder, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = store_module._Compressor.__call__

    def dies_at_the_third_batch(self, texts):
        calls["n"] += 1
        if calls["n"] == 3 + 1:  # the start compresses one text for <Cont>; then batches 1, 2, 3
            raise KeyboardInterrupt
        return real(self, texts)

    monkeypatch.setattr(store_module._Compressor, "__call__", dies_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        arc_jax.write_store(encoder, TEXTS, tmp_path / "store", record_ids=[f"doc{i}" for i in range(len(TEXTS))],
                            **OPTIONS)
    assert store_module._done_units(tmp_path / "store") == {0, 1}
    with pytest.raises(DataError, match="incomplete, 2 of 4 units written"):
        arc_jax.CompressedStore(tmp_path / "store")
    monkeypatch.setattr(store_module._Compressor, "__call__", real)
    arc_jax.write_store(encoder, TEXTS, tmp_path / "store", record_ids=[f"doc{i}" for i in range(len(TEXTS))],
                        **OPTIONS)
    assert_same_store(tmp_path / "store", built.path)


def test_each_process_writes_its_own_units(built, encoder, tmp_path):
    ids = [f"doc{i}" for i in range(len(TEXTS))]
    with pytest.raises(DataError, match="process 0 starts a store"):
        arc_jax.write_store(encoder, TEXTS, tmp_path / "store", record_ids=ids, process_index=1, process_count=2,
                            **OPTIONS)
    first = arc_jax.write_store(encoder, TEXTS, tmp_path / "store", record_ids=ids, process_index=0,
                                process_count=2, **OPTIONS)
    assert first is None and store_module._done_units(tmp_path / "store") == {0, 1}
    arc_jax.write_store(encoder, TEXTS, tmp_path / "store", record_ids=ids, process_index=1, process_count=2,
                        **OPTIONS)
    assert_same_store(tmp_path / "store", built.path)


def test_another_encoder_is_refused_naming_both_hashes(built, encoder):
    other = make_encoder(seed=7)
    mine, theirs = store_module.weights_sha256(encoder.params), store_module.weights_sha256(other.params)
    assert mine != theirs
    arc_jax.CompressedStore(built.path, encoder=encoder)  # its own encoder: accepted
    for wrong in (other, arc_jax.Encoder(encoder.config, encoder.params, "bfloat16")):
        with pytest.raises(DataError, match=f"weights sha256 {mine[:16]} \\(float32\\), this encoder's "
                                            f"{store_module.weights_sha256(wrong.params)[:16]}"):
            arc_jax.CompressedStore(built.path, encoder=wrong)
    pooled_by_2 = arc_jax.Encoder(dataclasses.replace(encoder.config, compress_rates=(-2,)), encoder.params)
    with pytest.raises(DataError, match="configs differ in compress_rates"):
        arc_jax.CompressedStore(built.path, encoder=pooled_by_2)
    with pytest.raises(DataError, match="another encoder"):  # nor resumed by one
        arc_jax.write_store(other, TEXTS, built.path, record_ids=built.ids, **OPTIONS)


def test_generation_from_stored_blocks_equals_generation_from_online_compression(built, encoder, decoder):
    pipe = arc_jax.ARCPipeline(encoder, decoder, decoder_index=HEAD)
    online_blocks = online(encoder)
    prompts_from = lambda blocks: [[[5, 6, 7], blocks[i], [8, 9]] for i in (0, 5, 13)]
    stored = pipe.generate_ids(prompts_from(built.read(range(len(TEXTS)))), max_new_tokens=6)
    assert stored == pipe.generate_ids(prompts_from(online_blocks), max_new_tokens=6)
    assert all(len(ids) == 6 for ids in stored)


def test_pq_decoding_on_the_device_equals_faiss_decode():
    x = np.random.default_rng(0).standard_normal((600, 24)).astype(np.float32)
    for m, bits in ((6, 8), (4, 5), (3, 10)):
        codebooks = pq_codec.train_codebooks(x, m, bits) if 2 ** bits <= 600 else \
            np.random.default_rng(1).standard_normal((m, 2 ** bits, 24 // m)).astype(np.float32)
        codes = pq_codec.encode(x, codebooks, bits)
        assert codes.shape == (600, pq_codec.code_size(m, bits))
        np.testing.assert_array_equal(np.asarray(pq_codec.decode(codes, codebooks, bits)),
                                      pq_codec.faiss_decode(codes, codebooks, bits))


def test_pq_store_error_is_faiss_own(encoder, tmp_path):
    import faiss

    store = arc_jax.write_store(encoder, TEXTS, tmp_path / "pq", pq="24:4", **OPTIONS)
    vectors = np.concatenate([b[:-1] for b in online(encoder)])
    decoded = np.concatenate([b.vectors[:-1] for b in store.read(range(len(TEXTS)))])
    # faiss itself, trained on the same vectors with the same seed, reconstructs them as well.
    quantizer = faiss.ProductQuantizer(vectors.shape[1], 24, 4)
    quantizer.cp.seed, quantizer.cp.min_points_per_centroid = 1234, 1
    quantizer.train(vectors)
    faiss_error = np.mean((quantizer.decode(quantizer.compute_codes(vectors)) - vectors) ** 2)
    store_error = np.mean((decoded - vectors) ** 2)
    assert store_error == pytest.approx(faiss_error, rel=1e-3) and store_error < 0.5 * np.var(vectors)
    assert store.bytes_per_vector == 12 and store.storage == "pq 24:4"
    assert np.array_equal(store[0].vectors[-1], online(encoder, TEXTS[:1])[0][-1])  # <Cont> kept exact


def test_store_json_records_the_encoder_identity(built, encoder):
    meta = json.loads((built.path / "store.json").read_text())
    assert meta["encoder"]["weights_sha256"] == store_module.weights_sha256(encoder.params)
    assert meta["encoder"]["config"]["compress_rates"] == [-4] and meta["encoder"]["dtype"] == "float32"


def test_a_store_path_that_is_something_else_is_refused(encoder, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not a compressed store"):
        arc_jax.write_store(encoder, TEXTS[:2], tmp_path, **OPTIONS)
    with pytest.raises(DataError, match="not a compressed store"):
        arc_jax.CompressedStore(tmp_path)
    shutil.rmtree(tmp_path)


# --- The command line ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(encoder, decoder, tmp_path_factory):
    """The models on disk with one sentencepiece tokenizer for both sides."""
    import tiny_tokenizers as tiny

    root = tmp_path_factory.mktemp("models")
    encoder.save(root / "enc")
    decoder.save(root / "dec")
    (root / "tok.model").write_bytes(tiny.train_sentencepiece(tiny.corpus(), vocab_size=360))
    return root


def model_args(root, head=HEAD):
    tok = str(root / "tok.model")
    return ["--encoder", str(root / "enc"), "--encoder-tokenizer", tok, "--decoder-index", str(head)]


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_index_skips_bad_records_and_generate_reads_stored_ones(checkpoints, tmp_path, capsys):
    from arc_jax.cli import main

    corpus = write_jsonl(tmp_path / "corpus.jsonl", [
        {"id": "eiffel", "text": "The tower reads the compressed context."},
        {"text": "  Pooling the vectors of the document.  "},
        '{"text": "torn',
        {"id": "eiffel", "text": "a second record with the same id"},
        {"title": "no text field"},
        {"text": ""},
        {"id": 7, "text": ["The decoder reads vectors.", "A second passage."]}])
    assert main(["index", *model_args(checkpoints), "--data", str(corpus), "--out", str(tmp_path / "st"),
                 "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    for line, reason in ((3, "malformed JSON"), (4, "id 'eiffel' already used"), (5, "missing field 'text'"),
                         (6, "empty field 'text'")):
        assert f"corpus.jsonl:{line}: {reason}" in out
    assert "indexed 3 records" in out and "(4 skipped)" in out
    store = arc_jax.CompressedStore(tmp_path / "st")
    assert store.ids == ["eiffel", "corpus.jsonl:2", "7"] and list(store.lines) == [1, 2, 7]

    # generate --store --id: the stored blocks where online compression would put the texts.
    pipe = arc_jax.ARCPipeline(arc_jax.load_encoder(checkpoints / "enc"), arc_jax.load_decoder(checkpoints / "dec"),
                               HEAD, checkpoints / "tok.model", checkpoints / "tok.model")
    texts = ["The decoder reads vectors.", "Pooling the vectors of the document."]  # list fields: first passage
    expected = pipe.generate([[b for block in pipe.compress(texts) for b in (block, "\n")] + ["Answer:"]],
                             max_new_tokens=4)[0]
    generate = ["generate", *model_args(checkpoints), "--decoder", str(checkpoints / "dec"), "--decoder-tokenizer",
                str(checkpoints / "tok.model"), "--store", str(tmp_path / "st"), "--id", "7", "corpus.jsonl:2",
                "--prompt", "Answer:", "--max-new-tokens", "4"]
    assert main(generate) == 0 and capsys.readouterr().out == expected + "\n"
    assert main(generate[:-6] + ["nope"] + generate[-4:]) == 2
    assert "no record with id 'nope'" in capsys.readouterr().err
    other_head = model_args(checkpoints, head=0)
    assert main(["generate", *other_head, *generate[7:]]) == 2
    assert "holds vectors for decoder head 1, not for --decoder-index 0" in capsys.readouterr().err


def test_eval_with_the_store_equals_eval_with_online_compression(checkpoints, tmp_path, capsys):
    from arc_jax.cli import main

    words = ["crimson", "surgeon", "1982", "canary", "Stowport", "quiet"]
    bench = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": f"What is fact {i}?", "answer": [w], "passages": [f"Fact {i} is {w}. The encoder reads it.",
                                                                      "An unused second passage."]}
        for i, w in enumerate(words)])
    assert main(["index", *model_args(checkpoints), "--data", str(bench), "--field", "passages",
                 "--out", str(tmp_path / "st"), "--batch-size", "1"]) == 0
    # Eval compresses a batch of one document at a time here, as the index did: the same vectors.
    evaluate = ["eval", *model_args(checkpoints), "--decoder", str(checkpoints / "dec"), "--decoder-tokenizer",
                str(checkpoints / "tok.model"), "--data", str(bench), "--shots", "1", "--modes", "compressed",
                "--batch-size", "1", "--max-new-tokens", "3"]
    assert main(evaluate + ["--out", str(tmp_path / "online")]) == 0
    assert main(evaluate + ["--out", str(tmp_path / "stored"), "--store", str(tmp_path / "st")]) == 0
    capsys.readouterr()
    predictions = [(tmp_path / run / "predictions" / "qa.compressed.jsonl").read_text() for run in ("online", "stored")]
    assert predictions[0] == predictions[1] and len(predictions[0].splitlines()) == 5
    results = [json.loads((tmp_path / run / "results.json").read_text())["benchmarks"] for run in ("online", "stored")]
    assert results[0] == results[1]

    # A store of another field, or read with another encoder: refused before generating.
    assert main(["index", *model_args(checkpoints), "--data", str(bench), "--field", "question",
                 "--out", str(tmp_path / "questions")]) == 0
    capsys.readouterr()
    assert main(evaluate + ["--out", str(tmp_path / "x"), "--store", str(tmp_path / "questions")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "qa.jsonl:" in err[0] and "not the document eval reads" in err[0]
    assert main(evaluate + ["--out", str(tmp_path / "y"), "--store", str(tmp_path / "st"), "--dtype", "bfloat16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written by another encoder" in err[0] and "(float32), this encoder's" in err[0]


def test_rows_sharded_over_two_local_devices_give_the_same_vectors(tmp_path):
    """In a process with two (fake CPU) devices each compress call's rows are split over both: the
    store equals Encoder.compress on one device, bit for bit."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
import jax, numpy as np, arc_jax, test_store as t
from arc_jax.inference import store as s
assert len(jax.local_devices()) == 2
enc = t.make_encoder()
assert s._Compressor(enc, t.HEAD, np.float32).rows.mesh.size == 2
st = arc_jax.write_store(enc, t.TEXTS, {str(tmp_path / "store")!r}, **t.OPTIONS)
one_device = t.online(enc)  # Encoder.compress runs on the default device only
assert all(np.array_equal(a.vectors, b) for a, b in zip(st.read(range(len(t.TEXTS))), one_device))
print("same")
"""
    env = {**os.environ, "XLA_FLAGS": with_devices(2), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-2000:]
