"""`arc-jax plan`: compile a config's train step, or the generation programs of preset models, for a
TPU topology or GPU node without the hardware."""

from __future__ import annotations

import argparse

from arc_jax.tools.topology import PlanError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="compile a config's train step (or generation) for a TPU topology or "
                                           "GPU node, without the hardware",
                              description="Compile the trainer's step of a config for a TPU topology (libtpu's "
                                          "description; needs the tpu extra) or a GPU node (CUDA's compile-only "
                                          "plugin; needs the gpu-compile extra), no hardware, with abstract weights "
                                          "and batch, and report memory per device against HBM (fits / does not "
                                          "fit), collectives, FLOPs and a lower bound on step time. With "
                                          "--generate, the same for the programs that answer questions about "
                                          "compressed contexts (encoder compress, decoder prefill, decode loop) "
                                          "of preset model shapes. Exit status 2 when it does not fit. Override "
                                          "config fields with --config.a.b=value.")
    p.add_argument("--config", help="config file (a Python file with get_config()); required unless --generate")
    p.add_argument("--topology", required=True,
                   help="v5p-N or v4-N (N TensorCores: v5p-8 = 4 chips), v5e-N or v6e-N (N chips); GPU nodes: "
                        "8xh100, 8xh200, or 2x8xh100 for 2 nodes")
    p.add_argument("--num-slices", type=int, default=1, help="slices (TPU) or nodes (GPU) of that topology (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument("--no-search", action="store_true",
                   help="when the step does not fit, do not compile variants to find one that does")
    p.add_argument("--search-budget", type=int, default=None,
                   help="at most this many variants compiled by the search (default 12)")
    g = p.add_argument_group("generation (--generate)")
    g.add_argument("--generate", action="store_true",
                   help="plan compress + prefill + decode of --encoder-preset and --decoder-preset instead of a "
                        "config's train step")
    g.add_argument("--encoder-preset", help="arc8 or arc4 (the released ARC encoders), scaled, tiny")
    g.add_argument("--decoder-preset", help="llama3.1-8b, mistral-7b, llama2-7b, olmo-7b, scaled, tiny")
    g.add_argument("--batch", type=int, default=8, help="contexts (and questions) per call, 1..64 (default 8)")
    g.add_argument("--context", type=int, default=1024, help="encoder tokens per context (default 1024)")
    g.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per question (default 64)")
    g.add_argument("--mesh", help="DATA,FSDP,TENSOR for both models (default: tensor parallel as far as the "
                                  "widths allow, rows over the rest)")
    p.set_defaults(func=run, config_overrides=True)


def run(args: argparse.Namespace):
    if args.generate:
        from arc_jax.tools.plan_generate import main_plan_generate

        if args.config or args.overrides:
            raise PlanError("--generate plans preset models: drop --config and --config.* overrides")
        return main_plan_generate(args.encoder_preset, args.decoder_preset, args.batch, args.context, args.topology,
                                  args.num_slices, args.max_new_tokens, args.mesh, args.json)
    if not args.config:
        raise PlanError("--config CONFIG is required (or --generate with --encoder-preset and --decoder-preset)")
    generation = [f"--{name.replace('_', '-')}" for name in ("encoder_preset", "decoder_preset", "mesh")
                  if getattr(args, name)]
    if generation:
        raise PlanError(f"{', '.join(generation)}: only with --generate")
    from arc_jax.config_loading import load_config
    from arc_jax.tools.plan import main_plan

    return main_plan(load_config(args.config, args.overrides), args.topology, args.num_slices, args.json,
                     search=not args.no_search, search_budget=args.search_budget)
