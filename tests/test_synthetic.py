"""The synthetic knowledge corpus, its tokenizer and configs/tiny_cpu.py: determinism, the held-out
split, answers only in documents, caching, tokenizer round trips, and configs that build models."""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from arc_jax.demo import synthetic
from arc_jax.data.bad_records import DataError
from arc_jax.data.mixture import parse_sources
from arc_jax.data.packing import PackingShape
from arc_jax.data.sources import parse_record
from arc_jax.data.tasks import QARecord
from arc_jax.data.tokenizers import SentencePieceTokenizer, load_tokenizer
from arc_jax.model import BackboneConfig, EncoderConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMALL = {"n_entities": 60, "held_out": 12}  # enough people for every check, fast to regenerate
FILES = (synthetic.PRETRAIN_FILE, synthetic.QA_TRAIN_FILE, synthetic.QA_EVAL_FILE)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def mtimes(folder, names):
    return {name: os.stat(folder / name).st_mtime_ns for name in names}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The default corpus and tokenizer, built once for the module."""
    folder = tmp_path_factory.mktemp("tiny")
    return folder, synthetic.build_tiny_data(folder)


def test_same_seed_gives_identical_files_in_another_process(data, tmp_path):
    folder, _ = data
    code = ("import sys; from arc_jax.demo import synthetic; synthetic.build_tiny_data(sys.argv[1])")
    env = dict(os.environ, PYTHONHASHSEED="12345")  # str hashing differs: output must not depend on it
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, cwd=ROOT)
    for name in FILES + (synthetic.MANIFEST_FILE, synthetic.TOKENIZER_FILE):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name


def test_different_seed_gives_different_files(tmp_path):
    a = synthetic.write_tiny_corpus(tmp_path / "a", seed=0, **SMALL)
    b = synthetic.write_tiny_corpus(tmp_path / "b", seed=1, **SMALL)
    for key in ("pretrain", "qa_train", "qa_eval"):
        assert a[key].read_bytes() != b[key].read_bytes()


def test_tokenizer_training_is_deterministic(data):
    folder, paths = data
    lines = synthetic._training_lines(folder)
    again = synthetic.train_tokenizer_model(lines, synthetic.DEFAULT_VOCAB_SIZE)
    assert again == paths["tokenizer"].read_bytes()


def test_files_are_jsonl_with_the_expected_fields(data):
    _, paths = data
    pretrain = read_jsonl(paths["pretrain"])
    assert pretrain and all(set(r) == {"text"} and r["text"].strip() for r in pretrain)
    for key in ("qa_train", "qa_eval"):
        records = read_jsonl(paths[key])
        assert records
        for r in records:
            assert {"question", "answer", "passages"} <= set(r)
            assert isinstance(r["answer"], list) and all(isinstance(a, str) and a for a in r["answer"])
            assert isinstance(r["passages"], list) and len(r["passages"]) == 1
            QARecord.from_json(r)  # what the fine-tuning task reads
    # the source layer's own field check accepts every line
    with open(paths["qa_eval"], "rb") as f:
        for line in f:
            _, reason = parse_record(line.rstrip(b"\n"), {"question": str, "answer": (str, list),
                                                          "passages": (str, list)})
            assert reason is None, reason


def test_corpus_size_and_manifest(data):
    _, paths = data
    manifest = json.loads(paths["manifest"].read_text())
    n, held = synthetic.DEFAULT_N_ENTITIES, synthetic.DEFAULT_HELD_OUT
    assert manifest["entities"] == {"train": n - held, "held_out": held}
    attributes = len(synthetic.ATTRIBUTES)
    assert manifest["records"][synthetic.QA_TRAIN_FILE] == (n - held) * attributes
    assert manifest["records"][synthetic.QA_EVAL_FILE] == held * attributes
    assert len(read_jsonl(paths["pretrain"])) == manifest["records"][synthetic.PRETRAIN_FILE]


def test_names_are_unique_and_held_out_people_never_appear_in_training_files(data):
    _, paths = data
    corpus = synthetic.generate_corpus()
    people = corpus.train_people + corpus.held_out_people
    words = [w for p in people for w in (p.first_name, p.last_name)]
    assert len(set(words)) == len(words)
    training_text = paths["pretrain"].read_text() + paths["qa_train"].read_text()
    eval_entities = {r["entity"] for r in read_jsonl(paths["qa_eval"])}
    assert eval_entities == {p.name for p in corpus.held_out_people}
    training_words = set(re.findall(r"\w+", training_text))
    held_out_words = {w for p in corpus.held_out_people for w in (p.first_name, p.last_name)}
    assert not held_out_words & training_words
    # and every training person's facts are in the pretraining text
    pretrain_text = paths["pretrain"].read_text()
    assert all(p.name in pretrain_text for p in corpus.train_people)


def test_every_answer_is_in_its_passage_and_not_in_its_question(data):
    _, paths = data
    for key in ("qa_train", "qa_eval"):
        for r in read_jsonl(paths[key]):
            assert r["entity"] in r["question"]
            for answer in r["answer"]:
                assert answer in r["passages"][0], (answer, r["passages"][0])
                assert answer.lower() not in r["question"].lower(), (answer, r["question"])


def test_fine_tuning_people_are_new_and_their_documents_state_one_to_six_facts(data, tmp_path):
    """write_fresh_people with qa_people: the pretraining documents are those written without it, and
    the QA is about other people (no name word shared with the corpus or the documents), each asked
    every attribute their own document states, from qa_min_attributes to all six."""
    folder, _ = data
    for name in (synthetic.QA_TRAIN_FILE, synthetic.QA_EVAL_FILE):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    plain = synthetic.write_fresh_people(tmp_path, 30, seed=3)
    documents = plain["documents"].read_bytes()
    paths = synthetic.write_fresh_people(tmp_path, 30, seed=3, qa_people=200, qa_min_attributes=2)
    assert paths["documents"].read_bytes() == documents
    records = read_jsonl(paths["qa"])
    by_person = {}
    for r in records:
        by_person.setdefault(r["entity"], []).append(r)
        assert r["answer"][0] in r["passages"][0] and r["answer"][0].lower() not in r["question"].lower()
    assert len(by_person) == 200
    counts = {len(rs) for rs in by_person.values()}
    assert counts == {2, 3, 4, 5, 6}
    for rs in by_person.values():
        assert len({r["passages"][0] for r in rs}) == 1 and len({r["attribute"] for r in rs}) == len(rs)
    taken = set(synthetic.corpus_name_words(tmp_path)) | set(re.findall(r"\w+", documents.decode()))
    assert not {w for name in by_person for w in name.split()} & taken
    with pytest.raises(ValueError, match="qa_min_attributes=0"):
        synthetic.write_fresh_people(tmp_path, 30, seed=3, qa_people=10, qa_min_attributes=0)


def test_question_templates_spell_no_answer():
    """No fixed word list value is inside a question template: only documents hold answers."""
    values = synthetic.PROFESSIONS + synthetic.COLOURS + synthetic.PETS
    for templates in synthetic.QUESTION_TEMPLATES.values():
        for template in templates:
            assert not [v for v in values if v in template.lower()], template


def test_documents_vary_in_order_and_phrasing():
    corpus = synthetic.generate_corpus(**SMALL)
    passages = [r["passages"][0] for r in corpus.qa_train[:: len(synthetic.ATTRIBUTES)]]
    first_sentences = {re.sub(r"\b[A-Z][a-z]+\b", "X", p.split(". ")[0]) for p in passages}
    assert len(first_sentences) >= 8  # not one fixed template order


def test_reuse_when_parameters_match_and_regenerate_when_they_differ(tmp_path):
    names = FILES + (synthetic.MANIFEST_FILE,)
    synthetic.write_tiny_corpus(tmp_path, **SMALL)
    before = mtimes(tmp_path, names)
    synthetic.write_tiny_corpus(tmp_path, **SMALL)
    assert mtimes(tmp_path, names) == before

    old_eval = (tmp_path / synthetic.QA_EVAL_FILE).read_bytes()
    synthetic.write_tiny_corpus(tmp_path, n_entities=SMALL["n_entities"], held_out=SMALL["held_out"] + 1)
    manifest = json.loads((tmp_path / synthetic.MANIFEST_FILE).read_text())
    assert manifest["params"]["held_out"] == SMALL["held_out"] + 1
    assert (tmp_path / synthetic.QA_EVAL_FILE).read_bytes() != old_eval

    # a damaged file no longer matches its recorded hash: rebuilt
    synthetic.write_tiny_corpus(tmp_path, **SMALL)
    good = (tmp_path / synthetic.PRETRAIN_FILE).read_bytes()
    (tmp_path / synthetic.PRETRAIN_FILE).write_bytes(good[: len(good) // 2])
    synthetic.write_tiny_corpus(tmp_path, **SMALL)
    assert (tmp_path / synthetic.PRETRAIN_FILE).read_bytes() == good
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary files left


def test_tokenizer_is_cached_and_retrained_when_its_inputs_change(tmp_path):
    with pytest.raises(DataError, match="write_tiny_corpus"):
        synthetic.tiny_tokenizer(tmp_path)
    synthetic.write_tiny_corpus(tmp_path, **SMALL)
    path = synthetic.tiny_tokenizer(tmp_path, vocab_size=400)
    before = mtimes(tmp_path, [synthetic.TOKENIZER_FILE])
    assert synthetic.tiny_tokenizer(tmp_path, vocab_size=400) == path
    assert mtimes(tmp_path, [synthetic.TOKENIZER_FILE]) == before
    synthetic.tiny_tokenizer(tmp_path, vocab_size=380)
    assert load_tokenizer(path).vocab_size == 380
    model = path.read_bytes()
    synthetic.write_tiny_corpus(tmp_path, seed=3, **SMALL)  # a new corpus: the tokenizer follows
    synthetic.tiny_tokenizer(tmp_path, vocab_size=380)
    assert path.read_bytes() != model
    with pytest.raises(DataError, match="vocab_size"):
        synthetic.tiny_tokenizer(tmp_path, vocab_size=200)  # fewer than the 256 byte pieces


def test_split_digits_off_merges_numbers_and_is_part_of_the_cache_key(tmp_path):
    """split_digits=False: BPE may merge digits, so every year and height becomes one piece (at
    vocabulary 2048); the default splits every digit. The option is in tokenizer_params.json
    only when off (default manifests stay as they were) and changing it retrains the tokenizer."""
    paths = synthetic.write_tiny_corpus(tmp_path)  # the default corpus: numbers frequent enough to merge
    numbers = sorted({r["answer"][0] for r in read_jsonl(paths["qa_eval"])
                      if r["attribute"] in ("birth_year", "height")})
    tok_path = synthetic.tiny_tokenizer(tmp_path, vocab_size=1024)
    params = json.loads((tmp_path / synthetic.TOKENIZER_MANIFEST_FILE).read_text())["params"]
    assert "split_digits" not in params
    split = load_tokenizer(tok_path)
    for number in numbers:  # "▁" then one piece a digit
        assert len(split.encode(" " + number)) == 1 + len(number), number
    default_model = tok_path.read_bytes()

    synthetic.tiny_tokenizer(tmp_path, vocab_size=2048, split_digits=False)
    assert json.loads((tmp_path / synthetic.TOKENIZER_MANIFEST_FILE).read_text())["params"]["split_digits"] is False
    merged = load_tokenizer(tok_path)
    for number in numbers:  # held-out people's years and heights: one piece, "▁" joined to the digits
        assert [merged.decode([i]) for i in merged.encode(" " + number)] == [" " + number]

    synthetic.tiny_tokenizer(tmp_path, vocab_size=2048)  # the same size, digits split again: retrained
    assert all(len(load_tokenizer(tok_path).encode(" " + n)) == 1 + len(n) for n in numbers)
    synthetic.tiny_tokenizer(tmp_path, vocab_size=1024)  # the default again: retrained, the same bytes
    assert tok_path.read_bytes() == default_model


def _contains(tokens: list[int], part: list[int]) -> bool:
    return any(tokens[i:i + len(part)] == part for i in range(len(tokens) - len(part) + 1))


@pytest.mark.parametrize("split_digits", [True, False])
def test_every_answer_is_tokenised_in_its_document_as_on_its_own(tmp_path, split_digits):
    """A model answers by copying the answer's tokens from the document: they must be there. Digits
    and punctuation share a unicode script, so BPE without a cut would learn "▁1922." (the document's
    "born in 1922.") while the answer "1922" is "▁1922": no year could then be copied."""
    paths = synthetic.build_tiny_data(tmp_path, vocab_size=2048, split_digits=split_digits)
    tokenizer = load_tokenizer(paths["tokenizer"])
    for record in read_jsonl(paths["qa_eval"]):
        answer = tokenizer.encode(" " + record["answer"][0])
        assert _contains(tokenizer.encode(record["passages"][0]), answer), record


UNICODE_TEXTS = ["Emoji 🙂🚀 and 🦜, CJK 東京, Ελληνικά, café naïve", "  two  spaces\tand\n\nnewlines  ", "",
                 "<s> </s> <pad> <unk> are text here", "\x00\x7f control bytes"]


def test_tokenizer_round_trips_corpus_and_any_unicode_text(data):
    _, paths = data
    tok = load_tokenizer(paths["tokenizer"])
    assert isinstance(tok, SentencePieceTokenizer)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 3)
    assert tok.vocab_size == synthetic.DEFAULT_VOCAB_SIZE
    texts = [r["text"] for r in read_jsonl(paths["pretrain"])[:20]]
    texts += [r["passages"][0] + r["question"] + r["answer"][0] for r in read_jsonl(paths["qa_eval"])[:30]]
    for text in texts + UNICODE_TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert not {0, 1, 2, 3} & set(ids)  # no unk: byte fallback; control pieces never from text
    # no dummy prefix: pieces encoded separately decode to the joined text (how tasks build streams)
    a, b = "Document:", "\nQuestion: In which year was Velora born?\nAnswer: 1892"
    assert tok.decode(tok.encode(a) + tok.encode(b)) == a + b


def load_tiny_cpu_config():
    spec = importlib.util.spec_from_file_location("tiny_cpu", ROOT / "configs" / "tiny_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_tiny_cpu_config_builds_models_and_names_its_data(data):
    config = load_tiny_cpu_config()
    encoder = EncoderConfig.from_dict(config.model.encoder.to_dict())
    decoder = BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict())
    assert encoder.pooling_factors == (4,)
    assert encoder.projectors[0].out_dim == decoder.dim
    assert encoder.backbone.vocab_size == decoder.vocab_size == config.data.corpus.vocab_size
    config.data.corpus.vocab_size = 512  # one reference: the model follows the tokenizer's size
    assert config.model.encoder.backbone.vocab_size == config.model.decoders[0].backbone.vocab_size == 512

    config = load_tiny_cpu_config()
    folder, paths = data
    assert config.data.generate == "tiny_corpus" and config.data.task == "pretrain" and not config.data.strict
    assert config.data.dir.startswith("~")
    # the defaults are build_tiny_data's: the module's corpus is the config's corpus
    assert synthetic.build_tiny_data(folder, **config.data.corpus.to_dict()) == paths
    assert load_tokenizer(paths["tokenizer"]).vocab_size == config.data.corpus.vocab_size
    sources = parse_sources(config.data.sources.format(data_dir=folder))
    assert [s.path for s in sources] == [str(paths["pretrain"])]
    for name in (config.data.encoder_tokenizer, config.model.decoders[0].tokenizer):
        assert pathlib.Path(name.format(data_dir=folder)) == paths["tokenizer"]
    PackingShape(**config.data.shape.to_dict()).stage_lens(encoder)
    assert config.data.worker_count == 0 and 0 < config.data.continuation_prob < 1
    assert config.max_steps > 0 and config.checkpoint_every > 0
