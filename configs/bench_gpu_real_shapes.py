"""`arc-jax bench train` at the paper's shapes with random weights and no download: the Llama 3.2 3B
encoder (26 layers, pooling factor 8) of configs/pretrain_arc8_llama3.py against a Llama 3.1
8B-shaped decoder in bfloat16, fed by tiny_cpu's generated corpus (token ids are far below the
128k vocabulary, which is all the shapes need). One GPU (80 GB): 8 encoder rows of 1024 tokens and
8 decoder rows of 1792 slots (1/4 of the pretraining batch, ~32 samples).

    arc-jax bench train --config configs/bench_gpu_real_shapes.py
"""

import importlib.util
from pathlib import Path


def _config(name: str):
    spec = importlib.util.spec_from_file_location(f"arc_jax_config_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    config = _config("pretrain_arc8_llama3")
    tiny = _config("tiny_cpu")
    config.init_encoder = ""  # random encoder
    config.model.decoders[0].path = ""  # random decoder, kept in memory by the benchmark
    config.model.decoders[0].tokenizer = tiny.model.decoders[0].tokenizer
    config.data = tiny.data
    config.data.shape.update({"encoder_rows": 8, "encoder_len": 1024, "decoder_rows": 8, "decoder_len": 1792,
                              "max_contexts_per_row": 8})
    config.eval.sources = ""
    config.eval.every = 0
    config.mesh_shape = [1, -1, 1]
    return config
