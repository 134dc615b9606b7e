"""`arc-jax bench serve`: where compressing contexts pays: many requests at once, and contexts
compressed once and read back (issue 23, point 3). `bench inference` answers one request; here B
requests, each about its own context of n tokens with its own question, arrive together.

Three pipelines answer a batch of B requests:

    full     the decoder prefills [BOS, context (n tokens), question (p tokens)] for the B requests;
    online   `Encoder.compress` turns the B contexts into ~n/PF vectors (+ <Cont>) each, then the
             decoder prefills [BOS, vectors, question];
    store    the B blocks are read from a `CompressedStore` on disk (written beforehand by
             `write_store`, outside the timing), then the same prefill as online.

For each context length and batch size (--batch-sizes, plus each pipeline's largest batch in the
memory budget, below) the bench measures:

    time to first token (TTFT)  wall time from the request batch (token ids) to the first token
              of every request on the host: store read or compression, then
              `decoding.generate_ids(..., max_new_tokens=1)`, the library's own path (the first
              token comes from the prefill's logits, and its prefill is the one N tokens run).
    decode tokens/s  B * (N - 1) / time of the N - 1 decode steps after the prefill: the decode
              program `generate_ids` runs (`decoding.decode_program`, compiled for the chunk's
              shapes, `decoding.chunk_shape`), from a KV cache of the prefill's shape. Its values do
              not change the work (greedy, no stop ids: every row runs all N - 1 steps), so batch 64
              at 4k tokens is timed on a CPU where its full-text prefill would take minutes. The
              decode depends on the prompt's shape alone, so online and store share one measurement
              ("compressed").
    memory    weights (the decoder's, plus the encoder's for online) and the KV cache the chunk
              allocates: 2 (k, v) * layers * kv heads * head_dim * bytes * cache positions * B,
              cache positions being the prompt and N new tokens padded to the decode program's
              cache length. Also XLA's own count for the decode program (arguments, outputs and
              temporaries: compiled.memory_analysis()); it holds more than weights + KV: the
              prefill's cache it starts from, and the weights the unrolled step slices out of the
              stack. On a GPU the process's peak (memory_stats) is recorded too.

The largest batch in the budget (--memory-budget GiB; by default 5x the decoder's weights, the
ratio of an 80 GB H100 to Llama 3.1 8B's 16 GB of bf16 weights) is the biggest B whose weights +
KV cache fit, per pipeline (activations are not counted: the budget is the KV budget the issue
names). Each pipeline is also run at its own largest batch.

Compilation is excluded (one warm-up call per shape); a figure is the median of --repeats runs,
the pipelines interleaved so that drift in the machine's speed hits them alike. Decoder lengths
are bucketed --buckets-per-octave to an octave (64: at most 1/64 padding), as in bench inference.
Contexts are random token ids; --store-records distinct contexts per length (requests cycle
through them; every request is still compressed, read or prefilled on its own). The store holds
the vectors in the encoder's dtype unless --store-vector-dtype or --store-pq say otherwise; its
reads come from the operating system's page cache after the first (a hot store).

On a CPU a case (one pipeline at one batch) is skipped, and the output says so, when its
estimated time for the warm-up and the repeats (the time measured at the previous batch, scaled
by the batch) exceeds --max-case-seconds, or when its dense attention scores (the xla path holds
one layer's [rows, heads, L, L] in float32) would need more than half of the free host memory.
On a CPU the scaled models' attention weighs at n tokens what the real models' weighs at ~16n
(bench_inference.py), and the xla path computes the whole square: the CPU's TTFT ratios are
larger than a GPU's at the same n.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.inference.api import DecoderLM, Encoder
from arc_jax.inference.decoding import chunk_shape, decode_program, generate_ids, sampling_values
from arc_jax.inference.shapes import bucket_length
from arc_jax.model import BackboneConfig, EncoderConfig
from arc_jax.model.kv_cache import empty_cache
from arc_jax.tools.bench_inference import BOS, bench_configs, prompt_lengths, random_models, write_report
from arc_jax.tools.compiled import compiled_memory

PIPELINES = ("full", "online", "store")
CPU_SERVE_CONTEXT_LENS = (1024, 2048, 4096)
ACCELERATOR_SERVE_CONTEXT_LENS = (1024, 4096, 16384)
DEFAULT_BATCH_SIZES = (1, 8, 32, 64)
# An H100's 80 GB over Llama 3.1 8B's 16 GB of bf16 weights.
BUDGET_OVER_WEIGHTS = 5
CPU_MAX_CASE_SECONDS = 60.0
# The goals at 4k-token contexts: TTFT store/full per PF; decode throughput at batch 64 and
# largest batch in the budget, compressed/full, at PF 4.
TTFT_GOALS = {4: 3.0, 8: 5.0}
DECODE_GOALS = {4: 1.8}
LARGEST_BATCH_GOALS = {4: 3.0}
GOAL_CONTEXT = 4096


def kv_bytes_per_position(cfg: BackboneConfig, dtype) -> int:
    """KV-cache bytes of one position of one request: keys and values of every layer."""
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * jnp.dtype(dtype).itemsize


def tree_bytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def largest_batch(budget_bytes: float, weight_bytes: int, kv_bytes_per_request: int) -> int:
    """The biggest B with weights + B * KV per request <= budget (0 when the weights alone overflow)."""
    return max(0, int((budget_bytes - weight_bytes) // kv_bytes_per_request))


def _free_host_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _median(times: list[float]) -> float:
    return statistics.median(times)


class _Skips:
    """Decides which cases a CPU run leaves out, from the last measured batch of each (context,
    pipeline, measure)."""

    def __init__(self, max_case_seconds: float, repeats: int, score_limit_bytes: float | None):
        self.max_case_seconds, self.repeats, self.score_limit = max_case_seconds, repeats, score_limit_bytes
        self.last: dict[tuple, tuple[int, float]] = {}

    def reason(self, key: tuple, batch: int, score_bytes: float = 0.0) -> str | None:
        if self.score_limit is not None and score_bytes > self.score_limit:
            return (f"its attention scores would take {score_bytes / 2**30:.1f} GiB, over half of the free host "
                    f"memory")
        if not self.max_case_seconds or key not in self.last:
            return None
        last_batch, seconds = self.last[key]
        estimate = seconds * batch / last_batch * (self.repeats + 1)
        if estimate > self.max_case_seconds:
            return f"estimated {estimate:.0f} s for warm-up and {self.repeats} repeats > --max-case-seconds"
        return None

    def measured(self, key: tuple, batch: int, seconds: float) -> None:
        self.last[key] = (batch, seconds)


def _time_interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call, `repeats` times, the calls taking turns; one untimed warm-up each."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def decode_call(decoder: DecoderLM, batch: int, prompt_positions: int, new_tokens: int,
                buckets_per_octave: int) -> tuple[Callable[[], np.ndarray], dict]:
    """The decode program generate_ids runs for `batch` prompts of `prompt_positions`, compiled,
    and XLA's memory count of it. The call returns the tokens on the host, checked to be all N."""
    shape = chunk_shape(batch, prompt_positions, new_tokens, buckets_per_octave, max_rows=batch)
    cfg = decoder.config
    args = (decoder.params, empty_cache(cfg, shape.rows, shape.prompt_len, decoder.dtype),
            jnp.full(shape.rows, 2, jnp.int32), jnp.zeros(shape.rows, bool),
            jnp.full(shape.rows, prompt_positions, jnp.int32), np.int32(new_tokens),
            sampling_values((), 0.0, 1.0, cfg.vocab_size, 0))
    compiled = decode_program.lower(*args, module=decoder.module, cache_len=shape.cache_len,
                                    out_len=shape.out_len, greedy=True).compile()

    def run() -> np.ndarray:
        out = np.asarray(compiled(*args))
        if (out[:, :new_tokens] < 0).any():
            raise RuntimeError(f"the decode program stopped before {new_tokens} tokens")
        return out

    return run, compiled_memory(compiled)


def bench_serve(enc_cfg: EncoderConfig, dec_cfg: BackboneConfig, context_lens: Sequence[int] | None = None,
                batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, memory_budget_gib: float | None = None,
                new_tokens: int = 32, prompt_len: int = 32, dtype: str | None = None, repeats: int = 3,
                buckets_per_octave: int = 64, attention: str | None = None, max_case_seconds: float | None = None,
                store_records: int = 8, store_vector_dtype: str | None = None, store_pq: str | None = None,
                seed: int = 0, progress: bool = True) -> dict:
    """Every pipeline at every (context length, batch size); one row each, and per context length
    the largest batch of each pipeline in the budget."""
    from tqdm.auto import tqdm

    from arc_jax.inference.store import write_store

    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 (decode throughput needs a decode step), got {new_tokens}")
    on_cpu = jax.default_backend() == "cpu"
    context_lens = sorted(set(context_lens or (CPU_SERVE_CONTEXT_LENS if on_cpu else ACCELERATOR_SERVE_CONTEXT_LENS)))
    batch_sizes = sorted(set(batch_sizes))
    dtype = dtype or ("float32" if on_cpu else "bfloat16")
    attention = attention or ("jax_nn" if jax.default_backend() == "gpu" else "xla")
    if max_case_seconds is None:
        max_case_seconds = CPU_MAX_CASE_SECONDS if on_cpu else 0.0
    encoder, decoder = random_models(enc_cfg, dec_cfg, dtype, seed, attention)
    weights = {"decoder": tree_bytes(decoder.params), "encoder": tree_bytes(encoder.params)}
    pipeline_weights = {"full": weights["decoder"], "online": weights["decoder"] + weights["encoder"],
                        "store": weights["decoder"]}
    budget = (memory_budget_gib * 2**30 if memory_budget_gib is not None
              else BUDGET_OVER_WEIGHTS * weights["decoder"])
    per_position = kv_bytes_per_position(dec_cfg, decoder.dtype)
    score_limit = _free_host_bytes() / 2 if on_cpu and attention == "xla" else None
    skips = _Skips(max_case_seconds, repeats, score_limit)
    rng = np.random.default_rng(seed)
    vocab = min(enc_cfg.backbone.vocab_size, dec_cfg.vocab_size)
    question = rng.integers(2, vocab, prompt_len).tolist()

    plan, largest_batches = _serve_plan(enc_cfg, context_lens, batch_sizes, prompt_len, new_tokens,
                                        buckets_per_octave, budget, pipeline_weights, per_position)
    rows = []
    bar = tqdm(total=sum(len(ps) for _, _, ps, _ in plan), desc="bench serve", unit="case", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        stores: dict[int, object] = {}
        store_bytes: dict[int, int] = {}
        contexts: dict[int, list[list[int]]] = {}
        for n, batch, pipelines, largest in plan:
            if n not in stores:
                bar.set_postfix_str(f"writing the store of {store_records} contexts of {n} tokens")
                contexts[n] = [rng.integers(2, vocab, n).tolist() for _ in range(store_records)]
                stores[n] = write_store(encoder, contexts[n], Path(tmp) / f"context_{n}", pq=store_pq,
                                        vector_dtype=store_vector_dtype, progress=False)
                store_bytes[n] = stores[n].nbytes
                expected = (prompt_lengths(enc_cfg, n, prompt_len)[1] - 1 - prompt_len, dec_cfg.dim)
                if stores[n][0].vectors.shape != expected:  # what the compressed prompt lengths assume
                    raise RuntimeError(f"the store's block has shape {stores[n][0].vectors.shape}, not {expected}")
            rows += _run_batch(encoder, decoder, stores[n], contexts[n], question, n, batch, pipelines, largest,
                               new_tokens, buckets_per_octave, repeats, skips, bar, pipeline_weights, per_position,
                               budget)
    bar.close()
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return {
        "backend": jax.default_backend(), "device_kind": device.device_kind, "dtype": dtype,
        "attention": attention, "repeats": repeats, "buckets_per_octave": buckets_per_octave,
        "new_tokens": new_tokens, "prompt_len": prompt_len, "batch_sizes": batch_sizes,
        "context_lens": context_lens, "max_case_seconds": max_case_seconds,
        "store": {"records": store_records, "vector_dtype": store_vector_dtype, "pq": store_pq,
                  "bytes_per_context": {n: b / store_records for n, b in store_bytes.items()}},
        "encoder": enc_cfg.to_dict(), "decoder": dec_cfg.to_dict(), "pooling_factors": list(enc_cfg.pooling_factors),
        "memory_budget_bytes": budget, "decoder_weight_bytes": weights["decoder"],
        "encoder_weight_bytes": weights["encoder"], "kv_bytes_per_position": per_position,
        "device_peak_bytes": (stats or {}).get("peak_bytes_in_use"),
        "rows": rows, "largest_batch": largest_batches,
    }


def _serve_plan(enc_cfg: EncoderConfig, context_lens: list[int], batch_sizes: list[int], prompt_len: int,
                new_tokens: int, buckets_per_octave: int, budget: float, pipeline_weights: dict[str, int],
                per_position: int) -> tuple[list[tuple], list[dict]]:
    """The cases in run order, (context, batch, pipelines, largest batch per pipeline), and per
    context length the largest batch of each pipeline in the budget (each also run)."""
    plan, largest_batches = [], []
    for n in context_lens:
        positions = dict(zip(("full", "compressed"), prompt_lengths(enc_cfg, n, prompt_len)))
        largest = {}
        for p in PIPELINES:
            cache_len = chunk_shape(1, positions["full" if p == "full" else "compressed"], new_tokens,
                                    buckets_per_octave).cache_len
            largest[p] = largest_batch(budget, pipeline_weights[p], per_position * cache_len)
        largest_batches.append({"context_len": n, **largest,
                                "store_over_full": largest["store"] / largest["full"] if largest["full"] else None,
                                "online_over_full": largest["online"] / largest["full"] if largest["full"] else None})
        for b in sorted(set(batch_sizes) | {b for b in largest.values() if b}):
            plan.append((n, b, [p for p in PIPELINES if b in batch_sizes or b == largest[p]], largest))
    return plan, largest_batches


def _run_batch(encoder: Encoder, decoder: DecoderLM, store, contexts: list[list[int]], question: list[int], n: int,
               batch: int, pipelines: list[str], largest: dict[str, int], new_tokens: int, buckets_per_octave: int,
               repeats: int, skips: _Skips, bar, pipeline_weights: dict[str, int], per_position: int,
               budget: float) -> list[dict]:
    """One (context length, batch size): TTFT of each pipeline, decode of full and compressed."""
    dec_cfg, enc_cfg = decoder.config, encoder.config
    picks = [i % len(contexts) for i in range(batch)]
    full_positions, compressed_positions = prompt_lengths(enc_cfg, n, len(question))

    def answer(blocks):
        prompts = [[[BOS], block, question] for block in blocks]
        return generate_ids(decoder, prompts, 1, max_rows=batch, buckets_per_octave=buckets_per_octave)

    requests = {
        "full": lambda: generate_ids(decoder, [[[BOS] + contexts[i] + question] for i in picks], 1, max_rows=batch,
                                     buckets_per_octave=buckets_per_octave),
        "online": lambda: answer(encoder.compress([contexts[i] for i in picks])),
        "store": lambda: answer([c.vectors for c in store.read(picks)]),
    }
    prefill = {p: chunk_shape(batch, full_positions if p == "full" else compressed_positions, new_tokens,
                              buckets_per_octave, max_rows=batch) for p in PIPELINES}
    rows = {}
    for p in pipelines:
        shape = prefill[p]
        kv = per_position * shape.cache_len * shape.rows
        score_bytes = shape.rows * dec_cfg.n_heads * shape.prompt_len ** 2 * 4
        if p == "online":
            score_bytes = max(score_bytes, min(batch, encoder.max_rows) * enc_cfg.backbone.n_heads
                              * bucket_length(n) ** 2 * 4)
        rows[p] = {"context_len": n, "batch": batch, "pipeline": p, "largest_in_budget": batch == largest[p],
                   "prompt_positions": full_positions if p == "full" else compressed_positions,
                   "cache_positions": shape.cache_len, "weight_bytes": pipeline_weights[p], "kv_bytes": kv,
                   "memory_bytes": pipeline_weights[p] + kv, "fits_budget": pipeline_weights[p] + kv <= budget,
                   "skipped": {}}
        reason = skips.reason((n, p, "ttft"), batch, score_bytes)
        if reason:
            rows[p]["skipped"]["ttft"] = reason
    runnable = {p: requests[p] for p in pipelines if "ttft" not in rows[p]["skipped"]}
    bar.set_postfix_str(f"context {n}, batch {batch}: first token ({', '.join(runnable) or 'skipped'})")
    for p, times in _time_interleaved(runnable, repeats).items():
        rows[p] |= {"ttft_seconds": _median(times), "ttft_all_seconds": times}
        skips.measured((n, p, "ttft"), batch, _median(times))

    # Decode: full, and compressed (shared by online and store: same prompt shape, same program).
    kinds = {"full": ["full"], "compressed": [p for p in ("online", "store") if p in pipelines]}
    calls, memory = {}, {}
    for kind, members in kinds.items():
        if not members or (kind == "full" and "full" not in pipelines):
            continue
        reason = skips.reason((n, kind, "decode"), batch)
        if reason:
            for p in members:
                rows[p]["skipped"]["decode"] = reason
            continue
        positions = full_positions if kind == "full" else compressed_positions
        calls[kind], memory[kind] = decode_call(decoder, batch, positions, new_tokens, buckets_per_octave)
    bar.set_postfix_str(f"context {n}, batch {batch}: decode ({', '.join(calls) or 'skipped'})")
    for kind, times in _time_interleaved(calls, repeats).items():
        seconds = _median(times)
        skips.measured((n, kind, "decode"), batch, seconds)
        for p in kinds[kind]:
            rows[p] |= {"decode_seconds": seconds, "decode_all_seconds": times,
                        "decode_tokens_per_second": batch * (new_tokens - 1) / seconds,
                        "decode_program_bytes": memory[kind]}
    for p in pipelines:
        r = rows[p]
        ttft = f"TTFT {r['ttft_seconds'] * 1e3:9.1f} ms" if "ttft_seconds" in r else "TTFT   skipped   "
        decode = (f"decode {r['decode_tokens_per_second']:9.1f} tok/s" if "decode_tokens_per_second" in r
                  else "decode  skipped      ")
        bar.write(f"context {n:>6}  batch {batch:>4}  {p:<6}  {ttft}  {decode}  "
                  f"weights+KV {r['memory_bytes'] / 2**20:8.1f} MiB{'' if r['fits_budget'] else ' (over budget)'}")
        bar.update()
    return [rows[p] for p in pipelines]


# ---------------------------------------------------------------------------------------------
# Summary and reports


def _row(result: dict, n: int, batch: int, pipeline: str) -> dict | None:
    return next((r for r in result["rows"] if (r["context_len"], r["batch"], r["pipeline"]) == (n, batch, pipeline)),
                None)


def _ratio(num: dict | None, den: dict | None, key: str, invert: bool = False) -> float | None:
    if not num or not den or key not in num or key not in den:
        return None
    return den[key] / num[key] if invert else num[key] / den[key]


def goals(result: dict) -> dict:
    """The issue's ratios, at 4096 tokens when run (else the longest context): TTFT full/store per
    batch both ran, decode tokens/s compressed/full at batch 64, largest batch store/full; with the
    goal where the issue sets one for this PF."""
    pf = math.prod(result["pooling_factors"])
    n = GOAL_CONTEXT if GOAL_CONTEXT in result["context_lens"] else max(result["context_lens"])
    ttft = {}
    for b in sorted({r["batch"] for r in result["rows"] if r["context_len"] == n}):
        ratio = _ratio(_row(result, n, b, "store"), _row(result, n, b, "full"), "ttft_seconds", invert=True)
        if ratio is not None:
            ttft[b] = ratio
    largest = next(x for x in result["largest_batch"] if x["context_len"] == n)
    return {
        "context_len": n, "pooling": pf,
        "ttft_full_over_store": ttft, "ttft_goal": TTFT_GOALS.get(pf),
        "decode_batch": 64, "decode_store_over_full": _ratio(_row(result, n, 64, "store"), _row(result, n, 64, "full"),
                                                             "decode_tokens_per_second"),
        "decode_goal": DECODE_GOALS.get(pf),
        "largest_batch_store_over_full": largest["store_over_full"], "largest_batch_goal": LARGEST_BATCH_GOALS.get(pf),
        "largest_batch_decode_store_over_full": _ratio(_row(result, n, largest["store"], "store"),
                                                       _row(result, n, largest["full"], "full"),
                                                       "decode_tokens_per_second"),
    }


def _verdict(value: float | None, goal: float | None) -> str:
    if value is None:
        return "not measured"
    if goal is None:
        return f"{value:.2f}x"
    return f"{value:.2f}x (goal >= {goal:g}x: {'reached' if value >= goal else 'not reached'})"


def summary_lines(result: dict) -> list[str]:
    g = result.get("goals") or goals(result)
    n, pf = g["context_len"], g["pooling"]
    ttft = ", ".join(f"batch {b} {_verdict(v, g['ttft_goal'])}" for b, v in g["ttft_full_over_store"].items())
    return [f"At {n} tokens, PF {pf}:",
            f"- time to first token, full / store: {ttft or 'not measured'}",
            f"- decode tokens/s at batch {g['decode_batch']}, store / full: "
            f"{_verdict(g['decode_store_over_full'], g['decode_goal'])}",
            f"- largest batch in {result['memory_budget_bytes'] / 2**30:.3g} GiB, store / full: "
            f"{_verdict(g['largest_batch_store_over_full'], g['largest_batch_goal'])}; decode tokens/s at each "
            f"one's largest batch, store / full: {_verdict(g['largest_batch_decode_store_over_full'], None)}"]


def _cell(row: dict | None, key: str, scale: float = 1.0, fmt: str = "{:,.1f}") -> str:
    if row is None:
        return ""
    if key in row:
        return fmt.format(row[key] * scale)
    measure = "ttft" if key.startswith("ttft") else "decode"
    return "skipped" if measure in row["skipped"] else ""


def markdown_table(result: dict) -> str:
    head = ("| context | batch | TTFT ms full | online | store | full / store | decode tok/s full | compressed | "
            "compressed / full | weights + KV MiB full | online | store |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for n in result["context_lens"]:
        for b in sorted({r["batch"] for r in result["rows"] if r["context_len"] == n}):
            row = {p: _row(result, n, b, p) for p in PIPELINES}
            largest = [p for p, r in row.items() if r and r["largest_in_budget"]]
            label = f"{b} (largest: {', '.join(largest)})" if largest else str(b)
            compressed = row["store"] or row["online"]
            ttft_ratio = _ratio(row["store"], row["full"], "ttft_seconds", invert=True)
            decode_ratio = _ratio(compressed, row["full"], "decode_tokens_per_second")
            memory = [(f"{r['memory_bytes'] / 2**20:,.1f}" + ("" if r["fits_budget"] else "*")) if r else ""
                      for r in row.values()]
            lines.append(
                f"| {n} | {label} | {_cell(row['full'], 'ttft_seconds', 1e3)} | {_cell(row['online'], 'ttft_seconds', 1e3)} | "
                f"{_cell(row['store'], 'ttft_seconds', 1e3)} | {'' if ttft_ratio is None else f'{ttft_ratio:.2f}'} | "
                f"{_cell(row['full'], 'decode_tokens_per_second')} | {_cell(compressed, 'decode_tokens_per_second')} | "
                f"{'' if decode_ratio is None else f'{decode_ratio:.2f}'} | {' | '.join(memory)} |")
    table = head + "\n".join(lines) + "\n"
    budget = result["memory_budget_bytes"] / 2**20
    table += (f"\n\\* over the budget of {budget:,.1f} MiB. Weights: decoder {result['decoder_weight_bytes'] / 2**20:,.1f} "
              f"MiB, encoder {result['encoder_weight_bytes'] / 2**20:,.1f} MiB (online holds both); KV cache "
              f"{result['kv_bytes_per_position'] / 1024:,.1f} KiB per position. The store: "
              f"{', '.join(f'{b / 2**10:,.0f}' for b in result['store']['bytes_per_context'].values())} KiB per "
              f"context ({result['store']['pq'] or result['store']['vector_dtype'] or result['dtype']} vectors).\n")
    table += ("\n| context | largest batch in budget: full | online | store | store / full |\n"
              "|---:|---:|---:|---:|---:|\n")
    for x in result["largest_batch"]:
        ratio = "" if x["store_over_full"] is None else f"{x['store_over_full']:.2f}"
        table += f"| {x['context_len']} | {x['full']} | {x['online']} | {x['store']} | {ratio} |\n"
    skipped = sorted({(r["context_len"], r["batch"], r["pipeline"], m, why) for r in result["rows"]
                      for m, why in r["skipped"].items()})
    if skipped:
        table += "\nSkipped:\n" + "".join(f"- context {n}, batch {b}, {p} {'TTFT' if m == 'ttft' else 'decode'}: {why}\n"
                                          for n, b, p, m, why in skipped)
    return table + "\n" + "\n".join(summary_lines(result)) + "\n"


def plot(result: dict, path: str | Path) -> None:
    """Four panels: TTFT and decode tokens/s over the batch size (one line per pipeline and context
    length), weights + KV cache over the batch size at the longest context against the budget, and
    the largest batch in the budget per context length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))
    colors = dict(zip(PIPELINES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = ["-", "--", ":", "-."]
    for i, n in enumerate(result["context_lens"]):
        for p in PIPELINES:
            rows = sorted((r for r in result["rows"] if r["context_len"] == n and r["pipeline"] == p),
                          key=lambda r: r["batch"])
            for ax, key, scale in ((axes[0], "ttft_seconds", 1e3), (axes[1], "decode_tokens_per_second", 1.0)):
                if key == "decode_tokens_per_second" and p == "online":
                    continue  # the store's line: one shared measurement
                pts = [(r["batch"], r[key] * scale) for r in rows if key in r]
                if pts:
                    label = f"{'compressed' if key.startswith('decode') and p == 'store' else p}, {n}"
                    ax.plot(*zip(*pts), styles[i % len(styles)], color=colors[p], marker="o", label=label)
    n = max(result["context_lens"])
    for p in PIPELINES:
        rows = sorted((r for r in result["rows"] if r["context_len"] == n and r["pipeline"] == p),
                      key=lambda r: r["batch"])
        axes[2].plot([r["batch"] for r in rows], [r["memory_bytes"] / 2**20 for r in rows], color=colors[p],
                     marker="o", label=p)
        axes[3].plot(result["context_lens"], [x[p] for x in result["largest_batch"]], color=colors[p], marker="o",
                     label=p)
    axes[2].axhline(result["memory_budget_bytes"] / 2**20, color="gray", linestyle="--", label="budget")
    titles = ("time to first token (ms, median)", "decode tokens/s", f"weights + KV cache (MiB), {n} tokens",
              "largest batch in the budget")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("context length (tokens)" if ax is axes[3] else "batch size")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    pf = "/".join(str(k) for k in result["pooling_factors"])
    fig.suptitle(f"full text vs online compression vs the store (PF {pf}), {result['backend']} "
                 f"({result['device_kind']}), {result['dtype']}, {result['attention']} attention, "
                 f"{result['new_tokens']} new tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict, out: str | Path) -> list[Path]:
    """serve_bench.json, .md, and .png (when matplotlib is installed) in `out`."""
    return write_report(result, out, "serve_bench", markdown_table, plot)


def main_serve(encoder_preset: str = "scaled", decoder_preset: str = "scaled", pooling: int = 4,
               context_lens: Sequence[int] | None = None, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
               memory_budget_gib: float | None = None, new_tokens: int = 32, prompt_len: int = 32,
               dtype: str | None = None, repeats: int = 3, buckets_per_octave: int = 64,
               attention: str | None = None, max_case_seconds: float | None = None, store_records: int = 8,
               store_vector_dtype: str | None = None, store_pq: str | None = None,
               out: str | Path = "arc_jax_runs/bench_serve") -> dict:
    enc_cfg, dec_cfg = bench_configs(encoder_preset, decoder_preset, pooling)
    start = time.perf_counter()
    result = bench_serve(enc_cfg, dec_cfg, context_lens, batch_sizes, memory_budget_gib, new_tokens, prompt_len,
                         dtype, repeats, buckets_per_octave, attention, max_case_seconds, store_records,
                         store_vector_dtype, store_pq)
    result |= {"encoder_preset": encoder_preset, "decoder_preset": decoder_preset,
               "wall_seconds": time.perf_counter() - start}
    result["goals"] = goals(result)
    print(markdown_table(result), end="")
    print(f"written: {', '.join(str(p) for p in write_outputs(result, out))} ({result['wall_seconds']:.0f} s)")
    return result
