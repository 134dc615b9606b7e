"""The data section of a training config (`config.data`), typed and checked before anything is built.

`parse_data_config(config.data)` turns the section into a DataConfig and raises ConfigError naming
the field for an unknown field, a missing required one or a value of the wrong type; the input
pipeline then reads only the DataConfig.

Fields (configs/tiny_cpu.py sets them all; a field with a default may be left out, but only a field
a config sets can be overridden on the command line):

    dir                          the data folder; "{data_dir}" in sources and tokenizer paths stands
                                 for it ("~" expanded), so one override moves everything
    sources                      comma-separated path[:weight[:shots]] (arc_jax.data.mixture)
    encoder_tokenizer            the encoder's tokenizer file (the decoder's is its config.model entry)
    task                         pretrain | finetune | long_context
    max_len                      pretraining: tokens per compressed window and continued half (arc_jax
                                 layout: also the prefix); fine-tuning: encoder tokens kept of each
                                 passage (the reference's 5 x seq_len)
    continuation_prob            pretraining: continuation with this probability per record, else
                                 reconstruction (the reference draws per document; with the reference
                                 layout 0.8 gives ~2/3 continuation samples: they read 2*max_len tokens)
    shape                        arc_jax.data.packing.PackingShape fields: the static batch shape
    generate = ""                a corpus built in dir before the first read ("tiny_corpus", or "paper_shaped":
                                 arc_jax/tools/paper_shaped_data.py); "" = none
    corpus = {}                  the generator's keyword arguments
    strict = False               a bad record stops the run instead of being counted and skipped
    chat_template = False        pretraining inside the Llama 2 Chat template (arc_jax's windows;
                                 `layout` does not apply)
    layout = "reference"         samples (arc_jax.data.tasks): "reference" = the released
                                 code's (every consecutive window of a document; reconstruction
                                 [C][<Rec>] + window, BOS only at the document start, EOS the last
                                 target; continuation [C][<Cont>] + second half of <= 2*max_len
                                 chunks, no prefix); "arc_jax" = one random window a record,
                                 [C][<Rec>][BOS] + span, [BOS] + 0..max_len prefix + [C][<Cont>] + text
                                 (no paper variant: its interleaved prefix is not implemented);
                                 fine-tuning: "reference" = prompts.few_shot, "arc_jax" =
                                 prompts.few_shot_arc_jax ("Document:" without space, each piece
                                 its own tokenizer call, passages joined by newlines)
    encoder_bos_eos = True       pretraining: the encoder reads BOS when its span starts the document
                                 and EOS when a reconstruction span ends it (the reference); False:
                                 text only. A Llama decoder's continuation (same tokenizer file as
                                 the encoder's) passes its decoder ids as they are, as the reference
    rand_filter = 0.8            skip records whose numeric "rand" field is >= this (the reference's
                                 web-crawl filter; records without the field are kept); 0 = off
    single_task_batches = True   every training batch of a data shard holds one task (the reference's
                                 per-task row buffers); False: tasks mixed. Evaluation batches mix
    answer_layout = "reference"  fine-tuning: the last answer after "\\nAnswer: " tokenised alone (the
                                 reference's training); "eval": " " + answer in one call after
                                 "\\nAnswer:", as a decoder generates it after the evaluation prompt
                                 (for tokenizers that keep a lone space as its own token)
    max_passages = 1             fine-tuning: a record keeps randint(1, max_passages) of its passages
                                 (fewer if it has fewer), compressed jointly as one document
    worker_count = 0             grain worker processes; 0 = in the main process
    shards = 0                   data shards, each packing shape.*_rows / shards rows; 0 = one per process
"""

from __future__ import annotations

import dataclasses
import os

from arc_jax.config_loading import ConfigError, checked_fields
from arc_jax.data.packing import PackingShape
from arc_jax.data.tasks import LAYOUTS
from arc_jax.prompts import ANSWER_LAYOUTS


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dir: str
    sources: str
    encoder_tokenizer: str
    task: str
    max_len: int
    continuation_prob: float
    shape: PackingShape
    generate: str = ""
    corpus: dict = dataclasses.field(default_factory=dict)
    strict: bool = False
    chat_template: bool = False
    layout: str = "reference"
    encoder_bos_eos: bool = True
    rand_filter: float = 0.8
    single_task_batches: bool = True
    max_passages: int = 1
    answer_layout: str = "reference"
    worker_count: int = 0
    shards: int = 0

    @property
    def folder(self) -> str:
        """The data folder, "~" expanded."""
        return os.path.expanduser(self.dir)

    def resolve(self, path: str) -> str:
        """`path` with "{data_dir}" replaced by the data folder."""
        return path.replace("{data_dir}", self.folder)


def parse_data_config(fields, name: str = "config.data") -> DataConfig:
    """The typed data section; ConfigError (naming the field) for anything the pipeline cannot read."""
    values = checked_fields(DataConfig, fields, name)
    shape = checked_fields(PackingShape, values["shape"], f"{name}.shape")
    try:
        values["shape"] = PackingShape(**shape)
    except ValueError as e:  # PackingShape's own checks name its fields data.shape.*
        raise ConfigError(str(e).replace("data.shape.", f"{name}.shape.", 1)) from None
    data = DataConfig(**values)
    if data.layout not in LAYOUTS:
        raise ConfigError(f"{name}.layout={data.layout!r}: expected one of {', '.join(map(repr, LAYOUTS))}")
    if data.answer_layout not in ANSWER_LAYOUTS:
        raise ConfigError(f"{name}.answer_layout={data.answer_layout!r}: expected one of "
                          f"{', '.join(map(repr, ANSWER_LAYOUTS))}")
    if not 0.0 <= data.rand_filter <= 1.0:
        raise ConfigError(f"{name}.rand_filter={data.rand_filter!r}: expected a number in [0, 1] (0 = off)")
    if not 0.0 <= data.continuation_prob <= 1.0:
        raise ConfigError(f"{name}.continuation_prob={data.continuation_prob!r}: expected a probability in [0, 1]")
    return data
