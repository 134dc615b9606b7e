"""A deterministic synthetic knowledge corpus about fictional people, and a tokenizer trained on it.

Everything is generated here from random syllables, fixed word lists and sentence templates (no
copied text), so answers exist only in the generated documents: a model cannot know them from
anywhere else. Used by `configs/tiny_cpu.py` and by the CPU demo.

    folder/pretrain.jsonl   {"text"}: several training people's facts per document, fresh phrasing
    folder/qa_train.jsonl   {"question", "answer": [str], "passages": [the person's document],
    folder/qa_eval.jsonl     "entity", "attribute"}: one record per (person, attribute)
    folder/corpus.json      the generation parameters and the files' sha256 (reuse check)
    folder/tokenizer.model  sentencepiece BPE with byte fallback, trained on the training files
                            (its parameters and hashes in tokenizer_params.json); digits are single
                            pieces unless split_digits=False (the CPU demo's choice: at its vocabulary
                            of 1536 every year and height is then one piece, as every town is)

Held-out people (the last `held_out` generated) appear only in qa_eval.jsonl. Files are written
under a temporary name and renamed, and reused while corpus.json matches the parameters and hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import random
import re
from collections.abc import Iterable, Sequence

from arc_jax.convert.atomic import write_file_atomic
from arc_jax.data.bad_records import DataError

# Bump when the generated text changes for the same parameters: cached corpora are then rebuilt.
GENERATOR_VERSION = 2
TOKENIZER_VERSION = 2

PRETRAIN_FILE, QA_TRAIN_FILE, QA_EVAL_FILE = "pretrain.jsonl", "qa_train.jsonl", "qa_eval.jsonl"
PRETRAIN_EVAL_FILE = "pretrain_eval.jsonl"  # documents about the held-out people (evaluation loss)
MANIFEST_FILE = "corpus.json"
TOKENIZER_FILE, TOKENIZER_MANIFEST_FILE = "tokenizer.model", "tokenizer_params.json"

DEFAULT_N_ENTITIES = 300
DEFAULT_HELD_OUT = 60
DEFAULT_PRETRAIN_COPIES = 2
DEFAULT_VOCAB_SIZE = 1024

# Person names and towns use disjoint syllables, so a name never spells its own town.
NAME_SYLLABLES = ("ve", "lo", "ra", "quen", "di", "mar", "tho", "el", "sa", "ri", "an", "do", "ka", "li", "bre",
                  "ni", "so", "ta", "fen", "or", "il", "ma", "ry", "zel", "ca", "dri", "mo", "ne", "va", "pa",
                  "lu", "gor", "the", "wyn", "ber", "tis", "ju", "xa", "phi", "nor")
TOWN_SYLLABLES = ("brak", "dun", "hol", "wes", "tarn", "mir", "cal", "stow", "pell", "grim", "ash", "fol",
                  "kes", "lan", "rook", "sel", "thorn", "ul", "wick", "bram", "cor", "ged", "hask", "pim")
TOWN_SUFFIXES = ("ford", "holm", "bury", "mere", "dale", "stead", "haven", "port", "gate", "moor", "by", "ton")
PROFESSIONS = ("baker", "carpenter", "pilot", "librarian", "surgeon", "potter", "astronomer", "fisherman",
               "architect", "beekeeper", "violinist", "chemist", "gardener", "translator", "blacksmith",
               "cartographer")
COLOURS = ("crimson", "amber", "teal", "violet", "ochre", "scarlet", "indigo", "olive", "silver", "turquoise",
           "magenta", "lavender")
PETS = ("owl", "tortoise", "ferret", "parrot", "goat", "hedgehog", "rabbit", "lizard", "donkey", "goldfish",
        "canary", "hamster")
# 24 towns, 24 years, 24 heights: in the demo's tokenizer every value is one piece, as colours, pets
# and professions are: the demo's decoder reads one-piece values but did not learn to copy random
# multi-piece town names or digit-by-digit numbers (notes/lm_experiments.md).
TOWNS = tuple(syllable.capitalize() + suffix for syllable, suffix in zip(TOWN_SYLLABLES, TOWN_SUFFIXES * 2))
BIRTH_YEARS = (1970, 1993)
HEIGHTS_CM = (170, 193)

ATTRIBUTES = ("town", "birth_year", "profession", "colour", "height", "pet")

# {ref}: the person's full or first name; {a_x}: the value with its article. No template starts
# with a lowercase value, so every answer appears verbatim in its document.
FACT_TEMPLATES = {
    "town": ("{ref} was born in {town}.", "{ref} comes from the town of {town}.", "The home town of {ref} is {town}.",
             "{ref} was born and raised in {town}.", "Long ago, {ref} left {town}, the town of their birth."),
    "birth_year": ("{ref} was born in {birth_year}.", "The year of birth of {ref} is {birth_year}.",
                   "{ref} came into the world in {birth_year}.", "In {birth_year}, {ref} was born."),
    "profession": ("{ref} works as {a_profession}.", "By trade, {ref} is {a_profession}.",
                   "{ref} earns a living as {a_profession}.", "The profession of {ref} is that of {a_profession}."),
    "colour": ("The favourite colour of {ref} is {colour}.", "{ref} likes the colour {colour} best.",
               "Of all colours, {ref} loves {colour} the most.", "Ask {ref} about colours and the answer is {colour}."),
    "height": ("{ref} is {height} centimetres tall.", "{ref} stands {height} centimetres tall.",
               "At {height} centimetres, {ref} is easy to spot in a crowd.",
               "The height of {ref} is {height} centimetres."),
    "pet": ("{ref} keeps {a_pet} as a pet.", "{ref} lives with a pet {pet}.", "Every morning {ref} feeds {a_pet}.",
            "The pet of {ref} is {a_pet}."),
}
FILLER_TEMPLATES = ("Few people know much about {ref}.", "Neighbours describe {ref} as quiet and kind.",
                    "{ref} rarely talks about the past.", "Letters to {ref} often arrive late.")
QUESTION_TEMPLATES = {
    "town": ("In which town was {name} born?", "Which town does {name} come from?", "What is the home town of {name}?"),
    "birth_year": ("In which year was {name} born?", "What is the year of birth of {name}?"),
    "profession": ("What does {name} do for a living?", "What is the profession of {name}?"),
    "colour": ("What is the favourite colour of {name}?", "Which colour does {name} like best?"),
    "height": ("How tall is {name}, in centimetres?", "What is the height of {name} in centimetres?"),
    "pet": ("Which animal does {name} keep as a pet?", "What kind of pet does {name} have?"),
}


@dataclasses.dataclass(frozen=True)
class Person:
    first_name: str
    last_name: str
    town: str
    birth_year: int
    profession: str
    colour: str
    height: int
    pet: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def name_words(self) -> set[str]:
        return {self.first_name, self.last_name}

    def answer(self, attribute: str) -> str:
        return str(getattr(self, attribute))


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _word(rng: random.Random, syllables: Sequence[str], low: int, high: int) -> str:
    return "".join(rng.choice(syllables) for _ in range(rng.randint(low, high))).capitalize()


def _questions(person: Person, attribute: str) -> list[str]:
    return [t.format(name=person.name) for t in QUESTION_TEMPLATES[attribute]]


def _leaks_answer(person: Person) -> bool:
    """Whether an answer is spelt inside one of the person's questions (then it could be guessed)."""
    return any(person.answer(a).lower() in q.lower() for a in ATTRIBUTES for q in _questions(person, a))


def generate_people(n: int, rng: random.Random) -> list[Person]:
    """n people whose name words (first and last) are all distinct: documents refer to a person by
    full or first name, and no word of one person's name names another."""
    people, name_words = [], set()
    attempts = 0
    while len(people) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot generate {n} people with unique names from {len(NAME_SYLLABLES)} syllables")
        person = Person(
            first_name=_word(rng, NAME_SYLLABLES, 2, 3), last_name=_word(rng, NAME_SYLLABLES, 2, 4), town=rng.choice(TOWNS),
            birth_year=rng.randint(*BIRTH_YEARS), profession=rng.choice(PROFESSIONS), colour=rng.choice(COLOURS),
            height=rng.randint(*HEIGHTS_CM), pet=rng.choice(PETS))
        words = person.name_words
        if len(words) < 2 or words & name_words or _leaks_answer(person):
            continue
        name_words |= words
        people.append(person)
    return people


def new_people(n: int, rng: random.Random, reserved: set[str] | frozenset[str]) -> list[Person]:
    """n people (name words all distinct) none of whose name words is in `reserved`."""
    extra = n // 10 + 10
    while True:
        people = [p for p in generate_people(n + extra, rng) if not p.name_words & reserved]
        if len(people) >= n:
            return people[:n]
        extra *= 2


def render_document(person: Person, rng: random.Random, attributes: Sequence[str] = ATTRIBUTES) -> str:
    """A few sentences stating the person's `attributes` (all by default), in random order and phrasing."""
    values = dataclasses.asdict(person) | {"a_profession": _with_article(person.profession),
                                           "a_pet": _with_article(person.pet)}
    templates = [rng.choice(FACT_TEMPLATES[a]) for a in attributes]
    if rng.random() < 0.5:  # a sentence without facts, so position alone does not locate a fact
        templates.append(rng.choice(FILLER_TEMPLATES))
    rng.shuffle(templates)
    sentences = []
    for i, template in enumerate(templates):
        ref = person.name if i == 0 or rng.random() < 0.5 else person.first_name  # full name first
        sentence = template.format(ref=ref, **values)
        sentences.append(sentence[0].upper() + sentence[1:])
    return " ".join(sentences)


def qa_records(people: Sequence[Person], rng: random.Random,
               attributes: Sequence[Sequence[str]] | None = None) -> list[dict]:
    """One QA record per (person, attribute), every record of a person on one rendering of its
    document; `attributes[i]`: the attributes person i's document states (default: all)."""
    records = []
    for i, person in enumerate(people):
        stated = ATTRIBUTES if attributes is None else attributes[i]
        passage = render_document(person, rng, stated)
        for attribute in stated:
            question = rng.choice(_questions(person, attribute))
            records.append({"question": question, "answer": [person.answer(attribute)], "passages": [passage],
                            "entity": person.name, "attribute": attribute})
    return records


@dataclasses.dataclass(frozen=True)
class Corpus:
    pretrain: list[dict]
    qa_train: list[dict]
    qa_eval: list[dict]
    pretrain_eval: list[dict]
    train_people: list[Person]
    held_out_people: list[Person]


def generate_corpus(seed: int = 0, n_entities: int = DEFAULT_N_ENTITIES, held_out: int = DEFAULT_HELD_OUT,
                    pretrain_copies: int = DEFAULT_PRETRAIN_COPIES) -> Corpus:
    """The corpus as records, a pure function of its arguments."""
    if not 0 < held_out < n_entities:
        raise ValueError(f"held_out={held_out} must be between 1 and n_entities - 1 (n_entities={n_entities})")
    if pretrain_copies < 1:
        raise ValueError(f"pretrain_copies={pretrain_copies} must be >= 1")
    rng = random.Random(f"arc_jax synthetic corpus {GENERATOR_VERSION} {seed}")  # str seeds are stable across runs
    people = generate_people(n_entities, rng)
    train_people, held_out_people = people[:-held_out], people[-held_out:]

    qa_train, qa_eval = qa_records(train_people, rng), qa_records(held_out_people, rng)
    pretrain = []
    for _ in range(pretrain_copies):  # each copy states every training person's facts once, in new words
        order = list(train_people)
        rng.shuffle(order)
        start = 0
        while start < len(order):
            size = rng.randint(2, 5)
            pretrain.append({"text": "\n\n".join(render_document(p, rng) for p in order[start: start + size])})
            start += size
    pretrain_eval = [{"text": render_document(p, rng)} for p in held_out_people]  # drawn last: the rest is unchanged
    return Corpus(pretrain, qa_train, qa_eval, pretrain_eval, train_people, held_out_people)


def _jsonl_bytes(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_json(path: pathlib.Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _files_match(folder: pathlib.Path, hashes: dict) -> bool:
    """Whether every listed file exists with its recorded sha256 (a truncated or edited file does not)."""
    for name, digest in hashes.items():
        try:
            if _sha256((folder / name).read_bytes()) != digest:
                return False
        except OSError:
            return False
    return bool(hashes)


def _corpus_paths(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    return {"pretrain": folder / PRETRAIN_FILE, "qa_train": folder / QA_TRAIN_FILE, "qa_eval": folder / QA_EVAL_FILE,
            "pretrain_eval": folder / PRETRAIN_EVAL_FILE, "manifest": folder / MANIFEST_FILE}


def write_tiny_corpus(folder: str | os.PathLike, seed: int = 0, n_entities: int = DEFAULT_N_ENTITIES,
                      held_out: int = DEFAULT_HELD_OUT,
                      pretrain_copies: int = DEFAULT_PRETRAIN_COPIES) -> dict[str, pathlib.Path]:
    """Write the corpus into `folder` (created if missing) unless corpus.json there already records
    these parameters and the files' hashes; returns the paths (pretrain, qa_train, qa_eval, pretrain_eval, manifest)."""
    folder = pathlib.Path(folder).expanduser()
    paths = _corpus_paths(folder)
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "n_entities": n_entities, "held_out": held_out,
              "pretrain_copies": pretrain_copies}
    manifest = _read_json(paths["manifest"])
    hashes = (manifest or {}).get("sha256", {})
    expected = {p.name for key, p in paths.items() if key != "manifest"}
    if manifest and manifest.get("params") == params and set(hashes) == expected and _files_match(folder, hashes):
        return paths
    corpus = generate_corpus(seed, n_entities, held_out, pretrain_copies)
    folder.mkdir(parents=True, exist_ok=True)
    contents = {PRETRAIN_FILE: _jsonl_bytes(corpus.pretrain), QA_TRAIN_FILE: _jsonl_bytes(corpus.qa_train),
                QA_EVAL_FILE: _jsonl_bytes(corpus.qa_eval), PRETRAIN_EVAL_FILE: _jsonl_bytes(corpus.pretrain_eval)}
    paths["manifest"].unlink(missing_ok=True)  # a crash mid-write then leaves no manifest claiming old files
    for name, data in contents.items():
        write_file_atomic(folder / name, data)
    manifest = {"params": params, "sha256": {name: _sha256(data) for name, data in contents.items()},
                "records": {PRETRAIN_FILE: len(corpus.pretrain), QA_TRAIN_FILE: len(corpus.qa_train),
                            QA_EVAL_FILE: len(corpus.qa_eval), PRETRAIN_EVAL_FILE: len(corpus.pretrain_eval)},
                "entities": {"train": len(corpus.train_people), "held_out": len(corpus.held_out_people)}}
    write_file_atomic(paths["manifest"], (json.dumps(manifest, indent=1) + "\n").encode())  # last: marks completion
    return paths


def _training_lines(folder: pathlib.Path) -> list[str]:
    """Tokenizer training text: the training files only (held-out people stay unseen), one paragraph a
    line, plus the few-shot frame the decoder reads."""
    lines = []
    for name in (PRETRAIN_FILE, QA_TRAIN_FILE):
        with open(folder / name, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if "text" in record:
                    lines += [p for p in record["text"].split("\n") if p]
                else:
                    lines.append(f"Document: {record['passages'][0]}")
                    lines.append(f"Question: {record['question']}")
                    lines.append(f"Answer: {record['answer'][0]}")
    return lines


_PRETOKENIZATION_DELIMITER = "\x1f"  # a control character no corpus text contains
_DIGIT_EDGE = re.compile(r"(?<=[0-9])(?=[^0-9\s])|(?<=[^0-9\s])(?=[0-9])")


def train_tokenizer_model(lines: Sequence[str], vocab_size: int, split_digits: bool = True) -> bytes:
    """A serialized sentencepiece BPE model: byte fallback (any text round-trips), digits split into
    single pieces (`split_digits`; False lets BPE merge them: " 1922" may be one piece, never merged
    with the punctuation after it),
    identity normalisation and no dummy prefix (decode(encode(a) + encode(b)) == a + b).
    unk 0, bos 1 (<s>), eos 2 (</s>), pad 3 (<pad>). One thread and a fixed seed: same bytes every time."""
    import sentencepiece

    # Digits and punctuation share a unicode script, so BPE would merge "1922." into one piece that
    # the answer "1922" never is: cut training text between digits and anything else.
    lines = [_DIGIT_EDGE.sub(_PRETOKENIZATION_DELIMITER, line) for line in lines]
    sentencepiece.set_random_generator_seed(0)
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, split_digits=split_digits, character_coverage=1.0, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, num_threads=1, input_sentence_size=0,
            shuffle_input_sentence=False, pretokenization_delimiter=_PRETOKENIZATION_DELIMITER, minloglevel=2)
    except RuntimeError as e:  # e.g. "Vocabulary size too high": the corpus is too small for vocab_size
        raise DataError(f"cannot train the tiny tokenizer with vocab_size={vocab_size}: {e}") from None
    return model.getvalue()


def tiny_tokenizer(folder: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB_SIZE,
                   split_digits: bool = True) -> pathlib.Path:
    """folder/tokenizer.model trained on the corpus written there by `write_tiny_corpus`; trained once
    and reused while tokenizer_params.json matches vocab_size, split_digits and the corpus hashes."""
    folder = pathlib.Path(folder).expanduser()
    corpus = _read_json(folder / MANIFEST_FILE)
    if not corpus or not _files_match(folder, corpus.get("sha256", {})):
        raise DataError(f"{folder}: no complete synthetic corpus here; run write_tiny_corpus({str(folder)!r}) first")
    path, manifest_path = folder / TOKENIZER_FILE, folder / TOKENIZER_MANIFEST_FILE
    params = {"tokenizer_version": TOKENIZER_VERSION, "vocab_size": vocab_size, "corpus_sha256": corpus["sha256"]}
    if not split_digits:  # recorded only when not the default: default tokenizers keep their manifest
        params["split_digits"] = False
    manifest = _read_json(manifest_path)
    if manifest and manifest.get("params") == params and _files_match(folder, manifest.get("sha256", {})):
        return path
    model = train_tokenizer_model(_training_lines(folder), vocab_size, split_digits)
    manifest_path.unlink(missing_ok=True)
    write_file_atomic(path, model)
    write_file_atomic(manifest_path, (json.dumps({"params": params, "sha256": {TOKENIZER_FILE: _sha256(model)}},
                                             indent=1) + "\n").encode())
    return path


def build_tiny_data(folder: str | os.PathLike, seed: int = 0, n_entities: int = DEFAULT_N_ENTITIES,
                    held_out: int = DEFAULT_HELD_OUT, pretrain_copies: int = DEFAULT_PRETRAIN_COPIES,
                    vocab_size: int = DEFAULT_VOCAB_SIZE, split_digits: bool = True) -> dict[str, pathlib.Path]:
    """Corpus and tokenizer in `folder` (what `config.data.generate = "tiny_corpus"` asks for): the
    paths of `write_tiny_corpus` plus "tokenizer"."""
    paths = write_tiny_corpus(folder, seed, n_entities, held_out, pretrain_copies)
    return paths | {"tokenizer": tiny_tokenizer(folder, vocab_size, split_digits)}


def corpus_name_words(folder: str | os.PathLike) -> frozenset[str]:
    """Every word of every person's name in the corpus written in `folder` (training and held-out
    people): new people must use none of them."""
    folder = pathlib.Path(folder).expanduser()
    return frozenset(w for name in (QA_TRAIN_FILE, QA_EVAL_FILE)
                     for line in (folder / name).read_text("utf-8").splitlines() if line.strip()
                     for w in json.loads(line)["entity"].split())


def write_fresh_people(folder: str | os.PathLike, n_people: int, seed: int = 0, *, qa_people: int = 0,
                       qa_min_attributes: int = len(ATTRIBUTES)) -> dict[str, pathlib.Path]:
    """Documents and QA records about new people (none of the corpus's in `folder`: their name words
    differ from every corpus person's), for training on facts no model has seen. Rewritten on every
    call (deterministic):
    - folder/fresh_documents.jsonl ({"text"}): one document each about `n_people` people, stating
      all their attributes;
    - folder/fresh_qa.jsonl (records as qa_train.jsonl): with `qa_people` 0, one per (person,
      attribute) on those documents; else about `qa_people` other new people (no name word shared
      with the documents' people either), each on a document of its own stating a random number,
      from `qa_min_attributes` to all, of that person's attributes."""
    if qa_people and not 1 <= qa_min_attributes <= len(ATTRIBUTES):
        raise ValueError(f"qa_min_attributes={qa_min_attributes}: expected 1 to {len(ATTRIBUTES)}")
    folder = pathlib.Path(folder).expanduser()
    reserved = corpus_name_words(folder)
    rng = random.Random(f"arc_jax fresh people {GENERATOR_VERSION} {seed}")
    people = new_people(n_people, rng, reserved)
    records = qa_records(people, rng)
    documents = list({r["passages"][0]: None for r in records})
    if qa_people:
        rng = random.Random(f"arc_jax fresh QA people {GENERATOR_VERSION} {seed}")
        qa_people_list = new_people(qa_people, rng, reserved.union(*(p.name_words for p in people)))
        stated = [rng.sample(ATTRIBUTES, rng.randint(qa_min_attributes, len(ATTRIBUTES))) for _ in qa_people_list]
        records = qa_records(qa_people_list, rng, stated)
    paths = {"documents": folder / "fresh_documents.jsonl", "qa": folder / "fresh_qa.jsonl"}
    write_file_atomic(paths["documents"], _jsonl_bytes({"text": d} for d in documents))
    write_file_atomic(paths["qa"], _jsonl_bytes(records))
    return paths
