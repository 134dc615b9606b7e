"""The paper-shaped data generator (`config.data.generate = "paper_shaped"`) writes once."""

import json

from arc_jax.data.pipeline import generate_corpus
from arc_jax.data.tokenizers import load_tokenizer
from arc_jax.tools.paper_shaped_data import FINETUNE_LENGTHS


def test_paper_shaped_data_is_written_once_per_arguments(tmp_path):
    folder = tmp_path / "paper"
    generate_corpus("paper_shaped", str(folder), {"documents": 5, "records": 2, "long_documents": 4})
    crawl = folder / "data" / "pretrain" / "crawl_train.jsonl"
    assert len(crawl.read_text().splitlines()) == 5
    assert sorted(p.stem for p in (folder / "data" / "finetune").glob("*.jsonl")) == sorted(FINETUNE_LENGTHS)
    assert all(json.loads(line)["text"] for line in crawl.read_text().splitlines())
    # long_context_finetune_llama2chat.py's records: half of them longer than the task's 32 chunks of 1024
    records = [json.loads(line) for line in (folder / "data" / "long_context" / "train.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(set(r) == {"text", "instruction", "answer"} for r in records)
    tokenizer = load_tokenizer(str(folder / "tokenizer.model"))
    tokens = [len(tokenizer.encode(r["text"])) for r in records]
    assert max(tokens[0::2]) > 32 * 1024 > max(tokens[1::2]), tokens  # NarrativeQA-like, then Qasper-like
    written = crawl.stat().st_mtime_ns
    generate_corpus("paper_shaped", str(folder), {"documents": 5, "records": 2, "long_documents": 4})
    assert crawl.stat().st_mtime_ns == written  # already there: left as it is
    generate_corpus("paper_shaped", str(folder), {"documents": 7, "records": 2, "long_documents": 4})
    assert len(crawl.read_text().splitlines()) == 7  # other arguments: written again
