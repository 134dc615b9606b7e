"""`arc-jax train`: the training loop, in plain sections: config, mesh, models, input, init or
resume, loop.

A workdir holds everything a run needs to resume and to be used afterwards:
    <workdir>/decoder_<i>/    a frozen decoder made with random weights (configs without a decoder
                              path, such as tiny_cpu); converted decoders are read where they are
    <workdir>/checkpoints/    Orbax: train state, input-pipeline states, config (see checkpoint.py)
    <workdir>/tensorboard/    event files: losses per task, accuracy, grad norm, learning rates, ...
Starting again with the same workdir resumes from its latest checkpoint, exactly: the decoder trained
at step s is a function of (config.decoder_schedule, seed, s) and the pipelines restart where they
were saved (with, under "alternate", the keys of the records decoder 1 replays next). SIGTERM
(preemption) saves a checkpoint at the end of the current step and exits.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from arc_jax import sharding
from arc_jax.config_loading import ConfigError, to_plain
from arc_jax.errors import DataError
from arc_jax.model import ARCEncoder, Decoder, param_groups
from arc_jax.train import flops, multihost, xla_cpu
from arc_jax.train.checkpoint import TrainCheckpoints, read_checkpoint
from arc_jax.train.errors import TrainingStopped
from arc_jax.train.program import DecoderPlacement, build_program, place_decoder
from arc_jax.train.resume import check_resumable
from arc_jax.train.run_config import DecoderSpec, RunConfig, parse_run_config, run_batches
from arc_jax.train.step import loss_sums, metrics_from_sums


@dataclasses.dataclass
class FrozenDecoder:
    placement: DecoderPlacement  # module, spec and shardings (arc_jax/train/program.py)
    params: dict

    @property
    def spec(self) -> DecoderSpec:
        return self.placement.spec

    @property
    def module(self) -> Decoder:
        return self.placement.module

    @property
    def shardings(self) -> dict:
        return self.placement.shardings


def drawn_decoder(seed: int, step: int, n_decoders: int, weights: tuple[float, ...] = ()) -> int:
    """The decoder trained at `step` by the "random" schedule: drawn with probabilities proportional
    to `weights` (equal when empty or all equal: uniform), a pure function of (seed, step) so resume
    is exact."""
    if n_decoders == 1:
        return 0
    rng = np.random.default_rng([seed, step])
    if len(set(weights)) <= 1:
        return int(rng.integers(n_decoders))
    p = np.asarray(weights, np.float64)
    return int(rng.choice(n_decoders, p=p / p.sum()))


def decoder_at(schedule: str, seed: int, step: int, n_decoders: int, weights: tuple[float, ...] = ()) -> int:
    """The decoder trained at 1-based `step` (config.decoder_schedule): "random" draws it
    (drawn_decoder); "alternate" is step % 2, as the reference's fair_instruct (decoder 1 first)."""
    return step % 2 if schedule == "alternate" else drawn_decoder(seed, step, n_decoders, weights)


def _load_decoder(run: RunConfig, index: int, workdir: Path | None, template, mesh) -> FrozenDecoder:
    """Decoder `index`: read from its path, or random (made once and saved in the workdir; kept in
    memory only when `workdir` is None, as the benchmark does)."""
    from arc_jax.convert import read_decoder, write_decoder

    spec = run.decoders[index]
    path = Path(spec.path) if spec.path else None if workdir is None else workdir / f"decoder_{index}"
    if path is None or (not spec.path and not path.exists()):
        cfg = spec.backbone
        placed = place_decoder(run, index, cfg, template, mesh)
        module, shardings = placed.module, placed.shardings
        params = jax.jit(lambda: jax.tree.map(lambda x: x.astype(spec.dtype), nn.unbox(module.init(
            jax.random.key(run.seed + 1 + index), template.tokens, template.segment_ids, template.positions)[
            "params"])), out_shardings=shardings)()
        if path is None:
            return FrozenDecoder(placed, params)
        # Every process takes part: the shards may span processes (fsdp / tensor axes over hosts).
        host = multihost.process_allgather(params)
        if jax.process_index() == 0:
            write_decoder(cfg, host, path, "arc_jax")
        _sync(f"decoder_{index}")
    cfg, params = read_decoder(path)
    if cfg.rope_scaling is not None and (spec.backbone is None or spec.backbone.rope_scaling is None):
        cfg = dataclasses.replace(cfg, rope_scaling=None)  # the reference runs Llama 3.1 without RoPE scaling
    if spec.backbone is not None and cfg != spec.backbone:
        raise ConfigError(f"{path}: holds a decoder of another shape than config.model.decoders[{index}].backbone")
    if cfg.dim != run.encoder.projectors[spec.head].out_dim:
        raise ConfigError(f"{path}: decoder width {cfg.dim} is not the output width of encoder head {spec.head}")
    placed = place_decoder(run, index, cfg, template, mesh)
    params = jax.tree.map(lambda x: np.asarray(x).astype(spec.dtype), params)
    return FrozenDecoder(placed, jax.device_put(params, placed.shardings))


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _encoder_init(run: RunConfig, encoder: ARCEncoder, template):
    """The function that makes the encoder's random parameters for the run's seed."""
    return lambda: nn.unbox(encoder.init(jax.random.key(run.seed), template.encoder)["params"])


def _random_encoder(run: RunConfig, encoder: ARCEncoder, template, p_sharding):
    """The encoder's random parameters for the run's seed, placed with `p_sharding`."""
    return jax.jit(_encoder_init(run, encoder, template), out_shardings=p_sharding)()


def _initial_encoder(run: RunConfig, encoder: ARCEncoder, template, p_sharding):
    """Random encoder parameters, with `init_encoder`'s (if any) in place of every tensor it has.
    With config.init_special_from_head = k >= 0, a head the checkpoint does not have starts its
    <Rec>/<Cont> from the checkpoint's head k (its projector stays random), as the reference's
    finetuning_to_add_OLMo run loads them from its multi-decoder checkpoint's head 0. The random
    parameters are only made when the checkpoint lacks a tensor (a fine-tuning's start from its
    pretraining has them all: its random init compiled for 2.3 s of the demo's fine-tuning)."""
    if not run.init_encoder:
        return _random_encoder(run, encoder, template, p_sharding)
    from arc_jax.convert import read_encoder

    cfg, loaded = read_checkpoint(run.init_encoder, read_encoder)  # a workdir: its newest intact step
    # The pooling factor has no parameters: ARC4 fine-tunes start from an ARC8 pretraining.
    if (cfg.backbone, cfg.pool_type, cfg.causal) != (run.encoder.backbone, run.encoder.pool_type, run.encoder.causal):
        raise ValueError(f"{run.init_encoder}: its encoder (backbone, pool_type, causal) differs from "
                         "config.model.encoder")
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    special_source = _special_source(run, loaded)

    def source(path) -> str | None:
        """The checkpoint's key for the tensor at `path`, None where it has none (stays random)."""
        key = jax.tree_util.keystr(path)
        top, leaf = path[0].key, path[-1].key
        if (key not in flat and special_source is not None and param_groups.is_head(top) and top not in loaded
                and leaf in param_groups.SPECIAL):  # a new head's <Rec>/<Cont>: the source head's
            key = jax.tree_util.keystr((jax.tree_util.DictKey(special_source), *path[1:]))
            if key not in flat:
                raise ValueError(f"{run.init_encoder}: head {special_source} has no {leaf} to copy into {top} "
                                 "(config.init_special_from_head)")
        return key if key in flat else None

    shapes = jax.eval_shape(_encoder_init(run, encoder, template))
    sources = jax.tree_util.tree_map_with_path(lambda path, _: source(path), shapes)
    missing = any(k is None for k in jax.tree.leaves(sources, is_leaf=lambda x: x is None))
    params = _random_encoder(run, encoder, template, p_sharding) if missing else shapes

    def take(key, init, sharding):
        if key is None:
            return init
        if flat[key].shape != init.shape:
            raise ValueError(f"{run.init_encoder}: {key} has shape {flat[key].shape}, the config wants {init.shape}")
        return jax.device_put(np.asarray(flat[key], np.float32), sharding)

    return jax.tree.map(take, sources, params, p_sharding, is_leaf=lambda x: x is None)


def _special_source(run: RunConfig, loaded: dict) -> str | None:
    """The checkpoint head whose <Rec>/<Cont> new heads copy (config.init_special_from_head), if any."""
    if run.init_special_from_head < 0:
        return None
    source = param_groups.head(run.init_special_from_head)
    if source not in loaded:
        heads = sorted(k for k in loaded if param_groups.is_head(k))
        raise ValueError(f"{run.init_encoder}: has no head {run.init_special_from_head} to start new heads' "
                         f"<Rec>/<Cont> from (config.init_special_from_head; its heads: {heads})")
    return source


def executed(work: dict, static_flops: float) -> float:
    """Executed FLOPs of steps whose static-shape count (`TrainProgram.model_flops`) sums to
    `static_flops`, `work` their `TrainProgram.batch_work`: less what the splash kernel skipped."""
    return static_flops - work.get("skipped_flops", 0.0)


def throughput(work: dict, executed_flops: float, steps: int, seconds: float, peak: float) -> dict[str, float]:
    """Rates of `steps` steps that took `seconds`: `work` sums their `TrainProgram.batch_work` (all
    processes), `executed_flops` their executed FLOPs (`executed`). Non-padding decoder slots (text,
    compressed and special vectors), text tokens and loss tokens per second, the rows' fill (real slots over slots, encoder and decoder), and MFU on
    useful FLOPs ("mfu") with MFU on executed FLOPs beside it, against `peak` FLOP/s."""
    return {"decoder_tokens_per_second": work["decoder_tokens"] / seconds,
            "text_tokens_per_second": work["text_tokens"] / seconds,
            "loss_tokens_per_second": work["loss_tokens"] / seconds,
            "encoder_fill": work["encoder_tokens"] / max(1, work["encoder_slots"]),
            "decoder_fill": work["decoder_tokens"] / max(1, work["decoder_slots"]),
            "mfu": flops.mfu(work["useful_flops"] / steps, seconds / steps, peak),
            "executed_mfu": flops.mfu(executed_flops / steps, seconds / steps, peak)}


def _stack(batches: list):
    return batches[0] if len(batches) == 1 else jax.tree.map(lambda *xs: np.stack(xs), *batches)


def _merge_states(states: list[dict]) -> dict:
    """One pipeline state per decoder from every process's states (each process owns some shards)."""
    merged = {}
    for state in states:
        for d, s in state.items():
            merged.setdefault(d, {"shards": {}})["shards"].update(s["shards"])
    return merged


class Trainer:
    """A run of a config in a workdir: `fit()` trains (or resumes) to config.max_steps.

    `keep_random_decoders=False` keeps random decoders in memory instead of saving them in the
    workdir (the benchmark: a random 8B decoder is not worth 16 GB of disk)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, keep_random_decoders: bool = True,
                 accept_config_changes: bool = False):
        self.run = run = parse_run_config(config)  # every config error, before anything is built
        self.config, self.workdir = config, Path(workdir)
        # The workdir's run: a config that trains something else stops here (arc_jax/train/resume.py).
        for change in check_resumable(self.workdir, config, accept_config_changes):
            print(f"config change accepted (--accept-config-changes): {change}", flush=True)
        self.workdir.mkdir(parents=True, exist_ok=True)

        # Mesh and input (one pipeline per decoder: each tokenises for its own decoder). Under the
        # "alternate" schedule decoder 0's pipeline keeps its last step's sample keys for decoder 1's.
        self.mesh = sharding.make_mesh(run.mesh_shape)
        self.alternate = run.decoder_schedule == "alternate"
        remember = run.grad_accum if self.alternate else 0
        self.feeds = [run_batches(run, d, remember=remember if d == 0 else 0) for d in range(len(run.decoders))]
        start = self.feeds[0].get_state()
        template, _ = next(self.feeds[0])  # shapes only; the batch is drawn again by step 1
        self.feeds[0].set_state(start)
        self.shape = run.data.shape

        # Models: the frozen decoders, then the program (trainable encoder, shardings, steps) around them.
        kept = self.workdir if keep_random_decoders else None
        self.decoders = [_load_decoder(run, d, kept, template, self.mesh) for d in range(len(run.decoders))]
        self.program = program = build_program(run, self.mesh, template, [dec.placement for dec in self.decoders])
        self.encoder, self.mask, self.state_sharding = program.encoder, program.mask, program.state_shardings

        # State: fresh, or the newest intact checkpoint (checkpoint.py: damaged newer ones are set aside).
        make_state = program.make_state()
        self.checkpoints = TrainCheckpoints(self.workdir, keep=run.keep_checkpoints)
        resumed = self.checkpoints.resume(program.abstract_state())
        self.step = resumed[0] if resumed else 0
        if resumed:  # no initialisation (nor init_encoder read) to throw away
            _, self.state, data_states = resumed
            self._restore_feeds(data_states)
            print(f"resumed from step {self.step} in {self.workdir}", flush=True)
        else:
            self.state = make_state(_initial_encoder(run, self.encoder, template, program.param_shardings))

        if xla_cpu.one_run_at_a_time(self.mesh):  # the programs that made the state, done before a step starts
            jax.block_until_ready(self.state)

        # One jitted step per decoder (on several CPU devices, one program at a time: xla_cpu.waited).
        self.batch_sharding = program.batch_sharding
        self.steps = [xla_cpu.waited(program.step(d), self.mesh) for d in range(len(run.decoders))]
        self.flops_per_step = [program.model_flops(d)["total"] for d in range(len(run.decoders))]
        self.eval_batches = self._eval_batches()
        self.eval_fns = [xla_cpu.waited(jax.jit(functools.partial(loss_sums, encoder=self.encoder, decoder=dec.module,
                                                                  decoder_index=dec.spec.head, mesh=self.mesh)),
                                        self.mesh)
                         for dec in self.decoders]

    def _restore_feeds(self, data_states: dict) -> None:
        """The input pipelines where the checkpoint left them; a saved state this config's data
        cannot follow (a seed or data change accepted with --accept-config-changes) stops in one line."""
        try:
            for d, feed in enumerate(self.feeds):
                feed.set_state(data_states[str(d)])
        except Exception as e:  # noqa: BLE001 (positions past the end, a missing decoder, ...)
            self.checkpoints.close()
            raise ConfigError(f"{self.workdir}: the input pipeline's saved state (checkpoint {self.step}) does not "
                              f"fit this config's data ({type(e).__name__}: {e}); a run with other data or another "
                              "seed needs a new workdir") from None

    def _eval_batches(self) -> list[list]:
        """Per decoder, a fixed list of held-out batches (the first config.eval.batches)."""
        spec = self.run.eval
        if not spec.sources or not spec.every:
            return []
        out = []
        for d in range(len(self.run.decoders)):
            feed = run_batches(self.run, d, sources=spec.sources)
            out.append([next(feed)[0] for _ in range(spec.batches)])
        return out

    def evaluate(self) -> dict[str, float]:
        """Loss per task on the held-out batches, for every decoder."""
        rows = sharding.batch_sharding(self.eval_batches[0][0], self.mesh) if self.eval_batches else None
        results = {}
        for d, batches in enumerate(self.eval_batches):
            total = None
            for batch in batches:
                sums = self.eval_fns[d](self.state.params, self.decoders[d].params,
                                        multihost.global_batch(batch, rows))
                total = sums if total is None else jax.tree.map(jnp.add, total, sums)
            prefix = "eval/" if len(self.eval_batches) == 1 else f"eval/decoder_{d}/"
            for k, v in jax.device_get(metrics_from_sums(total)).items():
                results[prefix + k] = float(v)
        return results

    def _next_batch(self, d: int):
        """The next step's batch for decoder `d` (its micro-batches stacked), placed, and what this
        process's rows of it hold (`TrainProgram.batch_work`: useful FLOPs, tokens, slots), counted
        on the host arrays before they go to the devices."""
        if self.alternate and d == 1:
            return self._replayed_batch()
        parts = []
        for _ in range(self.run.grad_accum):
            batch, stats = next(self.feeds[d])
            if not stats.samples:
                raise DataError(_empty_batch_message(self.step, d, stats))
            parts.append(batch)
        return self._placed(d, parts)

    def _placed(self, d: int, parts: list):
        host = _stack(parts)
        return multihost.global_batch(host, self.batch_sharding), self.program.batch_work(d, host)

    def _replayed_batch(self):
        """Under "alternate", decoder 1 trains on the records of decoder 0's latest step (the reference's
        fair_instruct reuses each batch), re-made for its own tokenizer by its pipeline. At step 1 (or
        after restoring a checkpoint that kept no keys) decoder 0's stream first draws a fresh step of
        batches, as the reference's step 1 draws B1 for decoder 1 alone."""
        keys = self.feeds[0].recent()
        if len(keys) < self.run.grad_accum:
            for _ in range(self.run.grad_accum):
                next(self.feeds[0])
            keys = self.feeds[0].recent()
        return self._placed(1, [self.feeds[1].replay(micro)[0] for micro in keys])

    def save(self) -> None:
        states = multihost.gather_json({str(d): feed.get_state() for d, feed in enumerate(self.feeds)})
        self.checkpoints.save(self.step, self.state, _merge_states(states), to_plain(self.config), force=True)

    def fit(self, log_every: int | None = None) -> dict:
        from tensorboardX import SummaryWriter

        run = self.run
        log_every = log_every or run.log_every
        peak = flops.measure_matmul_peak(run.compute_dtype) * jax.device_count()
        writer = SummaryWriter(str(self.workdir / "tensorboard")) if jax.process_index() == 0 else None
        preemption = multihost.Preemption()
        start, t0 = self.step, time.perf_counter()
        interval = {"t": t0, "flops": 0.0, "steps": 0, "work": collections.Counter()}
        metrics, previous, logged = None, None, {}
        try:
            while self.step < run.max_steps:
                self.step += 1
                d = decoder_at(run.decoder_schedule, run.seed, self.step, len(self.decoders), run.decoder_weights)
                batch, work = self._next_batch(d)
                self.state, metrics = self.steps[d](self.state, self.decoders[d].params, batch)
                interval["flops"] += self.flops_per_step[d]
                interval["work"].update(work)  # Counter.update adds
                interval["steps"] += 1
                # The previous step's counter (done by now, or nearly): no wait on this step.
                if previous is not None:
                    self._check_bad_steps(previous, self.step - 1)
                previous = metrics
                if self.step % log_every == 0 or self.step == run.max_steps:
                    logged = self._log(writer, metrics, d, interval, peak)
                if self.eval_batches and (self.step % run.eval.every == 0 or self.step == run.max_steps):
                    logged.update(self._log_eval(writer))
                preempted = preemption.reached(self.step)
                if self.step % run.checkpoint_every == 0 or self.step == run.max_steps or preempted:
                    self._check_bad_steps(metrics, self.step)  # never save over the last good checkpoint
                    self.save()
                if preempted:
                    print(f"preempted (SIGTERM): saved step {self.step}, exiting", flush=True)
                    break
            if metrics is not None:
                self._check_bad_steps(metrics, self.step)
        finally:
            self.checkpoints.wait()
            self.checkpoints.close()
            preemption.close()
            if writer is not None:
                writer.close()
        seconds = time.perf_counter() - t0
        summary = {"steps": self.step - start, "final_step": self.checkpoints.latest_step,
                   "skipped_steps": int(self.state.skipped), **logged, "seconds": seconds,
                   "workdir": str(self.workdir.resolve())}
        print(f"done: {summary['steps']} steps in {seconds:.1f} s, last loss {logged.get('loss', float('nan')):.4f}, "
              f"{summary['skipped_steps']} skipped; checkpoints and TensorBoard logs in {self.workdir.resolve()}",
              flush=True)
        return summary

    def _check_bad_steps(self, metrics, step: int) -> None:
        if int(metrics["bad_steps"]) >= self.run.max_bad_steps:
            raise TrainingStopped(
                f"{self.run.max_bad_steps} consecutive steps had a non-finite loss or gradient (config.max_bad_steps);"
                f" stopped at step {step}. The last good checkpoint is step {self.checkpoints.latest_step} in "
                f"{self.workdir}")

    def _log(self, writer, metrics, d: int, interval: dict, peak: float) -> dict:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        seconds = now - interval["t"]
        values["step_seconds"] = seconds / interval["steps"]
        work = multihost.sum_over_processes(interval["work"])
        values.update(throughput(work, executed(work, interval["flops"]), interval["steps"], seconds, peak))
        values["decoder"] = d
        interval.update(t=now, flops=0.0, steps=0, work=collections.Counter())
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(k, v, self.step)
        tasks = "  ".join(f"{k[5:]} {v:.3f}" for k, v in values.items()
                          if k.startswith("loss/") and values.get("tokens/" + k[5:], 0) > 0)
        print(f"step {self.step:6d}  loss {values['loss']:.4f} ({tasks})  ppl {values['perplexity']:.1f}  "
              f"acc {values['accuracy']:.3f}  "
              f"grad_norm {values['grad_norm']:.3f}  lr {values['learning_rate/encoder']:.2e}  "
              f"{values['step_seconds'] * 1e3:.0f} ms/step  {values['text_tokens_per_second']:,.0f} tok/s "
              f"({values['loss_tokens_per_second']:,.0f} loss)  MFU {values['mfu']:.1%} (executed "
              f"{values['executed_mfu']:.1%})  fill enc {values['encoder_fill']:.0%} dec {values['decoder_fill']:.0%}  "
              f"skipped {int(self.state.skipped)}", flush=True)
        return values

    def _log_eval(self, writer) -> dict:
        values = self.evaluate()
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(k, v, self.step)
        shown = "  ".join(f"{k} {v:.3f}" for k, v in values.items() if "loss" in k.split("/")
                          and values.get(k.replace("/loss/", "/tokens/"), 0) > 0)
        print(f"step {self.step:6d}  {shown}", flush=True)
        return values


def _empty_batch_message(step: int, d: int, stats) -> str:
    """A training batch that holds no sample: the packer dropped every sample it drew (too long for
    the shape's rows, spans or loss buffer), or the sources made none."""
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.counts.items()) if n and reason != "carried_over")
    return (f"step {step}: the batch for decoder {d} holds no sample ({dropped or 'the sources made none'}); "
            "`arc-jax data check --config CONFIG` shows what config.data.shape drops")


def train(config: ml_collections.ConfigDict, workdir: str | Path, log_every: int | None = None,
          accept_config_changes: bool = False) -> dict:
    """Train (or resume) the run of `config` in `workdir`; returns the summary it prints.
    `accept_config_changes`: resume although the config differs from the saved run's (resume.py)."""
    return Trainer(config, workdir, accept_config_changes=accept_config_changes).fit(log_every)
