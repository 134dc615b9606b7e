"""Generated jsonl data shaped like the paper's, for `arc-jax data check` on the paper configs
without the real corpora:

    python -m arc_jax.tools.paper_shaped_data OUT
    arc-jax data check --config configs/pretrain_arc8_llama3.py --config.data.dir=OUT \\
        --config.data.encoder_tokenizer=OUT/tokenizer.model --config.model.decoders.0.tokenizer=OUT/tokenizer.model

OUT gets the layout the paper configs read under config.data.dir (configs/README.md): a web-crawl
stand-in, data/pretrain/crawl_train.jsonl (long documents, which the pipeline cuts into the
reference's windows itself), and one file per source of the fine-tuning mixture under data/finetune/
(configs/common/paper.py's FINETUNE_MIXTURE), with passages, questions and answers of the lengths
below, and long documents with an instruction and an answer, data/long_context/train.jsonl
(configs/long_context_finetune_llama2chat.py). The text is words of the synthetic people corpus and
the tokenizer is its sentencepiece model (arc_jax.demo.synthetic; no download): the word counts are
set from that tokenizer's measured tokens per word, so that texts take about the token counts below.
The lengths are estimates in Llama-tokenizer tokens, not measured on the real data: crawl documents
log-normal around 700 tokens; per fine-tuning source, passages a record and their length, question
and answer length, each log-normal with a spread of 0.4 around these means; long-context records
half like NarrativeQA's (stories and scripts, most longer than the 32k tokens the task keeps) and
half like Qasper's (papers of a few thousand tokens).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

import numpy as np

CRAWL_MEDIAN_TOKENS, CRAWL_SIGMA, CRAWL_RANGE = 700, 1.0, (64, 16_000)
SPREAD = 0.4

# source: (passages a record, tokens a passage, question tokens, answer tokens)
FINETUNE_LENGTHS = {
    "adversarialqa": (1, 160, 14, 5), "freebaseqa": (4, 140, 16, 4), "asqa": (4, 150, 15, 80),
    "msmarco": (4, 80, 8, 15), "sciq": (1, 110, 18, 3), "drop": (1, 280, 14, 3),
    "low_res_short_translation": (1, 30, 10, 35), "low_res_mid_translation": (1, 150, 10, 170),
    "short_translation": (1, 30, 10, 35), "dialogsum": (1, 200, 8, 30), "samsum": (1, 130, 8, 28),
    "wikisum": (1, 1500, 8, 110), "parasci": (1, 45, 10, 45),
}

# long-context kind: (median document tokens, spread, instruction tokens, answer tokens); documents are
# cut at LONG_CONTEXT_RANGE's top, past the 32 chunks of 1024 tokens the task keeps
LONG_CONTEXT_LENGTHS = {"narrativeqa": (50_000, 0.6, 12, 6), "qasper": (5_000, 0.4, 14, 15)}
LONG_CONTEXT_RANGE = (512, 34_000)


def _words_source(folder: pathlib.Path) -> tuple[list[str], float]:
    """The synthetic corpus's words, and its tokenizer's tokens per word on them."""
    from arc_jax.data.tokenizers import load_tokenizer
    from arc_jax.demo.synthetic import build_tiny_data

    paths = build_tiny_data(folder / "synthetic")
    words = " ".join(json.loads(line)["text"] for line in paths["pretrain"].read_text().splitlines()).split()
    tokenizer = load_tokenizer(str(paths["tokenizer"]))
    sample = words[:20_000]
    return words, len(tokenizer.encode(" ".join(sample))) / len(sample)


class _Text:
    def __init__(self, words: list[str], tokens_per_word: float, rng: np.random.Generator):
        self.words, self.tokens_per_word, self.rng = words, tokens_per_word, rng

    def __call__(self, tokens: float) -> str:
        n = max(1, round(tokens / self.tokens_per_word))
        start = int(self.rng.integers(0, len(self.words) - n)) if n < len(self.words) else 0
        return " ".join((self.words * (1 + n // len(self.words)))[start:start + n])

    def length(self, mean: float, sigma: float = SPREAD) -> float:
        return float(self.rng.lognormal(np.log(mean), sigma))


def write(folder: str | pathlib.Path, n_documents: int = 4000, n_records: int = 2000, seed: int = 0,
          n_long_documents: int = 400) -> None:
    folder = pathlib.Path(folder).expanduser()
    words, tokens_per_word = _words_source(folder)
    text = _Text(words, tokens_per_word, np.random.default_rng(seed))
    shutil.copyfile(folder / "synthetic" / "tokenizer.model", folder / "tokenizer.model")
    crawl = folder / "data" / "pretrain" / "crawl_train.jsonl"
    crawl.parent.mkdir(parents=True, exist_ok=True)
    with crawl.open("w") as f:
        for _ in range(n_documents):
            tokens = np.clip(text.length(CRAWL_MEDIAN_TOKENS, CRAWL_SIGMA), *CRAWL_RANGE)
            f.write(json.dumps({"text": text(tokens)}) + "\n")
    finetune = folder / "data" / "finetune"
    finetune.mkdir(parents=True, exist_ok=True)
    for name, (passages, passage_len, question_len, answer_len) in FINETUNE_LENGTHS.items():
        with (finetune / f"{name}.jsonl").open("w") as f:
            for _ in range(n_records):
                record = {"passages": [text(text.length(passage_len)) for _ in range(passages)],
                          "question": text(text.length(question_len)), "answer": text(text.length(answer_len))}
                f.write(json.dumps(record) + "\n")
    long_context = folder / "data" / "long_context" / "train.jsonl"
    long_context.parent.mkdir(parents=True, exist_ok=True)
    kinds = list(LONG_CONTEXT_LENGTHS.values())
    with long_context.open("w") as f:
        for i in range(n_long_documents):
            median, sigma, instruction_len, answer_len = kinds[i % len(kinds)]
            tokens = np.clip(text.length(median, sigma), *LONG_CONTEXT_RANGE)
            record = {"text": text(tokens), "instruction": text(text.length(instruction_len)),
                      "answer": text(text.length(answer_len))}
            f.write(json.dumps(record) + "\n")
    print(f"wrote {n_documents} crawl documents, {len(FINETUNE_LENGTHS)} x {n_records} fine-tuning records and "
          f"{n_long_documents} long-context records under {folder} "
          f"(synthetic tokenizer: {tokens_per_word:.2f} tokens a word)")


def build(folder: str | pathlib.Path, documents: int = 4000, records: int = 2000, seed: int = 0,
          long_documents: int = 400) -> None:
    """`write` once: what `config.data.generate = "paper_shaped"` asks for. A folder that already
    holds this data (its marker file names the same arguments) is left as it is."""
    folder = pathlib.Path(folder).expanduser()
    marker = folder / "paper_shaped.json"
    arguments = {"documents": documents, "records": records, "seed": seed, "long_documents": long_documents}
    if marker.exists() and json.loads(marker.read_text()) == arguments:
        return
    write(folder, documents, records, seed, long_documents)
    marker.write_text(json.dumps(arguments) + "\n")  # last, so that an interrupted write is redone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--documents", type=int, default=4000)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long-documents", type=int, default=400)
    args = parser.parse_args(argv)
    write(args.folder, args.documents, args.records, args.seed, args.long_documents)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
