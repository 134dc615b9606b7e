"""arc_jax: JAX/Flax ARC-Encoder context compressors (Pilchen, Grave and Pérez, 2025).

An ARC encoder turns a text into x-times fewer continuous vectors that a frozen decoder LLM
reads in place of the text's token embeddings.

Where things are: model/ (the Flax encoder and decoder), data/ (input pipeline and batch packing),
train/ (training loop and jitted step), inference/ (loading and generation), evaluation/ (metrics,
harness), demo/ (`arc-jax demo`), tools/ (benchmarks, round trip), cli/ (the `arc-jax` command);
the checkpoint layouts are the sibling package convert/ (installed as arc_jax.convert);
sharding.py places everything on the mesh; errors.py holds the failures reported as one line.
"""

from arc_jax.inference.api import DecoderLM, Encoder, load_decoder, load_encoder
from arc_jax.inference.generate import ARCPipeline, Compressed
from arc_jax.inference.store import CompressedStore, write_store

__version__ = "0.1.0"
__all__ = ["ARCPipeline", "Compressed", "CompressedStore", "DecoderLM", "Encoder", "load_decoder", "load_encoder",
           "write_store"]
