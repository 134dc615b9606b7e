"""`arc-jax roundtrip`: tiny random models through every checkpoint layout, checked.

A self-contained check that needs no download: a 2-decoder ARC encoder and a decoder are
initialised at random, written in each layout, read back (format detected from the files), and
compared parameter by parameter (bit-exact) and output by output (encode, compress, logits).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
from tqdm import tqdm

from arc_jax.inference.api import DecoderLM, Encoder, load_decoder, load_encoder
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig, ProjectorConfig, pack_encoder_inputs
from arc_jax.model import param_groups


def tiny_configs() -> tuple[EncoderConfig, BackboneConfig]:
    encoder_backbone = BackboneConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128,
                                      vocab_size=256, rope_theta=500000.0)
    decoder = BackboneConfig(dim=96, n_layers=2, n_heads=6, n_kv_heads=2, head_dim=16, hidden_dim=192,
                             vocab_size=256, rope_theta=1e6)
    projector = ProjectorConfig(in_dim=64, hidden_dim=48, out_dim=96)
    encoder = EncoderConfig(backbone=encoder_backbone, projectors=(projector, projector), n_truncated_layers=2,
                            compress_rates=(-4,))
    return encoder, decoder


def random_params(encoder_cfg: EncoderConfig, decoder_cfg: BackboneConfig, seed: int):
    k1, k2 = jax.random.split(jax.random.key(seed))
    inputs, _ = pack_encoder_inputs([[[1, 2, 3, 4]]], encoder_cfg)
    enc = nn.unbox(jax.jit(ARCEncoder(encoder_cfg).init)(k1, inputs)["params"])
    # Special vectors start at ones; perturb them so a swapped <Rec>/<Cont> would show.
    for d in range(encoder_cfg.n_decoders):
        head = enc[param_groups.head(d)]
        head["rec_tok"] = head["rec_tok"] + 0.1 * jax.random.normal(jax.random.fold_in(k1, 2 * d), head["rec_tok"].shape)
        head["cont_tok"] = head["cont_tok"] - 0.1 * jax.random.normal(jax.random.fold_in(k1, 2 * d + 1),
                                                                      head["cont_tok"].shape)
    tokens = np.zeros((1, 8), np.int32)
    dec = nn.unbox(jax.jit(Decoder(decoder_cfg).init)(k2, tokens, tokens, tokens)["params"])
    return jax.device_get(enc), jax.device_get(dec)


def _same_params(a, b) -> bool:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def run_roundtrip(workdir: Path, seed: int = 0) -> bool:
    start = time.perf_counter()
    encoder_cfg, decoder_cfg = tiny_configs()
    enc_params, dec_params = random_params(encoder_cfg, decoder_cfg, seed)
    encoder, decoder = Encoder(encoder_cfg, enc_params), DecoderLM(decoder_cfg, dec_params)
    rng = np.random.default_rng(seed)
    texts = [rng.integers(1, 256, n).tolist() for n in (37, 5, 12)]
    prompt = rng.integers(1, 256, 6).tolist()
    ref_encode = encoder.encode(texts)
    ref_compress = encoder.compress(texts, decoder=1)
    ref_logits = decoder.logits([prompt, ref_compress[0], prompt])

    has_torch = importlib.util.find_spec("torch") is not None
    jobs = [("encoder", fmt, {}) for fmt in ("released", "reference", "arc_jax")]
    jobs += [("decoder", "hf", {}), ("decoder", "arc_jax", {}),
             ("decoder", "meta", {} if has_torch else {"container": "safetensors"})]
    rows, ok = [], True
    for kind, fmt, options in tqdm(jobs, desc="roundtrip", unit="layout"):
        out = workdir / f"{kind}_{fmt}"
        if kind == "encoder":
            encoder.save(out, fmt, overwrite=True, **options)
            loaded = load_encoder(out)
            same = _same_params(enc_params, loaded.params)
            diff = max(max(float(np.abs(x - y).max()) for x, y in zip(loaded.encode(texts), ref_encode)),
                       max(float(np.abs(x - y).max()) for x, y in zip(loaded.compress(texts, decoder=1), ref_compress)))
        else:
            decoder.save(out, fmt, overwrite=True, **options)
            loaded = load_decoder(out)
            same = _same_params(dec_params, loaded.params)
            diff = float(np.abs(loaded.logits([prompt, ref_compress[0], prompt]) - ref_logits).max())
        passed = same and diff == 0.0
        ok &= passed
        rows.append((kind, fmt + (" (safetensors, no torch)" if options else ""), same, diff, passed, out))

    print(f"\n{'model':8} {'layout':32} {'params bit-exact':>16} {'max |output diff|':>18}  result")
    for kind, fmt, same, diff, passed, _ in rows:
        print(f"{kind:8} {fmt:32} {str(same):>16} {diff:>18.3g}  {'ok' if passed else 'FAILED'}")
    print(f"\n{'all layouts round-trip exactly' if ok else 'SOME LAYOUTS FAILED'}; "
          f"checkpoints under {workdir.resolve()} ({time.perf_counter() - start:.1f}s)")
    return ok
