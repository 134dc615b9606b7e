"""Decoders read from transformers checkpoints give transformers' logits (float32, CPU).

Tiny random Llama (with Llama 3.1 RoPE scaling), Mistral and OLMo models are saved with
save_pretrained, read by arc_jax.convert and run by the Flax Decoder: on plain tokens, with a
compressed block spliced in (against transformers fed inputs_embeds), after a trip through the
Meta layout, and packed two sequences to a row.
"""

import numpy as np
import pytest
import torch
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          OlmoConfig, OlmoForCausalLM)

from arc_jax.convert import read_decoder, write_decoder
from arc_jax.model import Decoder, pack_decoder_inputs

TOLERANCE = 1e-4
VOCAB, DIM = 128, 64
SHAPE = dict(hidden_size=DIM, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=VOCAB, bos_token_id=None, eos_token_id=None, pad_token_id=None,
             # Large weights so attention is far from uniform and a RoPE mistake shows in the logits.
             initializer_range=0.1)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
MODELS = {
    "llama3": (LlamaConfig, LlamaForCausalLM,
               dict(rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, max_position_embeddings=131072, rms_norm_eps=1e-5)),
    "mistral": (MistralConfig, MistralForCausalLM, dict(rope_theta=1e6, sliding_window=None)),
    "olmo": (OlmoConfig, OlmoForCausalLM, dict(num_key_value_heads=4)),  # OLMo 7B is MHA
}


def build_hf_model(name: str, seed: int):
    config_cls, model_cls, extra = MODELS[name]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**SHAPE, **extra})).float().eval()
    with torch.no_grad():  # norm weights start at ones: randomise them so a misplaced norm shows
        for param_name, p in model.named_parameters():
            if "norm" in param_name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=list(MODELS))
def hf_checkpoint(request, tmp_path_factory):
    model = build_hf_model(request.param, seed=len(request.param))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    cfg, params = read_decoder(path)
    return request.param, model, path, cfg, params


def hf_logits(model, tokens, attention_mask=None, inputs_embeds=None) -> np.ndarray:
    with torch.no_grad():
        if inputs_embeds is not None:
            out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        else:
            out = model(input_ids=torch.tensor(tokens), attention_mask=attention_mask)
    return out.logits.float().numpy()


def flax_logits(cfg, params, tokens, segment_ids=None, positions=None, compressed=None, compressed_index=None):
    tokens = np.asarray(tokens, np.int32)
    if segment_ids is None:
        segment_ids = np.ones_like(tokens)
        positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
    return np.asarray(Decoder(cfg).apply({"params": params}, tokens, segment_ids, positions, compressed,
                                         compressed_index))


def random_tokens(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


def test_hf_checkpoint_gives_transformers_logits(hf_checkpoint):
    name, model, _, cfg, params = hf_checkpoint
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.hidden_dim, cfg.vocab_size) == (DIM, 2, 4, 160, VOCAB)
    assert cfg.norm_type == ("layernorm" if name == "olmo" else "rmsnorm")
    assert (cfg.rope_scaling is not None) == (name == "llama3")
    tokens = random_tokens(1, (2, 24))
    reference = hf_logits(model, tokens)
    diff = max_diff(flax_logits(cfg, params, tokens), reference)
    print(f"{name}: max |logit diff| {diff:.2e}")
    assert diff <= TOLERANCE

    # The test can see a RoPE convention error: undo the q/k permutation and the logits move.
    pairs_as_halves = np.r_[0:cfg.head_dim:2, 1:cfg.head_dim:2]
    attention = params["layers"]["block"]["attention"]
    wrong = {**params, "layers": {"block": {**params["layers"]["block"], "attention": {
        **attention, "wq": attention["wq"][..., pairs_as_halves], "wk": attention["wk"][..., pairs_as_halves]}}}}
    assert max_diff(flax_logits(cfg, wrong, tokens), reference) > 100 * TOLERANCE


def test_spliced_block_matches_transformers_inputs_embeds(hf_checkpoint):
    name, model, _, cfg, params = hf_checkpoint
    assert spliced_logit_diff(name, model, cfg, params) <= TOLERANCE


def spliced_logit_diff(name, model, cfg, params) -> float:
    """Max |logit diff| at text positions of rows with compressed blocks spliced in, against
    transformers fed the same embeddings (inputs_embeds)."""
    rng = np.random.default_rng(2)
    block_a = rng.normal(0, 0.5, (3, DIM)).astype(np.float32)
    block_b = rng.normal(0, 0.5, (2, DIM)).astype(np.float32)
    samples = [[random_tokens(3, 5), block_a, random_tokens(4, 4), block_b, random_tokens(5, 6)],
               [block_b, random_tokens(6, 9)],
               [random_tokens(7, 11)]]
    inputs, table, text_mask = pack_decoder_inputs(samples)
    ours = flax_logits(cfg, params, inputs.tokens, inputs.segment_ids, inputs.positions, table,
                       inputs.compressed_index)

    embeds = model.get_input_embeddings()(torch.tensor(inputs.tokens, dtype=torch.long)).detach().numpy().copy()
    slots = inputs.compressed_index >= 0
    embeds[slots] = table[inputs.compressed_index[slots]]
    reference = hf_logits(model, None, torch.tensor(inputs.segment_ids), torch.tensor(embeds))
    diff = max_diff(ours[text_mask], reference[text_mask])
    print(f"{name} spliced: max |logit diff| at {int(text_mask.sum())} text positions {diff:.2e}")
    return diff


def test_meta_layout_round_trip_keeps_parity(hf_checkpoint, tmp_path):
    name, model, _, cfg, params = hf_checkpoint
    write_decoder(cfg, params, tmp_path / "meta", "meta")
    cfg2, params2 = read_decoder(tmp_path / "meta")
    assert cfg2 == cfg
    tokens = random_tokens(8, (2, 16))
    diff = max_diff(flax_logits(cfg2, params2, tokens), hf_logits(model, tokens))
    print(f"{name} via meta: max |logit diff| {diff:.2e}")
    assert diff <= TOLERANCE


def test_packed_sequences_match_each_alone(hf_checkpoint):
    name, model, _, cfg, params = hf_checkpoint
    first, second, row_len = random_tokens(9, 10), random_tokens(10, 7), 20
    packed = np.zeros((1, row_len), np.int32)
    packed[0, :17] = np.concatenate([first, second])
    segment_ids = np.array([[1] * 10 + [2] * 7 + [0] * 3], np.int32)
    positions = np.array([list(range(10)) + list(range(7)) + [0] * 3], np.int32)
    together = flax_logits(cfg, params, packed, segment_ids, positions)[0]

    alone = np.zeros((2, row_len), np.int32)
    alone[0, :10], alone[1, :7] = first, second
    alone_segments = np.array([[1] * 10 + [0] * 10, [1] * 7 + [0] * 13], np.int32)
    alone_positions = np.broadcast_to(np.arange(row_len, dtype=np.int32), alone.shape)
    separate = flax_logits(cfg, params, alone, alone_segments, alone_positions)
    assert max_diff(together[:10], separate[0, :10]) <= 1e-5
    assert max_diff(together[10:17], separate[1, :7]) <= 1e-5
    assert max_diff(together[10:17], hf_logits(model, second[None])[0]) <= TOLERANCE


def test_written_hf_checkpoint_loads_in_transformers(hf_checkpoint, tmp_path):
    name, model, _, cfg, params = hf_checkpoint
    out = tmp_path / "hf"
    write_decoder(cfg, params, out, "hf", max_shard_bytes=40_000)  # several shards and an index
    assert (out / "model.safetensors.index.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(loaded) is (OlmoForCausalLM if name == "olmo" else LlamaForCausalLM)
    tokens = random_tokens(11, (2, 16))
    np.testing.assert_array_equal(hf_logits(loaded, tokens), hf_logits(model, tokens))
