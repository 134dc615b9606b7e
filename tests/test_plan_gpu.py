"""`arc-jax plan` for GPU nodes: names, the interconnect model, the target description, the
collectives of GPU-style HLO and the one-line errors (always), and with the CUDA compile-only
plugins (the gpu-compile extra, not installed by `test`) tiny_cpu's step compiled for 8xh100."""

from __future__ import annotations

import sys

import pytest

from arc_jax.tools.hlo_collectives import collectives
from arc_jax.tools.topology import PlanError, check_attention, gpu_target_config, parse_topology, topology_devices
from sharded_sizes import sharded_state_bytes

CONFIG = "configs/tiny_cpu.py"
GPU_ROWS = ["--config.data.shape.encoder_rows=8", "--config.data.shape.decoder_rows=8"]


@pytest.mark.parametrize("name, slices, topology, devices, nodes", [
    ("8xh100", 1, "1x1x8", 8, 1), ("2x8xh200", 1, "2x1x8", 16, 2), ("4xH100", 1, "1x1x4", 4, 1),
    ("1xh200", 1, "1x1x1", 1, 1), ("8xh100", 2, "2x1x8", 16, 2)])
def test_gpu_names_are_nodes_of_gpus(name, slices, topology, devices, nodes):
    topo = parse_topology(name, num_slices=slices)
    assert (topo.topology, topo.devices, topo.num_slices, topo.chip.platform) == (topology, devices, nodes, "cuda")


def test_several_nodes_are_bounded_by_the_network_one_node_by_nvlink():
    one, two = parse_topology("8xh100"), parse_topology("2x8xh100")
    assert one.interconnect_bandwidth == one.chip.ici_bandwidth == 450e9
    assert two.interconnect_bandwidth == two.chip.node_bandwidth == 50e9
    assert parse_topology("v5p-8", num_slices=2).interconnect_bandwidth == parse_topology("v5p-8").chip.ici_bandwidth
    assert (parse_topology("8xh100").chip.hbm_bytes, parse_topology("8xh200").chip.hbm_bytes) == (80e9, 141e9)


@pytest.mark.parametrize("name, says", [("16xh100", "1 to 8 GPUs"), ("8xa100", "h100 or h200"),
                                         ("0x8xh100", "at least one node"), ("8xh100x", "unknown GPU")])
def test_bad_gpu_names_are_one_line_errors(name, says):
    with pytest.raises(PlanError, match=says) as e:
        parse_topology(name)
    assert "\n" not in str(e.value)


def test_the_target_description_is_an_h100_or_h200():
    h100, h200 = gpu_target_config("h100"), gpu_target_config("h200")
    for text in (h100, h200):
        assert "core_count: 132" in text and "cuda_compute_capability { major: 9 minor: 0 }" in text
    assert "device_memory_size: 80000000000" in h100 and "memory_bandwidth: 3350000000000" in h100
    assert "device_memory_size: 141000000000" in h200 and 'device_description_str: "NVIDIA H200"' in h200


def test_splash_is_refused_for_gpus_in_one_line():
    with pytest.raises(PlanError, match="jax_nn") as e:
        check_attention(parse_topology("8xh100"), "splash")
    assert "\n" not in str(e.value)
    check_attention(parse_topology("8xh100"), "jax_nn")
    check_attention(parse_topology("v5p-8"), "splash")


def test_a_missing_plugin_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax_cuda12_plugin", None)  # import fails as when not installed
    with pytest.raises(PlanError, match=r"pip install 'arc_jax\[gpu-compile\]'") as e:
        topology_devices(parse_topology("8xh100"))
    assert "\n" not in str(e.value)


# The forms XLA:GPU prints: async starts whose type is (operands, results), several buffers as nested
# tuples; a while loop with its trip count; a collective wrapped in async-start / async-done.
GPU_HLO = """HloModule step, num_partitions=8

%body (p: (s32[], f32[64,16])) -> (s32[], f32[64,16]) {
  %p = (s32[], f32[64,16]{1,0}) parameter(0)
  %w = f32[8,16]{1,0} get-tuple-element(%p), index=1
  %ags = (f32[8,16]{1,0}, f32[64,16]{1,0}) all-gather-start(%w), channel_id=1, replica_groups=[1,8]<=[8], dimensions={0}
  %agd = f32[64,16]{1,0} all-gather-done(%ags)
  %v = f32[64]{0} reduce(%agd, %zero), dimensions={1}, to_apply=%add
  %rss = ((f32[64,16]{1,0}, f32[64]{0}), (f32[8,16]{1,0}, f32[8]{0})) reduce-scatter-start(%agd, %v), channel_id=2, replica_groups=mesh['axis_0'=8] {'axis_0'}, dimensions={0}, to_apply=%add
  %rsd = (f32[8,16]{1,0}, f32[8]{0}) reduce-scatter-done(%rss)
  ROOT %t = (s32[], f32[64,16]{1,0}) tuple(%i, %agd)
}

%cond (c: (s32[], f32[64,16])) -> pred[] {
  %c = (s32[], f32[64,16]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%c), index=0
  %n = s32[] constant(3)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%wrapped (x: f32[1024]) -> f32[1024] {
  %x = f32[1024]{0} parameter(0)
  ROOT %ar = f32[1024]{0} all-reduce(%x), channel_id=3, replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add
}

ENTRY %main (a: f32[64,16], g: f32[1024]) -> f32[1024] {
  %a = f32[64,16]{1,0} parameter(0)
  %g = f32[1024]{0} parameter(0)
  %loop = (s32[], f32[64,16]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %as = ((f32[1024]{0}), f32[1024]{0}, s32[]) async-start(%g), calls=%wrapped
  ROOT %ad = f32[1024]{0} async-done(%as), calls=%wrapped
}
"""


def test_gpu_async_collectives_count_once_each_and_loops_multiply():
    stats, unknown = collectives(GPU_HLO, 8)
    assert not unknown
    assert (stats["all-gather"].count, stats["all-gather"].bytes) == (3, 3 * 64 * 16 * 4)
    assert (stats["reduce-scatter"].count, stats["reduce-scatter"].bytes) == (3, 3 * (64 * 16 + 64) * 4)
    assert (stats["all-reduce"].count, stats["all-reduce"].bytes) == (1, 1024 * 4)
    assert stats["all-reduce"].traffic_bytes == pytest.approx(2 * 7 / 8 * 1024 * 4)


@pytest.fixture(scope="module")
def cuda_plugin():
    pytest.importorskip("jax_cuda12_plugin", reason="GPU targets compile with the CUDA plugins (gpu-compile extra)")
    return pytest.importorskip("jax_plugins.xla_cuda12")


def _tiny(overrides=()):
    from arc_jax.config_loading import load_config

    config = load_config(CONFIG, GPU_ROWS + list(overrides))
    config.mesh_shape = [1, 8, 1]  # fsdp: the state split 8 ways
    return config


@pytest.fixture(scope="module")
def h100_plan(cuda_plugin):
    from arc_jax.tools.plan import plan

    return plan(_tiny(), "8xh100", quiet=True)


def test_tiny_compiles_for_8xh100_with_the_sharded_state_as_arguments(h100_plan):
    r = h100_plan
    assert (r["topology"], r["topology_name"], r["devices"], r["fits"]) == ("8xh100", "1x1x8", 8, True)
    assert r["chip"]["platform"] == "cuda" and r["hbm_bytes_per_device"] == 80 * 10**9
    # A few replicated scalars and vectors (counters, norm scales of small tensors) are not split.
    assert r["argument_bytes_per_device"] == pytest.approx(sharded_state_bytes(_tiny(), 8), rel=0.05)
    assert 0 < r["peak_bytes_per_device"] < r["hbm_bytes_per_device"]
    step = r["steps"][0]
    assert "all-gather" in step["collectives"] and not step["unknown_loops"]
    assert step["time_bounds"]["ici"] > 0 and r["predicted_step_seconds"] > 0


def test_two_nodes_give_sixteen_devices_over_two_processes(cuda_plugin):
    devices = topology_devices(parse_topology("2x8xh200"))
    assert len(devices) == 16 and {d.process_index for d in devices} == {0, 1}
    assert devices[0].device_kind == "NVIDIA H200" and devices[0].platform == "gpu"


def test_splash_on_a_gpu_stops_the_cli_in_one_line(cuda_plugin, capsys):
    from arc_jax.cli import main

    status = main(["plan", "--config", CONFIG, "--topology", "8xh100", "--config.attention_impl=splash", *GPU_ROWS])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and "jax_nn" in err
