"""The public Python API: load an encoder or a decoder from any supported layout and run it.

    enc = arc_jax.load_encoder(path)
    enc.encode(ids) -> list of [m_i, enc_dim]
    enc.compress(ids, decoder=0, task="continuation") -> list of [m_i (+1), dec_dim]
    dec = arc_jax.load_decoder(path)
    dec.logits([tokens, block, tokens, ...]) -> [n_text, vocab]

Generation (KV cache, batched, greedy or top-p) is arc_jax.ARCPipeline (arc_jax/inference/generate.py).

Both run the jitted Flax models. Inputs are packed on the host into a few shape buckets (powers
of two) so repeated calls reuse compiled programs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.inference.shapes import bucket_length, check_token_ids, device_table, stage_lengths
from arc_jax.model.attention import AttentionImpl
from arc_jax.model.config import BackboneConfig, EncoderConfig
from arc_jax.model.decoder import Decoder
from arc_jax.model.encoder import ARCEncoder
from arc_jax.model.inputs import pack_decoder_inputs, pack_encoder_inputs, pack_rows_first_fit, round_up

Task = Literal["continuation", "reconstruction"]
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}








def _resolve_dtype(dtype, params) -> jnp.dtype:
    if dtype is None:
        leaves = jax.tree.leaves(params)
        return jnp.dtype(leaves[0].dtype) if leaves else jnp.dtype(jnp.float32)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        dtype = _DTYPES[dtype]
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
    return dtype


def _cast(params, dtype):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)




def encoder_programs(module: ARCEncoder):
    """The jitted (encode, compress) programs an `Encoder` of `module` runs; `arc-jax plan
    --generate` (arc_jax/tools/plan_generate.py) lowers the same compress program for a TPU topology.

    encode(params, inputs, one_text_per_row) -> (h, segment_ids);
    compress(params, inputs, decoder, one_text_per_row) -> (projected h, projected [<Rec>, <Cont>])."""
    # Per chunk of rows: a chunk whose rows each hold one text masks attention by lengths.
    modules = {False: module, True: module.clone(one_text_per_row=True)}
    encode = jax.jit(lambda params, inputs, one_text_per_row: modules[one_text_per_row].apply(
        params, inputs, method=ARCEncoder.encode), static_argnames="one_text_per_row")
    compress = jax.jit(lambda params, inputs, decoder, one_text_per_row: modules[one_text_per_row].apply(
        params, inputs, decoder, method=ARCEncoder.compress), static_argnames=("decoder", "one_text_per_row"))
    return encode, compress


def run_packed(texts: Sequence[Sequence[int]], config: EncoderConfig, max_rows: int, fn,
               row_multiple: int = 1) -> list:
    """Encoder inputs of checked token-id texts, run chunk by chunk: the texts packed first-fit into
    rows of a power-of-two length, at most `max_rows` rows a chunk, a chunk's rows padded with empty
    ones to a power of two (then to a multiple of `row_multiple`: the local devices the rows are
    split over). Calls `fn(inputs, one_text_per_row)` per chunk; returns per text (that chunk's
    outputs, the text's place in them). `Encoder.compress` and the compressed store's writer both
    pack this way, so a store holds exactly the vectors online compression gives."""
    results: list = [None] * len(texts)
    extra = config.n_memory_tokens
    row_len = bucket_length(max(len(t) for t in texts) + extra) if len(texts) else 0
    rows = pack_rows_first_fit([len(t) + extra for t in texts], row_len)
    for start in range(0, len(rows), max_rows):
        chunk = rows[start: start + max_rows]
        chunk += [[]] * (round_up(bucket_length(len(chunk), 1), row_multiple) - len(chunk))
        inputs, layout = pack_encoder_inputs(
            [[texts[i] for i in row] for row in chunk], config, row_len=row_len,
            stage_lens=stage_lengths(config, row_len, max((len(r) for r in chunk), default=1)))
        outputs = fn(inputs, all(len(row) <= 1 for row in chunk))
        for i, place in zip((i for row in chunk for i in row), layout):
            results[i] = outputs, place
    return results


class Encoder:
    """An ARC encoder with its decoder heads, ready to encode and compress token-id lists."""

    def __init__(self, config: EncoderConfig, params, dtype=None, attention_impl: AttentionImpl = "xla",
                 max_rows: int = 64):
        self.config = config
        self.dtype = _resolve_dtype(dtype, params)
        self.params = _cast(params, self.dtype)
        self.max_rows = max_rows
        self.path: str | None = None  # the checkpoint folder, when loaded (tokenizers are looked for there)
        self.module = ARCEncoder(config, dtype=self.dtype, param_dtype=self.dtype, attention_impl=attention_impl)
        self._encode, self._compress = encoder_programs(self.module)

    def _run(self, ids, fn, what: str):
        """Pack texts into rows, run `fn(inputs, one_text_per_row)` per chunk of rows, cut per-text
        outputs."""
        texts = check_token_ids(ids, self.config.backbone.vocab_size, what)
        return run_packed(texts, self.config, self.max_rows, fn)

    def encode(self, ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Raw encoder output per text: [m_i, enc_dim] float32 (m_i = pooled length)."""
        def run(inputs, one_text_per_row):
            h, _ = self._encode({"params": self.params}, inputs, one_text_per_row=one_text_per_row)
            return np.asarray(h.astype(jnp.float32))

        return [out[p.row, p.start: p.start + p.length] for out, p in self._run(ids, run, "ids")]

    def compress(self, ids: Sequence[Sequence[int]], decoder: int = 0, task: Task = "continuation") -> list[np.ndarray]:
        """Per text, what the decoder reads: [m_i (+1), dec_dim] float32, the special vector
        (<Cont>, or <Rec> for task="reconstruction") appended when the model has it, projected."""
        if not 0 <= decoder < self.config.n_decoders:
            raise ValueError(f"decoder={decoder} but this encoder has {self.config.n_decoders} decoder head(s)")
        if task not in ("continuation", "reconstruction"):
            raise ValueError(f"task must be 'continuation' or 'reconstruction', got {task!r}")
        has_special = self.config.rec_tok if task == "reconstruction" else self.config.cont_tok
        special_row = 0 if task == "reconstruction" else 1

        def run(inputs, one_text_per_row):
            h, special = self._compress({"params": self.params}, inputs, decoder=decoder,
                                        one_text_per_row=one_text_per_row)
            # float32 on the device: numpy's conversion from bfloat16 is slow for long contexts.
            h, special = np.asarray(h.astype(jnp.float32)), np.asarray(special.astype(jnp.float32))
            return h, special[special_row: special_row + 1]

        out = []
        for (h, special), p in self._run(ids, run, "ids"):
            block = h[p.row, p.start: p.start + p.length]
            out.append(np.concatenate([block, special]) if has_special else block)
        return out

    def save(self, out: str | os.PathLike, format: str = "arc_jax", overwrite: bool = False, **options):
        """Write as "released" (Hugging Face ARC-Encoder), "reference" (training layout) or "arc_jax"."""
        from arc_jax.convert import write_encoder

        return write_encoder(self.config, self.params, out, format, overwrite, **options)


class DecoderLM:
    """A frozen decoder LLM that reads token ids with compressed blocks spliced in."""

    def __init__(self, config: BackboneConfig, params, dtype=None, attention_impl: AttentionImpl = "xla"):
        self.config = config
        self.dtype = _resolve_dtype(dtype, params)
        self.params = _cast(params, self.dtype)
        self.path: str | None = None  # the checkpoint folder, when loaded (tokenizers are looked for there)
        self.module = Decoder(config, dtype=self.dtype, param_dtype=self.dtype, attention_impl=attention_impl)
        self._logits = jax.jit(self.module.apply)

    def logits(self, segments: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """One sample: token-id lists and compressed blocks [k, dim] in order.
        Returns float32 logits [n_text, vocab] at the text-token positions only."""
        pieces = []
        for i, piece in enumerate(segments):
            if isinstance(piece, np.ndarray) and piece.ndim == 2:
                if piece.shape[1] != self.config.dim:
                    raise ValueError(f"segment {i}: compressed block of width {piece.shape[1]}, "
                                     f"the decoder's is {self.config.dim}")
                pieces.append(np.asarray(piece, np.float32))
            else:
                pieces.append(check_token_ids([piece], self.config.vocab_size, f"segment {i}")[0])
        n = sum(len(p) for p in pieces)
        if n == 0:
            raise ValueError("segments hold no tokens or vectors")
        inputs, table, text_mask = pack_decoder_inputs([pieces], row_len=bucket_length(n))
        logits = self._logits({"params": self.params}, inputs.tokens, inputs.segment_ids, inputs.positions,
                              device_table(table, self.config.dim, self.dtype), inputs.compressed_index)
        return np.asarray(logits[0])[text_mask[0]]

    def save(self, out: str | os.PathLike, format: str = "arc_jax", overwrite: bool = False, **options):
        """Write as "hf" (Hugging Face transformers), "meta" (consolidated.00.pth) or "arc_jax".
        `options` go to the layout's writer: meta takes shards=N and container="pth"|"safetensors"."""
        from arc_jax.convert import write_decoder

        return write_decoder(self.config, self.params, out, format, overwrite, **options)


def load_encoder(path: str | os.PathLike, dtype=None, attention_impl: AttentionImpl = "xla") -> Encoder:
    """Released Hugging Face ARC-Encoder folder, reference training checkpoint, or arc_jax
    checkpoint/workdir. dtype None keeps the checkpoint's; "float32" or "bfloat16" casts."""
    from arc_jax.convert import read_encoder
    from arc_jax.train.checkpoint import read_checkpoint

    config, params = read_checkpoint(path, read_encoder)  # a workdir: its newest intact step
    encoder = Encoder(config, params, dtype, attention_impl)
    encoder.path = str(path)
    return encoder


def load_decoder(path: str | os.PathLike, dtype=None, attention_impl: AttentionImpl = "xla",
                 keep_rope_scaling: bool = False) -> DecoderLM:
    """Meta/Mistral consolidated folder, Hugging Face transformers folder, or arc_jax checkpoint.

    Llama 3.1 RoPE scaling recorded in the checkpoint is dropped unless `keep_rope_scaling`: the
    reference ARC-Encoder code never applies it, and released encoders were trained that way."""
    from arc_jax.convert import read_decoder
    from arc_jax.train.checkpoint import read_checkpoint

    # A workdir's random decoder is the same at every step; else its newest intact step names it.
    has_own = (Path(path) / "decoder_0").is_dir()
    config, params = read_decoder(path) if has_own else read_checkpoint(path, read_decoder)
    if config.rope_scaling is not None and not keep_rope_scaling:
        config = dataclasses.replace(config, rope_scaling=None)
    decoder = DecoderLM(config, params, dtype, attention_impl)
    decoder.path = str(path)
    return decoder
