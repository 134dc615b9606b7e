"""Prefill time of the decoder, scanned layers (what generation runs) vs unrolled layers (no per-layer weight slicing)."""
import functools, statistics, sys, time
import jax, jax.numpy as jnp, numpy as np
from arc_jax.tools.bench_inference import bench_configs, random_models
from arc_jax.model import Decoder
from arc_jax.model.decoder import unstack_layers
from arc_jax.model.kv_cache import empty_cache

preset = sys.argv[1]
lengths = [int(x) for x in sys.argv[2:]]
gpu = jax.default_backend() == "gpu"
dtype = jnp.bfloat16 if gpu else jnp.float32
_, dec = random_models(*bench_configs("tiny", preset), "bfloat16" if gpu else "float32", attention="jax_nn" if gpu else "xla")
cfg = dec.config
unrolled_module = dec.module.clone(scan_layers=False)
unrolled_params = jax.block_until_ready(jax.jit(functools.partial(unstack_layers, n_layers=cfg.n_layers))(dec.params))


def timed(fn, *args):
    t = time.perf_counter(); jax.block_until_ready(fn(*args)); compile_s = time.perf_counter() - t
    runs = []
    for _ in range(7):
        t = time.perf_counter(); jax.block_until_ready(fn(*args)); runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1e3, compile_s


for t in lengths:
    tokens = jnp.ones((1, t), jnp.int32)
    pos = jnp.arange(t, dtype=jnp.int32)[None]
    last = jnp.full((1,), t - 1, jnp.int32)
    scanned = jax.jit(lambda p, tok: dec.module.apply({"params": p}, tok, pos, empty_cache(cfg, 1, t, dtype), last,
                                                      method=Decoder.cached_forward))
    unrolled = jax.jit(lambda p, tok: unrolled_module.apply({"params": p}, tok, pos,
                                                            empty_cache(cfg, 1, t, dtype).per_layer(t), last,
                                                            method=Decoder.cached_forward))
    s_ms, s_c = timed(scanned, dec.params, tokens)
    u_ms, u_c = timed(unrolled, unrolled_params, tokens)
    flops = 2 * t * sum(x.size for x in jax.tree.leaves(dec.params["layers"]))
    print(f"prefill {t:>6} tokens: scanned {s_ms:8.2f} ms (compile {s_c:5.1f} s)  unrolled {u_ms:8.2f} ms "
          f"(compile {u_c:5.1f} s)  layer-weight TFLOP/s scanned {flops / s_ms / 1e9:6.1f} unrolled {flops / u_ms / 1e9:6.1f}",
          flush=True)
