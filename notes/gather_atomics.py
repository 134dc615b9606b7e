"""Whether the attention rows' gathers (arc_jax/model/attention_rows.py) scatter-add with atomics in
their backward pass on a GPU, without a GPU: compiles the gradient of one gather (the bench's
encoder shape, 8 x 1024 slots into 43 attention rows of 256, 24 heads of 128, bf16) for an H200 with
CUDA's compile-only plugin (`pip install 'arc_jax[gpu-compile]'`), dumps the PTX, and counts its
atomic instructions. A path to another copy of attention_rows.py compares an older version:

    python notes/gather_atomics.py [OLD_ATTENTION_ROWS_PY]

2026-12-06 (jax-cuda12-plugin 0.10.2): f035a77's version 4 x atom.relaxed.sys.global.add.noftz.bf16,
c340d1e's none.
"""

import glob
import importlib.util
import os
import sys
import tempfile


def atomics(module_path: str) -> dict[str, int]:
    import jax
    import jax.numpy as jnp

    from arc_jax.tools.topology import parse_topology, topology_devices

    spec = importlib.util.spec_from_file_location("attention_rows_under_test", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    device = jax.sharding.SingleDeviceSharding(topology_devices(parse_topology("1xh200"))[0])
    x = jax.ShapeDtypeStruct((8, 1024, 24, 128), jnp.bfloat16, sharding=device)
    index = jax.ShapeDtypeStruct((1, 43, 256), jnp.int32, sharding=device)
    loss = lambda x, index: jnp.sum(module._gather(x, index).astype(jnp.float32) ** 2)  # noqa: E731
    jax.jit(jax.grad(loss)).lower(x, index).compile()
    counts: dict[str, int] = {}
    for path in glob.glob(os.path.join(os.environ["XLA_FLAGS"].split("=", 1)[1], "*.ptx")):
        for word in open(path).read().split():
            if word.startswith(("atom.", "red.")):
                counts[word] = counts.get(word, 0) + 1
    return counts


if __name__ == "__main__":
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = f"--xla_dump_to={tempfile.mkdtemp(prefix='gather_atomics_')}"
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "arc_jax", "model",
                                                             "attention_rows.py")
    print(f"{path}: {atomics(path) or 'no atomic instructions'}")
