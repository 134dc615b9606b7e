"""The paper-shaped data generator (`config.data.generate = "paper_shaped"`) writes once."""

import json

from arc_jax.data.pipeline import generate_corpus
from arc_jax.tools.paper_shaped_data import FINETUNE_LENGTHS


def test_paper_shaped_data_is_written_once_per_arguments(tmp_path):
    folder = tmp_path / "paper"
    generate_corpus("paper_shaped", str(folder), {"documents": 5, "records": 2})
    crawl = folder / "data" / "pretrain" / "crawl_train.jsonl"
    assert len(crawl.read_text().splitlines()) == 5
    assert sorted(p.stem for p in (folder / "data" / "finetune").glob("*.jsonl")) == sorted(FINETUNE_LENGTHS)
    assert all(json.loads(line)["text"] for line in crawl.read_text().splitlines())
    written = crawl.stat().st_mtime_ns
    generate_corpus("paper_shaped", str(folder), {"documents": 5, "records": 2})
    assert crawl.stat().st_mtime_ns == written  # already there: left as it is
    generate_corpus("paper_shaped", str(folder), {"documents": 7, "records": 2})
    assert len(crawl.read_text().splitlines()) == 7  # other arguments: written again
