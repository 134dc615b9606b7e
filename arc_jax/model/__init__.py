"""Flax models: the shared Llama-family backbone, the ARC encoder and the decoder."""

from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig, RopeScaling
from arc_jax.model.decoder import Decoder, splice_compressed
from arc_jax.model.encoder import ARCEncoder
from arc_jax.model.inputs import DecoderInputs, EncoderInputs, pack_decoder_inputs, pack_encoder_inputs
from arc_jax.model.pooling import pool_groups

__all__ = [
    "ARCEncoder", "BackboneConfig", "Decoder", "DecoderInputs", "EncoderConfig", "EncoderInputs", "ProjectorConfig",
    "RopeScaling", "pack_decoder_inputs", "pack_encoder_inputs", "pool_groups", "splice_compressed",
]
