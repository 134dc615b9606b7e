"""The hardware `arc-jax plan` compiles for without having it: topology names (v5p-64, v5e-256,
..., 8xh100, 2x8xh200), their chips' HBM, peak FLOP/s and bandwidths, and the JAX devices of the
topology: compile-only devices from libtpu's description for a TPU (the `tpu` extra), from the CUDA
PJRT plugin and a GPU target description (gpu_target_config) for a GPU (the `gpu-compile` extra).

Interconnect model (the collectives' time bound): ring traffic per device over one link per device,
one direction. Within a TPU slice that link is ICI; within a GPU node NVLink. A GPU topology of
several nodes runs its rings across the nodes' network, whose per-GPU link (a 400 Gb/s InfiniBand NIC
a GPU, 50 GB/s) is much slower than NVLink: every collective of a multi-node GPU topology is bounded
at that speed (conservative: a collective whose group stays inside a node would run at NVLink speed).
TPU slices are still bounded at ICI speed (no DCN figure in the table)."""

from __future__ import annotations

import dataclasses
import math
import os
import re

from arc_jax.errors import ArcJaxError

GIB = 1024**3


class PlanError(ArcJaxError):
    """A topology plan cannot run (unknown topology, no libtpu, a decoder of unknown shape): one line."""


@dataclasses.dataclass(frozen=True)
class Chip:
    hbm_bytes: int
    peak_flops: float          # bf16 FLOP/s per chip (dense)
    hbm_bandwidth: float       # bytes/s per chip
    ici_bandwidth: float       # bytes/s per chip, one direction, within a slice: TPU ICI, GPU NVLink
    topology_prefix: str = ""  # TPU: libtpu's name: "v5:2x2x1"
    chip_config: str = ""      # TPU: "megacore": one JAX device per chip (its two TensorCores together)
    dims: int = 0              # TPU: torus dimensions
    platform: str = "tpu"      # "tpu" or "cuda"
    node_bandwidth: float = 0.0  # GPU: bytes/s per GPU, one direction, between nodes (its network link)
    device_kind: str = ""      # GPU: the CUDA device name, the compiled target's device kind


# Per chip, from the Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v5p, v5e, v6e,
# v4): HBM capacity, peak bf16 compute, HBM bandwidth, inter-chip interconnect bandwidth.
# v5p: 95 GiB, 459 TFLOP/s, 2765 GB/s, ICI 4800 Gbps (checked on the v5p page; its newer version
#      states ICI as 1200 GB/s bidirectional per chip: the 600 GB/s used here is the conservative one)
# v5e: 16 GiB, 197 TFLOP/s, 819 GB/s, ICI 1600 Gbps
# v6e: 32 GiB, 918 TFLOP/s, 1640 GB/s, ICI 3584 Gbps
# v4:  32 GiB, 275 TFLOP/s, 1200 GB/s, ICI 2400 Gbps
CHIPS = {
    "v5p": Chip(95 * GIB, 459e12, 2765e9, 4800e9 / 8, "v5", "megacore", 3),
    "v5e": Chip(16 * GIB, 197e12, 819e9, 1600e9 / 8, "v5e", "default", 2),
    "v6e": Chip(32 * GIB, 918e12, 1640e9, 3584e9 / 8, "v6e", "default", 2),
    "v4": Chip(32 * GIB, 275e12, 1200e9, 2400e9 / 8, "v4", "megacore", 3),
}
# GPUs (SXM), from NVIDIA's H100 and H200 product pages and datasheets (nvidia.com/en-us/data-center/h100,
# /h200): HBM, dense bf16 Tensor Core peak (the pages' 1979 TFLOP/s is with 2:4 sparsity), HBM bandwidth,
# NVLink 4 (900 GB/s per GPU, both directions together: 450 GB/s each way is the ring figure used here,
# as the TPU rows use one direction).
# h100: 80 GB HBM3, 989 TFLOP/s, 3.35 TB/s, NVLink 900 GB/s
# h200: 141 GB HBM3e, 989 TFLOP/s, 4.8 TB/s, NVLink 900 GB/s
# Between nodes: one 400 Gb/s InfiniBand NDR (ConnectX-7) NIC per GPU, as on DGX/HGX H100 and H200
# systems: 50 GB/s each way per GPU, a conservative figure (no SHARP, no rail-optimised overlap).
# HBM is the nominal decimal capacity (80e9, 141e9 bytes), a little below what CUDA reports, which
# leaves room for the CUDA context and libraries; JAX itself preallocates only a fraction of it (75% by
# default, XLA_PYTHON_CLIENT_MEM_FRACTION; launch/gpu_node.sh sets 0.90).
GPU_CHIPS = {
    "h100": Chip(80 * 10**9, 989e12, 3.35e12, 900e9 / 2, platform="cuda", node_bandwidth=400e9 / 8,
                 device_kind="NVIDIA H100 80GB HBM3"),
    "h200": Chip(141 * 10**9, 989e12, 4.8e12, 900e9 / 2, platform="cuda", node_bandwidth=400e9 / 8,
                 device_kind="NVIDIA H200"),
}
CHIPS.update(GPU_CHIPS)
GPUS_PER_NODE = 8  # HGX H100 / H200 boards: NVLink joins at most 8 GPUs
_GPU = re.compile(r"^\d+x[a-z]\d+|^\d+x\d+x", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str                  # as given: "v5p-64"
    chip_name: str             # "v5p"
    topology: str              # libtpu's: "v5:2x4x4"; GPU, PJRT's: "2x1x8" (nodes x 1 host x GPUs a node)
    chips: int                 # per slice (GPU: per node)
    num_slices: int = 1        # GPU: nodes, each its own NVLink domain

    @property
    def chip(self) -> Chip:
        return CHIPS[self.chip_name]

    @property
    def devices(self) -> int:
        return self.chips * self.num_slices

    @property
    def interconnect_bandwidth(self) -> float:
        """Bytes/s per device for the collectives' ring traffic (see the module docstring): the
        chip's link within a slice or node; across GPU nodes, the slower network link."""
        if self.num_slices > 1 and self.chip.node_bandwidth:
            return min(self.chip.ici_bandwidth, self.chip.node_bandwidth)
        return self.chip.ici_bandwidth


def _torus(chips: int, dims: int) -> tuple[int, ...] | None:
    """The slice shape of `chips` chips (a power of two): 3D from 2x2x1, doubling the last smallest
    side (2x2x2, 2x2x4, 2x4x4, 4x4x4, ...), as the Cloud TPU tables list them; 2D from 1x1 (2x2,
    2x4, 4x4, 4x8, ...)."""
    shape = [2, 2, 1] if dims == 3 else [1, 1]
    if chips < 4 and dims == 3 or chips & (chips - 1) or chips < 1 or (dims == 2 and chips == 2):
        return None
    while math.prod(shape) < chips:
        smallest = min(shape)
        i = max(j for j, s in enumerate(shape) if s == smallest)
        shape[i] *= 2
    return tuple(shape)


def parse_topology(name: str, num_slices: int = 1) -> Topology:
    """v5p-N and v4-N (N TensorCores, 2 a chip), v5e-N (or v5litepod-N) and v6e-N (N chips), NxGPU
    and MxNxGPU (GPU nodes, see _parse_gpu); PlanError otherwise."""
    known = "v5p-8, v5p-64, v4-32, v5e-16, v5e-256, v6e-256, ..., 8xh100, 2x8xh200"
    if _GPU.match(name.strip()):
        return _parse_gpu(name, num_slices)
    # v5litepod-N is gcloud's accelerator type for v5e-N (launch/tpu_pod.sh passes it through).
    m = re.fullmatch(r"(v5p|v5e|v6e|v4)-(\d+)", re.sub(r"^v5litepod-", "v5e-", name.strip().lower()))
    if not m:
        raise PlanError(f"unknown topology {name!r}: expected v5p-N, v4-N (N TensorCores) or v5e-N, v6e-N (N chips), "
                        f"e.g. {known}")
    if num_slices < 1:
        raise PlanError(f"--num-slices={num_slices}: must be >= 1")
    chip_name, n = m.group(1), int(m.group(2))
    chip = CHIPS[chip_name]
    chips = n // 2 if chip.dims == 3 else n
    shape = _torus(chips, chip.dims) if chip.dims == 2 or n % 2 == 0 else None
    if shape is None or (chip.dims == 2 and chips > 256):
        unit = "TensorCores (2 a chip), at least 8" if chip.dims == 3 else "chips, at most 256"
        raise PlanError(f"unknown topology {name!r}: {chip_name}-N counts {unit}, a power of two")
    return Topology(name, chip_name, f"{chip.topology_prefix}:{'x'.join(map(str, shape))}", chips, num_slices)


def _parse_gpu(name: str, num_slices: int) -> Topology:
    """NxGPU: one node of N GPUs (8xh100); MxNxGPU: M such nodes (2x8xh200); num_slices multiplies
    the nodes. GPU is h100 or h200 (SXM), N at most 8 (one HGX board's NVLink domain)."""
    m = re.fullmatch(r"(?:(\d+)x)?(\d+)x([a-z]\w*)", name.strip().lower())
    if not m or m.group(3) not in GPU_CHIPS:
        raise PlanError(f"unknown GPU topology {name!r}: expected NxGPU (one node) or MxNxGPU (M nodes) with GPU "
                        f"{' or '.join(GPU_CHIPS)}, e.g. 8xh100, 2x8xh200")
    nodes, gpus, chip_name = int(m.group(1) or 1), int(m.group(2)), m.group(3)
    if not 1 <= gpus <= GPUS_PER_NODE or nodes < 1 or num_slices < 1:
        raise PlanError(f"GPU topology {name!r} (--num-slices={num_slices}): 1 to {GPUS_PER_NODE} GPUs a node, at "
                        f"least one node; more GPUs are more nodes, e.g. 2x8x{chip_name}")
    nodes *= num_slices
    # PJRT's GPU topology: fast-interconnect slices x hosts a slice x devices a host.
    return Topology(name, chip_name, f"{nodes}x1x{gpus}", gpus, nodes)


# A GPU target for XLA without the GPU: the GpuTargetConfigProto (text format) the CUDA plugin
# would read from the device (xla/stream_executor/device_description.proto). H100 and H200 SXM are
# the same GH100 chip: compute capability 9.0, 132 SMs of 128 FP32 lanes, 2048 threads and 64 K
# 32-bit registers an SM, 228 KiB shared memory an SM (227 KiB opt-in a block, 48 KiB default),
# 1024 threads a block, 50 MB L2, 1.98 GHz boost clock (NVIDIA H100 Tensor Core GPU Architecture
# whitepaper; CUDA C++ Programming Guide, technical specifications per compute capability 9.0).
# Memory size and bandwidth are the chip table's. cuDNN 9.8 is the oldest the jax-cuda12 plugin of
# jax 0.10 accepts (its with-cuda requirements), CUDA 12.8 a current CUDA 12 runtime.
_GH100 = {"threads_per_block_limit": 1024, "threads_per_warp": 32, "shared_memory_per_block": 48 * 1024,
          "shared_memory_per_core": 228 * 1024, "threads_per_core_limit": 2048, "core_count": 132,
          "fpus_per_core": 128, "block_dim_limit_x": 2**31 - 1, "block_dim_limit_y": 65535,
          "block_dim_limit_z": 65535, "l2_cache_size": 50 * 1024**2, "clock_rate_ghz": 1.98,
          "shared_memory_per_block_optin": 227 * 1024, "registers_per_core_limit": 65536,
          "registers_per_block_limit": 65536}


def gpu_target_config(chip_name: str) -> str:
    """The GpuTargetConfigProto text of a GPU of the table."""
    chip = GPU_CHIPS[chip_name]
    info = {**_GH100, "memory_bandwidth": int(chip.hbm_bandwidth), "device_memory_size": chip.hbm_bytes}
    fields = "\n".join(f"  {k}: {v}" for k, v in info.items())
    return (f"gpu_device_info {{\n{fields}\n  cuda_compute_capability {{ major: 9 minor: 0 }}\n}}\n"
            f'platform_name: "CUDA"\ndnn_version_info {{ major: 9 minor: 8 patch: 0 }}\n'
            f'runtime_version {{ major: 12 minor: 8 patch: 0 }}\ndevice_description_str: "{chip.device_kind}"\n')


def check_attention(topo: Topology, attention_impl: str) -> None:
    """PlanError when the run's attention kernel cannot compile for the topology's platform."""
    if topo.chip.platform != "tpu" and attention_impl == "splash":
        raise PlanError(f"attention_impl='splash' is a TPU (Mosaic) kernel and cannot run on {topo.name}: use "
                        f"--config.attention_impl=jax_nn (cuDNN flash attention) or xla")


def _gpu_devices(topo: Topology):
    """Compile-only CUDA devices: the PJRT CUDA plugin's topology for a target description, no GPU
    (nor CUDA driver) needed."""
    try:
        import jax_cuda12_plugin  # noqa: F401
        import jax_plugins.xla_cuda12  # noqa: F401
    except ImportError:
        raise PlanError("plan needs the CUDA compile-only plugins for GPU targets: pip install "
                        "'arc_jax[gpu-compile]' (jax-cuda12-plugin, jax-cuda12-pjrt)") from None
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(platform="cuda", topology=topo.topology,
                                            target_config=gpu_target_config(topo.chip_name))
    except (NotImplementedError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PlanError(f"the CUDA plugin gives no compile-only devices for {topo.name}: {first}") from None
    return desc.devices


def topology_devices(topo: Topology):
    """The JAX devices of the topology, from libtpu's description or the CUDA plugin's (no TPU or
    GPU needed)."""
    # No metadata server to ask off Google Cloud, and nothing for libtpu to guess (it warns otherwise).
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    if topo.chip.platform == "tpu":
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", topo.name)
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # No TPU to guard: several plans (or test workers) may compile at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")  # the compile targets TPU; nothing runs here
    except Exception:  # noqa: BLE001  (backends already up: keep them)
        pass
    # Executables for devices that are not here cannot be read back: keep them out of any cache.
    jax.config.update("jax_enable_compilation_cache", False)
    if topo.chip.platform == "cuda":
        return _gpu_devices(topo)
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise PlanError("plan needs libtpu to compile for TPU: pip install 'arc_jax[tpu]' (jax[tpu])") from None
    from jax.experimental import topologies

    bounds = (2, 2, 1) if topo.chip.dims == 3 or topo.chips >= 4 else (1, 1, 1)
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topo.topology,
                                        chip_config_name=topo.chip.chip_config, chips_per_host_bounds=bounds,
                                        num_slices=topo.num_slices)
    return desc.devices
