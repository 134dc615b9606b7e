"""The hardware `arc-jax plan` compiles for without having it: topology names (v5p-64, v5e-256,
...), their chips' HBM, peak FLOP/s and bandwidths, and the JAX devices of the topology from
libtpu's description (`jax.experimental.topologies`, the `tpu` extra)."""

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
    peak_flops: float          # bf16 FLOP/s per chip
    hbm_bandwidth: float       # bytes/s per chip
    ici_bandwidth: float       # bytes/s per chip
    topology_prefix: str       # libtpu's name: "v5:2x2x1"
    chip_config: str           # "megacore": one JAX device per chip (its two TensorCores together)
    dims: int                  # torus dimensions


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
_GPU = re.compile(r"^\d+x[a-z]\d+", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str                  # as given: "v5p-64"
    chip_name: str             # "v5p"
    topology: str              # libtpu's: "v5:2x4x4"
    chips: int                 # per slice
    num_slices: int = 1

    @property
    def chip(self) -> Chip:
        return CHIPS[self.chip_name]

    @property
    def devices(self) -> int:
        return self.chips * self.num_slices


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
    """v5p-N and v4-N (N TensorCores, 2 a chip), v5e-N (or v5litepod-N) and v6e-N (N chips);
    PlanError otherwise."""
    known = "v5p-8, v5p-64, v4-32, v5e-16, v5e-256, v6e-256, ..."
    if _GPU.match(name):
        raise PlanError(f"topology {name!r}: GPU topologies are not supported yet; plan compiles for TPU ({known})")
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


def topology_devices(topo: Topology):
    """The JAX devices of the topology, from libtpu's description (no TPU needed)."""
    # No metadata server to ask off Google Cloud, and nothing for libtpu to guess (it warns otherwise).
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", topo.name)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")  # the compile targets TPU; nothing runs here
    except Exception:  # noqa: BLE001  (backends already up: keep them)
        pass
    # Executables for devices that are not here cannot be read back: keep them out of any cache.
    jax.config.update("jax_enable_compilation_cache", False)
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
