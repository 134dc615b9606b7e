"""Batched generation on a decoder LLM: per shape bucket, one jitted program prefills the prompts
(compressed blocks spliced in) into a KV cache, another decodes in a `jax.lax.while_loop`.

    generate_ids(decoder, [[ids, block, ids], [ids]], max_new_tokens=32) -> [[id, ...], [id, ...]]

Prompts are right-padded (kv_cache.py): each row keeps positions 0..L-1 exactly as in the
uncached forward pass and decodes at its own next position. Shapes are bucketed to powers of two
(rows, prompt length, cache length, output length, compressed-vector table), so prompts of
other lengths and other `max_new_tokens` reuse compiled programs; temperature, top-p, the token
budget and stop ids are traced values. The loop runs on the device without a host round trip per
token and ends when every row has produced a stop token or the budget is spent.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.inference.api import DecoderLM
from arc_jax.inference.shapes import bucket_length, check_token_ids, device_table
from arc_jax.model.decoder import Decoder, unstack_layers
from arc_jax.model.inputs import pack_decoder_inputs
from arc_jax.model.kv_cache import KVCache, empty_cache
from arc_jax.inference.sampling import DEFAULT_TOP_P, sample_next

Piece = Sequence[int] | np.ndarray
_NO_TOKEN = -1  # output slots after a row has stopped


def check_prompt(pieces: Sequence[Piece], decoder_dim: int, vocab_size: int, what: str) -> list:
    """Token-id pieces (lists or 1-D int arrays) and compressed blocks (2-D float arrays [k, dim]),
    validated; empty id pieces are dropped."""
    out = []
    for j, piece in enumerate(pieces):
        if isinstance(piece, np.ndarray) and piece.ndim == 2 and np.issubdtype(piece.dtype, np.floating):
            if piece.shape[1] != decoder_dim:
                raise ValueError(f"{what} piece {j}: compressed block of width {piece.shape[1]}, "
                                 f"the decoder's is {decoder_dim}")
            if len(piece):
                out.append(np.asarray(piece, np.float32))
        elif isinstance(piece, np.ndarray) and (piece.ndim != 1 or not np.issubdtype(piece.dtype, np.integer)):
            raise TypeError(f"{what} piece {j}: expected token ids (1-D ints) or a compressed block (2-D floats), "
                            f"got a {piece.ndim}-D {piece.dtype} array")
        elif len(piece):
            out += check_token_ids([piece], vocab_size, f"{what} piece {j}")
    if not out:
        raise ValueError(f"{what} holds no tokens or vectors")
    return out


def generate_ids(decoder: DecoderLM, prompts: Sequence[Sequence[Piece]], max_new_tokens: int = 64,
                 temperature: float = 0.0, top_p: float = DEFAULT_TOP_P, seed: int = 0,
                 stop_ids: Sequence[int] = (), vocab_limit: int | None = None, max_rows: int = 64,
                 buckets_per_octave: int = 1) -> list[list[int]]:
    """New token ids per prompt, the stop token that ended a row left out.

    A prompt is token-id pieces and compressed blocks in order, read as they are (no BOS is
    added). temperature 0 is greedy; otherwise tokens are drawn from the top-p nucleus of
    softmax(logits / temperature) with keys derived from `seed` and the step. Only ids below
    `vocab_limit` are generated (a tokenizer smaller than the embedding table has no others).
    `buckets_per_octave` > 1 pads prompt and cache lengths to that many lengths per octave instead
    of a power of two (8: at most 1/8 padding, as `arc-jax bench inference` runs): less wasted
    work per call, more compiled programs. A chunk holds at most `max_rows` prompts; its rows are
    padded to a power of two, never past `max_rows`."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if buckets_per_octave < 1:
        raise ValueError(f"buckets_per_octave must be >= 1, got {buckets_per_octave}")
    cfg = decoder.config
    checked = [check_prompt(p, cfg.dim, cfg.vocab_size, f"prompt {i}") for i, p in enumerate(prompts)]
    stops = [int(s) for s in stop_ids]
    if any(not 0 <= s < cfg.vocab_size for s in stops):
        raise ValueError(f"stop ids {stops} fall outside the vocabulary [0, {cfg.vocab_size})")
    vocab_limit = cfg.vocab_size if vocab_limit is None else vocab_limit
    if not 0 < vocab_limit <= cfg.vocab_size:
        raise ValueError(f"vocab_limit must be in [1, {cfg.vocab_size}], got {vocab_limit}")
    results: list[list[int]] = [[] for _ in checked]
    if max_new_tokens == 0 or not checked:
        return results
    # Similar lengths share a chunk, so little of a chunk is padding.
    lengths = [sum(len(p) for p in pieces) for pieces in checked]
    order = sorted(range(len(checked)), key=lambda i: lengths[i])
    for start in range(0, len(order), max_rows):
        chunk = order[start: start + max_rows]
        out = _run_chunk(decoder, [checked[i] for i in chunk], max(lengths[i] for i in chunk), max_new_tokens,
                         temperature, top_p, seed + start, stops, vocab_limit, buckets_per_octave, max_rows)
        for i, row in zip(chunk, out):
            results[i] = _cut(row, stops)
    return results


def _cut(row: np.ndarray, stops: list[int]) -> list[int]:
    tokens = []
    for t in row.tolist():
        if t == _NO_TOKEN or t in stops:
            break
        tokens.append(t)
    return tokens


def generation_lengths(prompt_len: int, max_new_tokens: int, per_octave: int = 1) -> tuple[int, int]:
    """The (prefill, KV cache) lengths a chunk whose longest prompt has prompt_len positions runs at."""
    return bucket_length(prompt_len, per_octave=per_octave), bucket_length(prompt_len + max_new_tokens, per_octave=per_octave)


class ChunkShape(NamedTuple):
    """The static shapes of a chunk's programs: rows (prompts padded to a power of two, at most
    max_rows), prefill length, KV cache length, output slots."""

    rows: int
    prompt_len: int
    cache_len: int
    out_len: int


def chunk_shape(n_prompts: int, max_len: int, max_new_tokens: int, per_octave: int = 1,
                max_rows: int | None = None) -> ChunkShape:
    """The shapes a chunk of n_prompts prompts, the longest max_len positions, runs at (also what
    `arc-jax bench serve` counts KV-cache bytes on and times the decode program with)."""
    rows = bucket_length(n_prompts, 1)
    if max_rows is not None:
        rows = min(rows, max(max_rows, n_prompts))
    return ChunkShape(rows, *generation_lengths(max_len, max_new_tokens, per_octave),
                      bucket_length(max_new_tokens, 8))


class _Sampling(NamedTuple):
    """Runtime values of token choice (traced: changing them compiles nothing)."""

    stop_ids: jax.Array
    temperature: jax.Array
    top_p: jax.Array
    vocab_limit: jax.Array
    key: jax.Array


def sampling_values(stop_ids: Sequence[int], temperature: float, top_p: float, vocab_limit: int,
                    seed: int) -> _Sampling:
    """The traced sampling argument of the prefill and decode programs (stop ids padded to a few
    lengths, so their number compiles little)."""
    stop_array = np.full(bucket_length(len(stop_ids), 4), _NO_TOKEN, np.int32)
    stop_array[: len(stop_ids)] = stop_ids
    return _Sampling(stop_array, np.float32(max(temperature, 1e-6)), np.float32(top_p), np.int32(vocab_limit),
                     jax.random.key(seed))


def _run_chunk(decoder: DecoderLM, prompts: list[list], max_len: int, max_new_tokens: int, temperature: float,
               top_p: float, seed: int, stop_ids: list[int], vocab_limit: int, per_octave: int,
               max_rows: int | None = None) -> np.ndarray:
    rows, prompt_len, cache_len, out_len = chunk_shape(len(prompts), max_len, max_new_tokens, per_octave, max_rows)
    # Padding rows: one token each, stopped from the start so they never hold the loop.
    inputs, table, _ = pack_decoder_inputs(prompts + [[[0]]] * (rows - len(prompts)), row_len=prompt_len)
    lengths = inputs.segment_ids.sum(axis=1).astype(np.int32)
    sampling = sampling_values(stop_ids, temperature, top_p, vocab_limit, seed)
    greedy = temperature == 0
    compressed = device_table(table, decoder.config.dim, decoder.dtype)
    token, done, cache = _prefill(decoder.params, inputs.tokens, compressed, inputs.compressed_index, lengths,
                                  np.arange(rows) >= len(prompts), sampling, module=decoder.module, greedy=greedy)
    if max_new_tokens == 1:  # the prefill's logits gave it: no decode program
        return np.asarray(token)[: len(prompts), None]
    out = _decode(decoder.params, cache, token, done, lengths, np.int32(max_new_tokens), sampling,
                  module=decoder.module, cache_len=cache_len, out_len=out_len, greedy=greedy)
    return np.asarray(out)[: len(prompts)]


def _choose(logits, step, done, sampling: _Sampling, greedy: bool):
    """Next token per row (_NO_TOKEN where a row is done) and the updated done mask."""
    logits = jnp.where(jnp.arange(logits.shape[-1]) < sampling.vocab_limit, logits, -jnp.inf)
    token = sample_next(logits, jax.random.fold_in(sampling.key, step), sampling.temperature, sampling.top_p, greedy)
    token = jnp.where(done, _NO_TOKEN, token)
    return token, done | jnp.isin(token, sampling.stop_ids)


@functools.partial(jax.jit, static_argnames=("module", "greedy"))
def _prefill(params, tokens, compressed, compressed_index, lengths, done, sampling: _Sampling, *, module: Decoder,
             greedy: bool):
    """The prompts through the scanned layers (one compiled layer; slicing each layer's weights
    out of the stack copies them, ~7 ms for an 8B decoder on an H200: see stack.py): each row's
    first new token, the done mask, and the stacked KV cache of the prompt positions. Its program
    depends on the prompt shape only."""
    rows, prompt_len = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(prompt_len, dtype=jnp.int32), (rows, prompt_len))
    logits, cache = module.apply({"params": params}, tokens, positions,
                                 empty_cache(module.cfg, rows, prompt_len, module.dtype), lengths - 1, compressed,
                                 compressed_index, method=Decoder.cached_forward)
    token, done = _choose(logits, 0, done, sampling, greedy)
    return token, done, cache


@functools.partial(jax.jit, static_argnames=("module", "cache_len", "out_len", "greedy"))
def _decode(params, prompt_cache: KVCache, token, done, lengths, max_new_tokens, sampling: _Sampling, *,
            module: Decoder, cache_len: int, out_len: int, greedy: bool):
    """Token ids [rows, out_len] from the prefill's first token on (_NO_TOKEN after a row stops,
    and past max_new_tokens), decoded in a while loop on the device.

    The step runs the unrolled layers: each layer's weights are sliced out of the stack once
    here, not at every token, and each layer's cache is its own buffer, updated in place
    (arc_jax/model/stack.py)."""
    rows = token.shape[0]
    unrolled = module.clone(scan_layers=False)
    unrolled_params = unstack_layers(params, module.cfg.n_layers)
    out = jnp.full((rows, out_len), _NO_TOKEN, jnp.int32).at[:, 0].set(token)

    def keep_going(state):
        step, _, _, _, done = state
        return (step < max_new_tokens) & ~jnp.all(done)

    def decode_step(state):
        step, token, caches, out, done = state
        # Token `step - 1` sits at position (and cache slot) length + step - 1 of its row.
        logits, caches = unrolled.apply({"params": unrolled_params}, jnp.maximum(token, 0)[:, None],
                                        (lengths + step - 1)[:, None], caches, jnp.zeros(rows, jnp.int32),
                                        method=Decoder.cached_forward)
        token, done = _choose(logits, step, done, sampling, greedy)
        return step + 1, token, caches, out.at[:, step].set(token), done

    state = (jnp.int32(1), token, prompt_cache.per_layer(cache_len), out, done)
    return jax.lax.while_loop(keep_going, decode_step, state)[3]


# The jitted programs of a chunk and the type of their sampling argument, under public names for
# `arc-jax plan --generate` (arc_jax/tools/plan_generate.py), which lowers the same programs for a
# TPU topology (_run_chunk calls them by their private names, which tests patch).
prefill_program, decode_program, Sampling = _prefill, _decode, _Sampling
