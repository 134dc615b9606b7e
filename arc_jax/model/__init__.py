"""Flax models: the shared Llama-family backbone (layers.py, stack.py, attention.py), the ARC encoder
(encoder.py; the pooling groups are decided on the host in pooling.py) and the frozen decoder
(decoder.py; kv_cache.py for generation); inputs.py packs their static-shape device inputs on the
host (first-fit rows, pooling plans, spliced decoder rows); param_groups.py names the encoder's
shared group and per-decoder heads."""

from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig, RopeScaling
from arc_jax.model.decoder import Decoder, splice_compressed
from arc_jax.model.encoder import ARCEncoder
from arc_jax.model.inputs import DecoderInputs, EncoderInputs, pack_decoder_inputs, pack_encoder_inputs
from arc_jax.model.pooling import pool_groups

__all__ = [
    "ARCEncoder", "BackboneConfig", "Decoder", "DecoderInputs", "EncoderConfig", "EncoderInputs", "ProjectorConfig",
    "RopeScaling", "pack_decoder_inputs", "pack_encoder_inputs", "pool_groups", "splice_compressed",
]
