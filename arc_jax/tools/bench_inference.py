"""`arc-jax bench inference`: what answering from a compressed context saves (the paper's Figure 6).

Two pipelines answer one question about a context of n tokens (the RAG setting, batch 1):

    full        the decoder prefills [BOS, context (n tokens), question (p tokens)], then decodes;
    compressed  the encoder compresses the context into ~n/PF vectors (+ <Cont>), the decoder
                prefills [BOS, those vectors, question], then decodes.

Both run the library's own code (`Encoder.compress`, `decoding.generate_ids` with no stop ids, so
exactly N tokens come out) on random weights of the chosen shapes, with one attention
implementation for both models (default "jax_nn" on a GPU, i.e. cuDNN flash attention, and
"xla" elsewhere). Compilation is excluded (one
warm-up call per shape); a pipeline's time is the median of a few repeats, each ending with the
result on the host.

FLOPs follow arc_jax/train/flops.py (matmuls only, 2abc per [a, b] x [b, c]) and are counted
twice:

    useful    on the actual lengths, attention over the (query, key) pairs the masks allow: the
              encoder's bidirectional layers every pair, a causal prefill of L positions the
              L(L+1)/2 of its triangle (position i attends i keys, as MaxText and FlashAttention
              count causal attention), decode step s (1..N-1) the prompt and the s tokens so far.
              So N new tokens after L prompt positions cost exactly a prefill of L + N - 1
              positions plus N - 1 more output-head rows;
    executed  on the shapes the library runs, attention as the "xla" path computes it (dense
              over [q x kv], the prefill block-causal where its bucket cuts into chunks:
              `attention.keys_per_query`): the encoder row padded to a power of two, its pooled
              stages to a multiple of 8, the decoder prompt and KV cache to their length buckets
              (`decoding.generation_lengths`), every decode step attending the whole cache.

Decoder lengths are bucketed 64 to an octave here (multiples of 16 up to 2048 positions, 32 up to
4096, 64 up to 8192: at most 15 positions or 1/64 of the length are padding), not to powers of two as `generate_ids` does by default: a context of
1024 tokens plus the question makes a 1057-position prompt that a power-of-two bucket runs at 2048,
which would time a padded baseline (`--buckets-per-octave 1` shows it).

The first token comes from the prefill's logits, so N new tokens cost one prefill and N - 1 decode
steps. The analytic speed-up is FLOPs(full) / FLOPs(compressed); the measured one is
time(full) / time(compressed); "efficiency" is measured over analytic (1.0: the time saved is
exactly the work saved).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.inference.api import DecoderLM, Encoder
from arc_jax.inference.shapes import bucket_length, stage_lengths
from arc_jax.inference.decoding import generate_ids, generation_lengths
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig, pack_encoder_inputs, presets
from arc_jax.model.attention import keys_per_query
from arc_jax.model.pooling import pooled_length
from arc_jax.train.flops import block_matmul_flops

BOS = 1
# Scaled-down shapes with the real ones' proportions (Llama 3.2 3B minus 2 layers as the encoder,
# Llama 3.1 8B as the decoder): an encoder token costs 0.39 decoder tokens in weight FLOPs (real:
# 0.37) and 0.6 in attention FLOPs (real: 0.61); the output head is 6% of a decode step (real: 7%).
# Both are 256 wide (a narrower encoder runs fewer FLOP/s on a CPU, which would bias the timing).
# With dim 256 instead of 4096, attention weighs at n tokens what it weighs in the real models at ~16n.
SCALED_DECODER = {"dim": 256, "n_layers": 5, "n_heads": 4, "n_kv_heads": 1, "head_dim": 64, "hidden_dim": 896,
                  "vocab_size": 1024, "rope_theta": 500000.0}
SCALED_ENCODER = dict(SCALED_DECODER, n_layers=3, hidden_dim=512)
# For tests and a quick look: seconds, not minutes.
TINY_DECODER = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "hidden_dim": 128,
                "vocab_size": 256}
TINY_ENCODER = dict(TINY_DECODER, dim=48, n_heads=3, n_kv_heads=1, hidden_dim=96)
# The 1B-class encoders scaled the same way, each keeping its variant (Qwen3's q/k norms and
# head_dim other than dim / n_heads) and its weight FLOPs per token against SCALED_DECODER: Llama 3.2
# 1B (14 layers) 0.123 (real, against Llama 3.1 8B: 0.122), Qwen3 0.6B (26) 0.058 (0.059), Qwen3
# 1.7B (26) 0.185 (0.188).
SCALED_1B_ENCODERS = {
    "scaled-llama3.2-1b": dict(SCALED_DECODER, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=64, hidden_dim=128),
    "scaled-qwen3-0.6b": dict(SCALED_DECODER, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=64, hidden_dim=32,
                              rope_theta=1e6, norm_eps=1e-6, qk_norm=True),
    "scaled-qwen3-1.7b": dict(SCALED_DECODER, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=128, hidden_dim=256,
                              rope_theta=1e6, norm_eps=1e-6, qk_norm=True),
}
DECODER_PRESETS = {"scaled": SCALED_DECODER, "tiny": TINY_DECODER, "llama3.1-8b": presets.LLAMA_3_1_8B,
                   "mistral-7b": presets.MISTRAL_7B_V03, "llama2-7b": presets.LLAMA_2_7B, "olmo-7b": presets.OLMO_7B,
                   "qwen3-8b": presets.QWEN3_8B, "qwen2.5-7b": presets.QWEN2_5_7B}
# None: the real shapes, presets.arc_encoder on presets.ENCODER_BACKBONES[name].
ENCODER_PRESETS = {"scaled": SCALED_ENCODER, "tiny": TINY_ENCODER, **SCALED_1B_ENCODERS,
                   **dict.fromkeys(presets.ENCODER_BACKBONES)}
CPU_CONTEXT_LENS = (256, 512, 1024, 2048, 4096)
ACCELERATOR_CONTEXT_LENS = (256, 512, 1024, 2048, 4096, 8192, 16384)


def bench_configs(encoder_preset: str = "scaled", decoder_preset: str = "scaled",
                  pooling: int = 4) -> tuple[EncoderConfig, BackboneConfig]:
    """(encoder, decoder) configs: the released ARC encoder (Llama 3.2 3B minus 2 layers, mean
    pooled queries in the last layer), the same on a 1B-class backbone (Llama 3.2 1B, Qwen3 0.6B or
    1.7B), or a scaled backbone in its place, pooling by `pooling`, one head projecting to the
    decoder's width."""
    if decoder_preset not in DECODER_PRESETS:
        raise ValueError(f"unknown decoder preset {decoder_preset!r}; choose from {sorted(DECODER_PRESETS)}")
    if encoder_preset not in ENCODER_PRESETS:
        raise ValueError(f"unknown encoder preset {encoder_preset!r}; choose from {sorted(ENCODER_PRESETS)}")
    decoder = BackboneConfig.from_dict(DECODER_PRESETS[decoder_preset])
    backbone = ENCODER_PRESETS[encoder_preset]
    encoder = presets.arc_encoder(pooling, decoder_dims=decoder.dim,
                                  backbone=presets.ENCODER_BACKBONES.get(encoder_preset, presets.LLAMA_3_2_3B))
    if backbone is not None:
        encoder = dict(encoder, backbone=backbone, n_truncated_layers=0,
                       projectors=[{"in_dim": backbone["dim"], "hidden_dim": backbone["dim"], "out_dim": decoder.dim}])
    return EncoderConfig.from_dict(encoder), decoder


# ---------------------------------------------------------------------------------------------
# Analytic FLOPs


def _encoder_flops(cfg: EncoderConfig, n: int, stage_lens: Sequence[int]) -> float:
    """Encoder backbone forward on one row of n positions, pooling layer i keeping stage_lens[i]."""
    b = cfg.backbone
    total = (b.n_layers - len(stage_lens)) * sum(block_matmul_flops(b, 1, n, n))
    kv_len = n
    for q_len in stage_lens:
        total += sum(block_matmul_flops(b, 1, q_len, kv_len))
        kv_len = q_len
    return total


def _prefill_flops(cfg: BackboneConfig, length: int, causal: bool = True) -> float:
    """A prefill of `length` positions; logits at the last prompt position only. Its attention is
    the causal triangle, position i attending i keys (`causal`), or what the "xla" path computes:
    the block-causal chunks up to each query's own, or the dense square (`keys_per_query`)."""
    weights, attention = block_matmul_flops(cfg, 1, length, length, keys_per_query(length, 0, causal=True))
    if causal:
        attention = block_matmul_flops(cfg, 1, 1, 1)[1] * length * (length + 1) / 2
    return cfg.n_layers * (weights + attention) + 2 * cfg.dim * cfg.vocab_size


def _decode_flops(cfg: BackboneConfig, prompt_len: int, new_tokens: int, cache_len: int | None) -> float:
    """The N - 1 decode steps after a prefill of prompt_len positions. One token each runs the
    weights (its own k, v included); attention reads the prompt and the tokens so far, or the
    whole cache of cache_len slots when given (what the dense decode step computes)."""
    weights, _ = block_matmul_flops(cfg, 1, 1, 1)
    total = 0.0
    for step in range(1, new_tokens):
        _, attention = block_matmul_flops(cfg, 1, 1, cache_len or prompt_len + step)
        total += cfg.n_layers * (weights + attention) + 2 * cfg.dim * cfg.vocab_size
    return total


def prompt_lengths(enc_cfg: EncoderConfig, context_len: int, prompt_len: int) -> tuple[int, int]:
    """Decoder positions of the (full, compressed) prompts: BOS, context or its vectors, question."""
    vectors = pooled_length(context_len, enc_cfg.pooling_factors) + int(enc_cfg.cont_tok)
    return 1 + context_len + prompt_len, 1 + vectors + prompt_len


def inference_flops(enc_cfg: EncoderConfig, dec_cfg: BackboneConfig, context_len: int, prompt_len: int = 32,
                    new_tokens: int = 1, *, executed: bool = False, buckets_per_octave: int = 64) -> dict[str, float]:
    """Forward matmul FLOPs of both pipelines, by part (see the module docstring): "useful" on
    the actual lengths, or `executed` on the padded shapes the library runs (decoder lengths on
    `buckets_per_octave` buckets an octave, as given to `generate_ids`). "speedup" is
    full / compressed."""
    if enc_cfg.n_memory_tokens or not enc_cfg.compress_rates:
        raise ValueError("bench inference measures pooling encoders (compress_rates), not memory tokens")
    if context_len < 1 or prompt_len < 0 or new_tokens < 1:
        raise ValueError(f"need context_len >= 1, prompt_len >= 0, new_tokens >= 1; got {context_len}, "
                         f"{prompt_len}, {new_tokens}")
    factors = enc_cfg.pooling_factors
    full_len, compressed_len = prompt_lengths(enc_cfg, context_len, prompt_len)
    if executed:  # as Encoder.compress and decoding._run_chunk lay them out
        row_len = bucket_length(context_len)
        stages = stage_lengths(enc_cfg, row_len, 1)
        projected = stages[-1] + 2  # the whole padded output row, and both special vectors
    else:
        row_len = context_len
        stages = [pooled_length(context_len, factors[: i + 1]) for i in range(len(factors))]
        projected = stages[-1] + int(enc_cfg.cont_tok)
    p = enc_cfg.projectors[0]

    def decoder(length):
        prefill_len, cache_len = generation_lengths(length, new_tokens, buckets_per_octave) if executed else (
            length, None)
        return (_prefill_flops(dec_cfg, prefill_len, causal=not executed),
                _decode_flops(dec_cfg, length, new_tokens, cache_len))

    out = {"encoder": _encoder_flops(enc_cfg, row_len, stages),
           "projector": float(2 * projected * (p.in_dim * p.hidden_dim + p.hidden_dim * p.out_dim))}
    out["compressed_prefill"], out["compressed_decode"] = decoder(compressed_len)
    out["full_prefill"], out["full_decode"] = decoder(full_len)
    out["compressed"] = out["encoder"] + out["projector"] + out["compressed_prefill"] + out["compressed_decode"]
    out["full"] = out["full_prefill"] + out["full_decode"]
    out["speedup"] = out["full"] / out["compressed"]
    return out


def row_flops(enc_cfg: EncoderConfig, dec_cfg: BackboneConfig, row: dict, buckets_per_octave: int) -> dict:
    """The "flops" (useful) and "executed_flops" of a result row (context_len, prompt_len,
    new_tokens); notes/recount_flops.py recounts stored results with it."""
    args = (enc_cfg, dec_cfg, row["context_len"], row["prompt_len"], row["new_tokens"])
    return {"flops": inference_flops(*args),
            "executed_flops": inference_flops(*args, executed=True, buckets_per_octave=buckets_per_octave)}


# ---------------------------------------------------------------------------------------------
# Timing


def random_models(enc_cfg: EncoderConfig, dec_cfg: BackboneConfig, dtype="float32", seed: int = 0,
                  attention: str = "xla") -> tuple[Encoder, DecoderLM]:
    """An encoder and a decoder with random weights, initialised on the device in `dtype`."""
    dtype = jnp.dtype(dtype)
    k_enc, k_dec = jax.random.split(jax.random.key(seed))
    inputs, _ = pack_encoder_inputs([[list(range(1, 9))]], enc_cfg)
    encoder = ARCEncoder(enc_cfg, dtype=dtype, param_dtype=dtype)
    decoder = Decoder(dec_cfg, dtype=dtype, param_dtype=dtype)
    tokens = jnp.ones((1, 8), jnp.int32)
    enc_params = nn.unbox(jax.jit(lambda k: encoder.init(k, inputs))(k_enc)["params"])
    dec_params = nn.unbox(jax.jit(lambda k: decoder.init(k, tokens, tokens, tokens))(k_dec)["params"])
    return Encoder(enc_cfg, enc_params, dtype, attention), DecoderLM(dec_cfg, dec_params, dtype, attention)


def time_case(encoder: Encoder, decoder: DecoderLM, context: list[int], question: list[int], new_tokens: int,
              repeats: int = 3, buckets_per_octave: int = 64) -> dict:
    """Median seconds of each pipeline (and of the compression step alone), compile excluded."""

    def full():
        return generate_ids(decoder, [[[BOS] + context + question]], new_tokens,
                            buckets_per_octave=buckets_per_octave)[0]

    def compressed():
        start = time.perf_counter()
        block = encoder.compress([context])[0]  # a host array: the encoder has finished
        seconds = time.perf_counter() - start
        out = generate_ids(decoder, [[[BOS], block, question]], new_tokens, buckets_per_octave=buckets_per_octave)
        return out[0], seconds

    for out in (full(), compressed()[0]):  # compile (one program per shape bucket)
        if len(out) != new_tokens:
            raise RuntimeError(f"generated {len(out)} tokens instead of {new_tokens}")
    times: dict[str, list[float]] = {"full": [], "compressed": [], "compress": []}
    for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
        start = time.perf_counter()
        full()
        times["full"].append(time.perf_counter() - start)
        start = time.perf_counter()
        _, compress_seconds = compressed()
        times["compressed"].append(time.perf_counter() - start)
        times["compress"].append(compress_seconds)
    return {f"{k}_seconds": statistics.median(v) for k, v in times.items()} | {"all_seconds": times}


def bench_inference(enc_cfg: EncoderConfig, dec_cfg: BackboneConfig, context_lens: Sequence[int] | None = None,
                    new_tokens: Sequence[int] = (1, 100), prompt_len: int = 32, dtype: str | None = None,
                    repeats: int = 3, buckets_per_octave: int = 64, seed: int = 0, attention: str | None = None,
                    log: Callable[[str], None] = print) -> dict:
    """Time and count both pipelines at every (context length, new tokens); one row each."""
    on_cpu = jax.default_backend() == "cpu"
    context_lens = list(context_lens or (CPU_CONTEXT_LENS if on_cpu else ACCELERATOR_CONTEXT_LENS))
    dtype = dtype or ("float32" if on_cpu else "bfloat16")
    attention = attention or ("jax_nn" if jax.default_backend() == "gpu" else "xla")
    encoder, decoder = random_models(enc_cfg, dec_cfg, dtype, seed, attention)
    rng = np.random.default_rng(seed)
    vocab = min(enc_cfg.backbone.vocab_size, dec_cfg.vocab_size)  # one tokenizer for both, as in the paper
    question = rng.integers(2, vocab, prompt_len).tolist()
    rows = []
    for n in context_lens:
        context = rng.integers(2, vocab, n).tolist()
        for new in new_tokens:
            start = time.perf_counter()
            row = {"context_len": n, "new_tokens": new, "prompt_len": prompt_len}
            row["full_len"], row["compressed_len"] = prompt_lengths(enc_cfg, n, prompt_len)
            row |= row_flops(enc_cfg, dec_cfg, row, buckets_per_octave)
            row |= time_case(encoder, decoder, context, question, new, repeats, buckets_per_octave)
            row["measured_speedup"] = row["full_seconds"] / row["compressed_seconds"]
            row["efficiency"] = row["measured_speedup"] / row["flops"]["speedup"]
            rows.append(row)
            log(f"context {n:>6}  new tokens {new:>4}  FLOP ratio {row['flops']['speedup']:5.2f} (executed "
                f"{row['executed_flops']['speedup']:5.2f})  measured {row['measured_speedup']:5.2f}  "
                f"[{time.perf_counter() - start:.1f}s]")
    _add_decode_step_times(rows)
    return {
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "dtype": dtype,
        "attention": attention,
        "repeats": repeats, "buckets_per_octave": buckets_per_octave, "encoder": enc_cfg.to_dict(),
        "decoder": dec_cfg.to_dict(), "pooling_factors": list(enc_cfg.pooling_factors), "rows": rows,
        "decoder_weight_bytes": sum(x.nbytes for x in jax.tree.leaves(decoder.params)),
    }


def _add_decode_step_times(rows: list[dict]) -> None:
    """Seconds per decode step of each pipeline, (time(N) - time(1)) / (N - 1), where the same
    context was also run with one new token: the part of the time FLOPs say little about."""
    prefill = {r["context_len"]: r for r in rows if r["new_tokens"] == 1}
    for r in rows:
        if r["new_tokens"] > 1 and r["context_len"] in prefill:
            one = prefill[r["context_len"]]
            r["decode_step_seconds"] = {p: (r[f"{p}_seconds"] - one[f"{p}_seconds"]) / (r["new_tokens"] - 1)
                                        for p in ("full", "compressed")}


# ---------------------------------------------------------------------------------------------
# Reports


def markdown_table(result: dict) -> str:
    head = ("| context | new tokens | GFLOP full | GFLOP compressed | FLOP ratio (executed) | ms full | "
            "ms compressed (encoder) | decode ms/step full, compressed | measured speed-up | measured / FLOP ratio |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in result["rows"]:
        f, e = r["flops"], r["executed_flops"]
        step = r.get("decode_step_seconds")
        step = f"{step['full'] * 1e3:.2f}, {step['compressed'] * 1e3:.2f}" if step else ""
        lines.append(
            f"| {r['context_len']} | {r['new_tokens']} | {f['full'] / 1e9:,.2f} | {f['compressed'] / 1e9:,.2f} | "
            f"{f['speedup']:.2f} ({e['speedup']:.2f}) | {r['full_seconds'] * 1e3:,.1f} | "
            f"{r['compressed_seconds'] * 1e3:,.1f} ({r['compress_seconds'] * 1e3:,.1f}) | {step} | "
            f"{r['measured_speedup']:.2f} | {r['efficiency']:.2f} |")
    table = head + "\n".join(lines) + "\n"
    steps = [s for r in result["rows"] if "decode_step_seconds" in r for s in r["decode_step_seconds"].values()]
    if steps and "decoder_weight_bytes" in result and min(steps) > 0:
        # A decode step reads every decoder weight once: at batch 1 it is bound by memory, not FLOPs.
        gb = result["decoder_weight_bytes"] / 1e9
        table += (f"\nDecoder weights: {gb:.2f} GB; a decode step reads them at {gb / max(steps):.0f} to "
                  f"{gb / min(steps):.0f} GB/s.\n")
    return table


def plot(result: dict, path: str | Path) -> None:
    """Figure 6 of the paper, three panels over the context length (one line per new-token count):
    FLOPs and seconds of both pipelines, then measured speed-up against the FLOP ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, new in enumerate(sorted({r["new_tokens"] for r in result["rows"]})):
        rows = sorted((r for r in result["rows"] if r["new_tokens"] == new), key=lambda r: r["context_len"])
        x, c = [r["context_len"] for r in rows], colors[i % len(colors)]
        for ax, key, scale in ((axes[0], "flops", 1e-9), (axes[1], "seconds", 1.0)):
            for pipeline, style in (("full", "-"), ("compressed", "--")):
                y = [(r["flops"][pipeline] if key == "flops" else r[f"{pipeline}_seconds"]) * scale for r in rows]
                ax.plot(x, y, style, color=c, marker="o", label=f"{pipeline}, {new} new")
        axes[2].plot(x, [r["measured_speedup"] for r in rows], "-", color=c, marker="o", label=f"measured, {new} new")
        axes[2].plot(x, [r["flops"]["speedup"] for r in rows], "--", color=c, label=f"FLOP ratio, {new} new")
        axes[2].plot(x, [r["executed_flops"]["speedup"] for r in rows], ":", color=c,
                     label=f"executed FLOP ratio, {new} new")
    titles = ("forward GFLOPs", "seconds (median)", "full / compressed")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    pf = "/".join(str(k) for k in result["pooling_factors"])
    fig.suptitle(f"compressed (PF {pf}) vs full context, {result['backend']} ({result['device_kind']}), "
                 f"{result['dtype']}, {result.get('attention', 'xla')} attention, batch 1")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: dict, out: str | Path, stem: str, table: Callable[[dict], str],
                 draw: Callable[[dict, Path], None]) -> list[Path]:
    """A benchmark's <stem>.json (`result`), .md (`table(result)`) and .png (`draw`, when matplotlib
    is installed) in `out`; `bench serve` writes its files the same way."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    written[0].write_text(json.dumps(result, indent=1) + "\n")
    written[1].write_text(table(result))
    try:
        draw(result, out / f"{stem}.png")
        written.append(out / f"{stem}.png")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'matplotlib>=3.8')")
    return written


def write_outputs(result: dict, out: str | Path) -> list[Path]:
    """inference_bench.json, .md, and .png (when matplotlib is installed) in `out`."""
    return write_report(result, out, "inference_bench", markdown_table, plot)


def main_inference(encoder_preset: str = "scaled", decoder_preset: str = "scaled", pooling: int = 4,
                   context_lens: Sequence[int] | None = None, new_tokens: Sequence[int] = (1, 100),
                   prompt_len: int = 32, dtype: str | None = None, repeats: int = 3, buckets_per_octave: int = 64,
                   out: str | Path = "arc_jax_runs/bench_inference", attention: str | None = None) -> dict:
    enc_cfg, dec_cfg = bench_configs(encoder_preset, decoder_preset, pooling)
    result = bench_inference(enc_cfg, dec_cfg, context_lens, new_tokens, prompt_len, dtype, repeats,
                             buckets_per_octave, attention=attention)
    result |= {"encoder_preset": encoder_preset, "decoder_preset": decoder_preset}
    print(markdown_table(result), end="")
    print("written: " + ", ".join(str(p) for p in write_outputs(result, out)))
    return result

