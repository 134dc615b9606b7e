"""Run with 2 fake CPU devices (XLA_FLAGS set by the caller): the demo's decoder LM (test_decoder_lm.py's
tiny config) trained on both, its rows split over them, stopped at step 6 and resumed to the end;
and a batch of 3 rows refused. Prints a JSON report, with what the norms were told each time one was
traced: whether for one CPU device (arc_jax.model.layers.Norm). Used by test_decoder_lm.py."""

import json
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_decoder_lm import tiny_config  # noqa: E402

from arc_jax.demo import decoder_lm as lm  # noqa: E402
from arc_jax.model import layers  # noqa: E402

one_cpu_device = []  # what the norms were told, each time one was traced


def _recorded(gate=layers._on_one_cpu_device):
    one_cpu_device.append(gate())
    return one_cpu_device[-1]


layers._on_one_cpu_device = _recorded


def main(data_dir: str, workdir: str):
    jax.config.update("jax_default_matmul_precision", "highest")
    first = lm.train_lm(tiny_config(data_dir), workdir, stop_step=6)
    resumed = lm.train_lm(tiny_config(data_dir), workdir, resume=True)
    try:
        lm.data_parallel_mesh(3)
        odd_rows = None
    except ValueError as e:
        odd_rows = str(e)
    print(json.dumps({"devices": jax.device_count(), "first_steps": first["steps"], "resumed_from": resumed["start_step"],
                      "final_loss": resumed["final_loss"], "odd_rows": odd_rows,
                      "norms_on_one_cpu_device": sorted(set(one_cpu_device))}))


if __name__ == "__main__":
    main(*sys.argv[1:])
