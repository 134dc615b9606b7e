"""arc_jax: JAX/Flax ARC-Encoder context compressors (Pilchen, Grave and Pérez, 2025).

An ARC encoder turns a text into x-times fewer continuous vectors that a frozen decoder LLM
reads in place of the text's token embeddings.
"""

from arc_jax.inference.api import DecoderLM, Encoder, load_decoder, load_encoder
from arc_jax.inference.generate import ARCPipeline, Compressed

__version__ = "0.1.0"
__all__ = ["ARCPipeline", "Compressed", "DecoderLM", "Encoder", "load_decoder", "load_encoder"]
