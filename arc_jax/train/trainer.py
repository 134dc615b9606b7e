"""`arc-jax train`: the training loop, in plain sections: mesh, models, input, init or resume, loop.

A workdir holds everything a run needs to resume and to be used afterwards:
    <workdir>/decoder_0/      the frozen decoder trained against (arc_jax layout; random for tiny_cpu)
    <workdir>/checkpoints/    Orbax: train state, input-pipeline state, config (see checkpoint.py)
    <workdir>/tensorboard/    event files: losses per task, accuracy, grad norm, learning rate, ...
Starting again with the same workdir resumes from its latest checkpoint. SIGTERM (preemption)
saves a checkpoint at the end of the current step and exits.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import flax.linen as nn
import jax
import ml_collections

from arc_jax import sharding
from arc_jax.data.pipeline import build_batches
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig
from arc_jax.train.checkpoint import TrainCheckpoints, abstract_like
from arc_jax.train.optimizer import OptimizerConfig
from arc_jax.train.step import init_state, train_step


def optimizer_config(config: ml_collections.ConfigDict) -> OptimizerConfig:
    """The optimiser of a config, checked before anything is compiled."""
    from arc_jax.config_loading import ConfigError

    fields = config.get("optimizer", ml_collections.ConfigDict()).to_dict()
    unknown = set(fields) - set(OptimizerConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"config.optimizer has unknown field(s) {sorted(unknown)}")
    cfg = OptimizerConfig(**{**fields, "max_steps": config.max_steps})
    if not 0 < cfg.warmup_steps < cfg.max_steps:
        raise ConfigError(f"config.optimizer.warmup_steps={cfg.warmup_steps} must be in (0, config.max_steps="
                          f"{cfg.max_steps})")
    return cfg


def _decoder(config, workdir: Path, template_batch, mesh):
    """The frozen decoder: loaded from the workdir, or random (tiny configs) and saved there."""
    from arc_jax.convert import read_decoder, write_decoder

    cfg = BackboneConfig.from_dict(config.model.decoder.to_dict())
    module = Decoder(cfg)
    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), template_batch.tokens,
                                               template_batch.segment_ids, template_batch.positions))["params"]
    path = workdir / "decoder_0"
    if not path.exists():
        params = nn.unbox(module.init(jax.random.key(config.seed + 1), template_batch.tokens,
                                      template_batch.segment_ids, template_batch.positions)["params"])
        write_decoder(cfg, jax.device_get(params), path, "arc_jax")
    saved_cfg, params = read_decoder(path)
    if saved_cfg != cfg:
        raise ValueError(f"{path}: holds a decoder of another shape than config.model.decoder")
    shardings = sharding.param_shardings(boxed, mesh)
    return module, jax.device_put(params, shardings), shardings


def train(config: ml_collections.ConfigDict, workdir: str | Path, log_every: int = 10) -> dict:
    from tensorboardX import SummaryWriter

    workdir = Path(workdir)
    opt_cfg = optimizer_config(config)
    workdir.mkdir(parents=True, exist_ok=True)

    # Mesh.
    mesh = sharding.make_mesh(config.get("mesh_shape", [-1, 1, 1]))

    # Input.
    batches = build_batches(config)
    start_of_data = batches.get_state()
    template, _ = next(batches)  # shapes for init and shardings; the step-1 batch is drawn again below
    batches.set_state(start_of_data)

    # Models: the trainable encoder and the frozen decoder.
    enc_cfg = EncoderConfig.from_dict(config.model.encoder.to_dict())
    encoder = ARCEncoder(enc_cfg)
    boxed = encoder.init(jax.random.key(config.seed), template.encoder)["params"]
    p_sharding = sharding.param_shardings(boxed, mesh)
    decoder, decoder_params, d_sharding = _decoder(config, workdir, template, mesh)

    # Init or resume.
    s_sharding = sharding.train_state_shardings(p_sharding, mesh)
    state = jax.device_put(init_state(nn.unbox(boxed)), s_sharding)
    checkpoints = TrainCheckpoints(workdir, keep=config.get("keep_checkpoints", 3))
    start = 0
    if checkpoints.latest_step is not None:
        start = checkpoints.latest_step
        state, data_state, _ = checkpoints.restore(abstract_like(state), start)
        batches.set_state(data_state)
        print(f"resumed from step {start} in {workdir}")

    # The step (one decoder here; each decoder would get its own jitted step).
    b_sharding = sharding.batch_sharding(template, mesh)
    step_fn = jax.jit(
        lambda s, d, b: train_step(s, d, b, encoder=encoder, decoder=decoder, decoder_index=0, opt_cfg=opt_cfg),
        in_shardings=(s_sharding, d_sharding, b_sharding), out_shardings=(s_sharding, sharding.replicated(mesh)),
        donate_argnums=0)

    preempted = []
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
    writer = SummaryWriter(str(workdir / "tensorboard"))
    max_bad = config.get("max_bad_steps", 10)
    t0, tokens, last_metrics, step = time.perf_counter(), 0, {}, start
    try:
        for step in range(start + 1, config.max_steps + 1):
            batch, stats = next(batches)
            state, metrics = step_fn(state, decoder_params, jax.device_put(batch, b_sharding))
            tokens += stats.decoder_tokens
            if step % log_every == 0 or step == config.max_steps:
                last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                elapsed = time.perf_counter() - t0
                for k, v in last_metrics.items():
                    writer.add_scalar(k, v, step)
                writer.add_scalar("tokens_per_second", tokens / elapsed, step)
                print(f"step {step:6d}  loss {last_metrics['loss']:.4f}  acc {last_metrics['accuracy']:.3f}  "
                      f"grad_norm {last_metrics['grad_norm']:.3f}  lr {last_metrics['learning_rate/encoder']:.2e}  "
                      f"{tokens / elapsed:,.0f} tok/s", flush=True)
                if int(state.bad_steps) >= max_bad:
                    raise RuntimeError(f"{max_bad} consecutive steps had non-finite loss or gradients; stopping. "
                                       f"The last good checkpoint is step {checkpoints.latest_step}.")
            if step % config.checkpoint_every == 0 or step == config.max_steps or preempted:
                checkpoints.save(step, state, batches.get_state(), config.to_dict(), force=True)
            if preempted:
                print(f"SIGTERM: saved step {step}, exiting")
                break
    finally:
        checkpoints.wait()
        checkpoints.close()
        writer.close()
        signal.signal(signal.SIGTERM, previous_handler)
    summary = {"steps": step - start, "final_step": checkpoints.latest_step,
               "skipped_steps": int(state.skipped), **last_metrics,
               "seconds": time.perf_counter() - t0, "workdir": str(workdir.resolve())}
    print(f"done: {summary['steps']} steps, last loss {last_metrics.get('loss', float('nan')):.4f}, "
          f"{summary['skipped_steps']} skipped; checkpoints and TensorBoard logs in {workdir.resolve()}")
    return summary
