"""Answering with compressed contexts: an encoder, one of its decoders, and their tokenizers.

    pipe = arc_jax.ARCPipeline(encoder=enc, decoder=dec, decoder_index=0)
    docs = pipe.compress(["first document ...", "second document ..."])   # once, reusable
    pipe.generate([["Document: ", docs[0], "\\nQuestion: who?\\nAnswer:"],
                   ["Document: ", docs[1], "\\nQuestion: when?\\nAnswer:"]], max_new_tokens=32)

A prompt is text pieces and `Compressed` documents in order. Texts given to `compress` are read
with the encoder's tokenizer (no BOS/EOS, as in training); prompt text with the decoder's. Each
prompt starts with the decoder's BOS, then its pieces in order, each text piece tokenised on its
own; this is the few-shot layout the encoder is fine-tuned on ([BOS, "Document: ", <C>, <Cont>,
"\\nQuestion: ..."], arc_jax.prompts), also when the prompt opens with a compressed document. Generation stops at the decoder tokenizer's EOS.
`generate_ids` needs no tokenizer: it reads token ids and blocks as given (no BOS added).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from arc_jax.inference.api import DecoderLM, Encoder
from arc_jax.data.bad_records import DataError
from arc_jax.convert.hub import is_hub_id, local_checkpoint
from arc_jax.data.tokenizers import TOKENIZER_FILES, Tokenizer, load_tokenizer
from arc_jax.inference.decoding import generate_ids
from arc_jax.inference.sampling import DEFAULT_TOP_P


@dataclasses.dataclass(frozen=True, eq=False)
class Compressed:
    """One compressed text as a decoder reads it: projected vectors [m (+1 for <Cont>), dec_dim]
    (float32), the number of encoder tokens it came from, and the decoder head it was made for."""

    vectors: np.ndarray
    n_tokens: int
    decoder_index: int | None = None

    @property
    def ratio(self) -> float:
        """Source tokens per decoder slot (the special vector counted as a slot)."""
        return self.n_tokens / len(self.vectors)


PromptPiece = Union[str, Compressed]
TokenizerLike = Union[str, os.PathLike, Tokenizer, None]


class ARCPipeline:
    """Compress contexts with an ARC encoder and answer prompts with one of its decoders.

    Tokenizers: `encoder_tokenizer` / `decoder_tokenizer` (a path to a file or folder, or a loaded
    tokenizer); left out, the tokenizer file next to the loaded checkpoint (tokenizer.model.v3,
    tokenizer.model, tokenizer.json) is used. They are looked up on first use: `generate_ids`
    never needs them."""

    def __init__(self, encoder: Encoder, decoder: DecoderLM, decoder_index: int = 0,
                 encoder_tokenizer: TokenizerLike = None, decoder_tokenizer: TokenizerLike = None):
        if not 0 <= decoder_index < encoder.config.n_decoders:
            raise ValueError(f"decoder_index={decoder_index} but the encoder has {encoder.config.n_decoders} "
                             "decoder head(s)")
        out_dim = encoder.config.projectors[decoder_index].out_dim
        if out_dim != decoder.config.dim:
            raise ValueError(f"encoder head {decoder_index} projects to width {out_dim}, the decoder's is "
                             f"{decoder.config.dim}: wrong decoder_index or decoder")
        self.encoder, self.decoder, self.decoder_index = encoder, decoder, decoder_index
        self._tokenizer_sources = {"encoder": encoder_tokenizer, "decoder": decoder_tokenizer}
        self._tokenizers: dict[str, Tokenizer] = {}

    @property
    def encoder_tokenizer(self) -> Tokenizer:
        return self._tokenizer("encoder")

    @property
    def decoder_tokenizer(self) -> Tokenizer:
        return self._tokenizer("decoder")

    def _tokenizer(self, side: str) -> Tokenizer:
        if side not in self._tokenizers:
            model = self.encoder if side == "encoder" else self.decoder
            self._tokenizers[side] = resolve_tokenizer(self._tokenizer_sources[side], getattr(model, "path", None),
                                                        side)
        return self._tokenizers[side]

    def compress(self, texts: Sequence[str]) -> list[Compressed]:
        """Each text compressed once for this pipeline's decoder (with <Cont> appended when the
        encoder has it); reuse the results across prompts."""
        if isinstance(texts, str):
            raise TypeError("compress takes a list of texts, got a single string")
        tokenizer = self.encoder_tokenizer
        ids = [tokenizer.encode(t) for t in texts]
        empty = [i for i, t in enumerate(ids) if not t]
        if empty:
            raise ValueError(f"text {empty[0]} is empty after tokenisation: nothing to compress")
        blocks = self.encoder.compress(ids, decoder=self.decoder_index) if ids else []
        return [Compressed(b, len(t), self.decoder_index) for b, t in zip(blocks, ids)]

    def generate(self, prompts: Sequence[PromptPiece | Sequence[PromptPiece]], max_new_tokens: int = 64,
                 temperature: float = 0.0, top_p: float = DEFAULT_TOP_P, seed: int = 0) -> list[str]:
        """The answer text per prompt: BOS (if the decoder has one), then the prompt's pieces, then up to max_new_tokens
        tokens (greedy at temperature 0, else top-p sampling), stopping at EOS."""
        tokenizer = self.decoder_tokenizer
        id_prompts = []
        for prompt in prompts:
            pieces = [prompt] if isinstance(prompt, (str, Compressed)) else list(prompt)
            bos = [[tokenizer.bos_id]] if tokenizer.bos_id is not None else []  # Qwen and OLMo read no BOS
            id_prompts.append(bos + [tokenizer.encode(p) if isinstance(p, str) else p for p in pieces])
        out = self.generate_ids(id_prompts, max_new_tokens, temperature, top_p, seed, stop_ids=[tokenizer.eos_id],
                                vocab_limit=min(tokenizer.vocab_size, self.decoder.config.vocab_size))
        return [tokenizer.decode(ids) for ids in out]

    def generate_ids(self, prompts: Sequence[Sequence[Sequence[int] | np.ndarray | Compressed]],
                     max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = DEFAULT_TOP_P, seed: int = 0,
                     stop_ids: Sequence[int] | None = None, vocab_limit: int | None = None) -> list[list[int]]:
        """New token ids per prompt, without tokenizers. Pieces: token ids (list or 1-D int array)
        and compressed blocks (`Compressed`, or a 2-D float array from `Encoder.compress`), read as
        given: no BOS is added. Rows stop at any of `stop_ids` (default: none), which is left out;
        only ids below `vocab_limit` (default: the decoder's vocabulary) are generated."""
        pieces = [[self._vectors(p, i) if isinstance(p, Compressed) else p for p in prompt]
                  for i, prompt in enumerate(prompts)]
        return generate_ids(self.decoder, pieces, max_new_tokens, temperature, top_p, seed, stop_ids or (),
                            vocab_limit)

    def _vectors(self, block: Compressed, prompt: int) -> np.ndarray:
        if block.decoder_index is not None and block.decoder_index != self.decoder_index:
            raise ValueError(f"prompt {prompt}: a context compressed for decoder {block.decoder_index} given to "
                             f"the pipeline of decoder {self.decoder_index}")
        return block.vectors


def resolve_tokenizer(source: TokenizerLike, checkpoint: str | os.PathLike | None, side: str) -> Tokenizer:
    """The tokenizer `source` names (a file or folder, or a loaded one), else the one in the
    checkpoint's folder (or its hub snapshot); DataError naming the argument to pass. Also how
    `arc-jax index` finds the encoder's."""
    if isinstance(source, (str, os.PathLike)):
        return load_tokenizer(source)
    if source is not None:  # a loaded tokenizer (anything with Tokenizer's interface)
        return source
    if checkpoint is not None and is_hub_id(checkpoint):
        checkpoint = local_checkpoint(checkpoint)  # loaded from the hub: its snapshot holds the tokenizer
    if checkpoint is not None and any((Path(checkpoint) / name).is_file() for name in TOKENIZER_FILES):
        return load_tokenizer(checkpoint)
    where = f"next to the {side} checkpoint {checkpoint} " if checkpoint is not None else ""
    raise DataError(f"no {side} tokenizer {where}(looked for {', '.join(TOKENIZER_FILES)}); "
                    f"pass ARCPipeline({side}_tokenizer=PATH)")
