"""Train a small decoder LM from scratch: the frozen decoder of `arc-jax demo` (its stage 2).

Training text, re-drawn every epoch with the run's seed:
- each pretraining document as BOS + text + EOS (pretrain.jsonl, {"text"}), at loss weight
  `document_weight` (0: left out);
- open-book QA episodes laid out by arc_jax.prompts.few_shot, as the evaluation harness's open_book
  prompt (arc_jax/evaluation/harness.py few_shot_template + realize): BOS + "Document: {passage}\nQuestion:
  {q}\nAnswer: {a}\n\nDocument: ...\nAnswer: {a}" + EOS, tokenised whole, with `min_shots`..`shots`
  shots (none with probability `zero_shot_prob`), from qa_train.jsonl or, with `fresh_people`, about
  new random people drawn every epoch (synthetic.new_people: nothing to memorise).

Sequences are packed first-fit into rows of `seq_len` slots (segment ids 1.., positions restart
at 0 per sequence, padding is segment 0); the loss is next-token cross-entropy inside a segment
only. In QA episodes the answer tokens (and the final EOS) carry weight 1, the question lines
`qa_question_weight` and the documents `qa_prompt_weight` (0: answers only). A held-out probe
(`answer_probe`, `answer_accuracy`) measures teacher-forced open-book exact match every `probe_every` steps.

The optimiser is arc_jax.train.optimizer (torch-style AdamW, one-cycle, global-norm clipping): the
decoder tree is its "shared" group (`encoder_lr` is the decoder's max rate), with an empty head.
The step runs data-parallel over every device (`data_parallel_mesh`: the state replicated, the
batch's rows split; the demo makes the host's cores two CPU devices, arc_jax/demo/run.py).
Checkpoints (arc_jax.train.checkpoint.TrainCheckpoints) under workdir/checkpoints allow resuming;
the final decoder is written to workdir/decoder in arc_jax format (arc_jax.load_decoder reads it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from arc_jax import prompts, sharding
from arc_jax.demo import synthetic
from arc_jax.data.tokenizers import load_tokenizer
from arc_jax.model import param_groups
from arc_jax.model.config import BackboneConfig
from arc_jax.model.decoder import Decoder
from arc_jax.model.inputs import pack_rows_first_fit
from arc_jax.train import optimizer as opt, xla_cpu
from arc_jax.train.checkpoint import TrainCheckpoints, abstract_like

log = logging.getLogger(__name__)

SHARED = param_groups.SHARED  # the optimiser's group holding the whole decoder
HEAD = param_groups.head(0)  # the optimiser's (empty) head group, which it always updates


def with_empty_head(tree: dict) -> dict:
    """The decoder tree as the optimiser sees an encoder tree: its shared group, and an empty head."""
    return param_groups.join({SHARED: tree, HEAD: {}})


# --- Data ------------------------------------------------------------------------------------------

def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def episode_pieces(records: list[dict]) -> list[tuple[str, str]]:
    """(text, kind) pieces of one open-book episode: prompts.few_shot's layout with each document read
    as text (the harness's open_book prompt, ending with the last answer); kind is "document"
    ("Document: ..."), "question" ("\\nQuestion: ...\\nAnswer:") or "answer" (" a")."""
    qas = [prompts.QA(r["question"].strip(), r["answer"][0].strip(), prompts.Block(r["passages"][0].strip()))
           for r in records]
    pieces: list[tuple[str, str]] = []
    for p in prompts.few_shot(qas[:-1], qas[-1], training=True):
        if isinstance(p, prompts.Block):  # joins the "Document: " before it
            pieces[-1] = (pieces[-1][0] + p.sep + p.text, "document")
        elif isinstance(p, prompts.Answer):
            pieces.append((p.text, "answer"))
        elif isinstance(p, prompts.Target):  # joins the " " before it
            pieces[-1] = (pieces[-1][0] + p.lead + p.text, "answer")
        else:
            pieces.append((p, "question"))
    return pieces


def counterfactual(record: dict, value: str) -> dict:
    """The record with its answer replaced by `value` everywhere it stands in the passage (whole
    words, with a/an fixed), so that only reading the document gives the answer: the model cannot
    answer a training person's question from memorised facts."""
    old = record["answer"][0].strip()
    passage = record["passages"][0]

    def article(m):
        return ("an " if value[0].lower() in "aeiou" else "a ") if m.group(1) else ""

    new = re.sub(rf"\b(an? )?{re.escape(old)}\b", lambda m: article(m) + value, passage)
    return {**record, "answer": [value], "passages": [new]}


def encode_episode(records: list[dict], tokenizer, prompt_weight: float = 0.0,
                   question_weight: float | None = None) -> tuple[list[int], list[float]]:
    """BOS + the whole episode tokenised at once + EOS, and per-token loss weights (weight of the
    token as a *target*): 1 on answers, `question_weight` (default `prompt_weight`) on the
    question lines (they repeat the document's name: a copy), `prompt_weight` on the documents.
    Spans are found by tokenising prefixes; when an answer's prefix does not tokenise to a prefix of
    the whole (it should not happen at a space), the episode falls back to weight 1 on every token."""
    pieces = episode_pieces(records)
    text = "".join(p for p, _ in pieces)
    ids = [tokenizer.bos_id] + tokenizer.encode(text) + [tokenizer.eos_id]
    question_weight = prompt_weight if question_weight is None else question_weight
    if prompt_weight == question_weight == 1.0:
        return ids, [1.0] * len(ids)
    weights = [float(prompt_weight)] * len(ids)
    piece_weight = {"document": prompt_weight, "question": question_weight, "answer": 1.0}
    prefix, start = "", 1
    for piece, kind in pieces:
        prefix += piece
        encoded = tokenizer.encode(prefix)
        end = 1 + len(encoded)
        if kind == "answer" and ids[1:end] != encoded:
            return ids, [1.0] * len(ids)
        for k in range(start, end):
            weights[k] = float(piece_weight[kind])
        start = end
    weights[-1] = 1.0  # the EOS after the last answer
    return ids, weights


@dataclasses.dataclass
class LMData:
    """Deterministic epochs of packed rows. Batch `index` of epoch `epoch` depends only on (seed,
    epoch, index), so the state {"epoch", "index"} is all a resume needs."""

    documents: list[list[int]]
    qa: list[dict]
    tokenizer: Any
    seed: int
    seq_len: int
    rows: int
    shots: int = 5
    min_shots: int | None = None  # episodes draw their shot count in [min_shots, shots]; None: shots
    zero_shot_prob: float = 0.0  # share of episodes with no shot (short ones: more answers a batch)
    qa_episodes_per_epoch: int = 0  # 0: len(qa) // (shots + 1)
    prompt_weight: float = 0.0
    question_weight: float | None = None  # QA question lines' weight (None: prompt_weight)
    document_weight: float = 1.0  # loss weight of pretraining documents' tokens
    # > 0: every epoch's QA episodes are about this many new random people (drawn from (seed, epoch),
    # their name words distinct from `reserved_names`) instead of `qa`: nothing to memorise, only to read.
    fresh_people: int = 0
    reserved_names: frozenset = frozenset()
    # With fresh people: a person's document states a random number (>= min_attributes) of their
    # attributes (shorter documents, fewer distractors); None: all of them.
    min_attributes: int | None = None
    # With fresh people: attributes in the order they enter the episodes, `curriculum_start` of them
    # from the start and one more every `curriculum_epochs` epochs (empty: all from the start).
    curriculum: tuple = ()
    curriculum_start: int = 2
    curriculum_epochs: int = 1
    counterfactual_prob: float = 0.0  # chance a QA record's answer is swapped for another person's

    def epoch_rows(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        seqs: list[tuple[list[int], list[float]]] = [
            (d[: self.seq_len], [self.document_weight] * min(len(d), self.seq_len))
            for d in (self.documents if self.document_weight else [])]
        k = self.shots + 1
        qa = self.fresh_qa(epoch) if self.fresh_people else self.qa
        n_episodes = self.qa_episodes_per_epoch or len(qa) // k
        order = np.concatenate([rng.permutation(len(qa)) for _ in range(-(-n_episodes * k // len(qa)))])
        pools: dict[str, list[str]] = {}
        for r in qa:
            pools.setdefault(r.get("attribute", ""), []).append(r["answer"][0].strip())
        low = self.shots if self.min_shots is None else self.min_shots
        for e in range(n_episodes):
            records = [qa[i] for i in order[e * k:(e + 1) * k]]
            n_shots = 0 if rng.random() < self.zero_shot_prob else int(rng.integers(low, self.shots + 1))
            records = records[k - 1 - n_shots:]
            if self.counterfactual_prob:
                records = [counterfactual(r, pools[r.get("attribute", "")][rng.integers(len(pools[r.get("attribute", "")]))])
                           if rng.random() < self.counterfactual_prob else r for r in records]
            ids, w = encode_episode(records, self.tokenizer, self.prompt_weight, self.question_weight)
            seqs.append((ids[: self.seq_len], w[: self.seq_len]))
        seqs = [seqs[i] for i in rng.permutation(len(seqs))]
        packed = pack_rows_first_fit([len(s) for s, _ in seqs], self.seq_len)
        packed = [packed[i] for i in rng.permutation(len(packed))]
        n = len(packed)
        tokens = np.zeros((n, self.seq_len), np.int32)
        segments = np.zeros((n, self.seq_len), np.int32)
        positions = np.zeros((n, self.seq_len), np.int32)
        weights = np.zeros((n, self.seq_len), np.float32)
        for r, members in enumerate(packed):
            at = 0
            for s, i in enumerate(members, 1):
                ids, w = seqs[i]
                tokens[r, at:at + len(ids)] = ids
                segments[r, at:at + len(ids)] = s
                positions[r, at:at + len(ids)] = np.arange(len(ids))
                weights[r, at:at + len(ids)] = w
                at += len(ids)
        return tokens, segments, positions, weights

    def fresh_qa(self, epoch: int) -> list[dict]:
        rng = random.Random(f"arc_jax lm fresh people {self.seed} {epoch}")
        people = synthetic.new_people(self.fresh_people, rng, self.reserved_names)
        pool = self.curriculum[: self.curriculum_start + epoch // self.curriculum_epochs] if self.curriculum else None
        if self.min_attributes is None and pool is None:
            return synthetic.qa_records(people, rng)
        pool = list(pool or synthetic.ATTRIBUTES)
        low = min(self.min_attributes or len(pool), len(pool))
        attributes = [rng.sample(pool, rng.randint(low, len(pool))) for _ in people]
        return synthetic.qa_records(people, rng, attributes)

    def batches(self, state: dict) -> Iterator[tuple[dict, dict]]:
        """Yields (batch, state after it) forever from `state`; an epoch's last partial batch is dropped.
        The next epoch's rows are made on a thread while this epoch's batches are used (the demo's
        take ~0.6 s an epoch, 20 epochs a run)."""
        epoch, index = state["epoch"], state["index"]
        upcoming = _on_a_thread(self.epoch_rows, epoch)
        while True:
            arrays = upcoming.result()
            upcoming = _on_a_thread(self.epoch_rows, epoch + 1)
            n_batches = len(arrays[0]) // self.rows
            if n_batches == 0:
                raise ValueError(f"an epoch packs {len(arrays[0])} rows, fewer than a batch of {self.rows}")
            while index < n_batches:
                sl = slice(index * self.rows, (index + 1) * self.rows)
                batch = dict(zip(("tokens", "segment_ids", "positions", "weights"), (a[sl] for a in arrays)))
                index += 1
                yield batch, {"epoch": epoch, "index": index}
            epoch, index = epoch + 1, 0


def _on_a_thread(fn, *args) -> concurrent.futures.Future:
    """fn(*args) computed on a daemon thread of its own (nothing to shut down when the caller stops
    asking): the future of its result or exception."""
    future = concurrent.futures.Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the caller by future.result()
            future.set_exception(e)

    threading.Thread(target=run, name="lm-epoch-rows", daemon=True).start()
    return future


# --- Model and step --------------------------------------------------------------------------------

def lm_loss(params, module: Decoder, batch) -> tuple[jax.Array, jax.Array]:
    """Mean next-token cross-entropy within segments, weighted by the target tokens' weights."""
    tokens, seg = batch["tokens"], batch["segment_ids"]
    logits = module.apply({"params": params}, tokens, seg, batch["positions"])[:, :-1]
    targets = tokens[:, 1:]
    mask = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    w = batch["weights"][:, 1:] * mask
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]
    total = jnp.maximum(w.sum(), 1.0)
    return (nll * w).sum() / total, w.sum()


def make_train_step(module: Decoder, ocfg: opt.OptimizerConfig, mesh: Mesh | None = None):
    """The jitted step (state, batch) -> (state, metrics). With a `mesh`, the state is replicated on
    its devices and the batch's rows split over them (arc_jax.sharding.BATCH_AXES): each device
    computes its rows' gradients, summed across devices before the update; on several CPU devices
    one program runs at a time (xla_cpu.waited). The step traces under the mesh, so that the model
    knows the devices it runs on (the norms' scale gradients: arc_jax.model.layers.Norm)."""
    def step(state, batch):
        def loss_fn(p):
            return lm_loss(p[SHARED], module, batch)

        with contextlib.nullcontext() if mesh is None else jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            (loss, n_tokens), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                {SHARED: state["params"], HEAD: {}})
        tree = with_empty_head(state["params"])
        grad_tree = with_empty_head(grads[SHARED])
        new, opt_state, gnorm = opt.update(grad_tree, state["opt"], tree, 0, ocfg)
        new = param_groups.split(new)[SHARED]
        return {"params": new, "opt": opt_state}, {"loss": loss, "grad_norm": gnorm, "tokens": n_tokens}

    options = xla_cpu.train_step_options(jax.default_backend())
    if mesh is None:
        return jax.jit(step, donate_argnums=(0,), compiler_options=options)
    return xla_cpu.waited(jax.jit(
        step, donate_argnums=(0,), compiler_options=options, out_shardings=sharding.replicated(mesh),
        in_shardings=(sharding.replicated(mesh), NamedSharding(mesh, PartitionSpec(sharding.BATCH_AXES)))), mesh)


def data_parallel_mesh(rows: int) -> Mesh:
    """A mesh of every device, the batch's rows split over them; ValueError when they do not divide
    `rows` (config.data.rows)."""
    mesh = sharding.make_mesh([-1, 1, 1])
    if rows % mesh.size:
        raise ValueError(f"config.data.rows={rows} is not divisible by the {mesh.size} devices: "
                         f"choose a multiple of {mesh.size}")
    return mesh


def backbone_from_config(config) -> BackboneConfig:
    return BackboneConfig.from_dict(dict(config.model))


def optimizer_config(config) -> opt.OptimizerConfig:
    o = config.optimizer
    return opt.OptimizerConfig(encoder_lr=o.lr, special_lr=o.lr, projector_lr=o.lr, weight_decay=o.weight_decay,
                               warmup_steps=min(o.warmup_steps, max(1, config.max_steps // 2)), max_steps=config.max_steps, initial_lr=o.initial_lr,
                               final_lr=o.final_lr, clip_norm=o.clip_norm, b1=o.get("b1", 0.9), b2=o.get("b2", 0.999))


def prepare_data(config) -> Path:
    data_dir = Path(config.data.dir).expanduser()
    if config.data.generate == "tiny_corpus":
        from arc_jax.demo.synthetic import build_tiny_data
        build_tiny_data(data_dir, **dict(config.data.corpus))
    return data_dir


def build_data(config, data_dir: Path, tokenizer) -> LMData:
    docs = [tokenizer.encode(r["text"], bos=True, eos=True) for r in _read_jsonl(data_dir / "pretrain.jsonl")]
    qa = _read_jsonl(data_dir / "qa_train.jsonl")
    d = config.data
    return LMData(docs, qa, tokenizer, config.seed, d.seq_len, d.rows, shots=d.shots, min_shots=d.get("min_shots"),
                  zero_shot_prob=d.get("zero_shot_prob", 0.0),
                  qa_episodes_per_epoch=d.qa_episodes_per_epoch, prompt_weight=d.qa_prompt_weight,
                  question_weight=d.get("qa_question_weight"),
                  document_weight=d.get("document_weight", 1.0), counterfactual_prob=d.get("counterfactual_prob", 0.0),
                  fresh_people=d.get("fresh_people", 0),
                  reserved_names=synthetic.corpus_name_words(data_dir) if d.get("fresh_people", 0) else frozenset(),
                  min_attributes=d.get("min_attributes"), curriculum=tuple(d.get("curriculum", ())),
                  curriculum_start=d.get("curriculum_start", 2), curriculum_epochs=d.get("curriculum_epochs", 1))


def answer_probe(records: list[dict], tokenizer, shots: int, n: int, seed: int = 0) -> dict:
    """Open-book episodes over held-out `records` (each record is the target once, with `shots`
    other records of the set as shots), as arrays for `answer_accuracy`: the target answer's tokens
    (EOS excluded) are marked in "target"."""
    rng = np.random.default_rng(seed)
    n = min(n, len(records))
    episodes = []
    for t in rng.permutation(len(records))[:n]:
        others = [i for i in rng.permutation(len(records)) if i != t][:shots]
        ids, _ = encode_episode([records[i] for i in others] + [records[t]], tokenizer)
        episodes.append((ids[:-1], len(tokenizer.encode(" " + records[t]["answer"][0].strip()))))  # EOS dropped
    seq_len = -(-max(len(ids) for ids, _ in episodes) // 128) * 128
    tokens = np.zeros((n, seq_len), np.int32)
    segments = np.zeros((n, seq_len), np.int32)
    target = np.zeros((n, seq_len), bool)
    for row, (ids, answer_len) in enumerate(episodes):
        tokens[row, :len(ids)] = ids
        segments[row, :len(ids)] = 1
        target[row, len(ids) - answer_len:len(ids)] = True
    return {"tokens": tokens, "segment_ids": segments, "positions": np.broadcast_to(np.arange(seq_len), tokens.shape),
            "target": target}


def answer_accuracy(params, module: Decoder, probe: dict) -> tuple[jax.Array, jax.Array]:
    """(share of probe episodes whose every answer token is the argmax, teacher forced; share of
    answer tokens that are): greedy exact match without the stop rule, in one forward pass."""
    logits = module.apply({"params": params}, probe["tokens"], probe["segment_ids"], probe["positions"])[:, :-1]
    hit = logits.argmax(-1) == probe["tokens"][:, 1:]
    target = probe["target"][:, 1:]
    episode = jnp.all(hit | ~target, axis=1)
    return episode.mean(), (hit & target).sum() / target.sum()


def train_lm(config, workdir: str | Path, resume: bool = False, stop_step: int | None = None) -> dict:
    """Train the decoder of `config` (configs/demo_decoder.py) in `workdir`; returns a summary.

    Without `resume` an existing workdir/checkpoints is an error (a run reuses nothing silently).
    `stop_step` ends the run early (checkpointed there, the schedule still that of max_steps): a
    preempted run, as the resume test makes one."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = prepare_data(config)
    tokenizer = load_tokenizer(data_dir / "tokenizer.model")
    cfg = backbone_from_config(config)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but the model vocab_size is {cfg.vocab_size}")
    data = build_data(config, data_dir, tokenizer)
    ocfg = optimizer_config(config)
    module = Decoder(cfg, unroll_layers=config.get("unroll_layers", False))
    mesh = data_parallel_mesh(data.rows)
    state, data_state, ckpts = _init_or_restore(config, module, workdir, resume, mesh)
    start = int(state["opt"].step)
    step_fn = make_train_step(module, ocfg, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    log.info("decoder LM: %s params, %s, rows %dx%d on %d device(s), steps %d..%d", f"{n_params:,}", cfg, data.rows,
             data.seq_len, mesh.size, start, config.max_steps)
    probe_every = config.get("probe_every", 0)
    probe_fn = _make_probe(config, data_dir, tokenizer, module, mesh) if probe_every else None
    batches = data.batches(data_state)
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(workdir / "tensorboard"))
    t0, t_interval, history = time.time(), time.time(), []
    first_losses = []
    end = config.max_steps if stop_step is None else min(stop_step, config.max_steps)
    for step in range(start, end):
        batch, data_state = next(batches)
        state, metrics = step_fn(state, batch)
        if len(first_losses) < 5:
            first_losses.append(float(metrics["loss"]))
        if (step + 1) % config.log_every == 0 or step + 1 == end:
            t_interval = _log_step(writer, history, metrics, ocfg, step, config.log_every, t0, t_interval)
        if probe_every and ((step + 1) % probe_every == 0 or step + 1 == end):
            _log_probe(writer, history, probe_fn(state["params"]), step)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.max_steps:
            ckpts.save(step + 1, state, data_state, config.to_dict() if hasattr(config, "to_dict") else {},
                       force=step + 1 == end)
    ckpts.wait()
    ckpts.close()
    writer.close()
    seconds = time.time() - t0
    from arc_jax.convert import write_decoder
    out = write_decoder(cfg, jax.device_get(state["params"]), workdir / "decoder", "arc_jax", overwrite=True)
    summary = {"steps": end, "start_step": start, "params": int(n_params), "seconds": round(seconds, 1),
               "first_loss": first_losses[0] if first_losses else None,
               "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None), "decoder": str(out), "data_state": data_state,
               "history": history}
    (workdir / "lm_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("decoder LM done: %d steps in %.1fs, loss %s -> %s, written to %s", end - start, seconds,
             summary["first_loss"], summary["final_loss"], out)
    return summary


def _init_or_restore(config, module: Decoder, workdir: Path, resume: bool,
                     mesh: Mesh) -> tuple[dict, dict, TrainCheckpoints]:
    """(train state, data state, checkpoints): parameters from `config.seed` and a fresh optimiser
    state, replaced by the latest checkpoint's when there is one (an error without `resume`); the
    state replicated on the mesh's devices."""
    template = jnp.zeros((1, 8), jnp.int32)
    params = jax.jit(lambda: nn.unbox(module.init(jax.random.key(config.seed), template, template, template)
                                      ["params"]))()
    state = jax.device_put({"params": params, "opt": opt.init(with_empty_head(params))}, sharding.replicated(mesh))
    data_state = {"epoch": 0, "index": 0}
    ckpts = TrainCheckpoints(workdir, keep=config.keep_checkpoints, save_every=config.checkpoint_every)
    if ckpts.latest_step is not None:
        if not resume:
            ckpts.close()
            raise FileExistsError(f"{workdir}/checkpoints exists: pass resume=True or use another workdir")
        state, data_state, _ = ckpts.restore(abstract_like(state))
    return state, data_state, ckpts


def _make_probe(config, data_dir: Path, tokenizer, module: Decoder, mesh: Mesh):
    """The jitted held-out open-book probe: params -> (exact match, token accuracy), teacher forced;
    one program at a time with the steps on several CPU devices (xla_cpu.waited)."""
    probe = answer_probe(_read_jsonl(data_dir / "qa_eval.jsonl"), tokenizer, config.get("probe_shots", 5),
                         config.get("probe_examples", 120), config.seed)
    return xla_cpu.waited(jax.jit(functools.partial(answer_accuracy, module=module, probe=probe)), mesh)


def _log_step(writer, history: list[dict], metrics, ocfg: opt.OptimizerConfig, step: int, log_every: int,
              t0: float, t_interval: float) -> float:
    """Log line, TensorBoard scalars and history entry of a logged step; returns its time."""
    m = jax.device_get(metrics)
    now = time.time()
    lr = float(ocfg.unit_schedule()(step)) * ocfg.encoder_lr
    log.info("step %d loss %.4f grad_norm %.3f lr %.2e (%.2fs/step)", step + 1, m["loss"], m["grad_norm"], lr,
             (now - t_interval) / log_every)
    for name, value in (("loss", m["loss"]), ("grad_norm", m["grad_norm"]), ("learning_rate", lr)):
        writer.add_scalar(name, float(value), step + 1)
    history.append({"step": step + 1, "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]), "lr": lr,
                    "time": now - t0})
    return now


def _log_probe(writer, history: list[dict], probe_out, step: int) -> None:
    """Log line, TensorBoard scalars and history entry of the held-out probe after `step`."""
    em, token_acc = jax.device_get(probe_out)
    log.info("step %d held-out open-book answers: exact %.1f%%, tokens %.1f%% (teacher forced)", step + 1,
             100 * em, 100 * token_acc)
    writer.add_scalar("probe/open_book_exact", float(em), step + 1)
    writer.add_scalar("probe/open_book_token_accuracy", float(token_acc), step + 1)
    history.append({"step": step + 1, "probe_exact": float(em), "probe_token_acc": float(token_acc)})


# --- Evaluation with the harness ------------------------------------------------------------------

def tiny_random_encoder(decoder_dim: int, vocab_size: int, seed: int = 0):
    """A small random arc_jax.Encoder whose head feeds a decoder of width `decoder_dim` (closed and
    open book never run it; ARCPipeline needs one)."""
    from arc_jax.inference.api import Encoder
    from arc_jax.model.config import EncoderConfig, ProjectorConfig
    from arc_jax.model.encoder import ARCEncoder
    from arc_jax.model.inputs import pack_encoder_inputs

    backbone = BackboneConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, hidden_dim=64,
                              vocab_size=vocab_size)
    ecfg = EncoderConfig(backbone, (ProjectorConfig(32, 32, decoder_dim),), compress_rates=(-4,))
    inputs, _ = pack_encoder_inputs([[[1, 2, 3, 4]]], ecfg)
    params = jax.device_get(nn.unbox(jax.jit(ARCEncoder(ecfg).init)(jax.random.key(seed), inputs)["params"]))
    return Encoder(ecfg, params)


def evaluate_lm(decoder_path: str | Path, data_dir: str | Path, out_dir: str | Path, modes=("closed_book", "open_book"),
                max_examples: int | None = None, **kwargs) -> dict:
    """The harness's results for decoder_path on data_dir/qa_eval.jsonl (held-out people)."""
    import arc_jax
    from arc_jax.evaluation.harness import evaluate

    data_dir = Path(data_dir)
    dec = arc_jax.load_decoder(decoder_path)
    enc = tiny_random_encoder(dec.config.dim, dec.config.vocab_size)
    tok = data_dir / "tokenizer.model"
    pipe = arc_jax.ARCPipeline(enc, dec, 0, encoder_tokenizer=tok, decoder_tokenizer=tok)
    return evaluate(pipe, [str(data_dir / "qa_eval.jsonl")], list(modes), out_dir, max_examples=max_examples, **kwargs)
