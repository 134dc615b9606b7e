"""`arc-jax bench train` at the paper's shapes with random weights and no download: the Llama 3.2 3B
encoder (26 layers, pooling factor 8) of configs/pretrain_arc8_llama3.py against a Llama 3.1
8B-shaped decoder in bfloat16, a quarter of that config's step on one GPU: 8 of its 32 encoder rows
of 1024 tokens and 8 of its 32 decoder rows of 1232 slots with their loss buffers (~32 samples),
with its rematerialisation ("dots_no_batch_attention"). The step peaks at about 96 GiB (92 GiB in
`arc-jax plan`, which compiles XLA's attention, and about 4 GB of saved cuDNN attention outputs):
an H200 holds it (measured with XLA_PYTHON_CLIENT_MEM_FRACTION=0.92, as launch/gpu_bench.sh sets:
JAX's default 75% is about 100 GiB there); on an 80 GB GPU add --config.remat_policy=full (62 GiB).

The rows are filled from data shaped like the paper's (arc_jax/tools/paper_shaped_data.py: crawl
documents log-normal around 700 tokens, words of the synthetic corpus and its tokenizer), which the
pipeline generates on first use into data.dir (~54 MB, about 10 s), so that the useful FLOPs and
the useful MFU are those of the paper's pretraining batches. Token ids stay far below the 128k
vocabulary, which is all the shapes need.

    arc-jax bench train --config configs/bench_gpu_real_shapes.py [--profile DIR]
"""

import importlib.util
from pathlib import Path


def get_config():
    spec = importlib.util.spec_from_file_location("arc_jax_config_pretrain_arc8_llama3",
                                                  Path(__file__).with_name("pretrain_arc8_llama3.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.init_encoder = ""  # random encoder
    config.model.decoders[0].path = ""  # random decoder, kept in memory by the benchmark
    config.data.dir = "~/.cache/arc_jax/paper_shaped"
    config.data.generate = "paper_shaped"
    config.data.encoder_tokenizer = "{data_dir}/tokenizer.model"
    config.model.decoders[0].tokenizer = "{data_dir}/tokenizer.model"
    shape = config.data.shape  # the whole step on 8 GPUs; one GPU takes a quarter of the rows
    shape.encoder_rows //= 4
    shape.decoder_rows //= 4
    config.eval.sources = ""
    config.eval.every = 0
    config.mesh_shape = [1, -1, 1]
    return config
