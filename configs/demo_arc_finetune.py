"""The CPU demo's ARC fine-tuning (issue 6, stage 3; `arc-jax demo` runs it once per pooling
factor): 5-shot open-book QA about the training people with every document compressed, loss on the
last answer, starting from the demo's pretraining (init_encoder = its workdir).

    arc-jax train --config configs/demo_arc_finetune.py --workdir DEMO/arc4 \\
        --config.data.dir=DEMO/data --config.model.decoders.0.path=DEMO/decoder_lm/decoder \\
        --config.init_encoder=DEMO/arc_pretrain --config.model.encoder.compress_rates=[-4]
"""

from pathlib import Path
from runpy import run_path

import ml_collections

pretrain_config = run_path(str(Path(__file__).parent / "demo_arc_pretrain.py"))["get_config"]


def get_config() -> ml_collections.ConfigDict:
    config = pretrain_config()
    config.max_steps = 200
    config.checkpoint_every = 100
    config.init_encoder = ""  # set by the demo: DEMO/arc_pretrain
    config.optimizer.update({"encoder_lr": 5e-4, "special_lr": 5e-4, "projector_lr": 1e-3, "warmup_steps": 20})
    config.data.sources = "{data_dir}/qa_train.jsonl:1:1"  # path:weight:shots (the demo evaluates 1-shot)
    config.data.task = "finetune"
    config.data.max_len = 128  # a document's tokens (~60-100 here): never cut
    config.data.continuation_prob = 0.0
    config.data.max_passages = 1
    # A sample: 2 documents (~80 tokens each, compressed to ~20 vectors at PF 4) with their questions
    # and answers: ~160 encoder tokens and ~80 decoder slots.
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 8, "encoder_len": 256, "decoder_rows": 4, "decoder_len": 256, "max_contexts_per_row": 8})
    config.eval = ml_collections.ConfigDict({"sources": "", "every": 0, "batches": 1})
    return config
