"""`arc-jax train`: train the encoder of a config against its frozen decoder(s)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an ARC encoder",
                              description="Train the encoder of a config against its frozen decoder(s). The "
                                          "workdir keeps checkpoints (train state, input state, config), the "
                                          "decoder and TensorBoard logs; running again with the same workdir "
                                          "resumes. Override config fields with --config.a.b=value.")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--workdir", required=True, help="run folder (created; resumed when it holds checkpoints)")
    p.add_argument("--log-every", type=int, default=None, help="steps between log lines (default: config.log_every)")
    p.add_argument("--accept-config-changes", action="store_true",
                   help="resume a workdir although this config's model, data, optimiser, seed, ... differ from the "
                        "run saved there (without it that stops, listing the differences; the fields that may "
                        "always change, such as max_steps and the checkpoint, log and eval cadence, are "
                        "arc_jax.train.resume.RESUMABLE)")
    p.add_argument("--coordinator", help="host:port of process 0 in a multi-process run (default: "
                                         "$JAX_COORDINATOR_ADDRESS, or detected on TPU pods and under SLURM)")
    p.add_argument("--num-processes", type=int, help="processes in a multi-process run ($JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, help="this process's index ($JAX_PROCESS_ID)")
    p.set_defaults(func=run, config_overrides=True)


def run(args: argparse.Namespace):
    from arc_jax.config_loading import load_config
    from arc_jax.train import multihost

    multihost.initialize(args.coordinator, args.num_processes, args.process_id)  # before any device is touched
    config = load_config(args.config, args.overrides)
    from arc_jax.train.trainer import train

    train(config, args.workdir, log_every=args.log_every, accept_config_changes=args.accept_config_changes)
