"""configs/bench_gpu_real_shapes.py (the paper's shapes on one GPU, random weights, no download) with
each text attended alone in an attention row (arc_jax/model/attention_rows.py): the experiment the
README's GPU benchmark names as the next step, not yet run on a GPU.

There, cuDNN attended whole packed rows with the segment mask as a dense bias: 142 ms of the 881 ms
step for ~27 TFLOP (~190 TFLOP/s), scoring every text against the other texts of its row and, in the
causal decoder, the keys after each query too. In attention rows cuDNN masks by lengths and is
causal by its flag. The rows here are one length a side, from the texts seen in 20 batches of the
paper-shaped data (`_attention_row_specs`, as `arc-jax data check` proposes them; groups of 1 row
set, one device): 43 rows of 256 slots for the encoder's contexts (none is longer: data.max_len) and
43 of 296 for the decoder's samples (289 slots at most, in multiples of 8), 43 being the most texts a
batch held. The same batches as the packed config's (tests/test_configs.py checks it on the first
ones); counted executed FLOPs 427.5 TFLOP instead of 445.8 (attention ~8.5 instead of 26.9, each
attention row counted whole), useful 93.3% of executed instead of 89.4% (the 20 batches). `arc-jax plan --topology
1xh200` (deviceless, XLA's attention; a4e167a): peak 89.1 GiB against 90.2.

    arc-jax bench train --config configs/bench_gpu_attention_rows.py [--profile DIR]

`bash launch/gpu_bench.sh` runs it after the packed config.
"""

from pathlib import Path
from runpy import run_path


def get_config():
    config = run_path(Path(__file__).with_name("bench_gpu_real_shapes.py"))["get_config"]()
    shape = config.data.shape
    shape.encoder_attention_rows = [[43, 256]]
    shape.decoder_attention_rows = [[43, 296]]
    shape.attention_groups = 1  # the 8 rows a side on one GPU
    return config
