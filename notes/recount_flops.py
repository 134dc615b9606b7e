"""Recount the analytic FLOPs of a stored `arc-jax bench inference` result with the current
`inference_flops` (times untouched), redraw its plot next to it and print its table.

    python notes/recount_flops.py docs/inference_bench_h200.json

Used when the useful count changed to the causal triangle (notes/gpu_runs.md, section 4): the
H200 timings of docs/ stayed as measured, their FLOP ratios were recomputed.
"""

import json
import sys
from pathlib import Path

from arc_jax.tools.bench_inference import markdown_table, plot, row_flops
from arc_jax.model import BackboneConfig, EncoderConfig


def recount(result: dict) -> dict:
    enc_cfg = EncoderConfig.from_dict(result["encoder"])
    dec_cfg = BackboneConfig.from_dict(result["decoder"])
    for row in result["rows"]:
        row |= row_flops(enc_cfg, dec_cfg, row, result["buckets_per_octave"])
        row["efficiency"] = row["measured_speedup"] / row["flops"]["speedup"]
    return result


if __name__ == "__main__":
    path = Path(sys.argv[1])
    result = recount(json.loads(path.read_text()))
    path.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, path.with_suffix(".png"))
    print(markdown_table(result), end="")
