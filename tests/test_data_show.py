"""`arc-jax data show`: the JSON contract, pieces that are exactly the packed decoder input, the loss
convention (a text token is marked when the decoder is trained to produce it), the human form."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from arc_jax.cli import main
from arc_jax.config_loading import load_config, to_plain
from arc_jax.data.config import parse_data_config
from arc_jax.data.pipeline import build_batches
from arc_jax.data.show import SPECIALS, batch_samples
from arc_jax.model.config import EncoderConfig
from tiny_shapes import two_a_row

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"
TASKS = {"reconstruction", "continuation", "few_shot", "long_context"}
FINETUNE = ["--config.data.task=finetune", "--config.data.sources={data_dir}/qa_train.jsonl:1:2", *two_a_row()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_data")


def show(data_dir, capsys, *args):
    assert main(["data", "show", "--config", str(CONFIG), f"--config.data.dir={data_dir}", *args]) == 0
    return capsys.readouterr().out


def first_batch(data_dir, *overrides):
    """The first batch of the pipeline `data show` reads, with its tokenizers, and its samples."""
    cfg = load_config(CONFIG, [f"--config.data.dir={data_dir}", *overrides])
    batches = build_batches(parse_data_config(cfg.data), EncoderConfig.from_dict(to_plain(cfg.model.encoder)),
                            cfg.seed, cfg.model.decoders[0].tokenizer, process_index=0, process_count=1)
    batch, _ = next(batches)
    dec, enc = batches.maker.decoder_tok, batches.maker.encoder_tok
    return batch, dec, enc, list(batch_samples(batch, 0, dec, enc))


def check_piece(p):
    if "special" in p:
        assert set(p) == {"special"} and p["special"] in ("rec", "cont")
    elif "compressed" in p:
        assert set(p) == {"compressed", "text"} and type(p["compressed"]) is int and p["compressed"] > 0
        assert isinstance(p["text"], str) and p["text"]
    else:
        assert set(p) == {"text", "loss"} and isinstance(p["text"], str) and type(p["loss"]) is bool


def test_json_lines_are_exactly_the_contract_and_the_first_samples(data_dir, capsys):
    lines = show(data_dir, capsys, "--n", "6", "--json").splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) == 6
    for obj in objects:
        assert set(obj) == {"task", "decoder", "pieces"} and obj["task"] in TASKS and obj["decoder"] == 0
        assert obj["pieces"] and all(check_piece(p) is None for p in obj["pieces"])
    _, _, _, samples = first_batch(data_dir)
    assert objects == [s.as_json() for s in samples[:6]]  # the first 6 samples of the first batch, in row order


def decoded_encoder_text(batch, enc, row, segment):
    return enc.decode(batch.encoder.tokens[row][batch.encoder.segment_ids[row] == segment].tolist())


def check_sample_is_its_segment(batch, dec, enc, s):
    """The pieces tile the sample's slots in order and each piece is what those slots read."""
    slots = np.flatnonzero(batch.segment_ids[s.row] == batch.segment_ids[s.row, s.spans[0][0]])
    assert [i for a, b in s.spans for i in range(a, b)] == slots.tolist()
    out_seg = batch.encoder.stages[-1].segment_ids
    out_len = out_seg.shape[1]
    special_base = batch.encoder.tokens.shape[0] * out_len
    index = batch.compressed_index[s.row]
    text_ids = []
    for p, (a, b) in zip(s.pieces, s.spans):
        if "special" in p:
            assert b - a == 1 and index[a] == special_base + SPECIALS.index(p["special"])
        elif "compressed" in p:
            rows, offsets = np.divmod(index[a:b], out_len)
            assert (index[a:b] >= 0).all() and (index[a:b] < special_base).all() and len(set(rows)) == 1
            segment = out_seg[rows[0], offsets]
            assert len(set(segment)) == 1 and segment[0] > 0
            assert p["compressed"] == b - a == (out_seg[rows[0]] == segment[0]).sum()  # all of that text's vectors
            plain = p["text"].replace("<bos>", "").replace("<eos>", "")  # the encoder may read them
            assert plain == decoded_encoder_text(batch, enc, rows[0], segment[0])
        else:
            assert (index[a:b] == -1).all()
            text_ids += batch.tokens[s.row, a:b].tolist()
    text = "".join(p["text"] for p in s.pieces if "loss" in p)
    assert text.replace("<bos>", "") == dec.decode([t for t in text_ids if t != dec.bos_id])


def expected_loss(batch, row, slots):
    """The convention from the batch alone: a text token carries loss when the text slot before it
    predicts it with loss (across a compressed block: the last text slot before the block)."""
    text = [j for j in slots if batch.compressed_index[row, j] < 0]
    flags = {text[0]: False}
    for i, j in zip(text, text[1:]):
        flags[j] = bool(batch.loss_mask[row, i] > 0 and batch.targets[row, i] == batch.tokens[row, j])
    return flags


def test_pieces_are_the_packed_decoder_input_and_loss_marks_the_trained_tokens(data_dir):
    batch, dec, enc, samples = first_batch(data_dir)
    assert len(samples) == sum(len(set(row) - {0}) for row in batch.segment_ids.tolist()) > 4
    assert samples and {s.task for s in samples} <= {"reconstruction", "continuation"}
    for s in samples:
        check_sample_is_its_segment(batch, dec, enc, s)
        flags = expected_loss(batch, s.row, [i for a, b in s.spans for i in range(a, b)])
        marked = 0
        for p, (a, b) in zip(s.pieces, s.spans):
            if "loss" in p:
                assert {flags[j] for j in range(a, b)} == {p["loss"]}
                marked += (b - a) * p["loss"]
        # Every loss-carrying prediction is a marked input token or the last target, printed apart.
        loss_slots = int(batch.loss_mask[s.row, s.spans[0][0]: s.spans[-1][1]].sum())
        assert loss_slots == marked + (s.last_target is not None) > 0
        if s.task == "continuation":  # text after <Cont> is trained, text before the block is not
            cont = [k for k, p in enumerate(s.pieces) if p.get("special") == "cont"][0]
            assert any(p.get("loss") for p in s.pieces[cont:]) and not any(p.get("loss") for p in s.pieces[:cont])


def test_few_shot_marks_the_answer_and_predicts_eos_last(data_dir):
    batch, dec, enc, samples = first_batch(data_dir, *FINETUNE)
    assert samples and {s.task for s in samples} == {"few_shot"}
    for s in samples:
        check_sample_is_its_segment(batch, dec, enc, s)
        text = [p for p in s.pieces if "loss" in p]
        assert text[-1]["loss"] and not any(p["loss"] for p in text[:-1])
        assert text[-2]["text"].rstrip().endswith("Answer:") and "Answer" not in text[-1]["text"]
        assert s.last_target == "<eos>"  # the answer's end: trained, but no input token


def test_human_form_has_legend_marks_and_summary(data_dir, capsys):
    lines = show(data_dir, capsys).splitlines()
    assert lines[0].startswith("legend: «…» tokens trained with loss")
    assert len([line for line in lines if re.match(r"sample \d+ · (reconstruction|continuation) · decoder 0$", line)]) == 4
    body = "\n".join(lines[1:-1])
    assert re.search(r'\[C x16: ".+"\]<(Cont|Rec)>', body) and re.search(r"«[^»]+»", body)
    assert lines[-1].startswith("4 sample(s) of ") and "pretrain.jsonl" in lines[-1]


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n 0: show at least 1 sample"),
    (["--config.data.task=poems"], "config.data.task = 'poems': expected one of"),
])
def test_errors_are_one_line(data_dir, capsys, args, message):
    assert main(["data", "show", "--config", str(CONFIG), f"--config.data.dir={data_dir}", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("arc-jax data: error: ") and message in err[0]


# --- The reference's layouts, read from the JSON (notes/reference_recipe.md 2.3, 2.4, 3.3) ------------

FINETUNE_CONFIG = CONFIG.parent / "tiny_cpu_finetune.py"


def show_json(data_dir, capsys, config, *args):
    assert main(["data", "show", "--config", str(config), f"--config.data.dir={data_dir}", "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def kinds(sample):
    return ["special" if "special" in p else "compressed" if "compressed" in p else "text" for p in sample["pieces"]]


@pytest.mark.parametrize("task, prob", [("reconstruction", "0.0"), ("continuation", "1.0")])
def test_tiny_cpu_pretraining_samples_are_the_reference_layout(data_dir, capsys, task, prob):
    """Nothing before the block; [C][<Rec>|<Cont>] then the window, whose first token is input only
    and the rest trained; BOS in the decoder text only at a reconstruction window that starts a
    document (then the encoder read it too); a continuation's decoder text never holds BOS."""
    samples = show_json(data_dir, capsys, CONFIG, "--n", "8", f"--config.data.continuation_prob={prob}")
    assert len(samples) == 8 and {s["task"] for s in samples} == {task}
    for s in samples:
        p = s["pieces"]
        assert kinds(s)[:3] == ["compressed", "special", "text"] and set(kinds(s)[3:]) <= {"text"}
        assert p[1]["special"] == task[:4].replace("reco", "rec") and not p[2]["loss"]
        assert all(q["loss"] for q in p[3:])
        decoder_text = "".join(q["text"] for q in p[2:])
        if task == "reconstruction":
            assert decoder_text.startswith("<bos>") == p[0]["text"].startswith("<bos>")
            # the window is the compressed text (the encoder also reads the document's EOS)
            assert decoder_text.replace("<bos>", "") == p[0]["text"].replace("<bos>", "").replace("<eos>", "")
        else:
            assert "<bos>" not in decoder_text and "<eos>" not in p[0]["text"]


def test_tiny_cpu_finetune_samples_are_the_reference_few_shot_layout(data_dir, capsys):
    """"<bos>Document: " [C]<Cont> "\\nQuestion: q\\nAnswer: a\\n\\nDocument: " [C]<Cont> ...
    "\\nQuestion: q\\nAnswer: " then the answer, the only text with loss (its EOS is the last target)."""
    samples = show_json(data_dir, capsys, FINETUNE_CONFIG, "--n", "6")
    assert len(samples) == 6
    shot = re.compile(r"\nQuestion: [^\n]+\?\nAnswer: [^\n]+\n\nDocument: ")
    for s in samples:
        p = s["pieces"]
        assert s["task"] == "few_shot" and kinds(s) == ["text", "compressed", "special"] * 3 + ["text", "text"]
        assert p[0] == {"text": "<bos>Document: ", "loss": False}
        assert all(shot.fullmatch(q["text"]) and not q["loss"] for q in (p[3], p[6]))
        assert all(q == {"special": "cont"} for q in p[2::3][:3])
        assert re.fullmatch(r"\nQuestion: [^\n]+\?\nAnswer: ", p[9]["text"]) and not p[9]["loss"]
        assert p[10]["loss"] and p[10]["text"].strip() and "\n" not in p[10]["text"]
