"""A 55M-parameter Llama-shaped encoder + decoder for `arc-jax bench train` on CPU.

tiny_cpu's data and schedule with model widths where matmuls dominate, as in real runs: encoder
and decoder are 8 layers of width 512 (8 heads of 64, SwiGLU 1536), ~28M parameters each. Batches
are 8 decoder rows of 512 slots and 50 encoder rows of 64 (sized to what the decoder rows hold).
Not meant to be trained to convergence (its decoder is random).

    arc-jax bench train --config configs/bench_cpu_55m.py
"""

import importlib.util
from pathlib import Path


def _tiny_cpu():
    spec = importlib.util.spec_from_file_location("arc_jax_config_tiny_cpu", Path(__file__).with_name("tiny_cpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    config = _tiny_cpu()
    dim = 512
    backbone = {"dim": dim, "n_layers": 8, "n_heads": 8, "n_kv_heads": 8, "head_dim": 64, "hidden_dim": 1536}
    config.model.encoder.backbone.update(backbone)
    config.model.encoder.projectors = [{"in_dim": dim, "hidden_dim": dim, "out_dim": dim}]
    config.model.decoders[0].backbone.update(backbone)
    # Decoder rows of 512 slots hold ~6 samples (<= 81 slots each, ~98% full) and up to ~400 tokens that
    # carry loss: the output head runs on a buffer of 408 of them (tiny_cpu's 128 is for its rows of 168;
    # inherited here it let a row hold one or two samples, 30% useful work). The contexts (<= 64 tokens,
    # ~52 on average) take one encoder row of 64 each, 50 rows ~99% full. A sample reads at most 81 slots
    # back: windowed decoder attention. `arc-jax data check` proposed this shape: 96% useful work.
    config.data.shape.update({"encoder_rows": 50, "encoder_len": 64, "decoder_rows": 8, "decoder_len": 512,
                              "max_contexts_per_row": 3, "encoder_span": 64, "decoder_span": 81,
                              "loss_slots": 408})
    config.unroll_layers = True  # 8 layers: no loop to run (arc-jax bench train: ~0.9x the step time)
    config.eval.every = 0
    return config
