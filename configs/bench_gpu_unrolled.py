"""configs/bench_gpu_attention_rows.py (the paper's shapes on one GPU in attention rows, random
weights, no download) with both layer stacks compiled unrolled (`unroll_layers`): the same stacked
parameters and the same matmuls, without the scans' loops. Not yet run on a GPU.

Scanned, every layer's weights are copied out of the stacked arrays before its matmuls, and what the
backward pass saves is copied into stacked buffers (zeroed first, every step) and out again. Counted
on the step compiled for an H200 (`arc-jax plan --topology 1xh200` with an HLO dump and
notes/hlo_bytes.py; XLA's attention stands in for cuDNN's, notes/gpu_runs.md section 8): its
memory-bound ops move 729 GB a step unrolled against 958 GB scanned (~48 ms less at 4.8 TB/s), for
the same 1,432 matmuls of 429.4 TFLOP; plan's peak is 95.9 GiB against 89.1. (The packed config:
1,090 against 1,379 GB.) The remat must then be marked prevent_cse (arc_jax/model/stack.py): without
it XLA merged the recomputation into the forward pass and the packed step planned at 137.1 GiB.

    arc-jax bench train --config configs/bench_gpu_unrolled.py [--profile DIR]

`bash launch/gpu_bench.sh` runs it after the packed and attention-row configs.
"""

from pathlib import Path
from runpy import run_path


def get_config():
    config = run_path(Path(__file__).with_name("bench_gpu_attention_rows.py"))["get_config"]()
    config.unroll_layers = True
    return config
