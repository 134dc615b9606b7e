"""`arc-jax plan`: topology names (always), and with libtpu (the tpu extra) the trainer's step of
tiny_cpu compiled for a v5p-8 it does not have: sizes per device, collectives, an oversized model."""

from __future__ import annotations


import pytest

from arc_jax.tools.topology import PlanError, parse_topology
from sharded_sizes import sharded_state_bytes

CONFIG = "configs/tiny_cpu.py"
# Widths of 128 (the TPU's lane tile) so the compiled buffers carry no layout padding and their sizes
# can be checked against the shapes; an fsdp mesh so the sizes are the shards'.
WIDE = {"dim": 128, "n_heads": 2, "n_kv_heads": 2, "head_dim": 128, "hidden_dim": 256}


@pytest.mark.parametrize("name, topology, chips", [
    ("v5p-8", "v5:2x2x1", 4), ("v5p-16", "v5:2x2x2", 8), ("v5p-64", "v5:2x4x4", 32), ("v5p-128", "v5:4x4x4", 64),
    ("v4-32", "v4:2x2x4", 16), ("v5e-16", "v5e:4x4", 16), ("v5litepod-16", "v5e:4x4", 16), ("v5e-256", "v5e:16x16", 256), ("v6e-8", "v6e:2x4", 8),
    ("v6e-256", "v6e:16x16", 256)])
def test_topology_names_map_to_libtpu_topologies(name, topology, chips):
    topo = parse_topology(name)
    assert (topo.topology, topo.chips, topo.devices) == (topology, chips, chips)
    assert parse_topology(name, num_slices=2).devices == 2 * chips


@pytest.mark.parametrize("name, says", [("v5p-12", "power of two"), ("v5p-2", "at least 8"), ("v7x-8", "unknown"),
                                         ("v5e-512", "at most 256"), ("8xa100", "h100 or h200"), ("tpu", "unknown")])
def test_bad_topology_names_are_one_line_errors(name, says):
    with pytest.raises(PlanError, match=says) as e:
        parse_topology(name)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def libtpu():
    return pytest.importorskip("libtpu", reason="plan compiles for TPU with libtpu (the tpu extra)")


def _tiny(overrides=(), wide=False):
    from arc_jax.config_loading import load_config

    config = load_config(CONFIG, list(overrides))
    if wide:
        config.mesh_shape = [1, 4, 1]
        config.model.encoder.backbone.update(WIDE)
        config.model.decoders[0].backbone.update(WIDE)
        config.model.encoder.projectors[0].update({"in_dim": 128, "hidden_dim": 128, "out_dim": 128})
    return config


@pytest.fixture(scope="module")
def wide_plan(libtpu):
    from arc_jax.tools.plan import plan

    return plan(_tiny(wide=True), "v5p-8", quiet=True)


def test_tiny_compiles_on_v5p_8_and_its_arguments_are_the_sharded_state_decoder_and_batch(wide_plan):
    r = wide_plan
    assert (r["topology"], r["topology_name"], r["devices"], r["fits"]) == ("v5p-8", "v5:2x2x1", 4, True)
    expected = sharded_state_bytes(_tiny(wide=True), 4)
    # A few replicated scalars and vectors (counters, norm scales of small tensors) are not split: 5%.
    assert r["argument_bytes_per_device"] == pytest.approx(expected, rel=0.05)
    assert r["peak_bytes_per_device"] < r["hbm_bytes_per_device"]
    assert r["flops_per_step"] > 0 and r["predicted_step_seconds"] > 0


def test_collectives_are_counted_and_bounded(wide_plan):
    r = wide_plan
    step = r["steps"][0]
    # FSDP gathers every encoder and decoder layer's weights (forward and backward) and reduces the
    # encoder's gradients: positive, and below 8x all the parameter bytes of one full copy (f32).
    full = 4 * (r["analytic_bytes_per_device"]["trainable_params"] + r["analytic_bytes_per_device"]["decoders"][0])
    assert 0 < r["collective_bytes_per_device"] < 8 * full
    assert "all-gather" in step["collectives"] and not step["unknown_loops"]


@pytest.mark.slow  # 30 s; the same compiler verdict as the oversized batch below, which names its sizes
def test_an_oversized_model_does_not_fit_in_one_line(libtpu, capsys):
    from arc_jax.cli import main

    status = main(["plan", "--config", CONFIG, "--topology", "v5p-8", "--no-search",
                   "--config.data.corpus.vocab_size=50000000"])
    out = capsys.readouterr().out
    verdicts = [line for line in out.splitlines() if "does not fit" in line]
    assert status == 2 and verdicts and "Traceback" not in out
    assert out.rstrip().endswith("verdict: does not fit on v5p-8")


def test_splash_compiles_to_the_real_mosaic_kernel_on_a_sharded_mesh(libtpu):
    """Off a TPU the splash kernel would run interpreted (plain XLA ops, which partition like any
    code): the compiled TPU program must call the Mosaic kernel itself, under the fsdp mesh."""
    from arc_jax.tools.plan import build, compile_step
    from arc_jax.tools.topology import parse_topology, topology_devices
    from arc_jax.train.run_config import parse_run_config

    config = _tiny(["--config.attention_impl=splash"], wide=True)
    topo = parse_topology("v5p-8")
    run = parse_run_config(config, device_count=topo.devices)
    built = build(run, topology_devices(topo), quiet=True)
    compiled, exhausted = compile_step(built.program.step(0), built.args[0])
    assert exhausted is None
    assert compiled.as_text().count("tpu_custom_call") >= 3  # the encoder's forward, dq and dkv kernels


def test_fsdp_collectives_stay_within_three_parameter_copies_and_unconstrained_activations_do_not(wide_plan,
                                                                                                  monkeypatch):
    """With the residual stream's rows kept on their devices, an FSDP step gathers each weight for
    the forward and again for the backward and reduce-scatters the encoder's gradients: at most 3
    full copies of the parameters. Without the activation constraints (the step before they were
    declared) XLA splits the residual stream on its width and all-reduces full-batch activations."""
    import contextlib

    from arc_jax import sharding
    from arc_jax.tools.plan import plan

    constrained = wide_plan
    a = constrained["analytic_bytes_per_device"]
    bound = 3 * 4 * (a["trainable_params"] + a["decoders"][0])  # 4 shards per device -> the full copy
    monkeypatch.setattr(sharding, "activation_sharding", lambda mesh, rules=None: contextlib.nullcontext())
    unconstrained = plan(_tiny(wide=True), "v5p-8", quiet=True)
    assert constrained["collective_bytes_per_device"] < bound < unconstrained["collective_bytes_per_device"]


def test_search_space_keeps_the_global_batch():
    from arc_jax.tools.plan_search import Variant, candidate_meshes, micro_batch_counts
    from arc_jax.train.run_config import parse_run_config

    rows = ["--config.data.shape.encoder_rows=16", "--config.data.shape.decoder_rows=16"]
    run = parse_run_config(_tiny(["--config.mesh_shape=[2,4,1]", *rows]), device_count=8)
    # tiny_cpu's models have 2 kv heads: tensor parallelism up to 2.
    assert candidate_meshes(run, 8) == [(2, 4, 1), (1, 8, 1), (1, 4, 2)]
    assert micro_batch_counts(run, (1, 8, 1)) == [1, 2] and micro_batch_counts(run, (1, 4, 2)) == [1, 2, 4]
    variant = Variant((1, 4, 2), "full", 4)
    changed = variant.apply(run)
    assert (changed.grad_accum, changed.data.shape.encoder_rows, changed.data.shape.decoder_rows) == (4, 4, 4)
    assert variant.flags(run) == ("--config.mesh_shape=[1,4,2] --config.remat_policy=full --config.grad_accum=4 "
                                  "--config.data.shape.encoder_rows=4 --config.data.shape.decoder_rows=4")


def _oversized(extra):
    """tiny_cpu with sequences 16x longer on a v5e-4 (16 GiB): dense attention's scores exceed HBM
    and the compiler says so. jax_nn attention (dense [t x t] scores off a GPU): the "xla" path's
    block-causal chunks compile for minutes (5 on CI's 2 cores) to a peak just over HBM."""
    from arc_jax.cli import main

    return main(["plan", "--config", CONFIG, "--topology", "v5e-4", *extra, "--config.attention_impl=jax_nn",
                 "--config.data.shape.encoder_len=2048", "--config.data.shape.decoder_len=16384"])


def test_an_oversized_batch_does_not_fit_in_one_line(libtpu, capsys):
    status = _oversized(["--no-search"])
    out = capsys.readouterr().out
    verdict = [line for line in out.splitlines() if line.startswith("decoder 0: does not fit")]
    assert status == 2 and len(verdict) == 1 and "Traceback" not in out
    # The compiler's sizes and what to try, on that one line.
    assert "exceeds available HBM" in verdict[0] and "remat_policy=full" in verdict[0]
    assert out.rstrip().endswith("verdict: does not fit on v5e-4")


def test_a_compiled_step_over_hbm_says_what_to_try():
    """The compiler may accept a step whose peak is just over HBM: that verdict names the options too."""
    from arc_jax.tools.plan import _step_lines

    memory = dict(peak=17 << 30, argument=1, output=1, alias=1, temp=17 << 30, generated_code=1)
    step = dict(decoder=0, fits=False, memory=memory, other_decoders_bytes_per_device=0, model_flops_per_step=1e12,
                compiled_cost={"flops": 1e12}, collectives={}, unknown_loops=[], predicted_step_seconds=0.1,
                time_bounds={"compute": 0.1, "hbm": 0.05, "ici": 0.0}, mfu_ceiling=0.5)
    first = _step_lines(step, 16 << 30)[0]
    assert first.startswith("decoder 0: does not fit: peak 17.00 GiB of 16.00 GiB") and "remat_policy=full" in first
    assert "try" not in _step_lines(dict(step, fits=True), 18 << 30)[0]


@pytest.mark.slow
def test_the_search_finds_a_variant_that_fits(libtpu, capsys):
    """The first variant of the space (full rematerialisation, same mesh and batch) fits."""
    status = _oversized(["--search-budget", "1"])
    out = capsys.readouterr().out
    assert status == 2 and "search: 1 variant(s) compiled" in out
    assert "  1. step >= " in out and "--config.remat_policy=full" in out
