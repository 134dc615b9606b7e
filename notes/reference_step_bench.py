"""The reference PyTorch ARC-Encoder training step, timed on the samples of an arc_jax config's batches.

Issue 20 compares `arc-jax bench train --config configs/bench_cpu_55m.py` with the reference's own step
on the same machine. This script runs the reference's code (kyutai-labs/ARC-Encoder, imported from a
checkout, not copied): its `EmbedAugModel` (encoder `Transformer` with pooling, MLP projector, frozen
decoder `Transformer`), its masked cross-entropy, torch's AdamW (betas 0.9 / 0.95, eps 1e-8, as its
train.py) and gradient clipping at 1.0, on the samples of the first batches of the arc_jax config's
pipeline: for each decoder sample, its context's token count (the encoder's input), its text tokens and
loss mask, and the number of text tokens before its compressed block, read back from the packed batch.

What is not the reference's: xformers (CUDA-only) is replaced by a stand-in that runs torch's
`scaled_dot_product_attention` on each block of the block-diagonal mask separately (only the allowed
(query, key) pairs, as xformers' kernels; checked against dense masked attention at start-up), and
the modules the model code imports but does not run (tokenizers, data loading, generation) are empty
stubs. Token ids are the batches' own.

    python notes/reference_step_bench.py --reference /path/to/ARC-Encoder --config configs/bench_cpu_55m.py

`--reference` is a checkout of the reference (or `git archive HEAD embed_llm | tar -x` of it). Prints
the step time (median of the timed steps) and non-padding decoder / loss tokens per second.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import statistics
import sys
import time
import types

import numpy as np

# --- The batches, from arc_jax -------------------------------------------------------------------


def reference_samples(config_path: str, n_batches: int) -> tuple[list[list[dict]], dict]:
    """Per batch, its decoder samples as the reference takes them: context tokens, text tokens, loss
    mask, text tokens before the compressed block, task; and the config's model shapes."""
    from arc_jax.config_loading import load_config
    from arc_jax.train.trainer import Trainer, decoder_at
    import tempfile

    config = load_config(config_path)
    out = []
    with tempfile.TemporaryDirectory(prefix="ref_bench_") as workdir:
        trainer = Trainer(config, workdir, keep_random_decoders=False)
        run = trainer.run
        for i in range(n_batches):
            d = decoder_at(run.decoder_schedule, run.seed, i + 1, len(trainer.decoders), run.decoder_weights)
            batch, _ = trainer._next_batch(d)
            out.append(unpack(batch))
        trainer.checkpoints.close()
    shapes = {"encoder": config.model.encoder.to_dict(), "decoder": config.model.decoders[0].backbone.to_dict()}
    return out, shapes


def unpack(batch) -> list[dict]:
    """The samples of a packed arc_jax TrainBatch (arc_jax/data/packing.py)."""
    enc = batch.encoder
    enc_tokens, enc_seg = np.asarray(enc.tokens), np.asarray(enc.segment_ids)
    rows, enc_len = enc_seg.shape
    out_seg = np.asarray(enc.stages[-1].segment_ids) if enc.stages else enc_seg
    out_len = out_seg.shape[1]
    tokens, seg = np.asarray(batch.tokens), np.asarray(batch.segment_ids)
    comp, loss = np.asarray(batch.compressed_index), np.asarray(batch.loss_mask)
    task = np.asarray(batch.task_ids)
    samples, used = [], set()
    for r in range(seg.shape[0]):
        for s in np.unique(seg[r][seg[r] > 0]):
            slots = np.flatnonzero(seg[r] == s)
            idx = comp[r, slots]
            vectors = idx[(idx >= 0) & (idx < rows * out_len)]
            contexts = sorted({(int(v) // out_len, int(out_seg[int(v) // out_len, int(v) % out_len])) for v in vectors})
            text = slots[idx < 0]
            first_comp = int(np.argmax(idx >= 0)) if (idx >= 0).any() else len(slots)
            samples.append({
                "contexts": [enc_tokens[er][enc_seg[er] == es].tolist() for er, es in contexts],
                "text": tokens[r, text].tolist(),
                "loss": loss[r, text].tolist(),
                "text_before": int((idx[:first_comp] < 0).sum()),
                "task": int(task[r, slots[0]]),
                "slots": len(slots),  # text, compressed and special: the decoder's real slots
            })
            used.update(contexts)
    n_contexts = len({(r, int(s)) for r in range(rows) for s in np.unique(enc_seg[r][enc_seg[r] > 0])})
    assert len(used) == n_contexts, (len(used), n_contexts)
    return samples


# --- The reference's modules, with stand-ins for what a CPU cannot import -------------------------


class _Stub(types.ModuleType):
    """A module whose every attribute is an empty class: imported by the model code, never run."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (), {})
        setattr(self, name, value)
        return value


_STUBBED = ("mistral_common", "simple_parsing", "fast_pytorch_kmeans", "tiktoken", "huggingface_hub", "safetensors",
            "embed_llm.data.data_loader", "embed_llm.data.tokenize", "embed_llm.generation.utils",
            "embed_llm.models.generate", "embed_llm.models.utils.loading", "embed_llm.models.utils.llama_tokenizer",
            "embed_llm.training.distributed")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if any(fullname == s or fullname.startswith(s + ".") for s in _STUBBED):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _install_xformers_stand_in() -> None:
    import torch
    import torch.nn.functional as F

    class _SeqInfo:
        def __init__(self, seqlens):
            self.seqstart_py = [0, *np.cumsum(seqlens).tolist()]

    class BlockDiagonalMask:
        causal = False

        def __init__(self, q_seqlen, kv_seqlen=None):
            self.q_seqinfo, self.k_seqinfo = _SeqInfo(q_seqlen), _SeqInfo(kv_seqlen or q_seqlen)

        @classmethod
        def from_seqlens(cls, q_seqlen, kv_seqlen=None):
            return cls(list(q_seqlen), None if kv_seqlen is None else list(kv_seqlen))

    class BlockDiagonalCausalMask(BlockDiagonalMask):
        causal = True

    def memory_efficient_attention(q, k, v, mask):
        """[1, S, H, D] inputs; each block's queries against its keys only (causal: top-left)."""
        qs, ks = mask.q_seqinfo.seqstart_py, mask.k_seqinfo.seqstart_py
        out = []
        for a, b, c, d in zip(qs[:-1], qs[1:], ks[:-1], ks[1:]):
            qb, kb, vb = (x[0, lo:hi].transpose(0, 1) for x, lo, hi in ((q, a, b), (k, c, d), (v, c, d)))
            if mask.causal and b - a != d - c:
                allowed = torch.ones(b - a, d - c, dtype=torch.bool).tril()
                out.append(F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed))
            else:
                out.append(F.scaled_dot_product_attention(qb, kb, vb, is_causal=mask.causal))
        return torch.cat(out, dim=1).transpose(0, 1).contiguous()[None]

    attn_bias = types.ModuleType("xformers.ops.fmha.attn_bias")
    attn_bias.BlockDiagonalMask, attn_bias.BlockDiagonalCausalMask = BlockDiagonalMask, BlockDiagonalCausalMask
    attn_bias.AttentionBias = object
    attn_bias.BlockDiagonalCausalWithOffsetPaddedKeysMask = type("BlockDiagonalCausalWithOffsetPaddedKeysMask", (), {})
    fmha = types.ModuleType("xformers.ops.fmha")
    fmha.memory_efficient_attention, fmha.attn_bias = memory_efficient_attention, attn_bias
    ops, root = types.ModuleType("xformers.ops"), types.ModuleType("xformers")
    ops.fmha, root.ops = fmha, ops
    sys.modules.update({"xformers": root, "xformers.ops": ops, "xformers.ops.fmha": fmha,
                        "xformers.ops.fmha.attn_bias": attn_bias})
    _check_stand_in(memory_efficient_attention, BlockDiagonalMask, BlockDiagonalCausalMask)


def _check_stand_in(attention, block_mask, causal_mask) -> None:
    """The stand-in equals dense attention under the block-diagonal mask (top-left causal within a
    block, as xformers' masks), on random blocks with as many or fewer queries than keys."""
    import torch

    gen = torch.Generator().manual_seed(0)
    for mask_cls in (block_mask, causal_mask):
        for q_lens, kv_lens in (([3, 1, 5], [3, 1, 5]), ([2, 1, 3], [7, 4, 9])):
            q, k, v = (torch.randn(1, sum(n), 2, 8, generator=gen) for n in (q_lens, kv_lens, kv_lens))
            allowed = torch.zeros(sum(q_lens), sum(kv_lens), dtype=torch.bool)
            qs, ks = np.cumsum([0, *q_lens]), np.cumsum([0, *kv_lens])
            for i in range(len(q_lens)):
                block = torch.ones(q_lens[i], kv_lens[i], dtype=torch.bool)
                allowed[qs[i]:qs[i + 1], ks[i]:ks[i + 1]] = block.tril() if mask_cls.causal else block
            scores = torch.einsum("qhd,khd->hqk", q[0], k[0]) / 8 ** 0.5
            dense = torch.einsum("hqk,khd->qhd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v[0])
            got = attention(q, k, v, mask_cls.from_seqlens(q_lens, kv_lens))[0]
            assert torch.allclose(got, dense, atol=1e-5), (mask_cls.__name__, q_lens, kv_lens)


def build_model(reference: str, shapes: dict):
    sys.path.insert(0, reference)
    sys.meta_path.insert(0, _StubFinder())
    _install_xformers_stand_in()
    from embed_llm.models.args import BridgeArgs, EmbedderArgs, ModelArgs, PoolingArgs
    from embed_llm.models.augmented_model import EmbedAugModel
    from embed_llm.models.enhanced_transformer import Transformer

    def model_args(b):
        return ModelArgs(dim=b["dim"], n_layers=b["n_layers"], head_dim=b["head_dim"], hidden_dim=b["hidden_dim"],
                         n_heads=b["n_heads"], n_kv_heads=b["n_kv_heads"], norm_eps=b["norm_eps"],
                         vocab_size=b["vocab_size"], rope_theta=b["rope_theta"])

    e = shapes["encoder"]
    assert e["n_memory_tokens"] == 0 and e["pool_type"] in ("mean", "last"), e
    embedder_args = EmbedderArgs(
        n_truncated_layers=e["n_truncated_layers"], memory_tokens=0, rec_tok=e["rec_tok"], cont_tok=e["cont_tok"],
        compress_rates=list(e["compress_rates"]), trained_layers=e["backbone"]["n_layers"], causal_embedder=e["causal"],
        pooling_module=PoolingArgs(pool_type=f"{e['pool_type']}_pooled_queries", where="before"))
    # ModelArgs.n_layers is the backbone's before truncation, as the reference's converted checkpoints.
    enc_backbone = {**e["backbone"], "n_layers": e["backbone"]["n_layers"] + e["n_truncated_layers"]}
    embedder = Transformer(model_args(enc_backbone), embedder_args=embedder_args)
    decoder = Transformer(model_args(shapes["decoder"]))
    p = e["projectors"][0]
    bridge = BridgeArgs(bridge_type="multi_module", in_dim=p["in_dim"], hidden_dim=p["hidden_dim"], out_dim=p["out_dim"])
    model = EmbedAugModel(bridge, [decoder], embedder=embedder)
    for param in model.llms.parameters():
        param.requires_grad_(False)
    return model


def reference_inputs(samples: list[dict]):
    """The arguments of EmbedAugModel.forward and the loss's targets and mask, as the reference's
    prepare_forward makes them (x and y the text shifted by one, per sample)."""
    import torch

    x, y, mask, seqlens, contexts, embed_seqlens, insert = [], [], [], [], [], [], []
    for s in samples:
        text = s["text"]
        # arc_jax's text slots hold the tokens the decoder reads; the target of the last is the
        # sample's final token, which the reference keeps in y only.
        x += text
        y += text[1:] + [text[-1]]
        mask += s["loss"]
        seqlens.append(len(text))
        embed_seqlens.append([len(c) for c in s["contexts"]])
        contexts += sum(s["contexts"], [])
        insert.append([s["text_before"]])
    from arc_jax.data.packing import TASKS

    assert len({s["task"] for s in samples}) == 1, "one task a batch, as the reference's steps"
    task = {"fewshot": "instruct"}.get(TASKS[samples[0]["task"]], TASKS[samples[0]["task"]])
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return (as_long(x), as_long(y), torch.tensor(mask, dtype=torch.float32), seqlens, as_long(contexts),
            embed_seqlens, insert, task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a checkout of kyutai-labs/ARC-Encoder")
    parser.add_argument("--config", default="configs/bench_cpu_55m.py")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    n = min(args.steps + args.warmup, 8)
    batches, shapes = reference_samples(args.config, n)

    import torch
    from torch.nn.utils import clip_grad_norm_

    torch.manual_seed(0)
    model = build_model(args.reference, shapes)
    from embed_llm.training.loss import compute_ce_loss_with_mask

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    inputs = [reference_inputs(b) for b in batches]

    def step(i):
        x, y, mask, seqlens, contexts, embed_seqlens, insert, task = inputs[i % n]
        optimizer.zero_grad()
        logits = model.forward(x=x, seqlens=seqlens, embeddings=contexts, embed_seqlens=embed_seqlens,
                               insert_comp_repr=insert, batch_type=task)
        loss = compute_ce_loss_with_mask(logits=logits, target=y, target_mask=mask)
        loss.backward()
        clip_grad_norm_(trainable, max_norm=1.0)
        optimizer.step()
        return float(loss.detach())

    # The decoder reads as many positions (text, compressed and special vectors) as arc_jax's real slots.
    decoder, decoder_forward, lengths = model.llms[0], model.llms[0].forward, []

    def counted_forward(**kwargs):
        lengths.append(kwargs["input_ids"].shape[0] + kwargs["comp_repr"].shape[0])
        return decoder_forward(**kwargs)

    decoder.forward = counted_forward
    for i in range(args.warmup):
        step(i)
        expected = sum(s["slots"] for s in batches[i % n])
        assert lengths[-1] == expected, f"batch {i}: the reference's decoder reads {lengths[-1]} positions, arc_jax {expected}"
    decoder.forward = decoder_forward
    times = []
    for i in range(args.warmup, args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = step(i)
        times.append(time.perf_counter() - t0)
    text = [sum(len(s["text"]) for s in inputs_b) for inputs_b in batches]
    loss_tokens = [sum(sum(s["loss"]) for s in b) for b in batches]
    slots = [sum(s["slots"] for s in b) for b in batches]
    idx = [i % n for i in range(args.warmup, args.warmup + args.steps)]
    seconds = sum(times)
    result = {"step_seconds_median": statistics.median(times), "step_seconds": times, "threads": torch.get_num_threads(),
              "decoder_tokens_per_second": sum(slots[i] for i in idx) / seconds,
              "text_tokens_per_second": sum(text[i] for i in idx) / seconds,
              "loss_tokens_per_second": sum(loss_tokens[i] for i in idx) / seconds, "last_loss": loss,
              "samples_per_batch": [len(b) for b in batches], "torch": torch.__version__}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
